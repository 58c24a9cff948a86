"""The stages one unit (a partition, or the whole table) goes through, each a small function.

Runs on: the driver (each stage starts Spark jobs or Delta commits).

:func:`score_group` runs them in order: **recover** (the unit's commit already
exists: report it, score nothing), **count** (rows and bad rows in one pass;
skipped when the group takes the direct scan and its files' Delta statistics
prove the features clean: the scoring pass then counts, see :func:`_single_pass`),
**gate** (``bad_rows: fail`` stops before any write), **quarantine** (bad rows,
and stale quarantine rows of a clean rescore, to the quarantine table),
**score** (the direct Arrow scan for a clean partition that can take it, else
the Arrow UDF), **commit** (one idempotent Delta commit), **reconcile** (rows
in = scored + quarantined against the commit's own metrics). The runner then
writes the audit row.

Restart: a unit's transaction id is derived from the job and the unit, its
version is the input's Delta version, so a run killed after a commit but before
its audit row finds the commit on rerun (``recovered``) instead of scoring again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from ..delta.sql import partitions_predicate, quote_identifier
from ..delta.writes import write_partition
from ..engine.lineage import lineage_columns
from ..errors import BadRowsError, ReconciliationError, WriteConflictError
from ..session import arrow_batch_rows, set_job_description
from .plan import JobPlan, digest
from .quality import bad_condition, count_rows, count_rows_by, reason_column
from .results import PartitionResult, partition_text, rows_written

__all__ = ["Unit", "RunContext", "History", "score_group", "committed_from_history", "direct_blocker"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One unit of work: a partition value (None: the whole table), its text and planned input rows."""

    value: Any
    text: str | None
    rows: int


class History:
    """What earlier runs of this job committed, read from the output's Delta history once per run.

    ``by_unit``: ``{partition text: (input version, commit info, the unit's counts)}``, newest
    commit first; a group commit covers each partition it lists. Re-read on a miss
    (:meth:`refresh`): a unit committed by a run that died before its audit row is found
    without scoring it again. Delta's own ``txnAppId`` check backs this up.
    """

    def __init__(self, plan: JobPlan):
        self.plan = plan
        self.by_unit: dict[str | None, tuple[int, dict, dict]] = {}
        self.refresh()

    def refresh(self) -> None:
        plan = self.plan
        self.by_unit = {}
        if not plan.output_ref.exists(plan.spark):
            return
        for entry in plan.output_ref.history(plan.spark):  # newest first
            try:
                meta = json.loads(entry.get("userMetadata") or "{}")
            except ValueError:
                continue
            if not isinstance(meta, dict) or meta.get("job_key") != plan.job_key or not meta.get("txn_app_id"):
                continue
            info = {**meta, "version": entry.get("version"), "metrics": entry.get("operationMetrics")}
            units = meta.get("partitions") or {meta.get("partition"): {
                k: meta.get(k) for k in ("rows_in", "rows_scored", "rows_quarantined") if k in meta}}
            for text, counts in units.items():
                self.by_unit.setdefault(text, (int(meta.get("input_version", -1)), info, counts or {}))


def committed_from_history(plan: JobPlan) -> History:
    return History(plan)


@dataclass(frozen=True)
class RunContext:
    """The plan, the run id settled once, and what the source and the history said before the loop."""

    plan: JobPlan
    run_id: str
    committed: History = field(default=None, compare=False)
    explicit: bool = False  # partitions were asked for (a rerun compares input versions)
    #: ``{unit text: {column: ColumnSketch}}`` of the units the scoring pass summarised (see
    #: ``Observer.profile_columns``); a group's entries are set after its commit, before ``group_done``
    scan_profiles: dict = field(default_factory=dict, compare=False)
    #: what the run learnt on the way: ``"bad_rows_seen"`` (later groups count before scoring)
    flags: set = field(default_factory=set, compare=False)


def txn(ctx: RunContext, units) -> tuple[str, int]:
    """The commit's idempotent-write pair: (app id from the job and its units, the input version)."""
    plan = ctx.plan
    texts = [u.text for u in units]
    key = texts[0] if len(texts) == 1 else tuple(texts)  # one unit: the app id earlier versions wrote
    app = f"spark_scoring-{plan.job_key}-{digest(key, plan.cfg.input.mode)}"
    if plan.cfg.force:
        app += f"-{ctx.run_id}"
    return app, int(plan.input_version)


