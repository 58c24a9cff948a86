"""``input.mode: changes``: score only rows inserted or updated since the last run.

Runs on: the driver.

The audit table remembers the newest input version a ``changes`` job
processed. The next run reads the input's Change Data Feed from the version
after it up to the version pinned at start, keeps the newest change per key,
scores those rows and MERGEs them into the output by ``output.keys``, one
partition (and one idempotent commit) at a time. The first run, with nothing in
the audit table, scores the whole snapshot. Deleted input rows are not removed
from the output.
"""
from __future__ import annotations

import datetime as dt
import time

from . import audit as audit_mod
from .delta_io import partition_counts, read_changes

__all__ = ["run_changes"]

_CDF_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")


def _latest_per_key(changes, keys):
    import pyspark.sql.functions as F
    from pyspark.sql.window import Window

    w = Window.partitionBy(*[F.col(k) for k in keys]).orderBy(F.col("_commit_version").desc())
    latest = changes.withColumn("__rn", F.row_number().over(w)).where(F.col("__rn") == 1)
    return latest.drop("__rn", *[c for c in _CDF_COLUMNS if c in changes.columns])


def run_changes(run, t0: float):
    """Driver: the body of ``run_job`` for ``input.mode: changes``; returns a JobResult."""
    from .job import JobResult, PartitionResult, _partition_text, _spark_error_text
    from .errors import ScoringError

    cfg, spark, reporter = run.cfg, run.spark, run.reporter
    run.prepare(None, plan_units=False)
    last = audit_mod.last_input_version(spark, run.audit_table, run.job_key)
    if last is None:
        source = run.snapshot
        run.explicit = False
    elif last >= run.input_version:
        source = None
    else:
        changes = read_changes(spark, run.input_ref, last + 1, run.input_version)
        source = _latest_per_key(changes, list(cfg.output.keys))
    column = cfg.input.partition_by
    units = []
    if source is not None:
        if column is None:
            units = [(None, None, source.count())]
        else:
            units = sorted(
                ((v, _partition_text(v), n) for v, n in partition_counts(source, column).items()),
                key=lambda u: (u[1] is None, u[1] or ""),
            )
    reporter.plan(run, units, skipped=0)
    from .job import _start_tracking

    tracker = _start_tracking(run)
    results, failure = [], None
    with reporter.progress(len(units)) as advance:
        for value, text, _n in units:
            started_at = dt.datetime.now(dt.timezone.utc)
            try:
                res = run.score_unit(value, text, source=source)
            except ScoringError as exc:
                res, failure = PartitionResult(text, "failed", message=str(exc)), exc
            except Exception as exc:  # noqa: BLE001
                res = PartitionResult(text, "failed", message=f"{type(exc).__name__}: {exc}"[:4000])
                failure = ScoringError(_spark_error_text(exc, column, text))
            run.audit(res, started_at)
            if tracker is not None:
                tracker.partition(res, value)
            results.append(res)
            advance(res)
            if failure is not None:
                break
    if not units and last is not None and last < run.input_version:
        # changes existed but none were inserts/updates: remember we got this far
        run.audit(PartitionResult(None, "scored", message="no inserted or updated rows"),
                  dt.datetime.now(dt.timezone.utc))
    result = JobResult(
        run.run_id, run.job_key, tuple(p.model.uri for p in run.plans), run.input_ref.name,
        int(run.input_version), run.output_ref.name, run.audit_table, tuple(results),
        time.monotonic() - t0, cfg,
    )
    reporter.summary(result)
    if tracker is not None:
        tracker.finish(result, failed=failure is not None)
    if failure is not None:
        failure.job_result = result
        raise failure
    return result
