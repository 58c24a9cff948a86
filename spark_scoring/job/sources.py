"""Where a run's units come from: the pinned snapshot, or the input's Change Data Feed.

Runs on: the driver. Both are sources for the one runner loop
(:mod:`.runner`), so the audit guard, the hooks and the failure accounting
exist once.

- :class:`SnapshotSource`: the partitions asked for, else every input
  partition these model versions have not scored yet (from the audit table).
- :class:`ChangesSource` (``input.mode: changes``): the audit table remembers
  the newest input version a changes job processed (a ``checkpoint`` row,
  written only when every changed partition committed). The next run reads
  the Change Data Feed from the version after it to the pinned version, keeps
  the newest change per key, and scores those rows partition by partition
  (MERGE by ``output.keys``). The first run scores the whole snapshot.
  Deleted input rows are not removed from the output.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

from ..delta.changes import read_changes
from ..delta.tables import partition_counts
from ..errors import ChangeFeedError, ConfigError
from . import audit
from .plan import JobPlan
from .results import PartitionResult, partition_text
from .stages import RunContext, Unit

__all__ = ["SnapshotSource", "ChangesSource", "source_for", "input_partition_counts"]

_CDF_COLUMNS = ("_change_type", "_commit_version", "_commit_timestamp")
# change files vacuumed (or log files cleaned up) after the scan was planned
_GONE = re.compile(r"DELTA_CHANGE_DATA_FILE_NOT_FOUND|DELTA_LOG_FILE_NOT_FOUND|FileNotFoundException"
                   r"|VersionNotFound|DELTA_VERSION_NOT_FOUND")


def input_partition_counts(plan: JobPlan) -> dict:
    """``{partition value: rows}`` of the pinned input snapshot: from its Delta log where it can
    (no Spark job), else one Spark aggregation."""
    column = plan.cfg.input.partition_by
    counts = _counts_from_the_log(plan, column)
    return counts if counts is not None else partition_counts(plan.snapshot, column)


def _counts_from_the_log(plan: JobPlan, column: str) -> dict | None:
    """``{partition value: rows}`` of a path-addressed Delta input from its log, no Spark job
    (:func:`~spark_scoring.engine.scan_log.partition_row_counts`); None: count with Spark."""
    from ..delta.tables import is_connect
    from ..engine.scan_log import partition_row_counts

    if not plan.input_ref.is_path or is_connect(plan.spark):
        return None
    field = next((f for f in plan.snapshot.schema.fields if f.name == column), None)
    if field is None:
        return None
    return partition_row_counts(plan.input_ref.location(plan.spark), int(plan.input_version), column,
                                field.dataType.simpleString())


def _sorted(units: list[Unit]) -> list[Unit]:
    return sorted(units, key=lambda u: (u.text is None, u.text or ""))


class SnapshotSource:
    """The pinned snapshot's partitions (or the whole table)."""

    note = ""

    def __init__(self, plan: JobPlan, requested: Sequence[str] | None):
        cfg = plan.cfg
        self.plan = plan
        self.frame = plan.snapshot
        self.explicit = bool(requested or cfg.input.partitions)
        column = cfg.input.partition_by
        if column is None:
            self.units = [Unit(None, None, plan.snapshot.count())]
            return
        counts = input_partition_counts(plan)
        by_text = {partition_text(v): (v, n) for v, n in counts.items()}
        wanted = list(requested) if requested else list(cfg.input.partitions or [])
        if wanted:
            unknown = [w for w in wanted if w not in by_text]
            if unknown:
                have = sorted((t for t in by_text if t is not None), reverse=True)[:10]
                raise ConfigError(
                    f"partition(s) {unknown} not found in {cfg.input.table!r} (version "
                    f"{plan.input_version}) column {column!r}. Newest partitions there: {have}. "
                    "Fix: check the value, or wait until the input partition has landed."
                )
            self.units = [Unit(by_text[w][0], w, by_text[w][1]) for w in wanted]
        else:
            self.units = _sorted([Unit(v, t, n) for t, (v, n) in by_text.items()])

    def split(self, ctx: RunContext) -> tuple[list[Unit], list[PartitionResult]]:
        """(units to score, results of the ones already scored by these model versions)."""
        done = audit.scored_partitions(self.plan.spark, self.plan.audit_table, self.plan.job_key)
        todo, skipped = [], []
        for unit in self.units:
            if self._already_done(done, unit.text):
                skipped.append(PartitionResult(unit.text, "skipped", unit.rows,
                                               message="already scored by this model version"))
            else:
                todo.append(unit)
        return todo, skipped

    def _already_done(self, done: Mapping[str | None, int], text: str | None) -> bool:
        if self.plan.cfg.force or text not in done:
            return False
        if not self.explicit:
            return True  # default plan: not yet scored by this model version
        return done[text] >= self.plan.input_version

    def finish(self, ctx: RunContext, results: list[PartitionResult], failed: bool) -> list[PartitionResult]:
        """Extra audit rows at the end of the run: none for a snapshot."""
        return []

    def failure_note(self) -> str:
        return ""


