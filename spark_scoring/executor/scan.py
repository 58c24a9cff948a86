"""The direct scan's task: read a task's Parquet file splits with pyarrow, score, hand back rows.

Runs on: executors, inside ``mapInArrow`` (the driver plans the splits:
:mod:`spark_scoring.engine.scan_plan`). No Spark import.

Each task reads its row groups in record batches (never a whole file),
restores the partition columns from the split's partition values, scores the
feature columns through the same task entry point as the UDF
(:func:`spark_scoring.executor.task.open_predictor`: same model cache, same
predictor), and yields the kept columns plus the prediction.
"""
from __future__ import annotations

import json
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import unquote, urlparse

import pyarrow as pa

from . import faults
from .task import TaskInfo, TaskSpec, diagnostics, diagnostics_array, open_predictor

__all__ = ["ReadSpec", "filesystem", "local_path", "partition_values", "scan_task", "count_task", "read_split"]


def filesystem(path: str):
    """``(pyarrow FileSystem, path inside it)`` for a local path or a URI (s3a:// read as s3://)."""
    from pyarrow import fs as pafs

    if "://" not in path and not path.startswith("file:"):
        path = os.path.abspath(path)
    if path.startswith(("s3a://", "s3n://")):
        path = "s3://" + path.split("://", 1)[1]
    return pafs.FileSystem.from_uri(path)


def local_path(uri: str) -> str:
    """A file URI or path as the string pyarrow opens (``file:`` URIs become paths)."""
    if uri.startswith("file:"):
        return os.path.normpath(unquote(urlparse(uri).path))
    return unquote(uri) if "://" in uri else os.path.normpath(uri)


def partition_values(texts: pa.Array, arrow_type: pa.DataType) -> pa.Array:
    """Delta / hive partition value strings as ``arrow_type`` (timestamps are UTC, with or without 'Z')."""
    import pyarrow.compute as pc

    if pa.types.is_timestamp(arrow_type):
        clean = pc.replace_substring(pc.replace_substring_regex(texts, r"Z$", ""), "T", " ")
        naive = clean.cast(pa.timestamp(arrow_type.unit))
        return pc.assume_timezone(naive, "UTC").cast(arrow_type) if arrow_type.tz else naive
    return texts.cast(arrow_type)


@dataclass(frozen=True)
class ReadSpec:
    """What a scan task reads and yields (made on the driver, no SparkSession inside)."""

    feature_cols: tuple[str, ...]
    feature_types: tuple[Any, ...]  # Arrow types the model takes
    keep_cols: tuple[str, ...]
    out_schema: Any  # pa.Schema of what the task yields
    partition_types: dict  # partition column -> Arrow type
    read_batch: int
    native: bool = True  # numeric features go to a float matrix (the cast happens in its one copy)
    physical: dict = None  # logical -> physical column name in the files (column mapping), where they differ


def _row_groups(meta, start: int, length: int) -> list[int]:
    """Row groups whose midpoint lies in [start, start + length) (parquet-mr's rule, as Spark)."""
    chosen = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        if rg.num_columns == 0:
            continue
        col = rg.column(0)
        first = col.dictionary_page_offset if col.has_dictionary_page and col.dictionary_page_offset else col.data_page_offset
        size = sum(rg.column(j).total_compressed_size for j in range(rg.num_columns))
        if start <= first + size // 2 < start + length:
            chosen.append(i)
    return chosen


def _first_rows(meta) -> list[int]:
    """The file-wide index of each row group's first row."""
    out, n = [], 0
    for i in range(meta.num_row_groups):
        out.append(n)
        n += meta.row_group(i).num_rows
    return out


def read_split(spec: ReadSpec, path: str, start: int, length: int, parts_json: str,
               deleted=()) -> Iterator[tuple]:
    """Executor: (rows, feature arrays, kept arrays) per record batch of one file split.

    ``deleted``: the file's row indices a deletion vector removes; they are dropped here.
    """
    import numpy as np
    import pyarrow.parquet as pq

    fs, inner = filesystem(path)
    # pre_buffer=False: read one row group at a time (pre-buffering reads every requested
    # row group's column chunks up front, i.e. the whole split; measured 2x the memory).
    pf = pq.ParquetFile(fs.open_input_file(inner), pre_buffer=False)
    groups = _row_groups(pf.metadata, start, length) if length else list(range(pf.metadata.num_row_groups))
    if not groups:
        return
    parts = json.loads(parts_json)
    physical = spec.physical or {}
    file_names = {n.lower(): n for n in pf.schema_arrow.names}
    wanted = [c for c in dict.fromkeys(spec.feature_cols + spec.keep_cols) if c not in spec.partition_types]
    present = [file_names[physical.get(c, c).lower()] for c in wanted if physical.get(c, c).lower() in file_names]
    logical = {physical.get(c, c).lower(): c.lower() for c in wanted}
    constants = {c: partition_values(pa.array([parts.get(c)], pa.string()), t) for c, t in spec.partition_types.items()}
    keep_types = {f.name: f.type for f in spec.out_schema}
    gone = np.asarray(sorted(deleted), dtype=np.int64) if len(deleted) else None
    if gone is None:  # no deletion vector: one reader over the split's row groups
        for batch in pf.iter_batches(batch_size=spec.read_batch, row_groups=groups, columns=present,
                                     use_threads=False):
            yield from _columns(spec, batch, constants, keep_types, logical)
        return
    firsts = _first_rows(pf.metadata)
    for group in groups:
        row = firsts[group]
        for batch in pf.iter_batches(batch_size=spec.read_batch, row_groups=[group], columns=present,
                                     use_threads=False):
            first, row = row, row + batch.num_rows
            lo, hi = np.searchsorted(gone, [first, row])  # deletion vector: keep the rows it does not name
            if hi > lo:
                keep = np.ones(batch.num_rows, dtype=bool)
                keep[gone[lo:hi] - first] = False
                batch = batch.filter(pa.array(keep))
            yield from _columns(spec, batch, constants, keep_types, logical)


