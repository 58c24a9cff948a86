"""Which device a task scores on, and how many CPU threads it may use.

Runs on: executors (inside a task). Imports pyspark's TaskContext lazily; with
no task (a plain Python process, the GPU check) it behaves as "no Spark".

- ``device="auto"``: the GPU Spark assigned to this task
  (``TaskContext.get().resources()["gpu"].addresses``), else CPU when the task
  got no GPU. Outside a Spark task: ``cuda:0`` if CUDA is available.
- Spark's GPU addresses are *physical* ids. When ``CUDA_VISIBLE_DEVICES`` is
  already set for the worker (YARN, Kubernetes, some images), CUDA numbers the
  visible devices 0..n-1, so physical id ``"3"`` in ``CUDA_VISIBLE_DEVICES=2,3``
  is ``cuda:1`` (spark-rapids#6380). :func:`map_gpu_address` does that mapping.
- On CPU the task uses ``spark.task.cpus`` intra-op threads, so concurrent
  tasks do not oversubscribe the executor's cores.
"""
from __future__ import annotations

import os

__all__ = ["resolve_device", "map_gpu_address", "task_gpu_addresses", "task_cpus", "cuda_available"]


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA install
        return False


def _task_context():
    try:
        from pyspark import TaskContext

        return TaskContext.get()
    except Exception:  # noqa: BLE001
        return None


def task_gpu_addresses() -> list[str]:
    """The GPU addresses Spark gave the current task ([] outside a task or without GPUs)."""
    ctx = _task_context()
    if ctx is None:
        return []
    try:
        res = ctx.resources().get("gpu")
    except Exception:  # noqa: BLE001
        return []
    return list(res.addresses) if res is not None else []


def task_cpus() -> int:
    """``spark.task.cpus`` for the current task; 1 outside a task."""
    ctx = _task_context()
    if ctx is None:
        return max(1, os.cpu_count() or 1)
    try:
        return max(1, int(ctx.cpus()))
    except Exception:  # noqa: BLE001
        return 1


def map_gpu_address(address: str, visible: str | None = None) -> int:
    """Map Spark's physical GPU address to the CUDA ordinal this process must use."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    if visible is None or visible.strip() == "":
        return int(address)
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if address in ids:
        return ids.index(address)
    if len(ids) == 1:
        # the worker was pinned to one GPU already: that is our device 0
        return 0
    raise ValueError(
        f"Spark assigned GPU address {address!r}, but CUDA_VISIBLE_DEVICES={visible!r} does not "
        "list it. Fix: let Spark's discovery script report the same ids as CUDA_VISIBLE_DEVICES, "
        "or unset CUDA_VISIBLE_DEVICES for the executors."
    )


def resolve_device(requested: str = "auto") -> str:
    """``"cpu"`` or ``"cuda:N"`` for this task (see the module docstring)."""
    requested = (requested or "auto").lower()
    if requested == "cpu":
        return "cpu"
    addresses = task_gpu_addresses()
    if requested.startswith("cuda"):
        if not cuda_available():
            raise RuntimeError(
                f"device={requested!r} but CUDA is not available in this worker. Fix: use "
                "device='auto' (GPU when Spark assigns one, else CPU) or run on GPU executors."
            )
        if ":" in requested:
            return requested
        return f"cuda:{map_gpu_address(addresses[0])}" if addresses else "cuda:0"
    if requested != "auto":
        raise ValueError(f"device={requested!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if not cuda_available():
        return "cpu"
    if addresses:
        return f"cuda:{map_gpu_address(addresses[0])}"
    return "cpu" if _task_context() is not None else "cuda:0"
