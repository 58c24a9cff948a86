"""A scoring task that fails on its first attempt, and a Python worker killed
mid-task, under ``local[2,2]`` (``spark.task.maxFailures`` = 2).

The faults are injected on the executors through the test-only local property
``spark_scoring.executor.faults.FAULT_PROPERTY`` (off unless a driver sets it), keyed on
``TaskContext.attemptNumber()``; see ``drivers/task_faults.py``.
"""
from __future__ import annotations

import pytest

import reliability_helpers as H

SCRIPT = H.DRIVERS / "task_faults.py"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # the first test also runs the driver


@pytest.fixture(scope="module")
def observed(registry, rel_input, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("task_faults")
    env = H.child_env(registry, SPARK_SCORING_MASTER="local[2,2]", REL_INPUT=rel_input, REL_OUT=tmp)
    code, log = H.run([H.PYTHON, SCRIPT], env=env, log=tmp / "driver.log", timeout=1500)
    assert code == 0, log[-8000:]
    return H.result_line(log)


def test_first_attempt_failure_is_retried_with_identical_output(observed):
    none, raised = observed["score"]["none"], observed["score"]["raise"]
    assert observed["master"] == "local[2,2]"
    assert none["attempts"] == [0]
    assert raised["attempts"] == [1]  # every row came from the retry
    assert raised["rows"] == raised["distinct_keys"] == none["rows"] == len(H.PARTITIONS) * H.ROWS
    assert raised["same_predictions"]


def test_python_worker_killed_mid_task_is_retried_with_identical_output(observed):
    none, exited = observed["score"]["none"], observed["score"]["exit"]
    assert exited["attempts"] == [1]
    assert exited["rows"] == exited["distinct_keys"] == none["rows"]
    assert exited["same_predictions"]


def test_direct_scan_task_failures_are_retried_with_identical_output(observed):
    direct = observed["direct"]
    assert direct["none"]["attempts"] == [0] and direct["same_as_score"]
    for fault in ("raise", "exit"):
        got = direct[fault]
        assert got["attempts"] == [1], fault  # every row came from the retry
        assert got["rows"] == got["distinct_keys"] == direct["none"]["rows"] == len(H.PARTITIONS) * H.ROWS
        assert got["same_predictions"], fault


def test_job_whose_workers_die_on_first_attempt_completes_with_exact_rows(spark, observed, rel_reference):
    job = observed["job_exit_first_attempt"]
    parts = {"p00", "p05", "p11"}
    assert job["statuses"] == ["scored"] * 3
    assert job["rows_in"] == 3 * H.ROWS and job["rows_quarantined"] == 3 * H.BAD_PER_PARTITION
    got = H.rows(spark, job["output"])
    columns = sorted(spark.read.format("delta").load(job["output"]).columns)
    ds = [c for c in columns if c not in H.RUN_COLUMNS].index("ds")
    expected = [r for r in rel_reference["rows"] if r[ds] in parts]
    assert got == expected and H.duplicate_keys(spark, job["output"], ["customer_id"]) == 0
    H.report("task_faults", {
        "score_rows_per_scenario": observed["score"]["none"]["rows"],
        "score_attempts": {k: v["attempts"] for k, v in observed["score"].items()},
        "job_rows_compared": len(got), "duplicates_found": 0,
        "always_failing": {k: observed[k]["raised"] for k in ("job_raise_always", "job_exit_always")},
    })


@pytest.mark.parametrize("fault, words", [
    ("raise_always", "spark_scoring test fault (raise_always)"),
    ("exit_always", "Python worker exited unexpectedly"),
])
def test_task_failing_every_attempt_fails_the_job_clearly_and_leaves_the_table(observed, fault, words):
    entry = observed[f"job_{fault}"]
    # nothing was committed: exit 2 (see the README's exit codes), the table as it was
    assert entry["raised"] == "ScoringError" and entry["exit_code"] == 2
    message = entry["message"]
    assert "partition ds='p05' failed while scoring" in message
    assert words in message, message
    assert "Committed before the failure: nothing" in message
    assert entry["statuses"] == ["failed"]
    assert entry["version_unchanged"] and entry["rows_unchanged"]
