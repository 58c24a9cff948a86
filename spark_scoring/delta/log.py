"""A local Delta table's log read in this process through delta-kernel (``deltalake``), not by Spark.

Runs on: the driver. A job asks its tables small questions many times: does it
exist, what is its latest version, what did the last commits record, how is it
partitioned, which commit holds our transaction id. Spark answers each with a
query (``DESCRIBE HISTORY``, ``DESCRIBE TABLE``, a JSON read of the log): a few
hundred milliseconds apiece, several per commit, which a backfill of many small
partitions and a no-op rerun pay again and again. delta-rs reads the same
``_delta_log`` (JSON commits, classic, multi-part and V2 checkpoints) in
milliseconds.

:func:`log_path` says where this applies: a path-addressed table on the local
file system (a plain path or a ``file:`` URI) under classic Spark, where the
driver's Spark reads the very same files. Object stores (their credentials live
in Spark's Hadoop configuration), catalog tables and Spark Connect (whose
server may see other files) keep the Spark queries. Every function returns
``None`` when delta-rs cannot answer (a reader feature it does not support, an
unreadable log); the caller then asks Spark, so an answer is never guessed.
"""
from __future__ import annotations

import json
import logging
import os
from urllib.parse import unquote, urlparse

__all__ = ["log_path", "exists", "latest_version", "history", "partition_columns", "txn_commit", "query",
           "text_literal", "append"]

log = logging.getLogger(__name__)


def log_path(name: str, classic: bool) -> str | None:
    """The local folder of the path table ``name`` if delta-rs may answer for it, else None."""
    if not classic:
        return None
    if name.startswith("file:"):
        parsed = urlparse(name)
        return unquote(parsed.path) if parsed.netloc in ("", "localhost") else None
    if "://" in name or ":" in name.split("/", 1)[0]:  # s3://, abfss://, dbfs:/ ...
        return None
    return name


def _table(path: str, version: int | None = None):
    try:
        from deltalake import DeltaTable

        return DeltaTable(path, version=version)
    except Exception as exc:  # noqa: BLE001 - no table, or a log delta-rs cannot read: Spark answers
        log.debug("delta-rs cannot read %s (%s: %s); asking Spark", path, type(exc).__name__, exc)
        return None


def exists(path: str) -> bool | None:
    """Whether ``path`` holds a Delta table (None: delta-rs cannot tell)."""
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return False
    return True if _table(path) is not None else None


def latest_version(path: str) -> int | None:
    table = _table(path)
    return None if table is None else int(table.version())


def history(path: str, limit: int | None = None) -> list[dict] | None:
    """The commits' ``commitInfo`` newest first, with ``version``: the fields ``DESCRIBE HISTORY``
    names (``operationMetrics`` and ``operationParameters`` as dicts of strings)."""
    table = _table(path)
    if table is None:
        return None
    try:
        entries = table.history(limit)
    except Exception as exc:  # noqa: BLE001
        log.debug("delta-rs cannot read the history of %s (%s); asking Spark", path, exc)
        return None
    out = []
    for entry in entries:
        if "version" not in entry:
            return None
        row = dict(entry)
        for key in ("operationMetrics", "operationParameters"):
            if isinstance(row.get(key), dict):
                row[key] = {k: v if isinstance(v, str) else json.dumps(v) for k, v in row[key].items()}
        out.append(row)
    return sorted(out, key=lambda e: -int(e["version"]))


def partition_columns(path: str) -> list[str] | None:
    table = _table(path)
    if table is None:
        return None
    return list(table.metadata().partition_columns or [])


def query(path: str, sql: str) -> list[dict] | None:
    """Rows of ``sql`` over the table's latest snapshot, registered as ``t`` (delta-rs' DataFusion
    engine: deletion vectors honoured); for small tables such as the audit table. None: Spark answers."""
    table = _table(path)
    if table is None:
        return None
    try:
        import pyarrow as pa
        from deltalake import QueryBuilder

        return pa.table(QueryBuilder().register("t", table).execute(sql).read_all()).to_pylist()
    except Exception as exc:  # noqa: BLE001
        log.debug("delta-rs cannot run %r on %s (%s); asking Spark", sql, path, exc)
        return None


def text_literal(text: str) -> str:
    """A string literal for :func:`query` (DataFusion's standard SQL: a quote is doubled, a
    backslash is itself; Spark's dialect is :func:`spark_scoring.delta.sql.sql_literal`)."""
    return "'" + str(text).replace("'", "''") + "'"


def txn_commit(path: str, app_id: str, txn_version: int, first: int, last: int) -> int | None | bool:
    """The version in ``first..last`` whose commit recorded the transaction (``app_id``,
    ``txn_version``); None: none did; False: a commit file is missing (Spark answers)."""
    for version in range(first, last + 1):
        commit = os.path.join(path, "_delta_log", f"{version:020d}.json")
        try:
            with open(commit, encoding="utf-8") as fh:
                for line in fh:
                    txn = json.loads(line).get("txn") if '"txn"' in line else None
                    if txn and txn.get("appId") == app_id and int(txn.get("version", -1)) == txn_version:
                        return version
        except OSError:
            return False
    return None


def append(path: str, rows: list[dict], schema=None) -> bool:
    """Append ``rows`` to the table at ``path`` in one commit written by delta-rs: a few milliseconds
    where Spark's append is a job of about 0.4 s (the audit table, once per commit of the output).
    With ``schema`` (a pyarrow schema) a missing table is created with it. False where delta-rs
    cannot (a writer feature it does not support, rows that do not fit the table's schema, a
    failed commit): nothing was committed, the caller writes with Spark. A commit is recognised by
    a marker in its ``commitInfo``, so an error raised after it (a checkpoint that failed to
    write) is not mistaken for a failed append."""
    import uuid

    try:
        import pyarrow as pa
        from deltalake import CommitProperties, write_deltalake
    except ImportError:  # pragma: no cover - an install without deltalake
        return False
    marker = uuid.uuid4().hex
    table = _table(path) if os.path.isdir(os.path.join(path, "_delta_log")) else None
    if table is None and (schema is None or os.path.exists(os.path.join(path, "_delta_log"))):
        return False  # nothing to append to, or a log delta-rs cannot read: Spark decides
    before = -1
    try:
        if table is not None:
            before = int(table.version())
            schema = pa.schema(table.schema().to_arrow())
        if any(set(r) != set(schema.names) for r in rows):
            return False  # another schema: Spark's append says what does not fit
        data = pa.Table.from_pylist(rows, schema=schema)
        write_deltalake(path if table is None else table, data, mode="error" if table is None else "append",
                        commit_properties=CommitProperties(custom_metadata={"spark_scoring.append": marker}))
        return True
    except Exception as exc:  # noqa: BLE001 - Spark writes instead, unless the commit landed
        log.debug("delta-rs could not append to %s (%s: %s)", path, type(exc).__name__, exc)
        try:
            after = _table(path)
            landed = after is not None and any(
                e.get("spark_scoring.append") == marker for e in after.history(int(after.version()) - before))
        except Exception:  # noqa: BLE001
            landed = False
        return landed
