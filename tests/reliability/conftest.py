"""Fixtures of the reliability suite; see RELIABILITY.md for the scenarios.

- ``rel_input``: one 12-partition input Delta table (20 rows a partition, three
  of them unscoreable: null, NaN, infinite) shared by the fault tests.
- ``rel_reference``: the output and quarantine rows of one uninterrupted
  ``run_job`` over ``rel_input``: what every interrupted-then-rerun job must equal.
- Every process a test starts (drivers, clusters, servers) is killed with its
  whole process group after the test (servers: after their module), also on failure.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reliability_helpers as H  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _kill_servers_at_session_end():
    yield
    H.stop_all(servers=True)


@pytest.fixture(autouse=True)
def _kill_test_processes():
    yield
    H.stop_all()


@pytest.fixture(scope="session")
def rel_input(spark, registry, tmp_path_factory):
    from spark_scoring.demo import build_customers_table, demo_frame

    root = tmp_path_factory.mktemp("rel_input")
    return build_customers_table(spark, str(root / "customers"), demo_frame(H.PARTITIONS, H.ROWS, seed=11))


@pytest.fixture(scope="session")
def rel_reference(spark, registry, rel_input, tmp_path_factory):
    """One uninterrupted run over ``rel_input``: its output and quarantine rows."""
    from spark_scoring import run_job
    from spark_scoring.ops.progress import Reporter

    out = str(tmp_path_factory.mktemp("rel_reference") / "scores")
    result = run_job(H.job_config(rel_input, out), spark=spark, reporter=Reporter(quiet=True))
    assert not result.failed and result.rows_in == len(H.PARTITIONS) * H.ROWS
    return {
        "output": out,
        "rows": H.rows(spark, out),
        "quarantine": H.rows(spark, out + "_quarantine"),
        "rows_scored": result.rows_scored,
        "rows_quarantined": result.rows_quarantined,
    }
