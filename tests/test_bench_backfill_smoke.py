"""``bench/backfill.py --smoke --dv --breakdown`` still runs, every path to the end.

Correctness only: every path wrote every row of every partition (the DV path
every row left after the deletes), every job partition is ``scored``, the job
paths' predictions equal the spark_udf baseline's, and the breakdown found the
Spark jobs, round trips and profile of its 3 partitions. Timings are never
asserted. One process, like the README's command, with its data, registry and
results under a temp folder.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"stacks", "job[tracked]", "job[untracked]", "job[untracked,dv]"}


def _run(args, timeout=900):
    env = {**os.environ, "SPARK_SCORING_LOG_LEVEL": "ERROR"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the bench sets up its own registry
    env.pop("MLFLOW_REGISTRY_URI", None)
    proc = subprocess.run([sys.executable, *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_backfill_bench_smoke_every_path_writes_every_row_and_agrees(tmp_path):
    out = tmp_path / "out"
    _run(["bench/backfill.py", "--smoke", "--dv", "--breakdown", "--out", str(out),
          "--work", str(tmp_path / "work")])
    result = json.loads((out / "results.json").read_text())
    cfg = result["config"]
    parts, rows = cfg["partitions"], cfg["rows"]
    total = parts * rows
    deleted = sum(cfg["dv_deleted"].values())
    assert 0 < deleted < total / 10

    # every path ran every repeat and wrote every row (the DV path: all but the deleted ones)
    assert set(result["runs"]) == PATHS
    for name, runs in result["runs"].items():
        assert len(runs) == cfg["repeats"], name
        expected = total - deleted if name == "job[untracked,dv]" else total
        assert all(r["rows"] == expected for r in runs), (name, runs)
        if name != "stacks":
            for r in runs:
                assert [p["status"] for p in r["partitions"]] == ["scored"] * parts, (name, r)
                assert r["rows_scored"] == expected

    # predictions equal stacks' on every row, joined on id
    assert set(result["checks"]) == PATHS - {"stacks"}
    for name, check in result["checks"].items():
        expected = total - deleted if name == "job[untracked,dv]" else total
        assert check["joined"] == expected and check["nulls"] == 0, (name, check)
        assert check["max_abs_diff"] is not None and check["max_abs_diff"] <= 1e-9, (name, check)

    summary = result["summary"]
    assert set(summary["median"]) == PATHS
    for name, m in summary["median"].items():
        if name != "stacks":  # each job commit recorded its engine path, one per partition
            assert sum(m["engine_path"].values()) == parts, (name, m)
    dv = summary["dv"]
    assert dv["rows_deleted"] == deleted and dv["partitions_with_deletes"]
    assert all(v["clean"] > 0 and v["dv"] > 0 for v in dv["rows_per_s"].values())

    # the breakdown: one tracked job over 3 partitions, its Spark jobs from the UI, round trips, profile
    b = result["breakdown"]
    assert len(b["partitions"]) == 3
    windows = {w["window"] for w in b["windows"]}
    assert {f"ds={p}" for p in b["partitions"][:2]} <= windows, windows
    assert b["jobs"] and all(j["end"] is not None and j["end"] >= j["start"] for j in b["jobs"])
    for p in b["partitions"]:  # spark_scoring labels each partition's jobs
        assert any(f"ds={p} (score+write)" in j["description"] for j in b["jobs"]), p
        # a clean partition on the direct scan: counted by its scoring pass, no count job
        assert not any(f"ds={p} (count)" in j["description"] for j in b["jobs"]), p
    kinds = {e["kind"] for e in b["round_trips"]}
    assert {"mlflow", "action"} <= kinds, kinds  # the tracked job talks to MLflow
    focus = b["focus_lines"]
    assert b["focus"] == f"ds={b['partitions'][1]}"
    assert any(x["kind"] == "spark job" for x in focus) and any(x["kind"] != "spark job" for x in focus)
    assert b["profile"]["spark_scoring"] and b["profile"]["mlflow"]

    text = (out / "results.md").read_text()
    assert text.startswith("# Backfill")
    assert "## Deletion vectors" in text and "One line per Spark job and round trip" in text
