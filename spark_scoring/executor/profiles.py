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
- :class:`TaskProfiler` / :class:`ColumnSketch`: the same statistics made *in the
  scoring pass*: a direct-scan task sketches the rows it hands to Spark as they
  stream by (memory bounded: a column's unsorted values are compacted every
  :data:`COMPACT_AT`), ships the sketches in a Spark accumulator keyed by task
  (:class:`KeyedStates`: a retried task counts once), and the driver merges them
  (:func:`merge_task_states`). A sketch answers quantiles and bin counts: exact
  where it kept every distinct value (at most ``k + 1``), else within ``1/k`` of the
  rows in rank and ``n/k`` rows per bin edge (measured: PSI within 0.001 of the
  exact one for a sample against itself, 200,000 rows, k = 200).

The one binning rule lives here (:func:`bin_index`): value ``x`` goes to bin
``#{edges <= x}`` of ``len(edges) + 1`` bins; the driver's PSI
(:mod:`spark_scoring.ops.drift`) uses the same function.
"""
from __future__ import annotations

import math
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
    "ColumnSketch",
    "TaskProfiler",
    "KeyedStates",
    "merge_task_states",
    "task_rows",
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


# ------------------------------------------------------------ in the scoring pass
#: Values a column sketch holds unsorted before it compacts them (bounds a task's memory).
COMPACT_AT = 1 << 16


class ColumnSketch:
    """One column of one group's rows, summarised as they stream by: exact ``n, mean, m2, lo, hi`` and
    at most ``k + 1`` sorted values ``v`` with the exact (or estimated) number of values below each
    (``below``: ``< v``) and up to it (``upto``: ``<= v``).

    Runs anywhere (numpy only): in a scoring task per record batch, on the driver to merge the tasks'.
    A sketch that saw at most ``k + 1`` distinct values keeps them all, so its quantiles and bin counts
    are exact; otherwise the number of values below any ``x`` is known within ``n / k`` (the gap between
    two kept values, halved once per compaction or merge), and a quantile is a value of the data within
    ``1 / k`` of the rows in rank.
    """

    __slots__ = ("k", "n", "mean", "m2", "lo", "hi", "v", "below", "upto", "_chunks", "_held")

    def __init__(self, k: int = SUMMARY_POINTS):
        self.k = k
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo, self.hi = math.inf, -math.inf
        self.v = np.empty(0)
        self.below = np.empty(0)
        self.upto = np.empty(0)
        self._chunks: list[np.ndarray] = []
        self._held = 0

    # ---------------------------------------------------------------- build
    def add(self, values) -> None:
        """Values of this column (NaN / null ignored)."""
        x = finite(values)
        if x.size == 0:
            return
        mean = float(x.mean())
        self._moments(int(x.size), mean, float(((x - mean) ** 2).sum()), float(x.min()), float(x.max()))
        self._chunks.append(x)
        self._held += x.size
        if self._held >= COMPACT_AT:
            self._compact()

    def _moments(self, n: int, mean: float, m2: float, lo: float, hi: float) -> None:
        total = self.n + n  # Chan et al.'s pairwise update
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)

    def _compact(self) -> None:
        if not self._chunks:
            return
        raw = np.sort(np.concatenate(self._chunks))
        self._chunks, self._held = [], 0
        held = self.n - raw.size  # values already in (v, below, upto)
        points = np.unique(np.concatenate([self.v, raw[_picks(raw.size, self.k)]]))
        below = self._est(points, held, "left") + np.searchsorted(raw, points, side="left")
        upto = self._est(points, held, "right") + np.searchsorted(raw, points, side="right")
        self.v, self.below, self.upto = _thin(points, below, upto, self.k)

    def _est(self, x: np.ndarray, n: int, side: str) -> np.ndarray:
        """Values of (v, below, upto) ``< x`` (side left) or ``<= x`` (right): exact at a kept value,
        else the middle of what the neighbouring kept values allow."""
        if self.v.size == 0:
            return np.zeros(len(x))
        v = self.v
        i = np.searchsorted(v, x, side="left")
        j = np.searchsorted(v, x, side="right")
        hit = j > i  # x is a kept value
        inner = np.clip(i, 0, v.size - 1)
        lower = np.where(i > 0, self.upto[np.clip(i - 1, 0, v.size - 1)], 0.0)
        upper = np.where(i < v.size, self.below[inner], float(n))
        exact = self.below[inner] if side == "left" else self.upto[inner]
        return np.where(hit, exact, (lower + upper) / 2)

    # ------------------------------------------------------------- read out
    def finish(self) -> "ColumnSketch":
        self._compact()
        return self

    def state(self) -> tuple:
        """A small picklable form (what a task ships)."""
        self.finish()
        return (self.k, self.n, self.mean, self.m2, self.lo, self.hi, self.v, self.below, self.upto)

    @classmethod
    def from_state(cls, state: tuple) -> "ColumnSketch":
        s = cls(state[0])
        s.n, s.mean, s.m2, s.lo, s.hi, s.v, s.below, s.upto = state[1:]
        return s

    @classmethod
    def merge(cls, sketches: Sequence["ColumnSketch"], k: int = SUMMARY_POINTS) -> "ColumnSketch":
        """The sketch of the union of disjoint row sets (e.g. one group's rows in every task)."""
        out = cls(k)
        parts = [s.finish() for s in sketches if s.n]
        if not parts:
            return out
        for s in parts:
            out._moments(s.n, s.mean, s.m2, s.lo, s.hi)
        points = np.unique(np.concatenate([s.v for s in parts]))
        below = sum(s._est(points, s.n, "left") for s in parts)
        upto = sum(s._est(points, s.n, "right") for s in parts)
        out.v, out.below, out.upto = _thin(points, below, upto, k)
        return out

    def quantiles(self, levels: Sequence[float]) -> list[float]:
        """The smallest kept value whose count up to it reaches ``ceil(level * n)`` (numpy's
        ``inverted_cdf`` where the sketch is exact)."""
        targets = np.maximum(np.ceil(np.asarray(levels, dtype=float) * self.n), 1)
        idx = np.minimum(np.searchsorted(self.upto, targets - 1e-9, side="left"), self.v.size - 1)
        return [float(x) for x in self.v[idx]]

    def bin_counts(self, edges: Sequence[float]) -> list[int]:
        """Rows per bin of ``edges`` under :func:`bin_index`'s rule (x goes to bin ``#{edges <= x}``)."""
        e = np.asarray(edges, dtype=float)
        below = np.rint(self._est(e, self.n, "left")) if self.n else np.zeros(e.size)
        cuts = np.concatenate([[0.0], np.maximum.accumulate(below), [float(self.n)]])
        return [int(c) for c in np.diff(cuts)]

    def summary(self) -> dict:
        """``count, mean, std, min, max`` (exact)."""
        std = float(np.sqrt(self.m2 / (self.n - 1))) if self.n > 1 else None
        return {"count": self.n, "mean": self.mean if self.n else None, "std": std,
                "min": self.lo if self.n else None, "max": self.hi if self.n else None}


def _picks(n: int, k: int) -> np.ndarray:
    """Positions of at most ``k + 1`` evenly spaced values of a sorted array of ``n`` (first and last in)."""
    if n <= k + 1:
        return np.arange(n)
    return np.unique(np.floor(np.linspace(0, n - 1, k + 1)).astype(np.int64))


def _thin(points: np.ndarray, below: np.ndarray, upto: np.ndarray, k: int):
    """Keep at most about ``k + 1`` points: the first, the last, and the first to reach each 1/k of the rows."""
    if points.size <= k + 1:
        return points, below, upto
    n = upto[-1]
    targets = np.linspace(0, n, k + 1)
    keep = np.unique(np.concatenate([[0, points.size - 1],
                                     np.minimum(np.searchsorted(upto, targets, side="left"), points.size - 1)]))
    return points[keep], below[keep], upto[keep]


class TaskProfiler:
    """Executor: column sketches of the rows a scoring task hands to Spark, per group (the value of
    ``group_column``, or one group), for the columns named (``"a.b"``: field ``b`` of struct ``a``)."""

    def __init__(self, group_column: str | None, columns: Sequence[str], k: int = SUMMARY_POINTS):
        self.group_column, self.columns, self.k = group_column, tuple(columns), k
        self.sketches: dict[tuple, ColumnSketch] = {}
        self.rows: dict = {}  # group value -> rows seen

    def add(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        rows = [(None, None)]
        if self.group_column is not None:
            keys = batch.column(self.group_column)
            distinct = keys.unique()
            if len(distinct) == 1:
                rows = [(distinct[0].as_py(), None)]
            else:
                import pyarrow.compute as pc

                rows = [(d.as_py(), np.flatnonzero(pc.equal(keys, d).fill_null(False).to_numpy(
                    zero_copy_only=False))) if d.is_valid else
                    (None, np.flatnonzero(keys.is_null().to_numpy(zero_copy_only=False))) for d in distinct]
        for key, idx in rows:
            self.rows[key] = self.rows.get(key, 0) + (batch.num_rows if idx is None else len(idx))
        for name in self.columns:
            arr = _column(batch, name)
            if arr is None:
                continue
            values = arr.to_numpy(zero_copy_only=False).astype(float, copy=False)
            for key, idx in rows:
                sketch = self.sketches.get((key, name))
                if sketch is None:
                    sketch = self.sketches[(key, name)] = ColumnSketch(self.k)
                sketch.add(values if idx is None else values[idx])

    def states(self) -> tuple[dict, list[tuple]]:
        """``({group value: rows}, [(group value, column, sketch state)])``: what the task ships."""
        return dict(self.rows), [(key, name, s.state()) for (key, name), s in self.sketches.items()]


def _column(batch: pa.RecordBatch, name: str):
    names = batch.schema.names
    if name in names:
        return batch.column(name)
    top, _, field = name.partition(".")
    if top in names and pa.types.is_struct(batch.schema.field(top).type):
        struct = batch.column(top)
        try:
            return struct.field(field)
        except KeyError:
            return None
    return None


class KeyedStates:
    """The accumulator parameter of the scoring pass's sketches: ``{task partition id: states}``.

    Keyed by the task's partition, so a task Spark runs twice (a retry, a speculative copy, a
    recomputed stage) counts once. Plain Python: pickled to the workers with the accumulator.
    """

    def zero(self, value):
        return {}

    def addInPlace(self, a, b):  # noqa: N802 - PySpark's AccumulatorParam protocol
        a.update(b)
        return a


def task_rows(value: Mapping) -> dict:
    """Driver: the accumulator's ``{task: states}`` as ``{group value: rows the tasks handed on}``."""
    rows: dict = {}
    for counted, _states in value.values():
        for key, n in counted.items():
            rows[key] = rows.get(key, 0) + n
    return rows


def merge_task_states(value: Mapping) -> dict[tuple, ColumnSketch]:
    """Driver: the accumulator's ``{task: states}`` merged into ``{(group value, column): sketch}``."""
    found: dict[tuple, list[ColumnSketch]] = {}
    for _counted, states in value.values():
        for key, name, state in states:
            found.setdefault((key, name), []).append(ColumnSketch.from_state(state))
    return {key: ColumnSketch.merge(parts, parts[0].k) for key, parts in found.items()}
