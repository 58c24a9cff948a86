"""``score(..., diagnostics=True)`` on a standalone cluster with fake GPUs.

Submitted by tests/reliability/test_rel_standalone_cluster.py with
``spark-submit --master spark://127.0.0.1:<port>`` and GPU scheduling confs
(2 GPUs per executor, 0.5 GPU per task). Argument: the input Delta table.

Every task of the scoring stage also runs a probe (``mapInPandas`` chained after
the scoring UDF, so the same task): it records the task's GPU addresses as Spark
gave them (``TaskContext.resources()``), the addresses and device our scoring
code reported in ``scoring_diagnostics``, the executor JVM it ran in, and when it
ran (it holds the task for 1 s so tasks overlap). Prints ``RESULT {json}``.
"""
from __future__ import annotations

import json
import os
import sys
import time


def _executor_jvm() -> int:
    """Python worker -> pyspark.daemon -> executor JVM (Linux /proc)."""
    def parent(pid: int) -> int:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])

    pid = os.getpid()
    for _ in range(4):
        pid = parent(pid)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if b"CoarseGrainedExecutorBackend" in fh.read():
                return pid
    return -1


def probe(batches):
    import pandas as pd
    from pyspark import TaskContext

    start = time.time()
    ctx = TaskContext.get()
    rows, diag_gpu, devices, diag_parts = 0, set(), set(), set()
    for b in batches:
        rows += len(b)
        diag_gpu.update(b["diag_gpu"].astype(str))
        devices.update(b["device"].astype(str))
        diag_parts.update(int(x) for x in b["diag_partition"])
    time.sleep(1.0)
    gpu = ctx.resources().get("gpu")
    yield pd.DataFrame([{
        "partition": ctx.partitionId(), "attempt": ctx.attemptNumber(),
        "task_gpu": ",".join(gpu.addresses) if gpu else "", "diag_gpu": ",".join(sorted(diag_gpu)),
        "devices": ",".join(sorted(devices)), "diag_partitions": ",".join(map(str, sorted(diag_parts))),
        "rows": rows, "executor": _executor_jvm(), "start": start, "end": time.time(),
    }])


def main() -> int:
    import pyspark.sql.functions as F

    from spark_scoring import score
    from spark_scoring.session import get_spark

    spark = get_spark()
    df = spark.read.format("delta").load(sys.argv[1]).repartition(16)
    scored = score(df, "models:/demo_churn@champion", on_null="null_prediction", diagnostics=True, lineage=False)
    flat = scored.select(
        "customer_id", F.col("scoring_diagnostics.gpu_addresses").alias("diag_gpu"),
        F.col("scoring_diagnostics.device").alias("device"),
        F.col("scoring_diagnostics.partition_id").alias("diag_partition"),
    )
    schema = ("partition int, attempt int, task_gpu string, diag_gpu string, devices string, "
              "diag_partitions string, rows long, executor long, start double, end double")
    tasks = [r.asDict() for r in flat.mapInPandas(probe, schema).collect()]
    conf = spark.sparkContext.getConf()
    print("RESULT " + json.dumps({
        "master": spark.sparkContext.master, "tasks": tasks,
        "task_gpu_amount": conf.get("spark.task.resource.gpu.amount"),
        "executor_gpu_amount": conf.get("spark.executor.resource.gpu.amount"),
    }), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
