"""``input.mode: changes``: score only rows inserted or updated since the last run.

Runs on: the driver.

The audit table remembers the newest input version a ``changes`` job
processed: a run that committed every changed partition writes a ``checkpoint``
row (a run that failed or was killed half way writes none, so the next run
starts from the previous checkpoint again, and the partitions already committed
are found by their Delta transaction ids). The next run reads the input's Change
Data Feed from the version after the checkpoint up to the version pinned at
start, keeps the newest change per key, scores those rows and MERGEs them into
the output by ``output.keys``, one partition (and one idempotent commit) at a
time. The first run, with no checkpoint, scores the whole snapshot. Quarantined
rows are appended to the quarantine table. Deleted input rows are not removed
from the output.
"""
from __future__ import annotations

import datetime as dt
import re
import time

from . import audit as audit_mod
from .delta_io import partition_counts, read_changes

__all__ = ["run_changes"]

_CDF_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
# change files vacuumed (or log files cleaned up) after the scan was planned
_GONE = re.compile(r"DELTA_CHANGE_DATA_FILE_NOT_FOUND|DELTA_LOG_FILE_NOT_FOUND|FileNotFoundException"
                   r"|VersionNotFound|DELTA_VERSION_NOT_FOUND")


def _count_units(source, column, run, start):
    """[(value, text, rows)] of the changed rows; vacuumed change files raise ChangeFeedError here."""
    from .errors import ChangeFeedError
    from .job import _partition_text

    try:
        if column is None:
            return [(None, None, source.count())]
        counts = partition_counts(source, column)
    except Exception as exc:  # noqa: BLE001 - re-raised unless Delta lost the change files
        if start is None or not _GONE.search(str(exc)):
            raise
        raise ChangeFeedError(
            f"cannot read changes of {run.input_ref.name} from version {start}: the change data files "
            "are past retention (vacuumed or log cleaned up). Fix: run a full `input.mode: snapshot` "
            "job once (or delete this job's checkpoint rows from the audit table so the next "
            "`changes` run rescores the snapshot), and keep delta.deletedFileRetentionDuration / "
            "delta.logRetentionDuration longer than the time between runs."
        ) from exc
    return sorted(((v, _partition_text(v), n) for v, n in counts.items()),
                  key=lambda u: (u[1] is None, u[1] or ""))


def _latest_per_key(changes, keys):
    import pyspark.sql.functions as F
    from pyspark.sql.window import Window

    w = Window.partitionBy(*[F.col(k) for k in keys]).orderBy(F.col("_commit_version").desc())
    latest = changes.withColumn("__rn", F.row_number().over(w)).where(F.col("__rn") == 1)
    return latest.drop("__rn", *[c for c in _CDF_COLUMNS if c in changes.columns])


def run_changes(run, t0: float, partitions=None):
    """Driver: the body of ``run_job`` for ``input.mode: changes``; returns a JobResult."""
    from .errors import ConfigError, ScoringError
    from .job import JobResult, PartitionResult, _spark_error_text

    if partitions:
        raise ConfigError(
            f"--partition / partitions={list(partitions)!r} cannot be used with input.mode: changes: the "
            "Change Data Feed decides which rows are scored. Fix: drop the partitions, or run with "
            "--set input.mode=snapshot to score those partitions."
        )

    cfg, spark, reporter = run.cfg, run.spark, run.reporter
    run.prepare(None, plan_units=False)
    last = audit_mod.last_input_version(spark, run.audit_table, run.job_key)
    start = None
    if last is None:
        source = run.snapshot
        run.explicit = False
    elif last >= run.input_version:
        source = None
    else:
        start = last + 1
        changes = read_changes(spark, run.input_ref, start, run.input_version)
        source = _latest_per_key(changes, list(cfg.output.keys))
    column = cfg.input.partition_by
    units = [] if source is None else _count_units(source, column, run, start)
    from .job import _start_tracking

    tracker = _start_tracking(run)  # first: the plan prints the run id it sets
    reporter.plan(run, units, skipped=0)
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
                failure.__cause__ = exc
            run.audit(res, started_at)
            if tracker is not None:
                drift = tracker.partition(res, value)  # DriftError under on_drift: fail
                failure = failure or drift
            results.append(res)
            advance(res)
            if failure is not None:
                break
    if failure is None and (last is None or last < run.input_version):
        # every change up to the pinned version is committed: the next run starts after it
        run.audit(PartitionResult(None, "checkpoint", message=f"{len(units)} changed partition(s) scored"),
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
        committed = [p.partition for p in results if p.status in ("scored", "recovered")]
        failure.args = (f"{failure.args[0] if failure.args else failure}\nCommitted before the failure: "
                        f"{committed or 'nothing'} (run {run.run_id}); the next run starts again "
                        "from the last checkpoint.",)
        failure.job_result = result
        failure.exit_code = 1 if committed else 2  # 2: no output partition was committed
        raise failure
    return result
