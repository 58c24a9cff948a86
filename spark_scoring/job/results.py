"""What a job run did: pure data, printed by the CLI and returned by ``run_job``.

Runs on: the driver. No Spark here.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["PartitionResult", "JobResult", "partition_text", "rows_written", "DONE"]

#: Statuses that mean the partition's rows are in the output.
DONE = ("scored", "recovered")


def partition_text(value: Any) -> str | None:
    """A partition value as the text the audit table, the plan and ``--partition`` use."""
    if value is None:
        return None
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def rows_written(metrics: Mapping[str, Any] | None) -> int | None:
    """Rows a WRITE or MERGE commit took in, from its ``operationMetrics`` (None: not recorded)."""
    m = metrics or {}
    for key in ("numSourceRows", "numOutputRows"):
        if m.get(key) is not None:
            return int(m[key])
    return None


@dataclass(frozen=True)
class PartitionResult:
    """What happened to one partition in one run."""

    partition: str | None
    status: str  # scored | recovered | skipped | failed | checkpoint
    rows_in: int = 0
    rows_scored: int = 0
    rows_quarantined: int = 0
    seconds: float = 0.0
    output_version: int | None = None
    message: str = ""


@dataclass(frozen=True)
class JobResult:
    """The outcome of ``run_job``; ``str()`` is the printed summary."""

    run_id: str
    job_key: str
    models: tuple[str, ...]
    input_table: str
    input_version: int
    output_table: str
    audit_table: str
    partitions: tuple[PartitionResult, ...]
    seconds: float
    config: Any = field(repr=False, compare=False, default=None)

    def _done(self):
        return [p for p in self.partitions if p.status in DONE]

    @property
    def rows_in(self) -> int:
        return sum(p.rows_in for p in self._done())

    @property
    def rows_scored(self) -> int:
        return sum(p.rows_scored for p in self._done())

    @property
    def rows_quarantined(self) -> int:
        return sum(p.rows_quarantined for p in self._done())

    @property
    def committed(self) -> list[str | None]:
        return [p.partition for p in self._done()]

    @property
    def failed(self) -> tuple[PartitionResult, ...]:
        return tuple(p for p in self.partitions if p.status == "failed")

    @property
    def nothing_to_do(self) -> bool:
        return all(p.status == "skipped" for p in self.partitions)
