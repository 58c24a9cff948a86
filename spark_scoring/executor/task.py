"""The one task entry point, shared by the scoring UDF and the direct scan.

Runs on: executors. No Spark import: what the task needs from Spark (its
partition, attempt, GPU addresses, CPUs, the session time zone) arrives as a
:class:`TaskInfo` that the engine reads from ``TaskContext``.

:func:`score_stream` is one task: resolve the device, set the CPU threads,
take the model from the per-worker cache (loading it once per worker), wrap it
in a runner and a :class:`~spark_scoring.executor.predictor.Predictor`, and
score the task's Arrow batches. ``extra_env`` is set in the worker's
environment while the task runs (as ``mlflow.pyfunc.spark_udf`` does).
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import pyarrow as pa

from . import device as devices
from . import faults, model_cache
from .artifacts import ModelHandle
from .inputs import Binding
from .loading import load_native
from .predictor import Predictor
from .runners import PyfuncRunner, SklearnRunner, TorchRunner
from .specs import OutputSpec

__all__ = ["TaskInfo", "TaskSpec", "open_predictor", "score_stream", "DIAGNOSTICS_TYPE"]

log = logging.getLogger(__name__)

#: One row per batch of executor facts, for tests and debugging (``diagnostics=True``).
DIAGNOSTICS_TYPE = pa.struct(
    [
        ("pid", pa.int64()),
        ("model_loads", pa.int64()),
        ("cache_hits", pa.int64()),
        ("device", pa.string()),
        ("gpu_addresses", pa.string()),
        ("batch_size", pa.int64()),
        ("partition_id", pa.int64()),
        ("attempt", pa.int64()),
    ]
)


@dataclass(frozen=True)
class TaskInfo:
    """What a task knows about itself (read from Spark's TaskContext by the engine)."""

    partition_id: int = -1
    attempt: int = 0
    gpu_addresses: tuple[str, ...] = ()
    cpus: int = 1
    in_task: bool = False
    fault: str | None = None  # a reliability drill, see :mod:`.faults`


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs, copied out of driver objects so no ``self`` is pickled.

    ``runner``: ``"pytorch"`` (native torch), ``"sklearn"`` (native scikit-learn)
    or ``"pyfunc"``. ``input_kind`` for pyfunc: ``"frame"`` or ``"tensor"``.
    """

    handle: ModelHandle
    runner: str
    binding: Binding
    output: OutputSpec
    batch_size: int
    device: str = "auto"
    on_null: str = "error"
    autocast: str | None = None
    input_kind: str = "tensor"
    params: dict | None = None
    model_config: dict | None = None
    extra_env: tuple[tuple[str, str], ...] = ()
    timezone: str = "UTC"
    diagnostics: bool = False
    row_errors: str = "raise"  # "capture": rows the model raises on come back with their error
    max_row_errors: int = 1000
    #: Prepare batch n+1 in a thread while batch n runs. None: on CUDA only, where it
    #: overlaps host work with the GPU; on CPU it measured within noise of off on both
    #: models (bench/RESULTS.md), so the task keeps its one core to itself.
    prefetch: bool | None = None


@contextlib.contextmanager
def _environ(pairs: tuple[tuple[str, str], ...]):
    if not pairs:
        yield
        return
    before = {k: os.environ.get(k) for k, _v in pairs}
    os.environ.update(dict(pairs))
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _load(spec: TaskSpec, dev: str) -> tuple[Any, str]:
    """(loaded object, runner kind): native where the format allows on ``dev``, else pyfunc."""
    handle = spec.handle
    if spec.runner == "pyfunc":
        config = dict(spec.model_config or {})
        if "device" in handle.pyfunc_config_keys and "device" not in config:
            config["device"] = dev  # the task's device reaches models that declare it
        return load_native("pyfunc", handle.local_dir(), dev, model_config=config), "pyfunc"
    try:
        return load_native(spec.runner, handle.local_dir(), dev, fmt=handle.fmt), spec.runner
    except Exception as exc:  # noqa: BLE001 - e.g. a pt2 program that cannot move to this GPU
        if dev == "cpu":
            raise
        log.warning("model %s (%s) cannot run natively on %s (%s: %s); using its pyfunc flavor there",
                    handle.uri, handle.fmt, dev, type(exc).__name__, exc)
        return load_native("pyfunc", handle.local_dir(), dev, model_config={"device": dev}), "pyfunc"


def open_predictor(spec: TaskSpec, info: TaskInfo) -> tuple[Predictor, str]:
    """Executor: the cached model in a runner and a Predictor, and the device it runs on."""
    dev = devices.resolve_device(spec.device, info.gpu_addresses, in_task=info.in_task)
    if dev == "cpu" and spec.runner in ("pytorch", "pyfunc"):
        try:
            import torch
        except ImportError:  # a pyfunc model without torch
            torch = None
        if torch is not None and torch.get_num_threads() != info.cpus:
            torch.set_num_threads(max(1, info.cpus))  # spark.task.cpus: concurrent tasks share the cores
    handle = spec.handle
    key = (handle.fingerprint, spec.runner, dev, repr(sorted((spec.model_config or {}).items())), spec.extra_env)
    model, kind = model_cache.get_or_load(key, lambda: _load(spec, dev))
    if kind == "pytorch":
        runner = TorchRunner(model, dev, autocast=spec.autocast, names=spec.binding.spec.names)
    elif kind == "sklearn":
        runner = SklearnRunner(model, handle.predict_method or "predict")
    else:
        runner = PyfuncRunner(model, input_kind=spec.input_kind if spec.runner == "pyfunc" else "tensor",
                              params=spec.params, device=dev, autocast=spec.autocast)
    staged = getattr(runner, "preprocess", None) is not None
    predictor = Predictor(
        runner,
        binding=spec.binding,
        output=spec.output,
        batch_size=spec.batch_size,
        on_null=spec.on_null,
        # a model with its own preprocess overlaps it with the forward pass, on CPU too
        prefetch=(dev != "cpu" or staged) if spec.prefetch is None else spec.prefetch,
        timezone=spec.timezone,
        row_errors=spec.row_errors,
        max_row_errors=spec.max_row_errors,
        workers=max(1, info.cpus) if staged else 1,
    )
    return predictor, dev


def diagnostics(spec: TaskSpec, info: TaskInfo, dev: str, batch_size: int) -> dict:
    stats = model_cache.stats()
    return {"pid": os.getpid(), "model_loads": stats["loads"], "cache_hits": stats["hits"], "device": dev,
            "gpu_addresses": ",".join(info.gpu_addresses), "batch_size": batch_size,
            "partition_id": info.partition_id, "attempt": info.attempt}


def diagnostics_array(diag: dict, n: int) -> pa.StructArray:
    return pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar(diag[f.name], f.type), n) for f in DIAGNOSTICS_TYPE], fields=list(DIAGNOSTICS_TYPE))


def score_stream(spec: TaskSpec, batches: Iterable, info: TaskInfo) -> Iterator[pa.Array]:
    """Executor: one task's Arrow batches (tuples of argument arrays) in, prediction arrays out."""
    with _environ(spec.extra_env):
        predictor, dev = open_predictor(spec, info)

        def args(it):
            for i, item in enumerate(it):
                if i == 0:
                    faults.apply(info)
                yield [item] if isinstance(item, (pa.Array, pa.ChunkedArray)) else list(item)

        diag = diagnostics(spec, info, dev, spec.batch_size) if spec.diagnostics else None
        for result in predictor.predict_stream(args(batches)):  # struct<prediction, error> when capturing
            if diag is not None:
                result = pa.StructArray.from_arrays(
                    [result, diagnostics_array(diag, len(result))], names=["prediction", "diagnostics"])
            yield result
