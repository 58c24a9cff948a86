"""Runners: a loaded model behind one call, prepared input in, raw predictions out.

Runs on: executors. No Spark import.

- :class:`TorchRunner`: a torch module (an ``nn.Module``, a TorchScript
  module, or the module of a ``torch.export`` program) under
  ``inference_mode`` on its device; on CUDA, pinned host memory, non-blocking
  copies, optional ``autocast`` and an out-of-memory back-off that halves the
  batch (``batch_size_used`` reports what worked).
- :class:`SklearnRunner`: a scikit-learn estimator's ``predict`` /
  ``predict_proba`` on a float64 matrix.
- :class:`PyfuncRunner`: any ``mlflow.pyfunc`` model, called with a pandas
  DataFrame (column signatures) or ndarrays (tensor signatures), with
  ``params``.

``input_kind`` says what the predictor prepares: ``"tensor"`` (numpy arrays;
one, or a dict of named ones) or ``"frame"`` (a pandas DataFrame).
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

__all__ = ["TorchRunner", "SklearnRunner", "PyfuncRunner"]

log = logging.getLogger(__name__)


class SklearnRunner:
    """A scikit-learn estimator called with a float64 numpy matrix."""

    input_kind = "tensor"

    def __init__(self, model: Any, method: str = "predict", dtype: Any = np.float64):
        self.model = model
        self.fn = getattr(model, method)
        self.dtype = np.dtype(dtype)

    def run(self, matrix: np.ndarray):
        import warnings

        with warnings.catch_warnings():
            # fitted on a DataFrame, called with a matrix of the same columns in order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.fn(matrix)


class PyfuncRunner:
    """Any MLflow pyfunc model: ``model.predict(data, params=params)``.

    ``input_kind`` is ``"frame"`` for column signatures (and no signature),
    ``"tensor"`` for tensor signatures (an ndarray, or a dict of them).

    A ``PythonModel`` that declares its CPU work apart from its forward pass, with
    ``preprocess(model_input) -> batch`` and ``predict_batch(batch, params=None)``,
    is run in two stages: :attr:`preprocess` (the predictor runs it for the next
    batches in worker threads) and :meth:`run` (``predict_batch`` on the prepared
    batch). A torch tensor coming out of ``preprocess`` is copied to the task's GPU
    through pinned memory, non-blocking, before ``predict_batch`` sees it; with
    ``autocast`` the forward pass runs under CUDA autocast.
    """

    def __init__(self, model: Any, *, input_kind: str = "frame", params: dict | None = None,
                 dtype: Any = None, device: str = "cpu", autocast: str | None = None):
        self.model = model
        self.input_kind = input_kind
        self.params = params or None
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.device = device
        self.autocast = autocast
        self.preprocess = None
        self._stages = _two_stages(model)
        if self._stages is not None:
            self.preprocess = self._prepare

    def _prepare(self, frame):
        batch = self._stages[0](frame)
        if self.device.startswith("cuda") and hasattr(batch, "pin_memory"):
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        return batch

    def run(self, data):
        if self._stages is not None:
            return self._forward(data)
        if self.params is not None:
            return self.model.predict(data, params=self.params)
        return self.model.predict(data)

    def _forward(self, batch):
        predict_batch = self._stages[1]
        call = (lambda: predict_batch(batch, params=self.params)) if self.params is not None else (
            lambda: predict_batch(batch))
        if self.autocast and self.device.startswith("cuda"):
            import torch

            dtype = torch.bfloat16 if self.autocast == "bf16" else torch.float16
            with torch.autocast(device_type="cuda", dtype=dtype):
                return call()
        return call()


def _two_stages(model: Any):
    """``(preprocess, predict_batch)`` of a PythonModel that declares both, else None."""
    try:
        impl = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - not a PythonModel (a flavor's own pyfunc wrapper)
        return None
    pre, fwd = getattr(impl, "preprocess", None), getattr(impl, "predict_batch", None)
    return (pre, fwd) if callable(pre) and callable(fwd) else None


class TorchRunner:
    """A torch module in ``inference_mode`` on ``device``.

    ``names`` orders a dict payload into the module's positional inputs
    (a model with several tensor inputs). On CUDA: host batches go through
    pinned memory with non-blocking copies, ``autocast`` ("bf16" / "fp16") is
    optional, and an out-of-memory error halves the batch and retries.
    """

    input_kind = "tensor"

    def __init__(self, module: Any, device: str = "cpu", *, autocast: str | None = None, dtype=np.float32,
                 names: Sequence[str] = ()):
        import torch

        if autocast not in (None, "bf16", "fp16"):
            raise ValueError(f"autocast={autocast!r}: expected None, 'bf16' or 'fp16'")
        self.torch = torch
        self.module = module
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = np.dtype(dtype)
        self.autocast = autocast
        self.names = tuple(names)
        self.max_rows: int | None = None  # set after an OOM back-off
        self.batch_size_used: int | None = None

    def _one_to_device(self, array: np.ndarray):
        t = self.torch.from_numpy(np.ascontiguousarray(array))
        if self.cuda:
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def to_device(self, payload):
        """Host side: numpy -> (pinned) tensor(s) -> device, non-blocking on CUDA."""
        if isinstance(payload, dict):
            return tuple(self._one_to_device(payload[n]) for n in (self.names or payload))
        return (self._one_to_device(payload),)

    def _forward(self, tensors):
        torch = self.torch
        with torch.inference_mode():
            if self.cuda and self.autocast:
                dtype = torch.bfloat16 if self.autocast == "bf16" else torch.float16
                with torch.autocast(device_type="cuda", dtype=dtype):
                    out = self.module(*tensors)
            else:
                out = self.module(*tensors)
            return _to_host(out)

    def run_tensor(self, tensors):
        """Device tensors (a tuple, one per input) in, host numpy predictions out."""
        rows = tensors[0].shape[0]
        step = min(rows, self.max_rows or rows) or 1
        while True:
            try:
                parts = [self._forward(tuple(t[i:i + step] for t in tensors)) for i in range(0, rows, step)]
                self.batch_size_used = step
                return parts[0] if len(parts) == 1 else _concat(parts)
            except self.torch.cuda.OutOfMemoryError:
                if step <= 1:
                    raise
                self.torch.cuda.empty_cache()
                step = max(1, step // 2)
                self.max_rows = step
                log.warning("CUDA out of memory; retrying with batches of %d rows", step)

    def run(self, payload):
        return self.run_tensor(self.to_device(payload))


def _to_host(out):
    if hasattr(out, "detach"):
        out = out.detach()
        return (out.float() if out.is_floating_point() else out).cpu().numpy()
    if isinstance(out, (tuple, list)):
        return [_to_host(o) for o in out]
    if isinstance(out, dict):
        return {k: _to_host(v) for k, v in out.items()}
    return out


def _concat(parts):
    first = parts[0]
    if isinstance(first, list):
        return [np.concatenate([p[i] for p in parts]) for i in range(len(first))]
    if isinstance(first, dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in first}
    return np.concatenate(parts)
