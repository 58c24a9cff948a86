"""Reliability drills: make a scoring task fail on purpose, to prove retries are safe.

Runs on: executors. Off unless a driver sets the Spark local property
:data:`FAULT_PROPERTY` (``sc.setLocalProperty``) for the jobs it starts; the
engine reads it from the task's ``TaskContext`` into ``TaskInfo.fault``.

Modes: ``raise`` / ``exit`` make attempt 0 of each scoring task raise / kill
its Python worker after reading its first batch; ``raise_always`` /
``exit_always`` do it on every attempt. ``tests/reliability`` uses them to
show that retried tasks give correct output with no duplicate rows.
"""
from __future__ import annotations

import os

__all__ = ["FAULT_PROPERTY", "MODES", "apply"]

FAULT_PROPERTY = "spark_scoring.test.fault"
MODES = ("raise", "exit", "raise_always", "exit_always")


def apply(info) -> None:
    """Executor: carry out ``info.fault`` for this task attempt, if any."""
    mode = getattr(info, "fault", None)
    if not mode or (not mode.endswith("_always") and info.attempt != 0):
        return
    if mode.startswith("exit"):
        os._exit(86)
    raise RuntimeError(f"spark_scoring test fault ({mode}) in partition {info.partition_id} attempt {info.attempt}")