def direct_blocker(plan: JobPlan) -> str | None:
    """Why this job's units cannot take the direct Arrow scan (None: they can)."""
    cfg = plan.cfg
    if cfg.engine.path == "udf":
        return "engine.path: udf"
    if cfg.input.mode != "snapshot":
        return "input.mode changes scores changed rows, not files"
    if len(plan.models) != 1:
        return "more than one model"
    if cfg.engine.result_type is not None:
        return "engine.result_type is set"
    if cfg.engine.path == "auto" and not plan.input_ref.is_path:
        # a catalog (e.g. Unity Catalog) may forbid reading a table's files by path
        return "the input is a catalog table; engine.path: direct_scan reads its files anyway"
    if any(chk.needs_cast for chk in plan.checks):
        return "string features are parsed in Spark"
    return None


class _Work:
    """One commit's scratch state: its units, their rows, and the direct-scan plan made once
    for the count and the scoring."""

    def __init__(self, ctx: RunContext, units, source_df):
        self.ctx, self.units, self.plan = ctx, list(units), ctx.plan
        column = self.plan.partition_by
        self.values = [u.value for u in self.units]
        self.df = source_df if column is None else source_df.where(partitions_predicate(column, self.values))
        self._scan = None
        self.persisted = None  # the scored frame held while its rows are split (model row errors)
        self.profile = None  # the direct scan's ScanProfile, when observers asked for one
        self.single_pass = False  # rows and bad rows counted by the scoring pass itself (see _single_pass)

    @property
    def label(self) -> str:
        texts = [str(u.text) for u in self.units]
        return texts[0] if len(texts) == 1 else f"{texts[0]}..{texts[-1]} ({len(texts)} partitions)"

    def describe(self, stage: str) -> None:
        set_job_description(self.plan.spark, f"spark_scoring {self.plan.output_ref.name}: "
                                             f"{self.plan.partition_by}={self.label} ({stage})")

    def scan_plan(self):
        if self._scan is None:
            from ..engine.direct_scan import plan_scan

            plan = self.plan
            columns = list(dict.fromkeys(list(plan.snapshot.columns) + [c.column for c in plan.checks]))
            column = plan.partition_by
            self._scan = plan_scan(plan.spark, plan.input_ref.location(plan.spark), int(plan.input_version),
                                   partition_filter=None if column is None else {column: self.values},
                                   columns=columns)
        return self._scan


# ---------------------------------------------------------------- stages
def recover(ctx: RunContext, unit: Unit, started: float) -> PartitionResult | None:
    """The unit's rows are committed already (an earlier run died before its audit row): its
    result from the commit's metadata, or None."""
    entry = ctx.committed.by_unit.get(unit.text)
    if entry is None:
        return None
    _v, meta, counts = entry
    # a commit whose rows did not reconcile failed its run: it must not turn into a success now
    if "rows_in" in meta:
        reconcile(ctx, [unit], int(meta["rows_in"]), int(meta.get("rows_quarantined", 0)),
                  meta.get("version"), rows_written(meta.get("metrics")))
    return PartitionResult(
        unit.text, "recovered", int(counts.get("rows_in", 0)), int(counts.get("rows_scored", 0)),
        int(counts.get("rows_quarantined", 0)), time.monotonic() - started,
        None if meta.get("version") is None else int(meta["version"]),
        f"committed earlier by run {meta.get('spark_scoring_run_id', '?')}",
    )


def _committed_before(ctx: RunContext, unit: Unit) -> PartitionResult | None:
    """Recovered when these model versions committed the unit at this input version; refused when
    ``append`` would append it twice; None when it must be scored."""
    plan, cfg = ctx.plan, ctx.plan.cfg
    if cfg.force:
        return None
    entry = ctx.committed.by_unit.get(unit.text)
    if entry is None:
        return None
    if entry[0] >= int(plan.input_version):
        return recover(ctx, unit, time.monotonic())
    if cfg.output.mode == "append":
        raise WriteConflictError(
            f"partition {plan.partition_by}={unit.text!r} was already appended to {cfg.output.table!r} by these "
            f"model version(s) (input version {entry[0]}); appending again would duplicate rows. Fix: use "
            "output.mode overwrite_partitions or merge to rescore, or force: true to append anyway."
        )
    return None


