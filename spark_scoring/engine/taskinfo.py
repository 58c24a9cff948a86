"""Read what a task knows about itself from Spark's ``TaskContext``.

Runs on: executors, inside the functions the engine ships (the UDF and the
direct scan). It is the one place executor-side code touches pyspark, so the
scoring core (:mod:`spark_scoring.executor`) stays free of Spark.
"""
from __future__ import annotations

import os

from ..executor.faults import FAULT_PROPERTY
from ..executor.task import TaskInfo

__all__ = ["current_task"]


def current_task() -> TaskInfo:
    """Executor: this task's partition, attempt, GPU addresses, CPUs and fault drill (none outside a task)."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
    except Exception:  # noqa: BLE001
        ctx = None
    if ctx is None:
        return TaskInfo(cpus=max(1, os.cpu_count() or 1), in_task=False)
    try:
        res = ctx.resources().get("gpu")
        gpus = tuple(res.addresses) if res is not None else ()
    except Exception:  # noqa: BLE001
        gpus = ()
    try:
        cpus = max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001
        cpus = 1
    return TaskInfo(partition_id=ctx.partitionId(), attempt=ctx.attemptNumber(), gpu_addresses=gpus, cpus=cpus,
                    in_task=True, fault=ctx.getLocalProperty(FAULT_PROPERTY))
