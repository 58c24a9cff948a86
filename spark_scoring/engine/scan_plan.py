"""Plan a direct scan on the driver: the pinned snapshot's files, packed into tasks as Spark packs them.

Runs on: the driver. :func:`plan_scan` returns a :class:`ScanPlan` (``direct``
False, with the ``reason``, when the normal read must be used) and the normal
DataFrame: the pinned snapshot read by Spark, whose ``inputFiles()``
cross-checks the file list replayed from the Delta log.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import unquote

import pyarrow as pa

from ..errors import SchemaMismatchError
from ..executor.scan import filesystem as _fs
from ..executor.scan import local_path as _local
from ..executor.scan import partition_values
from .scan_log import Fallback, hive_partitions, read_snapshot

__all__ = ["ScanPlan", "plan_scan", "direct_scan_supported", "normal_read"]

_FLAT_TYPES = ("boolean", "tinyint", "smallint", "int", "bigint", "float", "double", "string",
               "binary", "date", "timestamp", "timestamp_ntz")
_PARTITION_TYPES = ("boolean", "tinyint", "smallint", "int", "bigint", "float", "double", "string", "date",
                    "timestamp", "timestamp_ntz")


@dataclass(frozen=True)
class ScanPlan:
    """What :func:`_plan_scan` decided (driver).

    ``direct`` is False when the normal read must be used; ``reason`` says why.
    ``tasks`` holds, per task, ``(path, start, length, partition values JSON, deleted rows)``
    splits (the row indices of the file a deletion vector removes). ``physical`` maps
    logical column names to the files' physical ones (column mapping), where they differ.
    """

    path: str
    format: str
    version: int | None
    direct: bool
    reason: str = ""
    partition_columns: tuple[str, ...] = ()
    tasks: tuple[tuple[tuple[str, int, int, str, tuple], ...], ...] = field(default=(), repr=False)
    files: int = 0
    physical: dict = field(default_factory=dict, repr=False)
    deleted_rows: int = 0
    #: columns every planned file's Delta statistics prove free of null, NaN and infinity
    clean_columns: frozenset = frozenset()



def _typed(value: Any, spark_type) -> Any:
    """A partition value (string, or a filter value) as a typed Python value (driver)."""
    from pyspark.sql.pandas.types import to_arrow_type

    if value is None:
        return None
    if hasattr(value, "isoformat"):
        text = value.isoformat(sep=" ") if hasattr(value, "hour") else value.isoformat()
    else:
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return partition_values(pa.array([text]), to_arrow_type(spark_type, timezone="UTC"))[0].as_py()


def _file_filter(flt: dict, types: dict):
    """A predicate on a file's partition values (strings) for ``partition_filter`` (driver)."""
    wanted = {}
    for col, options in flt.items():
        options = list(options) if isinstance(options, (list, tuple, set, frozenset)) else [options]
        wanted[col] = {_typed(o, types[col]) for o in options}
    seen: dict = {}

    def keep(values: dict) -> bool:
        for col, allowed in wanted.items():
            key = (col, values.get(col))
            if key not in seen:
                seen[key] = _typed(values.get(col), types[col])
            if seen[key] not in allowed:
                return False
        return True

    return keep