def count(work: _Work) -> dict:
    """``{partition text: (rows in, bad rows, bad rows per column)}`` of the work's units, in one pass.

    Where the units can take the direct scan, pyarrow reads just the feature
    columns in the tasks (measured 1.8-2.0 s through Spark at 2M x 32 rows);
    otherwise, and whenever that scan cannot be planned, one Spark aggregation.
    """
    plan = work.plan
    column = plan.partition_by
    counted = None
    if direct_blocker(plan) is None:
        from ..engine.direct_scan import count_bad_rows_direct

        try:
            scan, df = work.scan_plan()
            counted = count_bad_rows_direct(plan.spark, scan, df, [chk.column for chk in plan.checks], by=column)
        except Exception as exc:  # noqa: BLE001 - Spark counts instead
            log.warning("partition %s: counting with pyarrow failed (%s: %s); counting with Spark",
                        work.label, type(exc).__name__, str(exc).splitlines()[0][:300] if str(exc) else "")
            counted = None
    if counted is None:
        counted = count_rows_by(work.df, plan.checks, column) if column is not None else count_rows(
            work.df, plan.checks)
    if column is None:
        return {None: counted}
    by_text = {partition_text(v): c for v, c in counted.items()}
    return {u.text: by_text.get(u.text, (0, 0, {})) for u in work.units}


def gate(plan: JobPlan, unit: Unit, rows_in: int, bad: int, per_column: dict[str, int]) -> BadRowsError | None:
    """``bad_rows: fail``: the error that stops the unit before any write, naming columns and counts."""
    if bad and plan.cfg.bad_rows == "fail":
        detail = ", ".join(f"{c}: {n}" for c, n in per_column.items())
        return BadRowsError(
            f"partition {plan.partition_by}={unit.text!r}: {bad} of {rows_in} rows have null, NaN, "
            f"infinite or unparsable features ({detail}); nothing was written for this partition. Fix: clean "
            "the input, or set bad_rows: quarantine with a quarantine_table."
        )
    return None


def _stale_quarantine(work: _Work) -> bool:
    """Does the quarantine table hold rows of these units that a rescore must clear?"""
    plan = work.plan
    if plan.quarantine_ref is None or plan.cfg.input.mode == "changes" or not plan.quarantine_ref.exists(plan.spark):
        return False
    table = plan.quarantine_ref.read(plan.spark)
    if plan.partition_by is not None:
        table = table.where(partitions_predicate(plan.partition_by, work.values))
    return bool(table.limit(1).count())


def quarantine(work: _Work, bad: int, app_id: str, txn_version: int, metadata: dict, failed_rows=None) -> None:
    """Bad rows (and rows the model raised on) to the quarantine table with a reason; a clean rescore
    clears the units' old rows."""
    import pyspark.sql.functions as F

    plan = work.plan
    if not bad and not _stale_quarantine(work):
        return
    # a clean rescore still replaces the partition's quarantine: rows quarantined
    # by an earlier run of the same input would otherwise no longer reconcile
    rows = work.df.where(bad_condition(plan.checks)).withColumn("quarantine_reason", reason_column(plan.checks))
    if failed_rows is not None:
        errored = failed_rows.select(*work.df.columns, F.concat(F.lit("model error: "), F.col(ERROR_COLUMN))
                                     .alias("quarantine_reason"))
        rows = rows.unionByName(errored)
    rows = rows.withColumns({
        "quarantined_at": F.current_timestamp(),
        "scoring_run_id": F.lit(work.ctx.run_id),
        "model_version": F.lit(plan.first.version).cast("string"),
    })
    write_partition(
        plan.spark, rows, plan.quarantine_ref,
        # changes mode sees only the changed rows of a partition: replacing the
        # partition would drop the rows quarantined by earlier runs
        mode="append" if plan.cfg.input.mode == "changes" else "overwrite_partitions",
        partition_column=plan.partition_by, partition_value=work.values[0], partition_values=work.values,
        txn_app_id=app_id + "-quarantine", txn_version=txn_version, user_metadata=metadata,
    )


