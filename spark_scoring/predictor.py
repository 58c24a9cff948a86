"""Arrow columns in, predictions out: the executor-side scoring core.

Runs on: executors (inside the UDF) and anywhere else; it imports no Spark, so
the GPU path is tested on a machine without Java (``bench/gpu_check.py``).

- :func:`rebatch` merges and splits Arrow batches so the model always sees
  ``batch_size`` rows (Spark hands UDFs 4,096- or 10,000-row batches; only the
  last model batch of a task is short).
- :func:`to_matrix` turns numeric columns into one C-contiguous matrix with a
  single copy (``to_numpy`` is zero-copy for null-free primitive arrays).
- Bad rows (null, NaN, +-inf in a feature) follow ``on_null``: ``"error"``
  raises :class:`BadRowsError` naming the columns and counts;
  ``"null_prediction"`` scores the good rows and returns null for the others.
- Runners: :class:`TorchRunner` (``inference_mode``, float32, optional CUDA
  autocast, pinned host memory, a background thread that prepares batch n+1
  while batch n computes, and CUDA out-of-memory back-off that halves the
  batch), :class:`SklearnRunner` (numpy matrix straight into the estimator),
  :class:`PyfuncRunner` (any ``mlflow.pyfunc`` model, pandas in).
- Outputs become Arrow arrays of the declared type; NaN results become null.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import BadRowsError, ResultTypeError
from .signature import OutputSpec

__all__ = [
    "Predictor",
    "TorchRunner",
    "SklearnRunner",
    "PyfuncRunner",
    "rebatch",
    "to_matrix",
    "bad_row_mask",
    "to_arrow",
    "DEFAULT_BATCH_SIZE",
]

log = logging.getLogger(__name__)

#: Rows per model call when the caller does not say (measured: bench/RESULTS.md).
DEFAULT_BATCH_SIZE = {"pytorch": 8192, "sklearn": 16384, "pyfunc": 8192}

Columns = Sequence[pa.Array]


# ---------------------------------------------------------------------------
# Arrow plumbing
# ---------------------------------------------------------------------------

def _as_arrays(columns) -> list[pa.Array]:
    if isinstance(columns, (pa.RecordBatch, pa.Table)):
        return [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns.columns]
    if isinstance(columns, (pa.Array, pa.ChunkedArray)):
        columns = [columns]
    return [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns]


def rebatch(batches: Iterable, batch_size: int) -> Iterator[list[pa.Array]]:
    """Yield column lists of exactly ``batch_size`` rows (the last may be shorter).

    Input items are column lists, RecordBatches or single arrays. Slicing is
    zero-copy; only batches that straddle a boundary are concatenated.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    pending: list[list[pa.Array]] = []
    pending_rows = 0
    for item in batches:
        cols = _as_arrays(item)
        n = len(cols[0]) if cols else 0
        offset = 0
        while offset < n:
            take = min(batch_size - pending_rows, n - offset)
            pending.append([c.slice(offset, take) for c in cols])
            pending_rows += take
            offset += take
            if pending_rows == batch_size:
                yield _concat(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _concat(pending)


def _concat(parts: list[list[pa.Array]]) -> list[pa.Array]:
    if len(parts) == 1:
        return parts[0]
    return [pa.concat_arrays([p[i] for p in parts]) for i in range(len(parts[0]))]


def bad_row_mask(columns: Columns, names: Sequence[str]) -> tuple[np.ndarray | None, dict[str, int]]:
    """Rows with a null, NaN or infinite feature: (mask or None when clean, counts per column)."""
    mask = None
    counts: dict[str, int] = {}
    for name, col in zip(names, columns):
        if pa.types.is_floating(col.type):
            col_bad = ~pc.fill_null(pc.is_finite(col), False).to_numpy(zero_copy_only=False)
        elif col.null_count:
            col_bad = col.is_null().to_numpy(zero_copy_only=False)
        else:
            continue
        if col_bad.any():
            counts[name] = int(col_bad.sum())
            mask = col_bad if mask is None else (mask | col_bad)
    return mask, counts


def to_matrix(columns: Columns, dtype: np.dtype) -> np.ndarray:
    """Stack numeric columns into one C-contiguous ``(rows, cols)`` matrix: one copy.

    Nulls become NaN (``to_numpy`` does that), so one ``isfinite`` pass finds
    every bad row of a float matrix.
    """
    n = len(columns[0]) if columns else 0
    out = np.empty((n, len(columns)), dtype=dtype)
    for j, col in enumerate(columns):
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


def _nan_to_null(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    if values.dtype.kind == "f":
        return pa.array(values, mask=np.isnan(values), type=arrow_type if pa.types.is_floating(arrow_type) else None)
    return pa.array(values)


def to_arrow(raw: Any, output: OutputSpec, rows: int) -> pa.Array:
    """Convert a model's raw output (tensor/ndarray/Series/DataFrame/list) to ``output.arrow_type``."""
    import pandas as pd

    if hasattr(raw, "detach"):  # torch tensor
        raw = raw.detach().float().cpu().numpy()
    if output.kind == "struct":
        if not isinstance(raw, pd.DataFrame):
            raise ResultTypeError(
                f"the model returned {type(raw).__name__}, but the output type is a struct of "
                f"{list(output.fields)}; a struct needs a DataFrame with those columns."
            )
        arrays = []
        for i in range(output.arrow_type.num_fields):
            field = output.arrow_type.field(i)
            if field.name not in raw.columns:
                raise ResultTypeError(
                    f"the model's output has columns {list(raw.columns)}; field {field.name!r} is missing."
                )
            arrays.append(_column_to_arrow(raw[field.name], field.type))
        result = pa.StructArray.from_arrays(arrays, fields=list(output.arrow_type))
    elif output.kind == "array":
        values = raw.to_numpy() if isinstance(raw, (pd.DataFrame, pd.Series)) else np.asarray(raw)
        if values.dtype == object:  # a Series of lists / arrays
            result = pa.array(list(values), type=output.arrow_type, from_pandas=True)
        else:
            if values.ndim == 1:
                values = values.reshape(-1, 1)
            width = values.shape[1]
            flat = values.reshape(-1)
            elem = output.arrow_type.value_type
            flat_arr = _nan_to_null(flat.astype(np.float64) if pa.types.is_floating(elem) else flat, elem)
            result = pa.FixedSizeListArray.from_arrays(flat_arr.cast(elem), width).cast(output.arrow_type)
    else:
        if isinstance(raw, pd.DataFrame):
            if raw.shape[1] != 1:
                raise ResultTypeError(
                    f"the model returned {raw.shape[1]} columns {list(raw.columns)[:10]} per row, but the "
                    "result type is a single value. Fix: set result_type to an array or struct type; "
                    "spark_scoring never silently picks the first column."
                )
            raw = raw.iloc[:, 0]
        if isinstance(raw, pd.Series):
            result = _column_to_arrow(raw, output.arrow_type)
        else:
            values = np.asarray(raw)
            if values.ndim == 2 and values.shape[1] == 1:
                values = values[:, 0]
            if values.ndim != 1:
                raise ResultTypeError(
                    f"the model returned shape {values.shape}, but the result type is a single value "
                    f"({output.arrow_type}). Fix: set result_type='array<double>' (e.g. class "
                    "probabilities); spark_scoring never silently picks the first column."
                )
            result = _column_to_arrow(pd.Series(values), output.arrow_type)
    if len(result) != rows:
        raise ResultTypeError(f"the model returned {len(result)} predictions for {rows} rows.")
    return result


def _column_to_arrow(series, arrow_type: pa.DataType) -> pa.Array:
    values = series.to_numpy() if hasattr(series, "to_numpy") else np.asarray(series)
    if values.dtype.kind == "f" and pa.types.is_floating(arrow_type):
        return pa.array(values.astype(np.float64, copy=False), mask=np.isnan(values)).cast(arrow_type)
    arr = pa.array(values, from_pandas=True)  # None / NaN -> null, never the string 'None'
    return arr.cast(arrow_type)


# ---------------------------------------------------------------------------
# Runners: a matrix or a frame in, raw predictions out
# ---------------------------------------------------------------------------

class SklearnRunner:
    """A scikit-learn estimator called with a float64 numpy matrix."""

    input_kind = "matrix"

    def __init__(self, model: Any, method: str = "predict", dtype: Any = np.float64):
        self.model = model
        self.fn = getattr(model, method)
        self.dtype = np.dtype(dtype)
        self.feature_names = getattr(model, "feature_names_in_", None)

    def run(self, matrix: np.ndarray):
        import warnings

        with warnings.catch_warnings():
            # fitted on a DataFrame, called with a matrix of the same columns in order
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.fn(matrix)


class PyfuncRunner:
    """Any MLflow pyfunc model, called with a pandas DataFrame of the named columns."""

    input_kind = "frame"

    def __init__(self, model: Any, names: Sequence[str]):
        self.model = model
        self.names = list(names)

    def run(self, frame):
        return self.model.predict(frame)


class TorchRunner:
    """A torch module in ``inference_mode`` on ``device``.

    On CUDA: host batches go through pinned memory with non-blocking copies,
    a background thread prepares the next batch while the GPU computes,
    ``autocast`` ("bf16" / "fp16") is optional, and an out-of-memory error
    halves the batch and retries; ``batch_size_used`` reports what worked.
    """

    input_kind = "matrix"

    def __init__(self, module: Any, device: str = "cpu", *, autocast: str | None = None, dtype=np.float32):
        import torch

        self.torch = torch
        self.module = module
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.dtype = np.dtype(dtype)
        self.autocast = autocast
        self.max_rows: int | None = None  # set after an OOM back-off
        self.batch_size_used: int | None = None
        if autocast not in (None, "bf16", "fp16"):
            raise ValueError(f"autocast={autocast!r}: expected None, 'bf16' or 'fp16'")

    def to_device(self, matrix: np.ndarray):
        """Host side: numpy -> (pinned) tensor -> device, non-blocking on CUDA."""
        t = self.torch.from_numpy(matrix)
        if self.cuda:
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def _forward(self, tensor):
        torch = self.torch
        with torch.inference_mode():
            if self.cuda and self.autocast:
                dtype = torch.bfloat16 if self.autocast == "bf16" else torch.float16
                with torch.autocast(device_type="cuda", dtype=dtype):
                    out = self.module(tensor)
            else:
                out = self.module(tensor)
            return out.float().cpu().numpy() if hasattr(out, "float") else out

    def run_tensor(self, tensor):
        rows = tensor.shape[0]
        step = min(rows, self.max_rows or rows)
        while True:
            try:
                parts = [self._forward(tensor[i:i + step]) for i in range(0, rows, step)]
                self.batch_size_used = step
                return parts[0] if len(parts) == 1 else np.concatenate(parts)
            except self.torch.cuda.OutOfMemoryError:
                if step <= 1:
                    raise
                self.torch.cuda.empty_cache()
                step = max(1, step // 2)
                self.max_rows = step
                log.warning("CUDA out of memory; retrying with batches of %d rows", step)

    def run(self, matrix: np.ndarray):
        return self.run_tensor(self.to_device(matrix))


# ---------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------

def _prefetch(items: Iterator, fn, depth: int = 2) -> Iterator:
    """Apply ``fn`` to items in a background thread, ``depth`` ahead of the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work():
        try:
            for item in items:
                if stop.is_set():
                    return
                q.put((item, fn(item)))
            q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put((done, exc))

    thread = threading.Thread(target=work, name="spark_scoring_prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, value = q.get()
            if item is done:
                if value is not None:
                    raise value
                return
            yield item, value
    finally:
        stop.set()
        while thread.is_alive():  # drain so the producer can finish
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass


class Predictor:
    """Feature columns in, one Arrow array of predictions out.

    ``names`` are the feature names (for messages and pyfunc frames);
    ``types`` the Arrow type of each column as the model wants it.
    """

    def __init__(
        self,
        runner: Any,
        *,
        names: Sequence[str],
        output: OutputSpec,
        batch_size: int = 8192,
        on_null: str = "error",
        prefetch: bool = True,
    ):
        if on_null not in ("error", "null_prediction"):
            raise ValueError(f"on_null={on_null!r}: expected 'error' or 'null_prediction'")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.runner = runner
        self.names = list(names)
        self.output = output
        self.batch_size = batch_size
        self.on_null = on_null
        self.prefetch = prefetch
        self.rows_scored = 0
        self.rows_null = 0
        self.batches = 0

    # -- preparing one model batch (may run in the prefetch thread) ---------
    def _bad_rows(self, rows: int, mask: np.ndarray, counts: dict[str, int]) -> np.ndarray:
        """Apply ``on_null`` to a bad-row mask; return the indices of the rows to keep."""
        if self.on_null == "error":
            detail = ", ".join(f"{k}: {v}" for k, v in counts.items())
            raise BadRowsError(
                f"{int(mask.sum())} of {rows} rows have null, NaN or infinite features "
                f"({detail}). Fix: clean or drop those rows, or use on_null='null_prediction' "
                "(engine) / bad_rows: quarantine (jobs)."
            )
        return np.flatnonzero(~mask)

    def _prepare(self, columns: list[pa.Array]):
        rows = len(columns[0])
        keep = None
        if self.runner.input_kind == "matrix":
            payload = to_matrix(columns, self.runner.dtype)
            if payload.dtype.kind == "f":
                finite = np.isfinite(payload)
                if not finite.all():
                    counts = {n: int(c) for n, c in zip(self.names, (~finite).sum(axis=0)) if c}
                    keep = self._bad_rows(rows, ~finite.all(axis=1), counts)
                    payload = payload[keep]
            if len(payload) == 0:
                payload = None
            elif hasattr(self.runner, "to_device"):
                payload = self.runner.to_device(payload)
        else:
            import pandas as pd

            mask, counts = bad_row_mask(columns, self.names)
            if mask is not None:
                keep = self._bad_rows(rows, mask, counts)
                columns = [c.take(pa.array(keep)) for c in columns]
            payload = (
                pd.DataFrame({n: c.to_pandas() for n, c in zip(self.runner.names, columns)})
                if len(columns[0]) else None
            )
        return rows, keep, payload

    def _run(self, prepared) -> pa.Array:
        rows, keep, payload = prepared
        self.batches += 1
        if payload is None:
            result = pa.nulls(0, type=self.output.arrow_type)
        elif hasattr(self.runner, "run_tensor"):
            result = to_arrow(self.runner.run_tensor(payload), self.output, len(payload))
        else:
            result = to_arrow(self.runner.run(payload), self.output, len(payload))
        if keep is not None:
            self.rows_null += rows - len(keep)
            positions = np.full(rows, -1, dtype=np.int64)
            positions[keep] = np.arange(len(keep))
            idx = pa.array(positions, mask=positions < 0)
            result = result.take(idx) if len(result) else pa.nulls(rows, type=self.output.arrow_type)
        self.rows_scored += rows - (0 if keep is None else rows - len(keep))
        return result

    def predict(self, columns) -> pa.Array:
        """Score one batch of any size (split into ``batch_size`` chunks)."""
        parts = list(self.predict_stream([columns]))
        if not parts:
            return pa.nulls(0, type=self.output.arrow_type)
        return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)

    def predict_stream(self, batches: Iterable) -> Iterator[pa.Array]:
        """Score a stream of Arrow batches, re-batched to ``batch_size`` rows per model call.

        Yields one result array per model batch; their total length equals the input's.
        """
        chunks = rebatch(batches, self.batch_size)
        if self.prefetch:
            for _cols, prepared in _prefetch(chunks, self._prepare):
                yield self._run(prepared)
        else:
            for cols in chunks:
                yield self._run(self._prepare(cols))