def _columns(spec: ReadSpec, batch, constants: dict, keep_types: dict, logical: dict):
    """(rows, feature arrays, kept arrays) of one record batch, by logical column name."""
    n = batch.num_rows
    by_name = {logical.get(name.lower(), name.lower()): col for name, col in zip(batch.schema.names, batch.columns)}

    def column(name: str, arrow_type):
        if name in constants:
            value = constants[name]
            return pa.repeat(value[0], n).cast(arrow_type) if n else pa.array([], arrow_type)
        col = by_name.get(name.lower())
        return pa.nulls(n, arrow_type) if col is None else col

    feats = []
    for name, target in zip(spec.feature_cols, spec.feature_types):
        col = column(name, target)
        numeric = pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
        if not col.type.equals(target) and not (numeric and spec.native):
            col = col.cast(target, safe=not pa.types.is_floating(target))
        feats.append(col)  # float64 -> float32 happens in to_matrix's single copy
    kept = []
    for name in spec.keep_cols:
        col = column(name, keep_types[name])
        kept.append(col if col.type.equals(keep_types[name]) else col.cast(keep_types[name]))
    yield n, feats, kept


class _Aligner:
    """Kept columns queued by the reader, handed out in step with the predictions."""

    def __init__(self):
        self.queue: deque = deque()

    def push(self, rows: int, cols: list) -> None:
        self.queue.append([rows, cols])

    def take(self, rows: int) -> list:
        pieces = []
        while rows > 0:
            head = self.queue[0]
            n, cols = head
            if n <= rows:
                pieces.append(cols)
                self.queue.popleft()
                rows -= n
            else:
                pieces.append([c.slice(0, rows) for c in cols])
                head[0], head[1] = n - rows, [c.slice(rows) for c in cols]
                rows = 0
        if len(pieces) == 1:
            return pieces[0]
        return [pa.concat_arrays([p[i] for p in pieces]) for i in range(len(pieces[0]))] if pieces[0] else []


def _splits(batches: Iterator[pa.RecordBatch]) -> list[tuple]:
    splits = []
    for b in batches:
        for row in b.to_pylist():
            splits.extend(zip(row["paths"], row["starts"], row["lengths"], row["parts"], row["dels"]))
    return splits


def scan_task(task: TaskSpec, read: ReadSpec, batches: Iterator[pa.RecordBatch],
              info: TaskInfo) -> Iterator[pa.RecordBatch]:
    """Executor (mapInArrow): this task's file splits in, kept columns + predictions out."""
    import pyarrow.parquet  # noqa: F401 - before the model loads, so the cache's gc.freeze() covers it

    splits = _splits(batches)
    if not splits:
        return
    faults.apply(info)  # off unless a reliability drill is on
    predictor, dev = open_predictor(task, info)
    aligner = _Aligner()

    def features():
        for path, start, length, parts, deleted in splits:
            for n, feats, kept in read_split(read, path, start, length, parts, deleted or ()):
                aligner.push(n, kept)
                yield feats

    diag = diagnostics(task, info, dev, task.batch_size) if task.diagnostics else None
    for result in predictor.predict_stream(features()):
        n = len(result)
        cols = aligner.take(n) + [result]
        if diag is not None:
            cols.append(diagnostics_array(diag, n))
        yield pa.RecordBatch.from_arrays(cols, schema=read.out_schema)


def count_task(read: ReadSpec, names: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor (mapInArrow): this task's splits in, one row of counts per partition out
    (``part``: the split's partition values JSON; rows, bad rows, bad rows per feature).

    A value is bad under the one rule (:mod:`.badrows`): null, or NaN / infinite in a float column.
    """
    from .badrows import bad_mask, checks_for

    totals: dict[str, list[int]] = {}
    for path, start, length, parts, deleted in _splits(batches):
        acc = totals.setdefault(parts, [0] * len(names))
        for n, feats, _kept in read_split(read, path, start, length, parts, deleted or ()):
            acc[0] += n
            any_bad = None
            for i, col in enumerate(feats):
                bad = bad_mask(col, checks_for(col.type))
                if bad is None:
                    continue
                acc[2 + i] += int(bad.sum())
                any_bad = bad if any_bad is None else (any_bad | bad)
            if any_bad is not None:
                acc[1] += int(any_bad.sum())
    if totals:
        keys = list(totals)
        yield pa.RecordBatch.from_arrays([pa.array(keys, pa.string())]
                                         + [pa.array([totals[k][j] for k in keys], pa.int64())
                                            for j in range(len(names))], ["part", *names])