def _profile(work: _Work, df, udf, output_col: str, observers):
    """The ScanProfile of the scan: the observers' columns (their union) and, in a single pass,
    the rows per unit; None when nothing is asked."""
    from ..engine.direct_scan import ScanProfile, scan_schema

    plan = work.plan
    wanted: list[str] = []
    if observers:
        schema = scan_schema(df, udf, keep=plan.snapshot.columns, output_col=output_col)
        wanted = list(dict.fromkeys(c for o in observers for c in (o.profile_columns(work.ctx, schema) or ())))
    return ScanProfile.make(plan.spark, plan.partition_by, wanted, rows=work.single_pass)


def _direct(work: _Work, clean: bool, observers=()):
    """The units scored by the direct Arrow scan as ``(DataFrame, "direct_scan")``, or ``(None, reason)``;
    with observers that ask for column profiles, the scan also sketches them (``work.profile``)."""
    plan = work.plan
    cfg = plan.cfg
    if cfg.engine.path == "udf":
        return None, "udf"
    why = direct_blocker(plan) or (None if clean else "the partition has bad rows (they are filtered in Spark)")
    if why is None:
        from ..engine.direct_scan import why_not_direct

        why = why_not_direct(plan.models[0].udf, list(plan.models[0].columns))
    if why is not None:
        if cfg.engine.path == "direct_scan":
            log.warning("engine.path direct_scan: partition %s uses the UDF path: %s", work.label, why)
        return None, f"udf ({why})"
    from ..engine.direct_scan import scan_dataframe

    p = plan.models[0]
    try:
        scan, df = work.scan_plan()
        if not scan.direct:
            log.warning("partition %s uses the UDF path: %s", work.label, scan.reason)
            return None, f"udf ({scan.reason})"
        work.profile = _profile(work, df, p.udf, p.output_column, observers)
        out = scan_dataframe(plan.spark, scan, df, p.udf, keep=plan.snapshot.columns,
                             output_col=p.output_column, columns=list(p.columns), profile=work.profile)
    except Exception as exc:  # noqa: BLE001 - planning only (nothing ran): the UDF path decides
        reason = f"direct scan planning failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        log.warning("partition %s uses the UDF path: %s", work.label, reason)
        return None, f"udf ({reason})"
    return out, "direct_scan"


ERROR_COLUMN = "__spark_scoring_error"


def captures_row_errors(plan: JobPlan) -> bool:
    """Models scored through their pyfunc flavor (decoders, tokenizers) may raise on single rows:
    the job catches those rows in the task and quarantines them (or fails naming them)."""
    return any(p.udf.plan(list(p.columns)).runner == "pyfunc" for p in plan.models)


def score(work: _Work, bad: int, observers=()):
    """The units' good rows with the prediction column(s) and lineage, and which path scores them.

    With models that may raise on single rows (:func:`captures_row_errors`), each row
    also carries :data:`ERROR_COLUMN`: the model's error on it, else null.
    """
    import pyspark.sql.functions as F

    plan = work.plan
    lineage = lineage_columns([(p.output_column, p.model) for p in plan.models], work.ctx.run_id)
    direct, engine_path = _direct(work, clean=not bad, observers=observers)
    if direct is not None:
        return direct.withColumns(lineage), engine_path
    df = work.df.where(~bad_condition(plan.checks)) if bad else work.df
    tmp_names = {}
    for chk in plan.checks:
        if chk.needs_cast:
            tmp = f"__spark_scoring_cast_{len(tmp_names)}"
            df = df.withColumn(tmp, F.col(quote_identifier(chk.column)).cast(chk.target))
            tmp_names[chk.column] = tmp
    capture = captures_row_errors(plan)
    errors = []
    for i, p in enumerate(plan.models):
        args = [F.col(quote_identifier(tmp_names.get(c, c))) for c in p.columns]  # "a.b" is one column
        if capture:
            tmp = f"__spark_scoring_scored_{i}"
            df = df.withColumn(tmp, p.udf.capturing()(*args))
            df = df.withColumn(p.output_column, F.col(f"{tmp}.prediction"))
            errors.append(F.col(f"{tmp}.error"))
            tmp_names[f"scored{i}"] = tmp
        else:
            df = df.withColumn(p.output_column, p.udf(*args))
    if capture:
        df = df.withColumn(ERROR_COLUMN, F.coalesce(*errors) if len(errors) > 1 else errors[0])
    return df.withColumns(lineage).drop(*tmp_names.values()), engine_path


