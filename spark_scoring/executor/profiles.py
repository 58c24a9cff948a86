"""Column profiles of scored rows, computed in the Python workers: summaries, quantiles, bin counts.

Runs on: executors (the task functions of the ``mapInArrow`` / ``applyInArrow``
calls :mod:`spark_scoring.ops.drift` builds) and anywhere in tests: numpy and
pyarrow only. Input batches carry ``_group`` (a string key: the partition the
row belongs to) and value columns of float64 where null and NaN both mean "no
value".

- :func:`task_summaries` -> :func:`merge_summaries`: per (group, column) the
  count, mean, sample standard deviation, min and max (exact, merged with Chan's
  formulas) and quantiles. A task keeps its own values of a group and column
  (bounded by its input split), sorts them and sends at most ``k + 1`` of them with
  their ranks; the merge answers a quantile with the smallest sent value whose
  estimated rank reaches it, a value of the data with a rank error of at most
  1/k of the rows (exact when each task holds at most ``k + 1`` values).
- :func:`task_bin_counts`: exact rows per bin of given edges, summed by Spark.

The one binning rule lives here (:func:`bin_index`): value ``x`` goes to bin
``#{edges <= x}`` of ``len(edges) + 1`` bins; the driver's PSI
(:mod:`spark_scoring.ops.drift`) uses the same function.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa

__all__ = [
    "SUMMARY_POINTS",
    "SUMMARY_SCHEMA",
    "MERGED_SCHEMA",
    "COUNTS_SCHEMA",
    "bin_index",
    "finite",
    "task_summaries",
    "merge_summaries",
    "merge_at",
    "task_bin_counts",
]

#: Values a task sends per (group, column): its rank error bound is 1/SUMMARY_POINTS of the rows.
SUMMARY_POINTS = 1000
GROUP = "_group"

SUMMARY_SCHEMA = pa.schema([
    ("g", pa.string()), ("c", pa.string()), ("n", pa.int64()), ("mean", pa.float64()), ("m2", pa.float64()),
    ("lo", pa.float64()), ("hi", pa.float64()), ("points", pa.list_(pa.float64())), ("ranks", pa.list_(pa.int64())),
])
MERGED_SCHEMA = pa.schema([
    ("g", pa.string()), ("c", pa.string()), ("n", pa.int64()), ("mean", pa.float64()), ("std", pa.float64()),
    ("lo", pa.float64()), ("hi", pa.float64()), ("q", pa.list_(pa.float64())),
])
COUNTS_SCHEMA = pa.schema([("r", pa.string()), ("c", pa.string()), ("b", pa.int32()), ("n", pa.int64())])


def finite(values) -> np.ndarray:
    """float64 values without null and NaN (infinities are values: they fall in the outer bins)."""
    arr = np.asarray(values, dtype=float)
    return arr[~np.isnan(arr)]


def bin_index(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin of each value: ``#{edges <= x}`` (``edges`` sorted inner edges)."""
    return np.searchsorted(np.asarray(edges, dtype=float), values, side="right")


def _values(batch: pa.RecordBatch, name: str, rows: np.ndarray | None) -> np.ndarray:
    column = batch.column(name)
    arr = column.to_numpy(zero_copy_only=False).astype(float, copy=False)  # nulls -> NaN
    return finite(arr if rows is None else arr[rows])


def _by_group(batch: pa.RecordBatch) -> Iterator[tuple[str, np.ndarray | None]]:
    groups = batch.column(GROUP).to_numpy(zero_copy_only=False)
    keys = np.unique(groups)
    if len(keys) == 1:
        yield str(keys[0]), None
        return
    for key in keys:
        yield str(key), np.flatnonzero(groups == key)


