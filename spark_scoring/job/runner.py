"""The one runner loop: plan once, settle the run id once, then every unit through its stages.

Runs on: the driver.

:func:`run` takes a frozen :class:`~.plan.JobPlan`, a source of units
(:mod:`.sources`) and observers. Observers (progress, MLflow tracking, drift,
alerting, a test's fault injection) see the run; the job layer does not know
them: the entry point (:mod:`spark_scoring.run`) injects them.

Per group of units (``output.partitions_per_commit``, one commit):
:func:`~.stages.score_group`, then the group's audit rows in one append (an
audit failure never masks a unit's own error), then the observers (each
unit's ``after_audit``, the group's ``group_done``, each unit's
``unit_done``); the loop stops after the first group with a failure. Partitions committed before it stay committed; the raised
:class:`ScoringError` says which, with ``exit_code`` 1 (some committed) or 2
(none).
"""
from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Sequence

from ..errors import ScoringError
from . import audit
from .plan import JobPlan, validate_models
from .results import JobResult, PartitionResult
from .stages import RunContext, Unit, committed_from_history, score_group

__all__ = ["Observer", "run", "spark_error_text"]


class Observer:
    """What an observer of a run may implement (every method is optional: these are the no-ops)."""

    def start(self, plan: JobPlan) -> str | None:
        """Before the loop; may return the run id to use (the MLflow run id)."""
        return None

    def planned(self, ctx: RunContext, todo: Sequence[Unit], skipped: Sequence[PartitionResult]) -> None:
        """The run id is settled and the units are known."""

    def profile_columns(self, ctx: RunContext, schema) -> Sequence[str]:
        """Numeric columns of the scored rows (``schema``) this observer wants summarised per unit in the
        scoring pass itself (``"a.b"``: a struct's field); the sketches reach :meth:`group_done` in
        ``ctx.scan_profiles`` where the scoring path can make them (the direct scan)."""
        return ()

    def after_commit(self, ctx: RunContext, unit: Unit) -> None:
        """A unit's output commit is made, before its audit row."""

    def after_audit(self, ctx: RunContext, unit: Unit, result: PartitionResult) -> None:
        """A unit's audit row is written."""

    def group_done(self, ctx: RunContext, done: Sequence[tuple[Unit, PartitionResult]]) -> None:
        """A group of units (one commit) is committed and audited, before each unit's ``unit_done``:
        the place for work that is cheaper once per group (one aggregation, one MLflow batch)."""

    def unit_done(self, ctx: RunContext, unit: Unit, result: PartitionResult) -> ScoringError | None:
        """A unit is finished; returning an error stops the run after it (e.g. drift: fail)."""
        return None

    def finished(self, ctx: RunContext, result: JobResult, failed: bool) -> None:
        """The run is over."""


def _record(ctx: RunContext, result: PartitionResult, started_at: dt.datetime) -> audit.AuditRecord:
    plan, cfg = ctx.plan, ctx.plan.cfg
    return audit.AuditRecord(
        run_id=ctx.run_id,
        job_key=plan.job_key,
        output_table=plan.output_ref.name,
        partition_column=cfg.input.partition_by,
        partition=result.partition,
        model_uris=",".join(p.model.uri for p in plan.models),
        model_versions=",".join(f"{p.model.display_name}/{p.model.version}" for p in plan.models),
        input_table=plan.input_ref.name,
        input_version=int(plan.input_version),
        input_mode=cfg.input.mode,
        output_version=result.output_version,
        rows_in=result.rows_in,
        rows_scored=result.rows_scored,
        rows_quarantined=result.rows_quarantined,
        seconds=float(result.seconds),
        status=result.status,
        message=result.message[:2000],
        started_at=started_at,
        finished_at=dt.datetime.now(dt.timezone.utc),
    )


def _guarded_audit(ctx: RunContext, results, started_at, failure: ScoringError | None):
    """Write the audit rows (one append for a group); a failure to do so is reported, never
    masking a unit's own error."""
    if not results:
        return failure
    try:
        audit.write_audit(ctx.plan.spark, ctx.plan.audit_table, [_record(ctx, r, started_at) for r in results])
    except Exception as exc:  # noqa: BLE001
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:1000]
        shown = results[0].partition if len(results) == 1 else [r.partition for r in results]
        note = (f"could not write the audit row of partition {ctx.plan.partition_by}={shown!r} "
                f"({', '.join(sorted({r.status for r in results}))}) to {ctx.plan.audit_table!r}: {line}")
        if failure is None:
            failure = ScoringError(note)
            failure.__cause__ = exc
        else:
            failure.args = (f"{failure.args[0] if failure.args else failure}\nAlso {note}",)
    return failure


def _groups(plan: JobPlan, source, todo: Sequence[Unit]) -> list[list[Unit]]:
    """Units committed together: ``output.partitions_per_commit`` at a time (one for the change feed)."""
    size = plan.cfg.output.partitions_per_commit
    if plan.partition_by is None or getattr(source, "per_unit", False):
        size = 1
    return [list(todo[i:i + size]) for i in range(0, len(todo), size)]