def _row_error_counts(scored, column: str | None) -> dict:
    """``{partition text: rows the model raised on}`` of a persisted scored frame (one Spark job)."""
    import pyspark.sql.functions as F

    errored = scored.where(F.col(ERROR_COLUMN).isNotNull())
    if column is None:
        n = errored.count()
        return {None: n} if n else {}
    return {partition_text(r[0]): int(r[1]) for r in
            errored.groupBy(F.col(quote_identifier(column))).count().collect()}


def _row_errors_gate(plan: JobPlan, units, failed: dict, failed_rows) -> BadRowsError | None:
    """``bad_rows: fail``: the rows the model raised on, named by their key columns and errors."""
    if plan.cfg.bad_rows != "fail":
        return None
    keys = list(plan.cfg.output.keys) or [c for c in plan.snapshot.columns if c != plan.partition_by][:1]
    sample = failed_rows.select(*[quote_identifier(k) for k in keys], ERROR_COLUMN).limit(5).collect()
    shown = "; ".join(f"{dict(zip(keys, r[:-1]))}: {r[-1]}" for r in sample)
    where = ", ".join(f"{plan.partition_by}={t!r}: {n}" for t, n in failed.items())
    return BadRowsError(
        f"the model raised on {sum(failed.values())} row(s) ({where}); nothing was written for these "
        f"partitions. First rows: {shown}. Fix: repair or drop those inputs, or set bad_rows: quarantine "
        "with a quarantine_table to set them aside."
    )


def reconcile(ctx: RunContext, units, rows_in: int, bad: int, version: int | None,
              written: int | None) -> None:
    """Rows in = scored + quarantined must match what the Delta commit wrote."""
    if written is None or written == rows_in - bad:
        return
    plan = ctx.plan
    label = units[0].text if len(units) == 1 else [u.text for u in units]
    error = ReconciliationError(
        f"partition {plan.partition_by}={label!r}: rows in {rows_in} = scored {rows_in - bad} "
        f"+ quarantined {bad}, but the Delta commit v{version} of {plan.output_ref.name!r} wrote {written} "
        "rows. The commit stays in the table's history; inspect it (DESCRIBE HISTORY), then rescore the "
        "partition with force: true (or --set force=true)."
    )
    error.output_version = version  # the output was written: a scheduler must not read "nothing written"
    raise error


def _written_rows(plan: JobPlan, version: int | None) -> int | None:
    if version is None:
        return None
    for entry in plan.output_ref.history(plan.spark, limit=5):
        if int(entry.get("version", -1)) == version:
            return rows_written(entry.get("operationMetrics"))
    return None


def _single_pass(ctx: RunContext, work: _Work) -> bool:
    """Can this group skip the count pass? Yes when it takes the direct scan, the Delta statistics
    of every file it reads prove its feature columns free of null, NaN and infinity (a null count of
    0, a finite min and max), and nothing is left to clear in the quarantine table. Rows in are then
    the input's planned rows (its Delta log), checked against the rows the scan handed on and the
    rows the commit wrote. Should a task still meet a bad row it fails, nothing is committed, and
    the group is counted and scored the usual way."""
    from ..engine.direct_scan import why_not_direct

    plan = work.plan
    if "bad_rows_seen" in ctx.flags or direct_blocker(plan) is not None or plan.cfg.input.mode != "snapshot":
        return False
    try:
        scan, _df = work.scan_plan()
        if not scan.direct or why_not_direct(plan.models[0].udf, list(plan.models[0].columns)) is not None:
            return False
        if not {chk.column for chk in plan.checks} <= scan.clean_columns:
            return False
        return not _stale_quarantine(work)
    except Exception:  # noqa: BLE001 - the count pass decides
        return False


def _met_bad_rows(outcome) -> bool:
    """Did a single-pass commit fail because a task met a bad row (nothing committed)?"""
    errors = [o for _u, o in outcome if isinstance(o, Exception)]
    if len(errors) != len(outcome) or getattr(errors[0], "output_version", None) is not None:
        return False
    exc, seen = errors[0], 0
    while exc is not None and seen < 5:
        if isinstance(exc, BadRowsError) or "BadRowsError: " in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _scan_key(value) -> str | None:
    """A partition value as a scan task saw it (Arrow's: timestamps UTC-aware), as the unit's text."""
    import datetime as dt

    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return partition_text(value)


