"""A Spark Connect client: ``score()`` and ``run_job()`` through ``sc://`` only.

Run by tests/reliability/test_rel_spark_connect.py with ``SPARK_REMOTE`` set,
so ``get_spark()`` returns a Connect session (no JVM in this process, no
SparkContext: models are shipped by path). Environment: ``REL_INPUT`` (the
12-partition input table), ``REL_OUT`` (a folder for outputs), ``MLFLOW_*``.
Prints ``RESULT {json}``.
"""
from __future__ import annotations

import json
import os
import sys


def main() -> int:
    import pyspark.sql.functions as F

    from spark_scoring import score
    from spark_scoring import run_job
    from spark_scoring.ops.progress import Reporter
    from spark_scoring.session import get_spark

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import reliability_helpers as H

    spark = get_spark()
    inp, out_dir = os.environ["REL_INPUT"], os.environ["REL_OUT"]
    result = {"session": type(spark).__module__, "has_jvm": "py4j" in sys.modules and hasattr(spark, "_jsc")}

    df = spark.read.format("delta").load(inp)
    rows = (score(df, H.MODEL, on_null="null_prediction", diagnostics=True)
            .select("customer_id", "prediction", "model_version", "scoring_diagnostics.device").collect())
    result["score"] = {
        "rows": len(rows), "devices": sorted({r["device"] for r in rows}),
        "model_versions": sorted({r["model_version"] for r in rows}),
        "predictions": {str(r["customer_id"]): r["prediction"] for r in rows if r["prediction"] is not None},
    }

    quiet = Reporter(quiet=True)
    jobs = {}
    for mode in ("overwrite_partitions", "merge"):
        out = os.path.join(out_dir, f"scores_{mode}")
        output = {"mode": mode, "keys": ["customer_id"]} if mode == "merge" else {"mode": mode}
        cfg = H.job_config(inp, out, output=output)
        first = run_job(cfg, partitions=["p00", "p07"], spark=spark, reporter=quiet)
        again = run_job(cfg, partitions=["p00", "p07"], spark=spark, reporter=quiet)
        forced = run_job({**cfg, "force": True}, partitions=["p07"], spark=spark, reporter=quiet)
        jobs[mode] = {
            "output": out,
            "first": [(p.partition, p.status, p.rows_in, p.rows_scored, p.rows_quarantined) for p in first.partitions],
            "again": [p.status for p in again.partitions],
            "forced": [p.status for p in forced.partitions],
            "forced_run": forced.run_id,
            "rows": spark.read.format("delta").load(out).count(),
            "history_ops": [r["operation"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{out}`").collect()],
        }
    result["jobs"] = jobs
    print("RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
