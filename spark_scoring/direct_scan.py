"""Score a Delta table or a Parquet folder by reading its files inside the Python tasks.

Runs on: the driver plans (:func:`_plan_scan`: the pinned snapshot's files, the
table features, files packed into tasks the way Spark packs them); executors
read and score (:func:`_scan_task`, inside ``mapInArrow``).

Why: in the normal path (``score(spark.read...)``) the JVM decodes Parquet into
rows and converts them to Arrow for Python; on a 2-core machine that hand-off
costs about twice the model itself (bench/RESULTS.md). Here Spark only
schedules a small DataFrame of (file, byte range, partition values) rows; each
Python task reads its row groups with ``pyarrow.parquet`` in record batches
(never a whole file), restores the partition columns, scores with the same
predictor and per-worker model cache as :mod:`spark_scoring.udf`, and hands
back only the kept columns and the prediction.

When the direct scan cannot honour the table it falls back to the normal read,
logs the reason and records it on the result (``df.spark_scoring_scan``):
deletion vectors on any file of the snapshot, column mapping, reader features
it does not know, V2 checkpoints, timestamp or binary partition columns,
nested pass-through columns, non-numeric features, a ``partition_filter`` on a
non-partition column, or a file system pyarrow cannot open.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence
from urllib.parse import unquote, urlparse

import pyarrow as pa

from .errors import SchemaMismatchError

__all__ = ["score_table_direct", "direct_scan_supported", "ScanPlan"]

log = logging.getLogger(__name__)

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(?:json|parquet)$")
#: Reader features the direct scan honours (deletion vectors: only while no file carries one).
_READER_FEATURES_OK = {"deletionVectors", "timestampNtz", "vacuumProtocolCheck", "columnMapping"}
_FLAT_TYPES = ("boolean", "tinyint", "smallint", "int", "bigint", "float", "double", "string",
               "binary", "date", "timestamp", "timestamp_ntz")
_PARTITION_TYPES = ("boolean", "tinyint", "smallint", "int", "bigint", "float", "double", "string", "date")


class _Fallback(Exception):
    """Raised while planning: the direct scan cannot honour this table (the message says why)."""


@dataclass(frozen=True)
class ScanPlan:
    """What :func:`_plan_scan` decided (driver).

    ``direct`` is False when the normal read must be used; ``reason`` says why.
    ``tasks`` holds, per task, ``(path, start, length, partition values JSON)`` splits.
    """

    path: str
    format: str
    version: int | None
    direct: bool
    reason: str = ""
    partition_columns: tuple[str, ...] = ()
    tasks: tuple[tuple[tuple[str, int, int, str], ...], ...] = field(default=(), repr=False)
    files: int = 0


# ---------------------------------------------------------------------------
# Driver: the Delta log, pinned to one version
# ---------------------------------------------------------------------------

def _fs(path: str):
    from pyarrow import fs as pafs

    if "://" not in path and not path.startswith("file:"):
        path = os.path.abspath(path)
    if path.startswith(("s3a://", "s3n://")):
        path = "s3://" + path.split("://", 1)[1]
    return pafs.FileSystem.from_uri(path)


def _local(uri: str) -> str:
    """A file URI or path as the string pyarrow opens (``file:`` URIs become paths)."""
    if uri.startswith("file:"):
        return os.path.normpath(unquote(urlparse(uri).path))
    return unquote(uri) if "://" in uri else os.path.normpath(uri)


def _dv_key(dv: Any) -> str:
    if not dv:
        return ""
    return f"{dv.get('storageType')}{dv.get('pathOrInlineDv')}@{dv.get('offset')}"


def _as_dict(value) -> dict:
    """A map from a JSON commit (dict) or a checkpoint (list of pairs) as a dict."""
    return dict(value or {})


def _read_delta_log(path: str, version: int | None) -> tuple[int, dict, dict, list[dict]]:
    """Replay ``_delta_log`` up to ``version``: (version, protocol, metadata, live add actions)."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    fs, root = _fs(path)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_delta_log"))
    commits, checkpoints = {}, {}
    for info in infos:
        name = info.base_name
        if m := _COMMIT.match(name):
            commits[int(m.group(1))] = info.path
        elif m := _CHECKPOINT.match(name):
            checkpoints.setdefault(int(m.group(1)), []).append(info.path)
        elif m := _V2_CHECKPOINT.match(name):
            checkpoints.setdefault(int(m.group(1)), []).append(None)  # V2: not read here
    if not commits and not checkpoints:
        raise _Fallback(f"no Delta log found under {path}/_delta_log")
    latest = max(list(commits) + list(checkpoints))
    target = latest if version is None else int(version)
    if target > latest:
        raise _Fallback(f"version {target} does not exist (latest is {latest})")
    usable = [v for v, parts in checkpoints.items() if v <= target and None not in parts]
    if any(None in parts for v, parts in checkpoints.items() if v <= target) and not usable:
        raise _Fallback("the log uses V2 checkpoints, which the direct scan does not read")
    start = max(usable, default=-1)
    missing = [v for v in range(start + 1, target + 1) if v not in commits]
    if missing:
        raise _Fallback(f"commit files {missing[:3]} are missing from the log (cleaned up)")

    files: dict[tuple[str, str], dict] = {}
    protocol: dict = {}
    metadata: dict = {}

    def apply(action: dict) -> None:
        nonlocal protocol, metadata
        if action.get("add"):
            add = action["add"]
            files[(add["path"], _dv_key(add.get("deletionVector")))] = add
        elif action.get("remove"):
            rm = action["remove"]
            files.pop((rm["path"], _dv_key(rm.get("deletionVector"))), None)
        elif action.get("metaData"):
            metadata = action["metaData"]
        elif action.get("protocol"):
            protocol = action["protocol"]

    if start >= 0:
        for part in sorted(checkpoints[start]):
            names = pq.read_schema(part, filesystem=fs).names
            cols = [c for c in ("add", "remove", "metaData", "protocol") if c in names]
            for row in pq.read_table(part, filesystem=fs, columns=cols).to_pylist():
                apply(row)
    for v in range(start + 1, target + 1):
        with fs.open_input_stream(commits[v]) as fh:
            for line in fh.read().decode("utf-8").splitlines():
                if line.strip():
                    apply(json.loads(line))
    return target, protocol, metadata, list(files.values())


