"""Which device a task scores on, and how many CPU threads it may use.

Runs on: executors (inside a task). No Spark import: the task's GPU addresses
and CPU count come in a :class:`~spark_scoring.executor.task.TaskInfo`, read
from Spark's ``TaskContext`` by the engine.

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

__all__ = ["resolve_device", "map_gpu_address", "cuda_available"]


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - no torch, or a broken CUDA install
        return False


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


def resolve_device(requested: str = "auto", gpu_addresses=(), *, in_task: bool = True) -> str:
    """``"cpu"`` or ``"cuda:N"`` for a task that Spark gave ``gpu_addresses`` (see the module docstring).

    ``in_task=False`` (a plain Python process, the GPU check): ``auto`` takes
    ``cuda:0`` when CUDA is available.
    """
    requested = (requested or "auto").lower()
    if requested == "cpu":
        return "cpu"
    addresses = list(gpu_addresses)
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
    return "cpu" if in_task else "cuda:0"
