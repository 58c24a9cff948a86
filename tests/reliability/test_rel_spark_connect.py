"""The whole path over Spark Connect: a Connect server on loopback (Delta on the
server, no Delta Connect plugin), clients in child processes with ``SPARK_REMOTE``.

- ``score()`` and ``run_job()`` in ``overwrite_partitions`` and ``merge`` mode,
  rerun (skipped) and forced rescoring (a second replaceWhere / a real MERGE),
  through ``drivers/connect_client.py``: no SparkContext, models shipped by path.
- The console script ``spark-scoring run`` with ``SPARK_REMOTE`` set.

Results are compared with an uninterrupted classic run (``rel_reference``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

import reliability_helpers as H


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("connect")
    port = H.free_port()
    cmd = [
        os.path.join(H.spark_home(), "bin", "spark-submit"),
        "--class", "org.apache.spark.sql.connect.service.SparkConnectServer",
        "--master", "local[2]", "--packages", H.DELTA_PACKAGE,
        "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf", f"spark.connect.grpc.binding.port={port}",
        "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
        "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--conf", f"spark.pyspark.python={H.PYTHON}", "--conf", "spark.ui.enabled=false",
        "--conf", "spark.sql.shuffle.partitions=2", "--conf", "spark.sql.session.timeZone=UTC",
        "--conf", "spark.driver.bindAddress=127.0.0.1", "--conf", "spark.driver.host=127.0.0.1",
        "spark-internal",
    ]
    server = H.start(cmd, env=H.child_env(None), log=tmp / "server.log", server=True)
    try:
        H.wait_for(lambda: H.port_open(port), timeout=600, what="Spark Connect server", proc=server)
        yield f"sc://127.0.0.1:{port}"
    finally:
        H.stop(server)


def _ds_rows(spark, path, parts):
    cols = sorted(c for c in spark.read.format("delta").load(path).columns if c not in H.RUN_COLUMNS)
    ds = cols.index("ds")
    return lambda rows: [r for r in rows if r[ds] in parts]


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_score_and_run_job_over_spark_connect(connect_server, spark, registry, rel_input, rel_reference, tmp_path):
    env = H.child_env(registry, SPARK_REMOTE=connect_server, REL_INPUT=rel_input, REL_OUT=tmp_path)
    code, log = H.run([H.PYTHON, H.DRIVERS / "connect_client.py"], env=env, log=tmp_path / "client.log",
                      timeout=2000)
    assert code == 0, log[-8000:]
    got = H.result_line(log)
    assert got["session"].startswith("pyspark.sql.connect") and not got["has_jvm"]

    scored = got["score"]
    assert scored["rows"] == len(H.PARTITIONS) * H.ROWS and scored["devices"] == ["cpu"]
    assert scored["model_versions"] == ["1"]
    cols = sorted(c for c in spark.read.format("delta").load(rel_reference["output"]).columns
                  if c not in H.RUN_COLUMNS)
    key, pred = cols.index("customer_id"), cols.index(H.PRED)
    expected = {str(r[key]): r[pred] for r in rel_reference["rows"]}
    # Same numbers as the classic session's job, every good row. Not bitwise: score() feeds the
    # model a task's rows (several partitions) per call, the job one partition per call, and a
    # float32 torch matmul rounds differently with the batch size (seen: up to 7.5e-9).
    assert scored["predictions"].keys() == expected.keys()
    max_diff = max(abs(scored["predictions"][k] - v) for k, v in expected.items())
    assert max_diff < 1e-6, max_diff

    for mode, job in got["jobs"].items():
        assert job["first"] == [[p, "scored", H.ROWS, H.ROWS - H.BAD_PER_PARTITION, H.BAD_PER_PARTITION]
                                for p in ("p00", "p07")], (mode, job)
        assert job["again"] == ["skipped", "skipped"] and job["forced"] == ["scored"], (mode, job)
        assert job["rows"] == 2 * (H.ROWS - H.BAD_PER_PARTITION)
        assert H.duplicate_keys(spark, job["output"], ["customer_id"]) == 0
        pick = _ds_rows(spark, job["output"], {"p00", "p07"})
        assert H.rows(spark, job["output"]) == pick(rel_reference["rows"]), mode
        if mode == "merge":
            assert "MERGE" in job["history_ops"], job["history_ops"]
    H.report("spark_connect", {
        "score_rows": scored["rows"], "predictions_compared": len(expected), "max_abs_diff": max_diff,
        "jobs": {m: {"first": j["first"], "again": j["again"], "forced": j["forced"], "ops": j["history_ops"]}
                 for m, j in got["jobs"].items()},
    })


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_console_script_over_spark_connect(connect_server, spark, registry, rel_input, rel_reference, tmp_path):
    out = str(tmp_path / "scores")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(H.job_config(rel_input, out)))
    env = H.child_env(registry, SPARK_REMOTE=connect_server)
    code, log = H.run([Path(H.PYTHON).parent / "spark-scoring", "run", "--config", config, "--partition", "p03"],
                      env=env, log=tmp_path / "cli.log", timeout=1000)
    assert code == 0, log[-6000:]
    assert H.rows(spark, out) == _ds_rows(spark, out, {"p03"})(rel_reference["rows"])
