"""Count model loads per executor Python worker on a multi-executor cluster.

Run by tests/test_cluster.py in a child process (a SparkContext cannot be
restarted inside pytest). Reads:

- ``SPARK_SCORING_MASTER``: e.g. ``local-cluster[2,1,1024]`` (used by get_spark);
- ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``: the registry holding the demo models;
- ``LOAD_COUNTER_MODEL`` (default ``models:/demo_churn@champion``) and
  ``LOAD_COUNTER_SLICES`` (default 32).

Builds one scoring UDF per slice of the input (a separate ``score()`` call per
slice, all the same pinned version), unions the slices into one job, and
prints one JSON line: tasks, rows, per-pid task and load counts, and the
largest difference from ``mlflow.pyfunc`` predictions.
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections import defaultdict


def _executor_jvm(worker_pid: int) -> str | None:
    """The executor JVM above a Python worker: worker -> pyspark.daemon -> JVM (Linux /proc).

    local-cluster runs every executor on this host, so the driver can look.
    """
    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])

    try:
        jvm = parent(parent(worker_pid))
        with open(f"/proc/{jvm}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "CoarseGrainedExecutorBackend" not in cmd:
        return None
    marker = "--executor-id "
    return f"{jvm}/executor-{cmd.split(marker, 1)[1].split()[0]}" if marker in cmd else str(jvm)


def main() -> int:
    import mlflow
    import numpy as np
    from pyspark.sql import functions as F

    from spark_scoring import get_spark, load_model, score
    from spark_scoring.demo import FEATURES, demo_frame

    uri = os.environ.get("LOAD_COUNTER_MODEL", "models:/demo_churn@champion")
    slices = int(os.environ.get("LOAD_COUNTER_SLICES", "32"))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spark = get_spark(
        "load_counter",
        conf={
            "spark.executorEnv.PYTHONPATH": repo,
            "spark.python.worker.reuse": "true",
            "spark.sql.shuffle.partitions": "2",
            "spark.task.maxFailures": "1",
        },
    )
    master = spark.sparkContext.master
    model = load_model(uri)
    frame = demo_frame(partitions=("2026-11-25",), rows_per_partition=slices * 20, bad_rows=False, seed=3)
    sdf = spark.createDataFrame(frame).withColumn("slice", (F.col("customer_id") % slices).cast("int"))
    input_partitions = sdf.rdd.getNumPartitions()
    pieces = [
        # a fresh UDF per slice, built from the URI each time: same pinned version
        score(sdf.where(F.col("slice") == i), uri, diagnostics=True)
        for i in range(slices)
    ]
    union = functools.reduce(lambda a, b: a.unionByName(b), pieces)
    rows = union.select(
        "customer_id", "prediction", "model_version", "scoring_diagnostics.*"
    ).collect()

    per_pid = defaultdict(lambda: {"tasks": set(), "loads": set(), "hits": set()})
    for r in rows:
        p = per_pid[r.pid]
        p["tasks"].add((r.partition_id, r.attempt))
        p["loads"].add(r.model_loads)
        p["hits"].add(r.cache_hits)

    got = np.array([r.prediction for r in sorted(rows, key=lambda r: r.customer_id)], dtype=np.float64)
    ordered = frame.sort_values("customer_id")
    ref_model = mlflow.pyfunc.load_model(model.uri)
    if model.flavor == "pytorch":
        want = np.asarray(ref_model.predict(ordered[list(FEATURES)].astype(np.float32))).reshape(-1)
    else:
        want = np.asarray(ref_model.predict(ordered[list(FEATURES)])).reshape(-1)

    report = {
        "master": master,
        "model": model.uri,
        "versions": sorted({r.model_version for r in rows}),
        "input_partitions": input_partitions,
        "udfs": len(pieces),
        "rows": len(rows),
        "tasks": sum(len(p["tasks"]) for p in per_pid.values()),
        "driver_pid": os.getpid(),
        "pids": {
            str(pid): {
                "tasks": len(p["tasks"]),
                "max_model_loads": max(p["loads"]),
                "min_model_loads": min(p["loads"]),
                "cache_hits": max(p["hits"]),
                "executor": _executor_jvm(pid),
            }
            for pid, p in sorted(per_pid.items())
        },
        "max_abs_err": float(np.max(np.abs(got - want))) if len(got) else None,
    }
    print("LOAD_COUNTER " + json.dumps(report, sort_keys=True), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
