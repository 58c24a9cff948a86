"""Task and Python-worker failures under ``local[2,2]`` (two tries per task).

Run by tests/reliability/test_rel_task_faults.py in a child process (the
pytest session's master cannot change). Environment: ``SPARK_SCORING_MASTER``
(``local[2,2]``), ``MLFLOW_*`` (the test registry), ``REL_INPUT`` (the 12-partition
input table), ``REL_OUT`` (a folder for output tables). Prints one
``RESULT {json}`` line with what each scenario observed.

The faults come from the test-only local property
``spark_scoring.executor.faults.FAULT_PROPERTY``: ``raise`` (attempt 0 of every scoring
task raises), ``exit`` (attempt 0 kills its Python worker with ``os._exit``),
``raise_always`` / ``exit_always`` (every attempt: the job must fail clearly).
"""
from __future__ import annotations

import json
import os
import sys

MODEL = "models:/demo_churn@champion"


def _close(a: dict, b: dict, tol: float = 1e-6) -> bool:
    """Same keys, same nulls, values within ``tol`` (model batches differ between paths)."""
    if a.keys() != b.keys():
        return False
    return all((a[k] is None) == (b[k] is None) and (a[k] is None or abs(a[k] - b[k]) <= tol) for k in a)


def main() -> int:
    import pyspark.sql.functions as F

    from spark_scoring import score
    from spark_scoring import score_table_direct
    from spark_scoring.errors import ScoringError
    from spark_scoring import run_job
    from spark_scoring.ops.progress import Reporter
    from spark_scoring.session import get_spark
    from spark_scoring.executor.faults import FAULT_PROPERTY as TEST_FAULT_PROPERTY

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import reliability_helpers as H

    spark = get_spark(conf={"spark.sql.shuffle.partitions": "2"})
    sc = spark.sparkContext
    inp, out_dir = os.environ["REL_INPUT"], os.environ["REL_OUT"]
    result = {"master": sc.master, "max_failures": sc.getConf().get("spark.task.maxFailures", None)}

    def scored(fault):
        sc.setLocalProperty(TEST_FAULT_PROPERTY, fault)
        try:
            df = spark.read.format("delta").load(inp)
            rows = (score(df, MODEL, on_null="null_prediction", diagnostics=True, lineage=False)
                    .select("customer_id", "prediction", "scoring_diagnostics.attempt",
                            "scoring_diagnostics.partition_id").collect())
        finally:
            sc.setLocalProperty(TEST_FAULT_PROPERTY, None)
        return {
            "rows": len(rows),
            "distinct_keys": len({r["customer_id"] for r in rows}),
            "attempts": sorted({r["attempt"] for r in rows}),
            "tasks": len({r["partition_id"] for r in rows}),
            "predictions": {str(r["customer_id"]): r["prediction"] for r in rows},
        }

    base = scored(None)
    result["score"] = {}
    for fault in ("raise", "exit"):
        got = scored(fault)
        result["score"][fault] = {
            **{k: v for k, v in got.items() if k != "predictions"},
            "same_predictions": got["predictions"] == base["predictions"],
        }
    result["score"]["none"] = {k: v for k, v in base.items() if k != "predictions"}

    # the direct Arrow scan: attempt 0 of every scan task fails the same two ways
    def scanned(fault):
        sc.setLocalProperty(TEST_FAULT_PROPERTY, fault)
        try:
            rows = (score_table_direct(spark, inp, MODEL, keep_columns=["customer_id"], on_null="null_prediction",
                                       diagnostics=True, lineage=False)
                    .select("customer_id", "prediction", "scoring_diagnostics.attempt").collect())
        finally:
            sc.setLocalProperty(TEST_FAULT_PROPERTY, None)
        return {"rows": len(rows), "distinct_keys": len({r["customer_id"] for r in rows}),
                "attempts": sorted({r["attempt"] for r in rows}),
                "predictions": {str(r["customer_id"]): r["prediction"] for r in rows}}

    direct_base = scanned(None)
    result["direct"] = {"none": {k: v for k, v in direct_base.items() if k != "predictions"},
                        "same_as_score": _close(direct_base["predictions"], base["predictions"])}
    for fault in ("raise", "exit"):
        got = scanned(fault)
        result["direct"][fault] = {**{k: v for k, v in got.items() if k != "predictions"},
                                   "same_predictions": got["predictions"] == direct_base["predictions"]}

    # run_job: attempt 0 of every scoring task loses its Python worker
    out = os.path.join(out_dir, "scores")
    cfg = H.job_config(inp, out)
    parts = ["p00", "p05", "p11"]
    sc.setLocalProperty(TEST_FAULT_PROPERTY, "exit")
    try:
        res = run_job(cfg, partitions=parts, spark=spark, reporter=Reporter(quiet=True))
        result["job_exit_first_attempt"] = {
            "statuses": [p.status for p in res.partitions], "rows_in": res.rows_in,
            "rows_scored": res.rows_scored, "rows_quarantined": res.rows_quarantined, "output": out,
        }
    finally:
        sc.setLocalProperty(TEST_FAULT_PROPERTY, None)

    # every attempt fails: the job must stop with a clear error and leave the table as it was
    for fault in ("raise_always", "exit_always"):
        before_version = H.latest_version(spark, out)
        before_rows = H.rows(spark, out)
        sc.setLocalProperty(TEST_FAULT_PROPERTY, fault)
        entry = {}
        try:
            run_job({**cfg, "force": True}, partitions=["p05"], spark=spark, reporter=Reporter(quiet=True))
            entry["raised"] = None
        except ScoringError as exc:
            entry.update(raised=type(exc).__name__, exit_code=exc.exit_code, message=str(exc)[:3000],
                         statuses=[p.status for p in exc.job_result.partitions])
        finally:
            sc.setLocalProperty(TEST_FAULT_PROPERTY, None)
        entry["version_unchanged"] = H.latest_version(spark, out) == before_version
        entry["rows_unchanged"] = H.rows(spark, out) == before_rows
        result[f"job_{fault}"] = entry

    print("RESULT " + json.dumps(result, default=str), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