def _check_delta_features(protocol: dict, metadata: dict, adds: list[dict]) -> None:
    reader = int(protocol.get("minReaderVersion", 1))
    features = set(protocol.get("readerFeatures") or ())
    conf = metadata.get("configuration") or {}
    mode = conf.get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise _Fallback(f"column mapping is on (delta.columnMapping.mode={mode!r}): file columns "
                        "have physical names the direct scan does not translate")
    if reader > 3:
        raise _Fallback(f"reader protocol version {reader} is newer than the direct scan knows")
    unknown = sorted(features - _READER_FEATURES_OK)
    if unknown:
        raise _Fallback(f"table reader feature(s) {unknown} are not supported by the direct scan")
    with_dv = sum(1 for a in adds if a.get("deletionVector"))
    if with_dv:
        raise _Fallback(f"{with_dv} of {len(adds)} data files have deletion vectors (deleted rows "
                        "that are still in the Parquet files)")


def _hive_partitions(file_path: str, root: str, columns: Sequence[str]) -> dict[str, str | None]:
    rel = os.path.relpath(file_path, root) if "://" not in root else file_path[len(root):].lstrip("/")
    values: dict[str, str | None] = {}
    for segment in rel.split("/")[:-1]:
        if "=" in segment:
            key, value = segment.split("=", 1)
            value = unquote(value)
            values[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    missing = [c for c in columns if c not in values]
    if missing:
        raise _Fallback(f"file {file_path} has no {missing} directory, so its partition values are unknown")
    return {c: values[c] for c in columns}


# ---------------------------------------------------------------------------
# Driver: planning
# ---------------------------------------------------------------------------

def _typed(value: Any, spark_type) -> Any:
    """A partition value (string, or a filter value) as a typed Python value (driver)."""
    from pyspark.sql.pandas.types import to_arrow_type

    if value is None:
        return None
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return pa.array([text]).cast(to_arrow_type(spark_type, timezone="UTC"))[0].as_py()


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


def _pack(files: list[tuple[str, int, str]], spark) -> list[list[tuple[str, int, int, str]]]:
    """Split and pack files into tasks the way Spark's FilePartition does (driver)."""
    conf = spark.conf
    max_bytes = int(_bytes(conf.get("spark.sql.files.maxPartitionBytes", "128m")))
    open_cost = int(_bytes(conf.get("spark.sql.files.openCostInBytes", "4m")))
    min_parts = int(conf.get("spark.sql.files.minPartitionNum", None) or _parallelism(spark))
    total = sum(size + open_cost for _p, size, _v in files)
    max_split = min(max_bytes, max(open_cost, total // max(1, min_parts)))
    splits = []
    for path, size, parts in files:
        for start in range(0, max(size, 1), max_split):
            splits.append((path, start, min(max_split, size - start) if size else 0, parts))
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


def _normal_read(spark, path: str, fmt: str, version: int | None):
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
    ``inputFiles()`` cross-checks the file list replayed from the Delta log.
    """
    if "://" not in path and not path.startswith("file:"):
        path = os.path.abspath(path)  # Spark lists absolute files; the log replay must match them
    try:
        fs, root = _fs(path)
        is_delta = fs.get_file_info(root + "/_delta_log").type.name == "Directory"
    except Exception:  # noqa: BLE001 - a file system pyarrow cannot reach: ask Delta
        from delta.tables import DeltaTable

        is_delta = DeltaTable.isDeltaTable(spark, path)
    fmt = "delta" if is_delta else "parquet"
    if version is not None and not is_delta:
        raise SchemaMismatchError(f"version={version!r} given, but {path!r} is not a Delta table.")
    try:
        if is_delta:
            pinned, protocol, metadata, adds = _read_delta_log(path, version)
            version = pinned
    except Exception as exc:  # noqa: BLE001 - any planning problem: the normal read decides
        reason = str(exc) if isinstance(exc, _Fallback) else f"could not read the Delta log ({type(exc).__name__}: {exc})"
        return ScanPlan(path, fmt, version, False, reason), _normal_read(spark, path, fmt, version)
    df = _normal_read(spark, path, fmt, version)
    try:
        spark_files = sorted(_local(f) for f in df.inputFiles())
        if is_delta:
            _check_delta_features(protocol, metadata, adds)
            part_cols = tuple(metadata.get("partitionColumns") or ())
        else:
            part_cols = _parquet_partition_columns(spark_files, path)
        plan = _plan_files(spark, path, fmt, version, df, spark_files, part_cols, adds if is_delta else None,
                           partition_filter, columns)
        return plan, df
    except _Fallback as exc:
        return ScanPlan(path, fmt, version, False, str(exc)), df
    except OSError as exc:  # e.g. no credentials for pyarrow on the driver
        return ScanPlan(path, fmt, version, False, f"pyarrow could not list the files ({exc})"), df


def _parquet_partition_columns(files: list[str], path: str) -> tuple[str, ...]:
    if not files:
        return ()
    rel = files[0][len(_local(path)):].strip("/").split("/")[:-1]
    return tuple(unquote(s.split("=", 1)[0]) for s in rel if "=" in s)


def _plan_files(spark, path, fmt, version, df, spark_files, part_cols, adds, partition_filter,
                columns) -> ScanPlan:
    types = {f.name: f.dataType for f in df.schema.fields}
    for name in part_cols:
        if types[name].simpleString() not in _PARTITION_TYPES and not types[name].simpleString().startswith("decimal"):
            raise _Fallback(f"partition column {name!r} has type {types[name].simpleString()}; the direct "
                            "scan restores string, numeric, boolean and date partition values only")
    for name in columns:
        t = types[name].simpleString() if name in types else None
        if t is not None and t not in _FLAT_TYPES and not t.startswith("decimal"):
            raise _Fallback(f"column {name!r} has type {t}; the direct scan passes through flat columns only")
    flt = dict(partition_filter or {})
    bad = sorted(c for c in flt if c not in part_cols)
    if bad:
        raise _Fallback(f"partition_filter on non-partition column(s) {bad}: the direct scan only prunes "
                        f"files by partition values (partition columns: {list(part_cols)})")
    root = _local(path)
    if adds is not None:
        listed = []
        for add in adds:
            rel = add["path"]
            full = _local(rel) if "://" in rel or rel.startswith("file:") else os.path.join(root, unquote(rel))
            values = _as_dict(add.get("partitionValues"))
            listed.append((os.path.normpath(full), int(add.get("size") or 0), {c: values.get(c) for c in part_cols}))
        if {f for f, _s, _v in listed} != set(spark_files):
            raise _Fallback(f"the Delta log replay found {len(listed)} files but Spark lists {len(spark_files)}")
    else:
        fs, _ = _fs(path)
        sizes = {i.path: i.size for i in fs.get_file_info(spark_files)} if "://" not in root else {}
        listed = [(f, int(sizes.get(f, 0)), _hive_partitions(f, root, part_cols)) for f in spark_files]
    if listed:
        try:
            _fs(listed[0][0])
        except Exception as exc:  # noqa: BLE001
            raise _Fallback(f"pyarrow cannot open {listed[0][0]!r}: {exc}") from exc
    if flt:
        keep = _file_filter(flt, types)
        listed = [x for x in listed if keep(x[2])]
    tasks = _pack([(f, size, json.dumps(values)) for f, size, values in listed], spark)
    return ScanPlan(path, fmt, version, True, "", part_cols, tuple(tuple(t) for t in tasks), len(listed))


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


# ---------------------------------------------------------------------------
# Executor: read, restore partitions, score
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _ScanSpec:
    """Everything a task needs, copied out of driver objects (no SparkSession inside)."""

    handle: Any
    kind: str
    model_names: tuple[str, ...]
    feature_cols: tuple[str, ...]
    feature_types: tuple[Any, ...]  # Arrow types the model takes
    keep_cols: tuple[str, ...]
    out_schema: Any  # pa.Schema of what the task yields
    partition_types: dict  # partition column -> Arrow type
    output: Any
    batch_size: int
    read_batch: int
    device: str
    on_null: str
    diagnostics: bool
    prefetch: bool | None = None  # None: on CUDA only, as in spark_scoring.udf


def _task_predictor(spec: _ScanSpec):
    """Executor: the cached model (same cache key as :mod:`spark_scoring.udf`) in a Predictor."""
    from . import device as devices
    from . import model_cache
    from .loading import load_native
    from .predictor import Predictor
    from .udf import _make_runner

    dev = devices.resolve_device(spec.device)
    if dev == "cpu" and spec.kind == "pytorch":
        import torch

        threads = devices.task_cpus()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    handle = spec.handle
    model = model_cache.get_or_load(
        (handle.fingerprint, spec.kind, dev),
        lambda: load_native(handle.flavor if spec.kind != "pytorch" else "pytorch", handle.local_dir(), dev),
    )
    runner = _make_runner(spec.kind, model, dev, spec.model_names, handle.predict_method, None)
    predictor = Predictor(runner, names=spec.feature_cols, output=spec.output, batch_size=spec.batch_size,
                          on_null=spec.on_null,
                          prefetch=dev != "cpu" if spec.prefetch is None else spec.prefetch)
    return predictor, dev


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


def _read_split(spec: _ScanSpec, path: str, start: int, length: int, parts_json: str) -> Iterator[tuple]:
    """Executor: (rows, feature arrays, kept arrays) per record batch of one file split."""
    import pyarrow.parquet as pq

    fs, inner = _fs(path)
    # pre_buffer=False: read one row group at a time (pre-buffering reads every requested
    # row group's column chunks up front, i.e. the whole split; measured 2x the memory).
    pf = pq.ParquetFile(fs.open_input_file(inner), pre_buffer=False)
    groups = _row_groups(pf.metadata, start, length) if length else list(range(pf.metadata.num_row_groups))
    if not groups:
        return
    parts = json.loads(parts_json)
    file_names = {n.lower(): n for n in pf.schema_arrow.names}
    wanted = [c for c in dict.fromkeys(spec.feature_cols + spec.keep_cols) if c not in spec.partition_types]
    present = [file_names[c.lower()] for c in wanted if c.lower() in file_names]
    constants = {c: pa.array([parts.get(c)], pa.string()).cast(t) for c, t in spec.partition_types.items()}
    keep_types = {f.name: f.type for f in spec.out_schema}
    for batch in pf.iter_batches(batch_size=spec.read_batch, row_groups=groups, columns=present,
                                 use_threads=False):
        n = batch.num_rows
        by_name = {name.lower(): col for name, col in zip(batch.schema.names, batch.columns)}

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
            if not col.type.equals(target) and not (numeric and spec.kind in ("pytorch", "sklearn")):
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


def _scan_task(spec: _ScanSpec, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor (mapInArrow): this task's file splits in, kept columns + predictions out."""
    import pyarrow.parquet  # noqa: F401 - before the model loads, so the cache's gc.freeze() covers it

    splits = []
    for b in batches:
        for row in b.to_pylist():
            splits.extend(zip(row["paths"], row["starts"], row["lengths"], row["parts"]))
    if not splits:
        return
    from .udf import _test_fault

    _test_fault()  # off unless a reliability test sets spark_scoring.udf.TEST_FAULT_PROPERTY
    predictor, dev = _task_predictor(spec)
    aligner = _Aligner()

    def features():
        for path, start, length, parts in splits:
            for n, feats, kept in _read_split(spec, path, start, length, parts):
                aligner.push(n, kept)
                yield feats

    diag = None
    if spec.diagnostics:
        diag = _diagnostics(spec, dev)
    for result in predictor.predict_stream(features()):
        n = len(result)
        cols = aligner.take(n) + [result]
        if diag is not None:
            from .udf import DIAGNOSTICS_TYPE

            cols.append(pa.StructArray.from_arrays(
                [pa.repeat(pa.scalar(diag[f.name], f.type), n) for f in DIAGNOSTICS_TYPE],
                fields=list(DIAGNOSTICS_TYPE)))
        yield pa.RecordBatch.from_arrays(cols, schema=spec.out_schema)


def _diagnostics(spec: _ScanSpec, dev: str) -> dict:
    from pyspark import TaskContext

    from . import device as devices
    from . import model_cache

    ctx = TaskContext.get()
    stats = model_cache.stats()
    return {"pid": os.getpid(), "model_loads": stats["loads"], "cache_hits": stats["hits"], "device": dev,
            "gpu_addresses": ",".join(devices.task_gpu_addresses()), "batch_size": spec.batch_size,
            "partition_id": ctx.partitionId() if ctx else -1, "attempt": ctx.attemptNumber() if ctx else 0}


# ---------------------------------------------------------------------------
# Driver: the public entry point
# ---------------------------------------------------------------------------

def score_table_direct(
    spark,
    path: str,
    model,
    *,
    version: int | None = None,
    features: Sequence[str] | None = None,
    keep_columns: Sequence[str] | None = None,
    output_col: str = "prediction",
    partition_filter: dict | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    on_null: str = "error",
    lineage: bool = True,
    diagnostics: bool = False,
    planned: tuple[ScanPlan, Any] | None = None,
    _spec_overrides: dict | None = None,
):
    """Score the Delta table (pinned to ``version``, default: the latest now) or Parquet folder at ``path``.

    Runs on the driver; returns a lazy DataFrame with the same rows and columns as::

        df = spark.read.format("delta").option("versionAsOf", v).load(path)   # or .parquet(path)
        df = df.where(<partition_filter>)
        score(df, model, ...).select(*keep_columns, output_col, *lineage columns)

    ``keep_columns`` defaults to every table column. ``partition_filter`` maps
    a partition column to a value or a list of values (``None`` matches null).
    ``planned`` (from :func:`plan_scan` with the same arguments) skips planning again.
    When the direct scan cannot honour the table it returns exactly that
    normal-path DataFrame and logs why; either way ``result.spark_scoring_scan``
    is the :class:`ScanPlan` (``.direct``, ``.reason``, ``.version``).
    """
    import pyspark.sql.functions as F
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import StructField, StructType

    from .predictor import DEFAULT_BATCH_SIZE
    from .registry import load_model
    from .shipping import ship
    from .udf import DIAGNOSTICS_TYPE, LINEAGE_COLUMNS, _model_input_spec, score

    if on_null not in ("error", "null_prediction"):
        raise SchemaMismatchError(f"on_null={on_null!r}: expected 'error' or 'null_prediction'.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
        raise SchemaMismatchError(f"batch_size={batch_size!r}: expected a positive integer.")
    model = load_model(model)
    columns, input_spec, kind = _model_input_spec(model, features)
    plan, df = planned or _plan_scan(spark, path, version, partition_filter=partition_filter,
                                     columns=list(keep_columns or []) + list(columns))
    keep = list(df.columns) if keep_columns is None else list(keep_columns)
    unknown = [c for c in keep if c not in df.columns]
    if unknown:
        raise SchemaMismatchError(f"keep_columns {unknown} are not columns of {path!r}: {df.columns}.")
    needed = list(dict.fromkeys(keep + list(columns)))
    added = [output_col] + (list(LINEAGE_COLUMNS) if lineage else []) + (["scoring_diagnostics"] if diagnostics else [])
    if plan.direct and kind not in ("pytorch", "sklearn"):
        plan = ScanPlan(plan.path, plan.format, plan.version, False,
                        f"model flavor {kind!r} takes a pandas frame; the direct scan feeds numeric matrices only")

    if not plan.direct:
        log.warning("direct scan of %s falls back to the normal read: %s", path, plan.reason)
        src = df
        if partition_filter:
            for col, wanted in partition_filter.items():
                opts = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
                cond = F.col(col).isin([o for o in opts if o is not None]) if any(o is not None for o in opts) else F.lit(False)
                if any(o is None for o in opts):
                    cond = cond | F.col(col).isNull()
                src = src.where(cond)
        out = score(src.select(*needed), model, features=features, output_col=output_col, lineage=lineage,
                    batch_size=batch_size, device=device, on_null=on_null, diagnostics=diagnostics)
        out = out.select(*keep, *added)
        _attach(out, plan)
        return out

    # Same checks, same messages as score(): features exist and cast safely, no clashing names.
    from .signature import InputSpec, plan_feature_casts

    schema = {f.name: f.dataType for f in df.schema.fields}
    plan_feature_casts(schema, InputSpec(tuple(columns), input_spec.types, input_spec.tensor), model.uri)
    clash = [c for c in added if c in needed]
    if clash:
        raise SchemaMismatchError(
            f"the input already has column(s) {clash} that scoring would add. Fix: drop or rename "
            "them, or choose another output_col."
        )
    out_fields = [StructField(c, schema[c], True) for c in keep]
    from pyspark.sql.pandas.types import from_arrow_type

    out_fields.append(StructField(output_col, from_arrow_type(model.output.arrow_type), True))
    if diagnostics:
        out_fields.append(StructField("scoring_diagnostics", from_arrow_type(DIAGNOSTICS_TYPE), True))
    out_struct = StructType(out_fields)
    out_schema = pa.schema([pa.field(f.name, to_arrow_type(f.dataType, timezone="UTC")) for f in out_fields])
    bs = batch_size or DEFAULT_BATCH_SIZE.get(kind, 8192)
    spec = _ScanSpec(
        handle=ship(spark, model, None),
        kind=kind,
        model_names=tuple(input_spec.names),
        feature_cols=tuple(columns),
        feature_types=tuple(input_spec.types),
        keep_cols=tuple(keep),
        out_schema=out_schema,
        partition_types={c: to_arrow_type(schema[c], timezone="UTC") for c in plan.partition_columns},
        output=model.output,
        batch_size=bs,
        read_batch=bs,
        device=device,
        on_null=on_null,
        diagnostics=diagnostics,
    )
    if _spec_overrides:  # benchmark A/B of executor settings (prefetch)
        spec = dataclasses.replace(spec, **_spec_overrides)
    tasks_df = _tasks_df(spark, plan)

    def scan(batches):
        return _scan_task(spec, batches)

    out = tasks_df.mapInArrow(scan, out_struct)
    if diagnostics:
        out = out.select(*keep, output_col, "scoring_diagnostics")
    if lineage:
        out = out.withColumns({
            "model_name": F.lit(model.display_name),
            "model_version": F.lit(model.version).cast("string"),
            "scored_at": F.current_timestamp(),
        })
        out = out.select(*keep, *added)
    _attach(out, plan)
    return out


def _tasks_df(spark, plan: ScanPlan):
    """Driver: one row per planned task (its splits), one Spark partition each."""
    rows = [(list(p for p, _s, _l, _v in t), [s for _p, s, _l, _v in t], [n for _p, _s, n, _v in t],
             [v for _p, _s, _l, v in t]) for t in plan.tasks]
    task_schema = "paths array<string>, starts array<bigint>, lengths array<bigint>, parts array<string>"
    try:
        return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), task_schema)
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext
        return spark.createDataFrame(rows, task_schema).repartition(max(1, len(rows)))


def count_bad_rows_direct(spark, path: str, features: Sequence[str], *, version: int | None = None,
                          partition_filter: dict | None = None,
                          planned: tuple[ScanPlan, Any] | None = None) -> tuple[int, int, dict[str, int]] | None:
    """``(rows, bad rows, bad rows per feature)`` of the pinned table, read by pyarrow in the tasks.

    Runs on the driver (planning) and the executors (one pass over only the
    feature columns). The same answer as :func:`spark_scoring.quality.count_rows`
    for numeric features: a value is bad when null, or NaN or infinite in a
    floating-point column. Returns None where the direct scan would fall back
    (the caller then counts through Spark), or a feature is a partition column.
    """
    import pyspark.sql.functions as F
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import NumericType

    features = list(features)
    plan, df = planned or _plan_scan(spark, path, version, partition_filter=partition_filter, columns=features)
    schema = {f.name: f.dataType for f in df.schema.fields}
    if (not plan.direct or any(f in plan.partition_columns for f in features)
            or not all(isinstance(schema.get(f), NumericType) for f in features)):
        return None
    spec = _ScanSpec(
        handle=None, kind="count", model_names=(), feature_cols=tuple(features),
        feature_types=tuple(to_arrow_type(schema[f], timezone="UTC") for f in features), keep_cols=(),
        out_schema=pa.schema([]), partition_types={}, output=None, batch_size=65_536, read_batch=65_536,
        device="cpu", on_null="error", diagnostics=False,
    )
    names = ["rows", "bad"] + [f"c{i}" for i in range(len(features))]

    def count(batches):
        return _count_task(spec, names, batches)

    out_schema = ", ".join(f"{n} bigint" for n in names)
    if not plan.tasks:
        return 0, 0, {}
    row = _tasks_df(spark, plan).mapInArrow(count, out_schema).agg(*[F.sum(n).alias(n) for n in names]).head()
    per_column = {f: int(row[f"c{i}"]) for i, f in enumerate(features) if row[f"c{i}"]}
    return int(row["rows"] or 0), int(row["bad"] or 0), per_column


def _count_task(spec: _ScanSpec, names: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor (mapInArrow): this task's splits in, one row of counts out."""
    import pyarrow.compute as pc

    totals = [0] * len(names)
    for b in batches:
        for row in b.to_pylist():
            for path, start, length, parts in zip(row["paths"], row["starts"], row["lengths"], row["parts"]):
                for n, feats, _kept in _read_split(spec, path, start, length, parts):
                    totals[0] += n
                    any_bad = None
                    for i, col in enumerate(feats):
                        bad = pc.is_null(col, nan_is_null=True)
                        if pa.types.is_floating(col.type):
                            bad = pc.or_(bad, pc.fill_null(pc.is_inf(col), False))
                        totals[2 + i] += pc.sum(bad).as_py() or 0
                        any_bad = bad if any_bad is None else pc.or_(any_bad, bad)
                    if any_bad is not None:
                        totals[1] += pc.sum(any_bad).as_py() or 0
    yield pa.RecordBatch.from_arrays([pa.array([t], pa.int64()) for t in totals], names)


def _attach(df, plan: ScanPlan) -> None:
    try:
        df.spark_scoring_scan = plan
    except Exception:  # noqa: BLE001 - a DataFrame class that refuses attributes
        pass