def _outcome(plan: JobPlan, unit: Unit, outcome) -> tuple[PartitionResult, ScoringError | None]:
    """A unit's result, and the ScoringError to stop the run with (a Spark error is reworded)."""
    if isinstance(outcome, PartitionResult):
        return outcome, None
    exc = outcome
    if isinstance(exc, ScoringError):
        return PartitionResult(unit.text, "failed", unit.rows, output_version=getattr(exc, "output_version", None),
                               message=str(exc)), exc
    res = PartitionResult(unit.text, "failed", unit.rows, output_version=getattr(exc, "output_version", None),
                          message=f"{type(exc).__name__}: {exc}"[:4000])
    failure = ScoringError(spark_error_text(exc, plan.partition_by, unit.text))
    failure.__cause__ = exc
    failure.output_version = getattr(exc, "output_version", None)
    return res, failure


def run(plan: JobPlan, source, observers: Sequence[Observer] = ()) -> JobResult:
    """Driver: score ``source``'s units of ``plan`` with ``observers`` watching; see the module docstring."""
    t0 = time.monotonic()
    run_id = None
    for o in observers:
        run_id = run_id or o.start(plan)
    ctx = RunContext(plan, run_id or uuid.uuid4().hex, committed_from_history(plan), source.explicit)
    todo, skipped = source.split(ctx)
    for o in observers:
        o.planned(ctx, todo, skipped)
    results: list[PartitionResult] = list(skipped)
    failure: ScoringError | None = None
    try:
        if todo:
            validate_models(plan)  # corrupt artifacts fail here, before the first write
    except ScoringError as exc:
        failure, todo = exc, []
    for group in _groups(plan, source, todo):
        started_at = dt.datetime.now(dt.timezone.utc)
        try:
            outcomes = score_group(ctx, group, source.frame, observers)
        except Exception as exc:  # noqa: BLE001 - a failure outside any one stage: every unit of the group
            outcomes = [(u, exc) for u in group]
        done = []
        for unit, outcome in outcomes:  # a failed commit fails each of its units: all are audited
            res, error = _outcome(plan, unit, outcome)
            done.append((unit, res))
            failure = failure or error
        failure = _guarded_audit(ctx, [res for _u, res in done], started_at, failure)
        for unit, res in done:
            for o in observers:
                o.after_audit(ctx, unit, res)
        for o in observers:
            o.group_done(ctx, done)
        for unit, res in done:
            for o in observers:
                stop = o.unit_done(ctx, unit, res)  # drift with on_drift: fail
                failure = failure or stop
            results.append(res)
        if failure is not None:
            break
    for extra in source.finish(ctx, results, failure is not None):
        failure = _guarded_audit(ctx, [extra], dt.datetime.now(dt.timezone.utc), failure)
    result = JobResult(
        ctx.run_id, plan.job_key, tuple(p.model.uri for p in plan.models), plan.input_ref.name,
        int(plan.input_version), plan.output_ref.name, plan.audit_table, tuple(results),
        time.monotonic() - t0, plan.cfg,
    )
    for o in observers:
        o.finished(ctx, result, failure is not None)
    if failure is not None:
        committed = result.committed
        failure.args = (f"{failure.args[0] if failure.args else failure}\nCommitted before the failure: "
                        f"{committed or 'nothing'} (run {ctx.run_id}){source.failure_note()}.",)
        failure.job_result = result
        written = committed or any(p.status == "failed" and p.output_version is not None for p in result.partitions)
        failure.exit_code = 1 if written else 2  # 2: no output partition was committed; rerun after the fix
        raise failure
    return result


def spark_error_text(exc: Exception, column: str | None, text: str | None) -> str:
    """Pull our own executor-side message (e.g. BadRowsError) out of a Spark exception."""
    message = str(exc)
    for marker in ("BadRowsError: ", "ResultTypeError: ", "SchemaMismatchError: "):
        if marker in message:
            message = message.split(marker, 1)[1].split("\n", 1)[0]
            break
    else:
        message = _cause_line(message) or type(exc).__name__
    return f"partition {column}={text!r} failed while scoring: {message}"


def _cause_line(message: str) -> str:
    """The line of a Spark error that says what went wrong: the exception ending a
    Python worker's traceback, else Spark's "Job aborted due to stage failure: ...
    most recent failure: ..." line, else the first line (not "An error occurred
    while calling o123.save.", which says nothing)."""
    import re

    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in message:
        raised = [ln for ln in lines if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Exit)\b", ln)]
        if raised:
            return raised[-1][:1000]
    for ln in lines:
        if "Job aborted due to stage failure:" in ln:
            return ln[ln.index("Job aborted"):][:1000]
    return lines[0][:1000] if lines else ""
