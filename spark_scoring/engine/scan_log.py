"""A Delta table's files at one pinned version, read through delta-kernel (``deltalake``).

Runs on: the driver. ``deltalake`` (delta-rs, with delta-kernel inside) reads
the snapshot: JSON commits, classic, multi-part and V2 checkpoints, the
protocol and the table features. From it :func:`read_snapshot` takes what the
direct scan needs per live file: its absolute path, size, row count and
partition values, the row indices a deletion vector deletes, and (under column
mapping) the physical name of every logical column. Parquet folders (no Delta
log) keep their hive-style partition directories (:func:`hive_partitions`).

A table the direct scan still cannot honour raises :class:`Fallback` with the
reason (the caller then uses Spark's own read): a reader feature delta-rs does
not support, or a log it cannot read.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from typing import Sequence
from urllib.parse import unquote

import numpy as np

from ..executor.scan import local_path

__all__ = ["Fallback", "Snapshot", "SnapshotFile", "read_snapshot", "hive_partitions", "partition_row_counts"]


class Fallback(Exception):
    """Raised while planning: the direct scan cannot honour this table (the message says why)."""


@dataclass(frozen=True)
class SnapshotFile:
    path: str                        # absolute (a local path, or a URI for object stores)
    size: int
    rows: int | None
    partition_values: dict           # logical partition column -> value text (None: null)
    deleted: tuple[int, ...] = ()    # row indices a deletion vector removes
    clean: frozenset = frozenset()   # logical columns its stats prove free of null, NaN and infinity


@dataclass(frozen=True)
class Snapshot:
    version: int
    partition_columns: tuple[str, ...]
    files: tuple[SnapshotFile, ...]
    physical: dict = field(default_factory=dict)  # logical column -> physical (column mapping), when it differs
    features: tuple[str, ...] = ()


def _absolute(root: str, rel: str) -> str:
    """An add action's path (relative to the table, or absolute) as Spark lists it."""
    if "://" in rel or rel.startswith("file:"):
        return local_path(rel)
    base = local_path(root) if root.startswith("file:") else root
    if "://" in base:  # an object store: keep the URI
        return base.rstrip("/") + "/" + rel
    return os.path.normpath(os.path.join(base, unquote(rel)))


def read_snapshot(path: str, version: int | None) -> Snapshot:
    """The live files of the Delta table at ``path``, ``version`` (None: the latest), through delta-kernel."""
    try:
        from deltalake import DeltaTable
    except ImportError as exc:  # pragma: no cover - an install without deltalake
        raise Fallback(f"deltalake is not installed ({exc})") from exc
    try:
        table = DeltaTable(path, version=version)
    except Exception as exc:  # noqa: BLE001 - e.g. a reader feature delta-rs does not support
        raise Fallback(f"delta-rs could not open the table at version {version}: "
                       f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}") from exc
    protocol = table.protocol()
    features = tuple(protocol.reader_features or ())
    metadata = table.metadata()
    partition_columns = tuple(metadata.partition_columns or ())
    physical = {}
    for f in table.schema().fields:
        name = (f.metadata or {}).get("delta.columnMapping.physicalName")
        if name and name != f.name:
            physical[f.name] = str(name)
    import pyarrow as pa

    adds = pa.table(table.get_add_actions(flatten=False))
    deleted: dict[str, tuple[int, ...]] = {}
    if "deletionVectors" in features:
        for batch in pa.RecordBatchReader.from_stream(table.deletion_vectors()):
            for file_path, keep in zip(batch.column("filepath").to_pylist(), batch.column("selection_vector")):
                mask = np.asarray(keep.values.to_numpy(zero_copy_only=False), dtype=bool)
                deleted[local_path(str(file_path))] = tuple(int(i) for i in np.flatnonzero(~mask))
    root = table.table_uri
    parts = adds.column("partition").to_pylist() if "partition" in adds.column_names else [{}] * adds.num_rows
    rows = adds.column("num_records").to_pylist()
    clean = _clean_columns(adds, [f.name for f in table.schema().fields], physical)
    files = []
    for i, (rel, size, n, values) in enumerate(zip(adds.column("path").to_pylist(),
                                                   adds.column("size_bytes").to_pylist(), rows, parts)):
        full = _absolute(root, rel)
        values = values or {}
        logical = {c: _text(values.get(physical.get(c, c), values.get(c))) for c in partition_columns}
        files.append(SnapshotFile(full, int(size or 0), None if n is None else int(n), logical,
                                  deleted.get(full, ()), clean[i]))
    return Snapshot(int(table.version()), partition_columns, tuple(files), physical, features)


