"""The benchmark scripts still run: ``bench/run.py --smoke``, ``bench/jobs.py --smoke`` and
``bench/gpu_check.py`` on CPU.

Correctness only (every path ran every row; predictions equal across paths);
timings are never asserted. Each runs in its own process, like the README's
commands, with its data, registry and results under a temp folder.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _run(args, cwd=ROOT, timeout=1500):
    env = {**os.environ, "SPARK_SCORING_LOG_LEVEL": "ERROR"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the bench sets up its own registry
    env.pop("MLFLOW_REGISTRY_URI", None)
    proc = subprocess.run([PYTHON, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_bench_smoke_every_path_runs_and_agrees(tmp_path):
    out = tmp_path / "out"
    # no A/B variants (the default adds three more Spark runs per model): every path and the scaling check
    _run(["bench/run.py", "--smoke", "--variants", "", "--out", str(out), "--work", str(tmp_path / "work")])
    result = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text().startswith("# Scoring benchmark")
    paths = {"limit", "spark_udf", "predict_batch_udf", "score", "direct"}
    assert set(result["models"]) == {"mlp", "hgb"}
    for kind, model in result["models"].items():
        assert paths <= set(model["runs"]), kind
        for name, runs in model["runs"].items():
            assert runs and all(r["rows"] == result["config"]["rows"] for r in runs), (kind, name)
        for name, check in model["checks"].items():
            assert check["compared"] == check["expected"] > 0, (kind, name, check)
            assert not math.isnan(check["max_abs_diff"]) and check["max_abs_diff"] <= 1e-6, (kind, name, check)
        loads = model["checks"]["score"]
        assert loads["model_loads"] <= loads["workers"], loads  # at most one load per Python worker
    scaling = result["models"]["mlp"]["scaling"]["runs"]
    assert {"score@x1", "direct@x1", "score@x10", "direct@x10"} <= set(scaling)
    assert all(r["rows"] == result["config"]["rows"] for runs in scaling.values() for r in runs)


@pytest.mark.slow
def test_jobs_bench_smoke_every_path_commits_every_row_and_agrees(tmp_path):
    out = tmp_path / "out"
    _run(["bench/jobs.py", "--smoke", "--models", "mlp", "--out", str(out), "--work", str(tmp_path / "work")])
    result = json.loads((out / "results.json").read_text())
    model = result["models"]["mlp"]
    assert set(model["wall_s"]) == {"stacks", "job[udf]", "job[auto]"}  # each ran (and wrote every row)
    assert model["engine_path"] == {"job[udf]": "udf", "job[auto]": "direct_scan"}
    assert model["max_abs_diff"] <= 1e-6
    assert (out / "results.md").read_text().startswith("# Jobs end to end")


@pytest.mark.slow
def test_gpu_check_runs_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    # 32 images at 96 px: the same feeding path and batching as 224 px, a fifth of ResNet-50's FLOPs
    _run(["bench/gpu_check.py", "--device", "cpu", "--images", "32", "--size", "96", "--out", str(out)], timeout=600)
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["images"] == 32
    assert result["batch_size_used"] == result["batch_size_requested"] == 16
    assert 20 < result["params_m"] < 30  # ResNet-50 sized
    assert result["images_per_s"] > 0


@pytest.mark.slow
def test_pt2_bench_smoke_both_formats_run_and_agree(tmp_path):
    out = tmp_path / "pt2"
    _run(["bench/pt2.py", "--smoke", "--out", str(out), "--work", str(tmp_path / "work")])
    result = json.loads((out / "results.json").read_text())
    assert set(result["seconds"]) == {f"{f}/{p}" for f in ("pickle", "pt2") for p in ("score", "direct")}
    assert result["max_abs_diff"] <= 1e-6
    assert result["ratio_score"] > 0 and result["ratio_direct"] > 0
