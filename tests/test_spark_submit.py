"""``spark-submit jobs/score_table.py`` on ``local-cluster[2,1,1024]``: two executor
JVMs with their own Python workers, Delta from ``--packages``, the model shipped
from the driver (executors never see the registry). Slow: minutes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyspark
import pytest
import yaml

from spark_scoring.demo import FEATURES, build_customers_table, demo_frame

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SPARK_HOME = os.path.dirname(pyspark.__file__)
SPARK_SUBMIT = os.path.join(SPARK_HOME, "bin", "spark-submit")
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"
PARTS = ("2026-11-26", "2026-11-27")


def spark_submit(registry, cwd, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    env.update(
        MLFLOW_TRACKING_URI=registry.tracking_uri,
        MLFLOW_REGISTRY_URI=registry.tracking_uri,
        SPARK_HOME=SPARK_HOME,
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_SCORING_LOG_LEVEL="WARN",
    )
    cmd = [
        SPARK_SUBMIT,
        "--master", "local-cluster[2,1,1024]",
        "--packages", DELTA_PACKAGE,
        "--conf", f"spark.pyspark.python={sys.executable}",
        "--conf", f"spark.pyspark.driver.python={sys.executable}",
        "--conf", "spark.ui.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=2",
        "--driver-memory", "1g",
        str(REPO / "jobs" / "score_table.py"),
        *args,
    ]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    # spark-submit merges the Python driver's stderr into its stdout
    proc.output = proc.stdout + proc.stderr
    proc.tail = f"exit code {proc.returncode}\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    return proc


def write_config(tmp_path, cfg: dict) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


def test_spark_submit_local_cluster_scores_the_table(spark, registry, tmp_path):
    inp = str(tmp_path / "customers")
    frame = demo_frame(PARTS, 15)
    build_customers_table(spark, inp, frame)
    out = str(tmp_path / "scores")
    config = write_config(tmp_path, {
        "model": "models:/demo_churn@champion",
        "input": {"table": inp, "partition_by": "ds"},
        "output": {"table": out, "mode": "merge", "keys": ["customer_id"],
                   "prediction_column": "churn_probability"},
        "bad_rows": "quarantine",
        "quarantine_table": out + "_quarantine",
        "tracking": {"enabled": False},
        "drift": {"enabled": False},
    })
    proc = spark_submit(registry, tmp_path, "--config", config)
    assert proc.returncode == 0, proc.tail
    assert "rows in 30 = scored 24 + quarantined 6" in proc.output, proc.tail
    assert "Shutdown hooks cannot be modified" not in proc.output, proc.tail  # the script stops its session

    import mlflow

    output = spark.read.format("delta").load(out).toPandas().sort_values("customer_id")
    inputs = spark.read.format("delta").load(inp).toPandas()
    good = inputs[np.isfinite(inputs[list(FEATURES)].astype(float).to_numpy()).all(axis=1)]
    good = good.sort_values("customer_id")
    assert list(output["customer_id"]) == list(good["customer_id"])
    expected = mlflow.pyfunc.load_model("models:/demo_churn/1").predict(good[list(FEATURES)].astype(np.float32))
    np.testing.assert_allclose(output["churn_probability"], np.asarray(expected).ravel(), rtol=1e-5, atol=1e-7)
    assert set(output["model_version"]) == {"1"} and set(output["model_name"]) == {"demo_churn"}
    assert output["scoring_run_id"].nunique() == 1
    assert spark.read.format("delta").load(out + "_quarantine").count() == 6
    audit = spark.read.format("delta").load(out + "_scoring_runs").collect()
    assert sorted((r.partition, r.status, r.rows_in, r.rows_scored, r.rows_quarantined) for r in audit) == [
        (p, "scored", 15, 12, 3) for p in PARTS]


def test_spark_submit_invalid_config_exits_2(registry, tmp_path):
    config = write_config(tmp_path, {
        "model": "models:/demo_churn@champion",
        "input": {"table": str(tmp_path / "in"), "partition_by": "ds"},
        "output": {"table": str(tmp_path / "out"), "mode": "upsert"},
    })
    proc = spark_submit(registry, tmp_path, "--config", config)
    assert proc.returncode == 2, proc.tail
    assert "ConfigError" in proc.output and "output.mode" in proc.output and "upsert" in proc.output, proc.tail
    assert not (tmp_path / "out").exists()