def _clean_columns(adds, columns: Sequence[str], physical: dict) -> list[frozenset]:
    """Per add action, the columns its statistics prove free of null, NaN and infinity: a null
    count of 0 and a finite min and max (Spark's min and max are NaN when a NaN is there, and
    +-Infinity with an infinity). A column without statistics is not proven clean."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = adds.num_rows
    if not n or not all(c in adds.column_names for c in ("null_count", "min", "max")):
        return [frozenset()] * n
    structs = {k: adds.column(k).combine_chunks() for k in ("null_count", "min", "max")}
    found: list[set] = [set() for _ in range(n)]
    for name in columns:
        key = physical.get(name, name)
        try:
            nulls, lo, hi = (structs[k].field(key) for k in ("null_count", "min", "max"))
        except (KeyError, ValueError, pa.ArrowInvalid):
            continue
        ok = pc.fill_null(pc.equal(nulls, 0), False)
        for bound in (lo, hi):
            ok = pc.and_(ok, bound.is_valid())
            if pa.types.is_floating(bound.type):
                ok = pc.and_(ok, pc.fill_null(pc.is_finite(bound), False))
            elif not (pa.types.is_integer(bound.type) or pa.types.is_decimal(bound.type)):
                ok = pc.and_(ok, pa.array([False] * n))
        for i in pc.indices_nonzero(ok).to_pylist():
            found[i].add(name)
    return [frozenset(f) for f in found]


_PARTITION_PARSERS = {"string": str, "int": int, "bigint": int, "smallint": int, "tinyint": int,
                      "date": _dt.date.fromisoformat}


def partition_row_counts(path: str, version: int, column: str, spark_type: str) -> dict | None:
    """``{partition value: rows}`` of the Delta table at ``path``, ``version``, from its log alone:
    each live file's partition value and row count, less the rows its deletion vector removes,
    as Spark's ``groupBy(column).count()`` gives them (no empty partition). None where that
    would not be exact: the table is not partitioned by ``column`` alone, a file has no row
    count, the column's type is not string, an integer or date, or delta-rs cannot read it.
    Runs on the driver, no Spark job."""
    parse = _PARTITION_PARSERS.get(spark_type)
    if parse is None:
        return None
    try:
        snap = read_snapshot(path, version)
        if snap.partition_columns != (column,) or any(f.rows is None for f in snap.files):
            return None
        counts: dict = {}
        for f in snap.files:
            text = f.partition_values.get(column)
            value = None if text is None else parse(text)
            counts[value] = counts.get(value, 0) + f.rows - len(f.deleted)
    except Exception:  # noqa: BLE001 - anything delta-rs cannot read exactly: Spark counts instead
        return None
    return {v: n for v, n in counts.items() if n}


def _text(value) -> str | None:
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        if getattr(value, "tzinfo", None) is not None:  # delta-rs gives timestamps as aware UTC datetimes
            value = value.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    return str(value)


def hive_partitions(file_path: str, root: str, columns: Sequence[str]) -> dict[str, str | None]:
    """Partition values of a Parquet folder's file from its ``col=value`` directories."""
    rel = os.path.relpath(file_path, root) if "://" not in root else file_path[len(root):].lstrip("/")
    values: dict[str, str | None] = {}
    for segment in rel.split("/")[:-1]:
        if "=" in segment:
            key, value = segment.split("=", 1)
            value = unquote(value)
            values[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    missing = [c for c in columns if c not in values]
    if missing:
        raise Fallback(f"file {file_path} has no {missing} directory, so its partition values are unknown")
    return {c: values[c] for c in columns}