def _pack(files: list[tuple[str, int, str, tuple]], spark) -> list[list[tuple[str, int, int, str, tuple]]]:
    """Split and pack files into tasks the way Spark's FilePartition does (driver)."""
    conf = spark.conf
    max_bytes = int(_bytes(conf.get("spark.sql.files.maxPartitionBytes", "128m")))
    open_cost = int(_bytes(conf.get("spark.sql.files.openCostInBytes", "4m")))
    min_parts = int(conf.get("spark.sql.files.minPartitionNum", None) or _parallelism(spark))
    total = sum(size + open_cost for _p, size, _v, _d in files)
    max_split = min(max_bytes, max(open_cost, total // max(1, min_parts)))
    splits = []
    for path, size, parts, deleted in files:
        for start in range(0, max(size, 1), max_split):
            splits.append((path, start, min(max_split, size - start) if size else 0, parts, deleted))
    splits.sort(key=lambda s: s[2], reverse=True)
    tasks, current, current_size = [], [], 0
    for split in splits:
        if current and current_size + split[2] > max_split:
            tasks.append(current)
            current, current_size = [], 0
        current.append(split)
        current_size += split[2] + open_cost
    if current:
        tasks.append(current)
    return tasks


def _bytes(text: str) -> int:
    text = str(text).strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text[:-1] if text.endswith("b") else text
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _parallelism(spark) -> int:
    try:
        return spark.sparkContext.defaultParallelism
    except Exception:  # noqa: BLE001 - Spark Connect
        return 2


def normal_read(spark, path: str, fmt: str, version: int | None):
    if fmt == "delta":
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.load(path)
    return spark.read.parquet(path)


def _plan_scan(spark, path: str, version: int | None = None, *, partition_filter: dict | None = None,
               columns: Sequence[str] = ()) -> tuple[ScanPlan, Any]:
    """Driver: decide whether ``path`` can be scanned directly; return (plan, normal DataFrame).

    The normal DataFrame (the pinned snapshot read by Spark) is what the
    fallback scores; its schema types the partition values, and its
    ``inputFiles()`` cross-checks the file list delta-kernel gives.
    """
    if "://" not in path and not path.startswith("file:"):
        path = os.path.abspath(path)  # Spark lists absolute files; the snapshot's list must match them
    try:
        fs, root = _fs(path)
        is_delta = fs.get_file_info(root + "/_delta_log").type.name == "Directory"
    except Exception:  # noqa: BLE001 - a file system pyarrow cannot reach: ask Delta
        from delta.tables import DeltaTable

        is_delta = DeltaTable.isDeltaTable(spark, path)
    fmt = "delta" if is_delta else "parquet"
    if version is not None and not is_delta:
        raise SchemaMismatchError(f"version={version!r} given, but {path!r} is not a Delta table.")
    snapshot = None
    try:
        if is_delta:
            snapshot = read_snapshot(path, version)
            version = snapshot.version
    except Exception as exc:  # noqa: BLE001 - any planning problem: the normal read decides
        reason = str(exc) if isinstance(exc, Fallback) else f"could not read the Delta log ({type(exc).__name__}: {exc})"
        return ScanPlan(path, fmt, version, False, reason), normal_read(spark, path, fmt, version)
    df = normal_read(spark, path, fmt, version)
    try:
        spark_files = sorted(_spark_file(f) for f in df.inputFiles())
        part_cols = snapshot.partition_columns if snapshot else _parquet_partition_columns(spark_files, path)
        plan = _plan_files(spark, path, fmt, version, df, spark_files, part_cols, snapshot, partition_filter,
                           columns)
        return plan, df
    except Fallback as exc:
        return ScanPlan(path, fmt, version, False, str(exc)), df
    except OSError as exc:  # e.g. no credentials for pyarrow on the driver
        return ScanPlan(path, fmt, version, False, f"pyarrow could not list the files ({exc})"), df


def _spark_file(name: str) -> str:
    """A path from ``DataFrame.inputFiles()``: a Hadoop ``Path`` string, ``file:/t/ds=a b%3A1/x``
    for a local file, written as stored (not percent-encoded: Hive's ``%3A`` escapes are part
    of the directory name), so it is not URL-decoded."""
    if name.startswith("file:"):
        return os.path.normpath("/" + name[len("file:"):].lstrip("/"))
    return name


def _parquet_partition_columns(files: list[str], path: str) -> tuple[str, ...]:
    if not files:
        return ()
    rel = files[0][len(_local(path)):].strip("/").split("/")[:-1]
    return tuple(unquote(s.split("=", 1)[0]) for s in rel if "=" in s)


def _plan_files(spark, path, fmt, version, df, spark_files, part_cols, snapshot, partition_filter,
                columns) -> ScanPlan:
    types = {f.name: f.dataType for f in df.schema.fields}
    for name in part_cols:
        if types[name].simpleString() not in _PARTITION_TYPES and not types[name].simpleString().startswith("decimal"):
            raise Fallback(f"partition column {name!r} has type {types[name].simpleString()}; the direct "
                            "scan restores string, numeric, boolean, date and timestamp partition values only")
    for name in columns:
        t = types[name].simpleString() if name in types else None
        if t is not None and t not in _FLAT_TYPES and not t.startswith("decimal"):
            raise Fallback(f"column {name!r} has type {t}; the direct scan passes through flat columns only")
    flt = dict(partition_filter or {})
    bad = sorted(c for c in flt if c not in part_cols)
    if bad:
        raise Fallback(f"partition_filter on non-partition column(s) {bad}: the direct scan only prunes "
                        f"files by partition values (partition columns: {list(part_cols)})")
    root = _local(path)
    clean = {}
    if snapshot is not None:
        listed = [(f.path, f.size, f.partition_values, f.deleted) for f in snapshot.files]
        clean = {f.path: f.clean for f in snapshot.files}
        if {f for f, _s, _v, _d in listed} != set(spark_files):
            raise Fallback(f"delta-kernel lists {len(listed)} files but Spark lists {len(spark_files)}")
    else:
        fs, _ = _fs(path)
        sizes = {i.path: i.size for i in fs.get_file_info(spark_files)} if "://" not in root else {}
        listed = [(f, int(sizes.get(f, 0)), hive_partitions(f, root, part_cols), ()) for f in spark_files]
    if listed:
        try:
            _fs(listed[0][0])
        except Exception as exc:  # noqa: BLE001
            raise Fallback(f"pyarrow cannot open {listed[0][0]!r}: {exc}") from exc
    if flt:
        keep = _file_filter(flt, types)
        listed = [x for x in listed if keep(x[2])]
    tasks = _pack([(f, size, json.dumps(values), deleted) for f, size, values, deleted in listed], spark)
    proven = frozenset.intersection(*(clean.get(f, frozenset()) for f, *_x in listed)) if listed else frozenset()
    return ScanPlan(path, fmt, version, True, "", part_cols, tuple(tuple(t) for t in tasks), len(listed),
                    dict(snapshot.physical) if snapshot else {}, sum(len(d) for *_x, d in listed), proven)


def plan_scan(spark, path: str, version: int | None = None, *, partition_filter: dict | None = None,
              columns: Sequence[str] = ()) -> tuple[ScanPlan, Any]:
    """Driver: ``(plan, normal DataFrame)`` for ``path``; pass it as ``planned=`` to
    :func:`score_table_direct` and :func:`count_bad_rows_direct` to plan once for both
    (``columns``: every column either will read)."""
    return _plan_scan(spark, path, version, partition_filter=partition_filter, columns=columns)


def direct_scan_supported(spark, path: str, version: int | None = None, *,
                          partition_filter: dict | None = None) -> tuple[bool, str]:
    """Driver: ``(True, "")`` when :func:`score_table_direct` can read ``path`` directly, else
    ``(False, reason)``."""
    plan, _df = _plan_scan(spark, path, version, partition_filter=partition_filter)
    return plan.direct, plan.reason
