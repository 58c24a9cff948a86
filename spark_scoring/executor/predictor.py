"""Arrow columns in, predictions out: the executor-side scoring core.

Runs on: executors (inside the UDF and the direct scan) and anywhere else; it
imports no Spark, so the GPU path is tested on a machine without Java
(``bench/gpu_check.py``).

- :func:`rebatch` merges and splits Arrow batches so the model always sees
  ``batch_size`` rows (Spark hands UDFs 4,096- or 10,000-row batches; only the
  last model batch of a task is short).
- Bad rows (:mod:`.badrows`: null, NaN, +-inf, arrays of the wrong length)
  follow ``on_null``: ``"error"`` raises :class:`BadRowsError` naming the
  columns and counts; ``"null_prediction"`` scores the good rows and returns
  null for the others.
- The model's input is built by :mod:`.inputs` (a matrix, tensors or a pandas
  frame), its output converted by :mod:`.outputs`.
- With ``prefetch``, background threads prepare the next batches (Arrow ->
  numpy -> pinned memory -> device, and a pyfunc model's own ``preprocess``:
  decode, resize, tokenize) while the current batch runs; at most ``workers``
  threads and ``workers + 1`` batches ahead, so memory stays flat as a
  partition grows.
- With ``row_errors="capture"``, a batch the model raises on is split until
  the rows that raise are alone (:mod:`.rowerrors`); the others are scored,
  and the result is ``struct<prediction, error>`` with each failing row's
  error. Bounded by ``max_row_errors`` per task.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..errors import BadRowsError
from .badrows import bad_mask, checks_for
from .inputs import Binding, Bound, bind, frame, model_input
from .outputs import to_arrow
from .rowerrors import isolate, take
from .specs import OutputSpec

__all__ = ["Predictor", "rebatch", "to_matrix", "DEFAULT_BATCH_SIZE", "ERROR_FIELD"]

log = logging.getLogger(__name__)

#: Rows per model call when the caller does not say (measured: bench/RESULTS.md). A pyfunc
#: model taking binary columns (images, audio) gets :data:`MEDIA_BATCH_SIZE`: a decoded image
#: is about a megabyte, so 8192 of them would not fit a worker.
DEFAULT_BATCH_SIZE = {"pytorch": 8192, "sklearn": 16384, "pyfunc": 8192}
MEDIA_BATCH_SIZE = 64

#: The field of ``struct<prediction, error>`` that holds a row's model error (row_errors="capture").
ERROR_FIELD = "error"


# ---------------------------------------------------------------------------
# Arrow plumbing
# ---------------------------------------------------------------------------

def _as_arrays(columns) -> list[pa.Array]:
    if isinstance(columns, (pa.RecordBatch, pa.Table)):
        columns = columns.columns
    elif isinstance(columns, (pa.Array, pa.ChunkedArray)):
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


def to_matrix(columns: Sequence[pa.Array], dtype) -> np.ndarray:
    """Stack numeric columns into one C-contiguous ``(rows, cols)`` matrix: one copy.

    Nulls become NaN (``to_numpy`` does that), so one ``isfinite`` pass finds
    every bad row of a float matrix.
    """
    n = len(columns[0]) if columns else 0
    out = np.empty((n, len(columns)), dtype=dtype)
    for j, col in enumerate(columns):
        out[:, j] = col.to_numpy(zero_copy_only=False)
    return out


def _prefetch(items: Iterator, fn, depth: int = 2, workers: int = 1) -> Iterator:
    """Apply ``fn`` to items in ``workers`` background threads, ``depth`` ahead of the consumer, in order."""
    if workers > 1:
        yield from _pool(items, fn, depth, workers)
        return
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


def _pool(items: Iterator, fn, depth: int, workers: int) -> Iterator:
    """``fn`` over items in a pool of ``workers`` threads, at most ``depth`` items in flight, in order."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="spark_scoring_prefetch") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) >= depth:
                    head, fut = pending.popleft()
                    yield head, fut.result()
            while pending:
                head, fut = pending.popleft()
                yield head, fut.result()
        finally:
            for _item, fut in pending:
                fut.cancel()


# ---------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------

