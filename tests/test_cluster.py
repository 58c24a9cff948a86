"""The per-worker model cache on ``local-cluster[2,1,1024]``: real separate executors.

A SparkContext cannot be restarted inside pytest, so the job runs in a child
process (``tests/cluster_scripts/load_counter.py``) with this interpreter,
pointed at the test registry through the environment. It builds 32 scoring
UDFs (one ``score()`` per slice of the input) over one pinned model version
and reports, per executor Python worker, how many tasks it ran and how many
times it loaded the model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "cluster_scripts", "load_counter.py")


def _spark_home(tmp_path) -> str:
    """A SPARK_HOME for the pip-installed pyspark, with its own ``work`` folder.

    local-cluster executors are launched from ``$SPARK_HOME`` (its ``bin`` and
    ``jars``) and write their logs under ``$SPARK_HOME/work``; linking the
    pyspark package's folders keeps those logs out of the virtualenv.
    """
    import pyspark

    pkg = os.path.dirname(pyspark.__file__)
    home = tmp_path / "spark_home"
    home.mkdir()
    for name in os.listdir(pkg):
        if name in ("bin", "sbin", "jars", "python", "conf", "data", "licenses", "examples", "__init__.py"):
            os.symlink(os.path.join(pkg, name), home / name)
    return str(home)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_load_per_executor_worker_across_32_udfs(registry, tmp_path):
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "MLFLOW_REGISTRY_URI": registry.tracking_uri,
        "SPARK_SCORING_MASTER": "local-cluster[2,1,1024]",
        "SPARK_HOME": _spark_home(tmp_path),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "LOAD_COUNTER_MODEL": "models:/demo_churn@champion",
        "LOAD_COUNTER_SLICES": "32",
    }
    for var in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, SCRIPT], cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=600
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOAD_COUNTER ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-3000:], proc.stderr[-6000:])
    report = json.loads(lines[-1][len("LOAD_COUNTER "):])
    print(json.dumps(report, indent=2, sort_keys=True))  # shown with -s / on failure

    assert report["master"] == "local-cluster[2,1,1024]"
    assert report["model"] == "models:/demo_churn/1" and report["versions"] == ["1"]
    assert report["udfs"] == 32 and report["rows"] == 640
    assert report["tasks"] >= 30
    pids = report["pids"]
    assert len(pids) >= 2, pids  # two executors, two Python workers at least
    assert str(report["driver_pid"]) not in pids
    executors = {v["executor"] for v in pids.values()}
    assert None not in executors and len(executors) >= 2, pids  # separate executor JVMs
    # every worker loaded the model exactly once, whatever UDF its tasks came from
    assert {p: v["max_model_loads"] for p, v in pids.items()} == {p: 1 for p in pids}
    assert all(v["min_model_loads"] == 1 for v in pids.values())
    assert sum(v["tasks"] for v in pids.values()) == report["tasks"]
    assert sum(v["cache_hits"] for v in pids.values()) >= report["tasks"] - len(pids)
    assert report["max_abs_err"] is not None and report["max_abs_err"] < 1e-6