def _check_scan_rows(ctx: RunContext, work: _Work, units, version: int | None) -> None:
    """Single pass: the rows the scan handed on per unit must be the input's planned rows (the
    group's total where a partition value's text cannot be matched to its unit's)."""
    if work.profile is None:
        return
    handed = {_scan_key(v): n for v, n in work.profile.rows().items()}
    if set(handed) <= {u.text for u in units}:
        wrong = [(u.text, u.rows, handed.get(u.text, 0)) for u in units if handed.get(u.text, 0) != u.rows]
    else:
        planned, got = sum(u.rows for u in units), sum(handed.values())
        wrong = [(work.label, planned, got)] if planned != got else []
    if wrong:
        plan = ctx.plan
        shown = "; ".join(f"{plan.partition_by}={t!r}: {want} in the input's log, {got} scored" for t, want, got in wrong[:5])
        error = ReconciliationError(
            f"the scan of {plan.input_ref.name!r} v{plan.input_version} did not score the rows its Delta log "
            f"lists ({shown}); the Delta commit v{version} of {plan.output_ref.name!r} stays in the table's "
            "history. Inspect it (DESCRIBE HISTORY), then rescore with force: true and engine.path: udf."
        )
        error.output_version = version
        raise error


def _keep_profiles(ctx: RunContext, work: _Work, units, counts: dict) -> None:
    """The committed units' sketches from the scoring pass, by unit text, into ``ctx.scan_profiles``
    (a unit with scored rows but no sketch is left out: its observers profile the committed output)."""
    if work.profile is None:
        return
    try:
        found = work.profile.sketches()
    except Exception as exc:  # noqa: BLE001 - the observers profile the committed output instead
        log.warning("partition %s: the scoring pass's column profiles could not be read (%s: %s)",
                    work.label, type(exc).__name__, exc)
        return
    by_unit: dict = {}
    for (value, column), sketch in found.items():
        by_unit.setdefault(_scan_key(value), {})[column] = sketch
    for u in units:
        if u.text in by_unit or counts[u.text][0] - counts[u.text][1] == 0:
            ctx.scan_profiles[u.text] = by_unit.get(u.text, {})


def score_group(ctx: RunContext, units, source_df, observers=()) -> list[tuple[Unit, Any]]:
    """Every stage for a group of units, committed together; ``[(unit, PartitionResult or the error)]``.

    Units an earlier run committed are recovered; the group's rows are counted in one
    pass; under ``bad_rows: fail`` the units before the first one with bad rows are
    committed and that one fails; the rest are scored in one job and committed once.
    """
    with arrow_batch_rows(ctx.plan.spark, ctx.plan.cfg.engine.arrow_batch_rows):
        out: list[tuple[Unit, Any]] = []
        todo = []
        for unit in units:
            try:
                done = _committed_before(ctx, unit)
            except Exception as exc:  # noqa: BLE001 - e.g. append refused: the unit's own failure
                return out + [(unit, exc)]
            if done is not None:
                out.append((unit, done))
            else:
                todo.append(unit)
        if not todo:
            return out
        try:
            work = _Work(ctx, todo, source_df)
            if _single_pass(ctx, work):
                work.single_pass = True
                counts = {u.text: (u.rows, 0, {}) for u in todo}
                done = _commit(ctx, todo, counts, source_df, observers, work)
                if not _met_bad_rows(done):
                    return out + done
                log.info("partition %s has bad rows: counting them before scoring", work.label)
                ctx.flags.add("bad_rows_seen")
                scan, work = work._scan, _Work(ctx, todo, source_df)
                work._scan = scan  # the same files: the log is read once
            work.describe("count")
            counts = count(work)
        except Exception as exc:  # noqa: BLE001
            return out + [(u, exc) for u in todo]
        for i, unit in enumerate(todo):
            stop = gate(ctx.plan, unit, *counts[unit.text])
            if stop is not None:
                return out + (_commit(ctx, todo[:i], counts, source_df, observers) if i else []) + [(unit, stop)]
        return out + _commit(ctx, todo, counts, source_df, observers, work)


