"""``bench/media.py`` still runs: every path scores every image once, and all agree.

Correctness only, never timings: tiny sizes (16 JPEGs in 2 files, 4 rows per
model call, ResNet-18 at 32 x 32 pixels, one round, no warm-up) in its own
process, like the README's command, with data, registry and results under a
temp folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"limit", "limit[overlap]", "spark_udf", "score[plain]", "score[overlapped]", "ray", "daft"}
IMAGES = 16


@pytest.mark.slow
def test_media_bench_smoke_every_path_runs_and_agrees(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SPARK_SCORING_LOG_LEVEL": "ERROR"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the bench sets up its own registry
    env.pop("MLFLOW_REGISTRY_URI", None)
    args = ["bench/media.py", "--smoke", "--images", str(IMAGES), "--batch", "4", "--size", "32",
            "--out", str(out), "--work", str(tmp_path / "work")]
    proc = subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"

    result = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Media benchmark")
    assert result["config"]["images"] == IMAGES
    assert result["config"]["maxRecordsPerBatch"] == result["config"]["columnarReaderBatchSize"] == "4"
    assert set(result["runs"]) == PATHS
    for label, runs in result["runs"].items():
        assert len(runs) == 1, label
        run = runs[0]
        check = run["check"]
        # every id once, labels equal to the in-process limit's, scores within 1e-4
        assert check["ids_match"] and check["rows"] == IMAGES, (label, check)
        assert check["label_mismatches"] == 0 and check["max_score_diff"] <= 1e-4, (label, check)
        # the model itself scored every image exactly once, in calls of at most --batch rows
        trace = run["trace"]
        assert trace["rows"] == IMAGES, (label, trace)
        assert trace["calls"] >= IMAGES // 4 and trace["max_rows_per_call"] <= 4, (label, trace)
    assert result["runs"]["score[overlapped]"][0]["trace"]["models"] == ["media_overlapped"]
    assert result["runs"]["spark_udf"][0]["trace"]["models"] == ["media_plain"]
    ray = result["summary"]["ray"]
    assert ray["startup_s"] > 0 and ray["run_only_s"] > 0
    assert all(p["ran"] and p["agrees"] for p in result["summary"].values()), result["summary"]