def task_summaries(batches: Iterable[pa.RecordBatch], columns: Sequence[str],
                   k: int = SUMMARY_POINTS) -> Iterator[pa.RecordBatch]:
    """One task: per (group, column) of its rows, ``n, mean, m2, lo, hi`` and at most ``k + 1``
    sorted values (``points``) with the number of the task's values up to each (``ranks``)."""
    held: dict[tuple[str, str], list[np.ndarray]] = {}
    for batch in batches:
        for key, rows in _by_group(batch):
            for name in columns:
                held.setdefault((key, name), []).append(_values(batch, name, rows))
    out = []
    for (key, name), chunks in held.items():
        values = np.sort(np.concatenate(chunks))
        n = int(values.size)
        if n == 0:
            continue
        picks = np.arange(n) if n <= k + 1 else np.unique(np.floor(np.linspace(0, n - 1, k + 1)).astype(np.int64))
        mean = float(values.mean())
        out.append({"g": key, "c": name, "n": n, "mean": mean, "m2": float(((values - mean) ** 2).sum()),
                    "lo": float(values[0]), "hi": float(values[-1]),
                    "points": values[picks].tolist(), "ranks": (picks + 1).tolist()})
    yield pa.RecordBatch.from_pylist(out, schema=SUMMARY_SCHEMA)


def merge_summaries(table: pa.Table, levels: Sequence[float]) -> pa.Table:
    """One (group, column)'s task summaries merged: exact ``n, mean, std, lo, hi`` and the value at
    each of ``levels`` (see the module docstring; ``std`` null for one value)."""
    rows = table.to_pylist()
    if not rows:
        return MERGED_SCHEMA.empty_table()
    n, mean, m2 = 0, 0.0, 0.0
    for r in rows:  # Chan et al.'s pairwise update
        nb, mb, m2b = r["n"], r["mean"], r["m2"]
        delta = mb - mean
        total = n + nb
        mean += delta * nb / total
        m2 += m2b + delta * delta * n * nb / total
        n = total
    points, steps = [], []
    for r in rows:
        ranks = np.asarray(r["ranks"], dtype=np.int64)
        points.append(np.asarray(r["points"], dtype=float))
        steps.append(np.diff(ranks, prepend=0))  # the task's values each sent value stands for
    xs = np.concatenate(points)
    order = np.argsort(xs, kind="stable")
    xs, counts = xs[order], np.cumsum(np.concatenate(steps)[order])
    targets = np.maximum(np.ceil(np.asarray(levels, dtype=float) * n), 1)
    q = xs[np.minimum(np.searchsorted(counts, targets, side="left"), len(xs) - 1)]
    std = float(np.sqrt(m2 / (n - 1))) if n > 1 else None
    merged = {"g": rows[0]["g"], "c": rows[0]["c"], "n": n, "mean": mean, "std": std,
              "lo": min(r["lo"] for r in rows), "hi": max(r["hi"] for r in rows), "q": q.tolist()}
    return pa.Table.from_pylist([merged], schema=MERGED_SCHEMA)


def merge_at(levels: Sequence[float]):
    """:func:`merge_summaries` at ``levels`` as the one-argument function of a grouped
    ``applyInArrow`` (PySpark reads the function's hints and argument count to tell ``f(table)``
    from ``f(key, table)``, and cannot read a ``functools.partial``)."""
    wanted = [float(x) for x in levels]

    def merge(table):
        return merge_summaries(table, wanted)

    return merge


def task_bin_counts(batches: Iterable[pa.RecordBatch],
                    requests: Mapping[str, tuple[str, Mapping[str, Sequence[float]]]]) -> Iterator[pa.RecordBatch]:
    """One task: rows per bin for each request ``{request id: (group key, {column: inner edges})}``,
    as long rows ``(request, column, bin, rows)`` (Spark sums them across tasks)."""
    by_group: dict[str, list[tuple[str, Mapping[str, Sequence[float]]]]] = {}
    for rid, (key, edges) in requests.items():
        by_group.setdefault(str(key), []).append((rid, edges))
    found: dict[tuple[str, str], np.ndarray] = {}
    for batch in batches:
        for key, rows in _by_group(batch):
            values: dict[str, np.ndarray] = {}  # a column's values once, however many requests bin them
            for rid, edges in by_group.get(key, ()):
                for name, e in edges.items():
                    if name not in values:
                        values[name] = _values(batch, name, rows)
                    counts = np.bincount(bin_index(values[name], e), minlength=len(e) + 1)
                    have = found.get((rid, name))
                    found[(rid, name)] = counts if have is None else have + counts
    out = [{"r": rid, "c": name, "b": b, "n": int(v)}
           for (rid, name), counts in found.items() for b, v in enumerate(counts) if v]
    yield pa.RecordBatch.from_pylist(out, schema=COUNTS_SCHEMA)