def _is_float_matrix(bound: list[Bound], dtype) -> bool:
    """One tensor input fed by numeric scalar columns, into a float matrix: the fast path."""
    if len(bound) != 1 or dtype is None or np.dtype(dtype).kind != "f":
        return False
    return all(pa.types.is_integer(a.type) or pa.types.is_floating(a.type) or pa.types.is_boolean(a.type)
               for a in bound[0].arrays)


class Predictor:
    """UDF argument columns in, one Arrow array of predictions out.

    ``binding`` maps the argument columns to the model's inputs; ``output``
    is the result type. ``timezone`` is the session time zone naive
    timestamps are given in (as pandas UDFs do).
    """

    def __init__(
        self,
        runner,
        *,
        binding: Binding,
        output: OutputSpec,
        batch_size: int = 8192,
        on_null: str = "error",
        prefetch: bool = True,
        timezone: str = "UTC",
        row_errors: str = "raise",
        max_row_errors: int = 1000,
        workers: int = 1,
    ):
        if on_null not in ("error", "null_prediction"):
            raise ValueError(f"on_null={on_null!r}: expected 'error' or 'null_prediction'")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if row_errors not in ("raise", "capture"):
            raise ValueError(f"row_errors={row_errors!r}: expected 'raise' or 'capture'")
        self.runner = runner
        self.binding = binding
        self.output = output
        self.batch_size = batch_size
        self.on_null = on_null
        self.prefetch = prefetch
        self.timezone = timezone
        self.row_errors = row_errors
        self.max_row_errors = max_row_errors
        self.workers = max(1, int(workers))
        self._failed = [0]  # rows the model raised on in this task (bounded by max_row_errors)
        self.rows_scored = 0
        self.rows_null = 0
        self.batches = 0
        self.preprocess = getattr(runner, "preprocess", None)  # a pyfunc model's own CPU stage

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

    def _checked(self, bound: list[Bound]) -> tuple[np.ndarray | None, dict[str, int]]:
        """The one bad-row rule over every bound input array: (mask or None, bad rows per column)."""
        mask, counts = None, {}
        for b in bound:
            for arr, name in zip(b.arrays, b.columns):
                width = b.input.width if b.input.is_tensor else None
                m = bad_mask(arr, checks_for(arr.type, width=width, optional=b.input.optional), width)
                if m is not None:
                    counts[name] = counts.get(name, 0) + int(m.sum())
                    mask = m if mask is None else (mask | m)
        return mask, counts

    def _prepare(self, columns: list[pa.Array]):
        rows = len(columns[0]) if columns else 0
        bound = bind(columns, self.binding)
        dtype = getattr(self.runner, "dtype", None)
        keep = None
        if self.runner.input_kind == "tensor" and _is_float_matrix(bound, dtype):
            b = bound[0]
            payload = to_matrix(b.arrays, dtype)  # nulls -> NaN: one isfinite pass finds every bad row
            finite = np.isfinite(payload)
            if not finite.all():
                counts = {n: int(c) for n, c in zip(b.columns, (~finite).sum(axis=0)) if c}
                keep = self._bad_rows(rows, ~finite.all(axis=1), counts)
                payload = payload[keep]
            if b.input.shape == () and payload.ndim == 2:
                payload = payload[:, 0]
            elif b.input.shape and len(b.input.shape) > 1:
                payload = payload.reshape((len(payload), *b.input.shape))
            if len(self.binding.spec.inputs) == 1 and self.binding.spec.form == "tensors":
                payload = {b.input.name: payload}
        else:
            mask, counts = self._checked(bound)
            if mask is not None:
                keep = self._bad_rows(rows, mask, counts)
                idx = pa.array(keep)
                bound = [Bound(b.input, tuple(a.take(idx) for a in b.arrays), b.columns) for b in bound]
            if self.runner.input_kind == "frame":
                payload = frame(bound, self.timezone)
            else:
                payload = model_input(bound, self.binding.spec, dtype)
        kept = rows if keep is None else len(keep)
        errors: dict[int, str] = {}
        if kept == 0:
            payload = None
        elif self.preprocess is not None:
            payload, keep, errors = self._preprocessed(payload, rows, keep)
            kept = rows if keep is None else len(keep)
        elif hasattr(self.runner, "to_device"):
            payload = self.runner.to_device(payload)
        return rows, keep, kept, payload, errors

    def _preprocessed(self, payload, rows: int, keep):
        """The model's own ``preprocess`` on the batch; with ``row_errors="capture"``, rows it raises on
        are set aside (their error kept) and the rest preprocessed again."""
        try:
            return self.preprocess(payload), keep, {}
        except Exception as exc:  # noqa: BLE001
            if self.row_errors != "capture":
                raise
            n = len(payload)
            _pieces, failed = isolate(lambda idx: self.preprocess(take(payload, idx)), n,
                                      limit=self.max_row_errors, seen=self._failed, first_error=exc)
            positions = np.arange(rows) if keep is None else np.asarray(keep)
            errors = {int(positions[i]): msg for i, msg in failed.items()}
            good = np.asarray([i for i in range(n) if i not in failed], dtype=np.int64)
            new_keep = positions[good]
            return (self.preprocess(take(payload, good)) if len(good) else None), new_keep, errors

    @property
    def result_type(self) -> pa.DataType:
        """The Arrow type of what :meth:`predict_stream` yields."""
        if self.row_errors == "capture":
            return pa.struct([("prediction", self.output.arrow_type), (ERROR_FIELD, pa.string())])
        return self.output.arrow_type

    def _model(self, payload):
        if hasattr(self.runner, "run_tensor"):
            return self.runner.run_tensor(payload)
        return self.runner.run(payload)

    def _scored(self, payload, kept: int) -> tuple[pa.Array, dict[int, str]]:
        """Predictions of the ``kept`` prepared rows; with ``row_errors="capture"``, the rows the model
        raises on come back null with their error."""
        try:
            return to_arrow(self._model(payload), self.output, kept), {}
        except Exception as exc:  # noqa: BLE001
            if self.row_errors != "capture" or isinstance(exc, BadRowsError):
                raise
            pieces, failed = isolate(lambda idx: to_arrow(self._model(take(payload, idx)), self.output, len(idx)),
                                     kept, limit=self.max_row_errors, seen=self._failed, first_error=exc)
            positions = np.full(kept, -1, dtype=np.int64)
            parts, offset = [], 0
            for idx, arr in pieces:
                positions[idx] = np.arange(offset, offset + len(idx))
                parts.append(arr)
                offset += len(idx)
            merged = pa.concat_arrays(parts) if parts else pa.nulls(0, type=self.output.arrow_type)
            result = merged.take(pa.array(positions, mask=positions < 0)) if len(merged) else pa.nulls(
                kept, type=self.output.arrow_type)
            return result, failed

    def _run(self, prepared) -> pa.Array:
        rows, keep, kept, payload, errors = prepared
        self.batches += 1
        failed: dict[int, str] = {}
        if payload is None:
            result = pa.nulls(0, type=self.output.arrow_type)
        else:
            result, failed = self._scored(payload, kept)
            if failed:
                positions = np.arange(rows) if keep is None else np.asarray(keep)
                errors = {**errors, **{int(positions[i]): msg for i, msg in failed.items()}}
        if keep is not None:
            self.rows_null += rows - kept
            positions = np.full(rows, -1, dtype=np.int64)
            positions[keep] = np.arange(kept)
            idx = pa.array(positions, mask=positions < 0)
            result = result.take(idx) if len(result) else pa.nulls(rows, type=self.output.arrow_type)
        self.rows_scored += kept - len(failed)
        if self.row_errors == "capture":
            messages = [None] * rows
            for i, msg in errors.items():
                messages[i] = msg
            result = pa.StructArray.from_arrays([result, pa.array(messages, pa.string())],
                                                names=["prediction", ERROR_FIELD])
        return result

    def predict(self, columns) -> pa.Array:
        """Score one batch of any size (split into ``batch_size`` chunks)."""
        parts = list(self.predict_stream([columns]))
        if not parts:
            return pa.nulls(0, type=self.result_type)
        return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)

    def predict_stream(self, batches: Iterable) -> Iterator[pa.Array]:
        """Score a stream of Arrow batches, re-batched to ``batch_size`` rows per model call.

        Yields one result array per model batch; their total length equals the input's.
        """
        chunks = rebatch(batches, self.batch_size)
        if self.prefetch:
            for _cols, prepared in _prefetch(chunks, self._prepare, depth=self.workers + 1, workers=self.workers):
                yield self._run(prepared)
        else:
            for cols in chunks:
                yield self._run(self._prepare(cols))