def _commit(ctx: RunContext, units, counts: dict, source_df, observers,
            counted: _Work | None = None) -> list[tuple[Unit, Any]]:
    """Quarantine, score and commit ``units`` once; their results (or the commit's error, for each).

    ``counted``: the work that counted exactly these units; its direct-scan plan (one
    Delta log replay) serves the scoring too."""
    import pyspark.sql.functions as F

    plan, cfg = ctx.plan, ctx.plan.cfg
    started = time.monotonic()
    work = None
    try:
        work = counted if counted is not None and counted.units == list(units) else _Work(ctx, units, source_df)
        app_id, txn_version = txn(ctx, units)
        rows_in = sum(counts[u.text][0] for u in units)
        bad = sum(counts[u.text][1] for u in units)
        metadata = {
            "spark_scoring_run_id": ctx.run_id,
            "job_key": plan.job_key,
            "txn_app_id": app_id,
            "models": {p.output_column: p.model.uri for p in plan.models},
            "model_source_uris": {p.output_column: p.model.source_uri for p in plan.models},
            "input_table": plan.input_ref.name,
            "input_version": plan.input_version,
            "partition_column": plan.partition_by,
            "partition": units[0].text if len(units) == 1 else None,
            "rows_in": rows_in,
            "rows_scored": rows_in - bad,
            "rows_quarantined": bad,
        }
        if len(units) > 1:
            metadata["partitions"] = {u.text: {"rows_in": counts[u.text][0],
                                               "rows_scored": counts[u.text][0] - counts[u.text][1],
                                               "rows_quarantined": counts[u.text][1]} for u in units}
        scored, engine_path = score(work, bad, observers)
        metadata["engine_path"] = engine_path
        failed_rows = None
        if ERROR_COLUMN in scored.columns:  # rows the model raised on: known once the partition is scored
            work.describe("score")
            scored = scored.persist()
            work.persisted = scored
            failed = _row_error_counts(scored, plan.partition_by)
            if failed:
                failed_rows = scored.where(F.col(ERROR_COLUMN).isNotNull())
                stop = _row_errors_gate(plan, units, failed, failed_rows)
                if stop is not None:
                    raise stop
                counts = {u.text: (c[0], c[1] + failed.get(u.text, 0), c[2]) for u, c in
                          ((u, counts[u.text]) for u in units)}
                bad = sum(counts[u.text][1] for u in units)
                metadata.update(rows_scored=rows_in - bad, rows_quarantined=bad, rows_model_errors=sum(failed.values()))
                if "partitions" in metadata:
                    for u in units:
                        metadata["partitions"][u.text].update(rows_scored=counts[u.text][0] - counts[u.text][1],
                                                              rows_quarantined=counts[u.text][1])
            scored = scored.where(F.col(ERROR_COLUMN).isNull()).drop(ERROR_COLUMN)
        if not work.single_pass:  # (a single pass has nothing to quarantine or clear)
            quarantine(work, bad, app_id, txn_version, metadata, failed_rows)
        work.describe("score+write")
        result = write_partition(
            plan.spark, scored, plan.output_ref, mode=cfg.output.mode, partition_column=plan.partition_by,
            partition_value=work.values[0], partition_values=work.values if len(units) > 1 else None,
            txn_app_id=app_id, txn_version=txn_version, user_metadata=metadata,
            keys=list(cfg.output.keys) or None,
        )
        if result.skipped:  # Delta had this (app id, version): an earlier run committed it
            ctx.committed.refresh()
            return [(u, recover(ctx, u, started) or PartitionResult(u.text, "recovered")) for u in units]
        if work.single_pass:
            _check_scan_rows(ctx, work, units, result.table_version)
        reconcile(ctx, units, rows_in, bad, result.table_version, _written_rows(plan, result.table_version))
        _keep_profiles(ctx, work, units, counts)
    except Exception as exc:  # noqa: BLE001 - every unit of the commit failed with it
        return [(u, exc) for u in units]
    finally:
        if getattr(work, "persisted", None) is not None:
            work.persisted.unpersist()
    seconds = (time.monotonic() - started) / len(units)
    out: list[tuple[Unit, Any]] = []
    for u in units:  # committed: a hook that fails now fails its unit, the output stays written
        try:
            for o in observers:
                o.after_commit(ctx, u)
        except Exception as exc:  # noqa: BLE001
            exc.output_version = result.table_version
            return out + [(u, exc)]
        out.append((u, PartitionResult(u.text, "scored", counts[u.text][0], counts[u.text][0] - counts[u.text][1],
                                       counts[u.text][1], seconds, result.table_version)))
    return out
