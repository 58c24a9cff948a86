"""What a run prints: the plan, progress per partition, and the summary table.

Runs on: the driver. An observer of the run, injected by the entry point. On a
terminal, a rich progress bar; otherwise (spark-submit logs, schedulers, CI)
one plain log line per partition, so logs stay greppable.

Table names, partition values and messages are data, not rich markup: they go
through :func:`rich.markup.escape` (a partition named ``[/bold]`` would
otherwise crash the printing, and ``[a, b]`` in a message would vanish).
"""
from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..job.runner import Observer

__all__ = ["Reporter", "summary_table"]


class Reporter(Observer):
    """Prints to ``stream`` (stderr by default); ``quiet=True`` prints nothing.

    A run observer (:class:`spark_scoring.job.runner.Observer`): the plan when the
    units are known, one line (or a bar step) per unit, the summary at the end.
    """

    def __init__(self, stream=None, *, quiet: bool = False, force_terminal: bool | None = None):
        self.console = Console(file=stream or sys.stderr, force_terminal=force_terminal, width=120)
        self.quiet = quiet
        self._bar = None
        self._advance: Callable = lambda _res: None

    def print(self, *args: Any) -> None:
        if not self.quiet:
            self.console.print(*args, highlight=False, soft_wrap=True)

    # -- observer -------------------------------------------------------------
    def start(self, plan) -> None:
        return None

    def planned(self, ctx, todo, skipped) -> None:
        self.plan(ctx, todo, len(skipped))
        self._bar = self.progress(len(todo))
        self._advance = self._bar.__enter__()

    def after_commit(self, ctx, unit) -> None:
        pass

    def after_audit(self, ctx, unit, result) -> None:
        pass

    def unit_done(self, ctx, unit, result):
        self._advance(result)
        return None

    def finished(self, ctx, result, failed: bool) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        self.summary(result)

    # -- what it prints ---------------------------------------------------------
    def plan(self, ctx, todo: list, skipped: int) -> None:
        plan = ctx.plan
        models = ", ".join(
            f"{p.model.source_uri} -> {p.model.uri}" + (f" ({p.output_column})" if len(plan.models) > 1 else "")
            for p in plan.models
        )
        rows = sum(u.rows for u in todo)
        names = [u.text for u in todo]
        shown = ", ".join(map(str, names[:8])) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
        self.print(
            f"[bold]spark_scoring run {escape(ctx.run_id)}[/bold]\n"
            f"  model(s):  {escape(models)}\n"
            f"  input:     {escape(plan.input_ref.name)} @ version {plan.input_version}\n"
            f"  output:    {escape(plan.output_ref.name)} ({plan.cfg.output.mode})\n"
            f"  plan:      {len(todo)} partition(s), {rows} input rows: {escape(shown) or '-'}"
            + (f"; {skipped} already scored, skipped" if skipped else "")
        )
        if not todo:
            self.print("Nothing to do: every planned partition is already scored by this model version.")

    @contextlib.contextmanager
    def progress(self, total: int) -> Iterator[Callable]:
        if self.quiet or total == 0:
            yield lambda _res: None
            return
        if self.console.is_terminal:
            with Progress(
                TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), console=self.console, transient=False,
            ) as bar:
                task = bar.add_task("", total=total)

                def advance(res):
                    bar.update(task, advance=1, description=_line(res))

                yield advance
            return
        done = [0]

        def log_line(res):
            done[0] += 1
            self.print(f"[{done[0]}/{total}] {_line(res)}")

        yield log_line

    def summary(self, result) -> None:
        self.print(summary_table(result))
        self.print(
            f"rows in {result.rows_in} = scored {result.rows_scored} + quarantined "
            f"{result.rows_quarantined}; {result.seconds:.1f} s; audit: {escape(result.audit_table)}"
        )


def _line(res) -> str:
    return escape(
        f"partition {res.partition}: {res.status}, in {res.rows_in}, scored {res.rows_scored}, "
        f"quarantined {res.rows_quarantined}, {res.seconds:.1f} s"
        + (f" ({res.message.splitlines()[0][:200]})" if res.message and res.status == "failed" else "")
    )


def summary_table(result) -> Table:
    """A rich Table of a JobResult's partitions."""
    table = Table(title=escape(f"run {result.run_id}: {result.output_table}"), title_justify="left")
    for name, justify in [("partition", "left"), ("status", "left"), ("rows in", "right"),
                          ("scored", "right"), ("quarantined", "right"), ("seconds", "right"),
                          ("output version", "right")]:
        table.add_column(name, justify=justify)
    for p in result.partitions:
        table.add_row(
            escape(str(p.partition)), p.status, str(p.rows_in), str(p.rows_scored), str(p.rows_quarantined),
            f"{p.seconds:.1f}", "" if p.output_version is None else str(p.output_version),
        )
    return table