class ChangesSource:
    """The rows the Change Data Feed inserted or updated since the last checkpoint, newest per key."""

    explicit = False
    per_unit = True  # one MERGE per partition: a failure keeps the changes of the others

    def __init__(self, plan: JobPlan, requested: Sequence[str] | None):
        if requested:
            raise ConfigError(
                f"--partition / partitions={list(requested)!r} cannot be used with input.mode: changes: the "
                "Change Data Feed decides which rows are scored. Fix: drop the partitions, or run with "
                "--set input.mode=snapshot to score those partitions."
            )
        self.plan = plan
        self.last = audit.last_input_version(plan.spark, plan.audit_table, plan.job_key)
        self.start = None
        if self.last is None:
            self.frame = plan.snapshot
        elif self.last >= plan.input_version:
            self.frame = None
        else:
            self.start = self.last + 1
            changes = read_changes(plan.spark, plan.input_ref, self.start, plan.input_version)
            self.frame = _latest_per_key(changes, list(plan.cfg.output.keys))
        self.units = [] if self.frame is None else self._count_units()

    def _count_units(self) -> list[Unit]:
        """The changed rows' units; vacuumed change files raise ChangeFeedError here."""
        plan, column = self.plan, self.plan.cfg.input.partition_by
        try:
            if column is None:
                return [Unit(None, None, self.frame.count())]
            counts = partition_counts(self.frame, column)
        except Exception as exc:  # noqa: BLE001 - re-raised unless Delta lost the change files
            if self.start is None or not _GONE.search(str(exc)):
                raise
            raise ChangeFeedError(
                f"cannot read changes of {plan.input_ref.name} from version {self.start}: the change data files "
                "are past retention (vacuumed or log cleaned up). Fix: run a full `input.mode: snapshot` "
                "job once (or delete this job's checkpoint rows from the audit table so the next "
                "`changes` run rescores the snapshot), and keep delta.deletedFileRetentionDuration / "
                "delta.logRetentionDuration longer than the time between runs."
            ) from exc
        return _sorted([Unit(v, partition_text(v), n) for v, n in counts.items()])

    def split(self, ctx: RunContext) -> tuple[list[Unit], list[PartitionResult]]:
        return list(self.units), []

    def finish(self, ctx: RunContext, results: list[PartitionResult], failed: bool) -> list[PartitionResult]:
        """A ``checkpoint`` audit row once every change up to the pinned version is committed."""
        if failed or (self.last is not None and self.last >= self.plan.input_version):
            return []
        return [PartitionResult(None, "checkpoint", message=f"{len(self.units)} changed partition(s) scored")]

    def failure_note(self) -> str:
        return "; the next run starts again from the last checkpoint"


def _latest_per_key(changes, keys):
    import pyspark.sql.functions as F
    from pyspark.sql.window import Window

    w = Window.partitionBy(*[F.col(k) for k in keys]).orderBy(F.col("_commit_version").desc())
    latest = changes.withColumn("__rn", F.row_number().over(w)).where(F.col("__rn") == 1)
    return latest.drop("__rn", *[c for c in _CDF_COLUMNS if c in changes.columns])


def source_for(plan: JobPlan, requested: Sequence[str] | None):
    """The source of ``plan``'s units (``input.mode``)."""
    return ChangesSource(plan, requested) if plan.cfg.input.mode == "changes" else SnapshotSource(plan, requested)

