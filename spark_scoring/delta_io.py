"""Delta reads and idempotent, partition-by-partition writes.

Runs on: the driver. Nothing here is shipped to executors; every function takes
the SparkSession and starts Spark jobs or Delta commits from the driver.

Three ideas carry the module:

- Quoting is the security boundary. Partition values and column names reach SQL
  text (``replaceWhere``, MERGE conditions), so they go through
  :func:`quote_identifier` and :func:`sql_literal` and nowhere else.
- One partition, one commit. ``replaceWhere`` (or a MERGE whose condition names
  the partition literal) replaces exactly one partition in one atomic commit,
  tagged with Delta's idempotent-write pair (``txnAppId``, ``txnVersion``): a
  rerun with the same pair is skipped by Delta itself, and we report that.
- Conflicts are retried, everything else propagates. Delta's concurrent
  modification errors are retried with backoff; after ``max_retries`` a
  :class:`WriteConflictError` says what collided and what to do.

Verified on delta-spark 4.4.0: MERGE honours the session confs
``spark.databricks.delta.write.txnAppId`` / ``txnVersion`` (a second MERGE with
the same pair makes no commit), and ``replaceWhere`` does not check the rows of
the write that creates a table, so we check them ourselves (see
:func:`_rows_in_partition`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import numbers
import os
import random
import re
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from delta.tables import DeltaTable
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_scoring.errors import (
    ChangeFeedError,
    ScoringError,
    SchemaMismatchError,
    WriteConflictError,
)

__all__ = [
    "quote_identifier",
    "quote_table_name",
    "sql_literal",
    "partition_predicate",
    "TableRef",
    "partition_counts",
    "CommitResult",
    "write_partition",
    "append_rows",
    "committed_txn_version",
    "enable_change_data_feed",
    "read_changes",
]

WRITE_MODES = ("overwrite_partitions", "append", "merge")
_MAX_DELAY_S = 30.0
_MERGE_CONFS = (
    "spark.databricks.delta.commitInfo.userMetadata",
    "spark.databricks.delta.write.txnAppId",
    "spark.databricks.delta.write.txnVersion",
)
# Delta's commit conflicts (io.delta.exceptions.*), by class name or error class.
_CONFLICT_NAMES = frozenset({
    "ConcurrentAppendException", "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException", "MetadataChangedException",
    "ConcurrentTransactionException", "ProtocolChangedException",
    "ConcurrentWriteException", "DeltaConcurrentModificationException",
    "ConcurrentModificationException",
})
_CONFLICT_TEXT = re.compile(
    r"Concurrent\w*Exception|MetadataChangedException|ProtocolChangedException"
    r"|\[DELTA_(?:CONCURRENT_\w+|METADATA_CHANGED|PROTOCOL_CHANGED)"
)
_OUTSIDE_PARTITION = "spark_scoring: row outside the partition being written"


# --------------------------------------------------------------------- quoting
def quote_identifier(name: str) -> str:
    """One identifier in backticks, inner backticks doubled. Dots are not split:
    ``a.b`` is one column named ``a.b``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"identifier must be a non-empty string, got {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_table_name(name: str) -> str:
    """``catalog.schema.table`` -> ```catalog`.`schema`.`table```: each dot-separated
    part quoted on its own."""
    parts = name.split(".") if isinstance(name, str) else []
    if not parts or not all(parts):
        raise ValueError(f"table name must be dot-separated non-empty parts, got {name!r}")
    return ".".join(quote_identifier(part) for part in parts)


_STRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _STRING_ESCAPES:
        return _STRING_ESCAPES[ch]
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        # \uXXXX, not \0: Spark reads "\0" followed by digits as an octal escape.
        return f"\\u{ord(ch):04x}"
    return ch


def sql_literal(value: Any) -> str:
    """A Spark SQL literal for ``value``, for Spark's default parser (backslash
    escapes on, i.e. ``spark.sql.parser.escapedStringLiterals=false``).

    Naive datetimes are read in the session time zone; aware ones keep their offset.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "CAST('NaN' AS DOUBLE)"
        if math.isinf(number):
            return "CAST('Infinity' AS DOUBLE)" if number > 0 else "CAST('-Infinity' AS DOUBLE)"
        return repr(number)
    if isinstance(value, _dt.datetime):  # before date: datetime is a date subclass
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, _dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + "".join(_escape_char(ch) for ch in value) + "'"
    raise TypeError(
        f"no SQL literal for {type(value).__name__} value {value!r}; "
        "use None, bool, int, float, str, datetime.date or datetime.datetime"
    )


def partition_predicate(column: str, value: Any) -> str:
    """```ds` = '2026-11-27'``, or ```ds` IS NULL`` for None."""
    if value is None:
        return f"{quote_identifier(column)} IS NULL"
    return f"{quote_identifier(column)} = {sql_literal(value)}"


# -------------------------------------------------------------------- TableRef
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True)
class TableRef:
    """A Delta table named by path or by metastore name.

    ``name`` is the path (made absolute when local and scheme-less, so Spark and
    Delta agree whatever the cwd) or the dotted table name.
    """

    name: str
    is_path: bool

    @classmethod
    def parse(cls, text: str) -> "TableRef":
        """A path if ``text`` has ``/`` or ``\\`` or a URI scheme, else a table name."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"table reference must be a non-empty string, got {text!r}")
        text = text.strip()
        if _URI_SCHEME.match(text) and not re.match(r"^[A-Za-z]:[\\/]", text):
            return cls(text, True)
        if "/" in text or "\\" in text:
            return cls(os.path.abspath(text), True)
        quote_table_name(text)  # validates the parts
        return cls(text, False)

    def __str__(self) -> str:
        return self.name

    @property
    def sql(self) -> str:
        """The table in SQL text: ``delta.`/path``` or ```schema`.`table```."""
        if self.is_path:
            return "delta." + quote_identifier(self.name)
        return quote_table_name(self.name)

    def exists(self, spark: SparkSession) -> bool:
        if self.is_path:
            return bool(DeltaTable.isDeltaTable(spark, self.name))
        return bool(spark.catalog.tableExists(self.sql))

    def delta_table(self, spark: SparkSession) -> DeltaTable:
        if self.is_path:
            return DeltaTable.forPath(spark, self.name)
        return DeltaTable.forName(spark, self.sql)

    def read(self, spark: SparkSession, version: int | None = None) -> DataFrame:
        """The table, or its snapshot at ``version`` (time travel, ``versionAsOf``)."""
        reader = spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", _non_negative_int("version", version))
        return reader.load(self.name) if self.is_path else reader.table(self.sql)

    def latest_version(self, spark: SparkSession) -> int:
        return int(self.delta_table(spark).history(1).select("version").head()[0])

    def history(self, spark: SparkSession, limit: int | None = None) -> list[dict]:
        """``DESCRIBE HISTORY`` rows as dicts, newest first."""
        table = self.delta_table(spark)
        frame = table.history(limit) if limit is not None else table.history()
        return [row.asDict(recursive=True) for row in frame.orderBy(F.col("version").desc()).collect()]

    def _describe(self, spark: SparkSession) -> tuple[list[str], str]:
        # DESCRIBE TABLE EXTENDED reads only the table's metadata; DESCRIBE DETAIL
        # also counts files, which rebuilds the table state after every commit.
        parts, location, section = [], self.name, ""
        for row in spark.sql(f"DESCRIBE TABLE EXTENDED {self.sql}").collect():
            key = row["col_name"] or ""
            if key.startswith("# ") or not key:
                section = key if key != "# col_name" else section
            elif section == "# Partition Information":
                parts.append(key)
            elif section == "# Detailed Table Information" and key == "Location":
                location = row["data_type"]
        return parts, location

    def partition_columns(self, spark: SparkSession) -> list[str]:
        return self._describe(spark)[0]

    def location(self, spark: SparkSession) -> str:
        """Where the table's files are (the path itself for path tables)."""
        return self.name if self.is_path else self._describe(spark)[1]

    def table_properties(self, spark: SparkSession) -> dict:
        return dict(self.delta_table(spark).detail().head()["properties"] or {})


def _as_ref(ref: TableRef | str) -> TableRef:
    return ref if isinstance(ref, TableRef) else TableRef.parse(ref)


def _non_negative_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return int(value)


# ------------------------------------------------------------------- listing
def partition_counts(df: DataFrame, column: str) -> dict[Any, int]:
    """``{partition value: row count}`` in one Spark job; None is a value too."""
    grouped = df.groupBy(F.col(quote_identifier(column)).alias("value")).count()
    return {row["value"]: int(row["count"]) for row in grouped.collect()}


# -------------------------------------------------------------------- writes
@dataclass(frozen=True)
class CommitResult:
    """``table_version``: the commit this call made (None when skipped);
    ``skipped``: Delta already had this (app id, version); ``attempts``: tries made."""

    table_version: int | None
    skipped: bool
    attempts: int


def write_partition(
    spark: SparkSession,
    df: DataFrame,
    ref: TableRef | str,
    *,
    mode: str,
    partition_column: str | None,
    partition_value: Any,
    txn_app_id: str,
    txn_version: int,
    user_metadata: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    max_retries: int = 6,
    base_delay_s: float = 0.5,
) -> CommitResult:
    """Write one partition (the whole table when ``partition_column`` is None) in
    one idempotent Delta commit; create the table on the first write.

    - ``overwrite_partitions``: ``replaceWhere`` on the partition predicate.
    - ``append``: append.
    - ``merge``: upsert on ``keys``; the condition also names the partition literal
      so MERGEs into disjoint partitions do not conflict.

    Every row of ``df`` must belong to the partition (checked while writing; a
    stray row fails the write with :class:`ScoringError`). A rerun with a
    ``txn_version`` at most the last one committed for ``txn_app_id`` is skipped
    by Delta: ``CommitResult(None, True, n)``.
    """
    ref = _as_ref(ref)
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    if mode == "merge" and not keys:
        raise ValueError("mode='merge' needs keys: the columns that identify a row")
    if not isinstance(txn_app_id, str) or not txn_app_id:
        raise ValueError(f"txn_app_id must be a non-empty string, got {txn_app_id!r}")
    txn_version = _non_negative_int("txn_version", txn_version)
    columns = df.columns
    missing = [key for key in (keys or ()) if key not in columns]
    if missing:
        raise SchemaMismatchError(f"merge keys {missing} are not columns of the output {columns}")
    if partition_column is not None and partition_column not in columns:
        raise SchemaMismatchError(
            f"partition column {partition_column!r} is not a column of the output {columns}")
    expected_parts = [partition_column] if partition_column is not None else []
    predicate = partition_predicate(partition_column, partition_value) if partition_column else None
    source = _rows_in_partition(df, partition_column, predicate) if predicate else df
    metadata = json.dumps(dict(user_metadata), sort_keys=True, default=str)
    txn = {"txnAppId": txn_app_id, "txnVersion": str(txn_version)}

    def attempt() -> CommitResult:
        before = _version_checked(spark, ref, expected_parts)
        if mode == "merge" and before is not None:
            condition = " AND ".join(f"t.{q} <=> s.{q}" for q in map(quote_identifier, keys or ()))
            if predicate:
                condition += f" AND t.{predicate}"
            _merge(spark, source, ref, condition, {
                "spark.databricks.delta.commitInfo.userMetadata": metadata,
                "spark.databricks.delta.write.txnAppId": txn_app_id,
                "spark.databricks.delta.write.txnVersion": str(txn_version)})
        else:
            overwrite = mode == "overwrite_partitions"
            _save(source, ref, "overwrite" if overwrite else "append",
                  partition_by=expected_parts if before is None else [],
                  options={**txn, "userMetadata": metadata,
                           **({"replaceWhere": predicate} if overwrite and predicate else {})})
        after = ref.latest_version(spark)
        if before is not None and after == before:
            return CommitResult(None, True, 0)
        first = 0 if before is None else before + 1
        version = _txn_commit(spark, ref, txn_app_id, txn_version, first, after)
        return CommitResult(version, version is None, 0)

    where = f"{partition_column}={partition_value!r}" if partition_column else "whole table"
    return _retry_conflicts(attempt, ref, where, max_retries, base_delay_s)


def append_rows(
    spark: SparkSession,
    df: DataFrame,
    ref: TableRef | str,
    *,
    partition_by: str | Sequence[str] | None = None,
    user_metadata: Mapping[str, Any] | None = None,
    max_retries: int = 6,
    base_delay_s: float = 0.5,
) -> CommitResult:
    """Plain append (audit, quarantine tables); creates the table, partitioned by
    ``partition_by``, when missing. Not idempotent: no txn pair."""
    ref = _as_ref(ref)
    parts = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    options = {}
    if user_metadata is not None:
        options["userMetadata"] = json.dumps(dict(user_metadata), sort_keys=True, default=str)

    def attempt() -> CommitResult:
        exists = ref.exists(spark)
        _save(df, ref, "append", partition_by=[] if exists else parts, options=options)
        return CommitResult(ref.latest_version(spark), False, 0)

    return _retry_conflicts(attempt, ref, "append", max_retries, base_delay_s)


def _rows_in_partition(df: DataFrame, column: str, predicate: str) -> DataFrame:
    # Delta checks replaceWhere rows only when the table exists; this check runs
    # in the same job for every mode, so a stray row fails the write, never lands.
    message = f"{_OUTSIDE_PARTITION}: expected {predicate}"
    quoted = F.col(quote_identifier(column))
    checked = F.when(F.expr(predicate), quoted).otherwise(F.raise_error(F.lit(message)))
    return df.withColumn(column, checked)


def _version_checked(spark: SparkSession, ref: TableRef, expected: list[str]) -> int | None:
    if not ref.exists(spark):
        return None
    actual = ref.partition_columns(spark)
    if actual != expected:
        raise SchemaMismatchError(
            f"{ref.name} is partitioned by {actual} but this write partitions by {expected}; "
            "set partition_column to the table's partition column or write to a new table"
        )
    return ref.latest_version(spark)


def _save(df: DataFrame, ref: TableRef, mode: str, *, partition_by: list[str],
          options: Mapping[str, str]) -> None:
    writer = df.write.format("delta").mode(mode).options(**options)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if ref.is_path:
        writer.save(ref.name)
    else:
        writer.saveAsTable(ref.sql)


def _merge(spark: SparkSession, source: DataFrame, ref: TableRef, condition: str,
           confs: Mapping[str, str]) -> None:
    # MERGE takes no writer options: its txn pair and userMetadata are session
    # confs. They are set on a child session (same SparkContext, own SQL conf) so
    # a thread appending through ``spark`` at the same time is not tagged too.
    session = _child_session(spark)
    for key, value in confs.items():
        session.conf.set(key, value)
    try:
        (ref.delta_table(session).alias("t")
         .merge(source.alias("s"), condition)
         .whenMatchedUpdateAll()
         .whenNotMatchedInsertAll()
         .execute())
    finally:
        for key in confs:
            session.conf.unset(key)


def _child_session(spark: SparkSession) -> SparkSession:
    child = spark.newSession()
    for key, value in spark.conf.getAll.items():
        if key not in _MERGE_CONFS and child.conf.get(key, None) != value and child.conf.isModifiable(key):
            child.conf.set(key, value)
    return child


_TXN_SCHEMA = T.StructType([T.StructField("txn", T.StructType([
    T.StructField("appId", T.StringType()), T.StructField("version", T.LongType())]))])


def _txn_commit(spark: SparkSession, ref: TableRef, app_id: str, txn_version: int,
                first: int, last: int) -> int | None:
    """The commit in ``first..last`` that recorded (app_id, txn_version), if any."""
    log = ref.location(spark).rstrip("/") + "/_delta_log"
    files = [f"{log}/{v:020d}.json" for v in range(first, last + 1)]
    rows = (spark.read.schema(_TXN_SCHEMA).json(files)
            .where((F.col("txn.appId") == F.lit(app_id)) & (F.col("txn.version") == F.lit(txn_version)))
            .select(F.col("_metadata.file_name")).collect())
    versions = [int(row[0].split(".")[0]) for row in rows]
    return min(versions) if versions else None


def committed_txn_version(spark: SparkSession, ref: TableRef | str, app_id: str) -> int | None:
    """The last ``txnVersion`` Delta recorded for ``app_id``, read from the table's
    ``_delta_log`` commits and checkpoints; None for an unknown table or app id."""
    ref = _as_ref(ref)
    if not ref.exists(spark):
        return None
    log = ref.location(spark).rstrip("/") + "/_delta_log"
    frames = [spark.read.schema(_TXN_SCHEMA).json(f"{log}/*.json")]
    try:
        frames.append(spark.read.schema(_TXN_SCHEMA).parquet(f"{log}/*.checkpoint*.parquet"))
    except AnalysisException:  # no checkpoint yet
        pass
    actions = frames[0] if len(frames) == 1 else frames[0].unionByName(frames[1])
    row = actions.where(F.col("txn.appId") == F.lit(app_id)).agg(F.max("txn.version")).head()
    return None if row[0] is None else int(row[0])


def _is_conflict(exc: BaseException) -> bool:
    if any(cls.__name__ in _CONFLICT_NAMES for cls in type(exc).__mro__):
        return True
    return bool(_CONFLICT_TEXT.search(str(exc)))


def _retry_conflicts(
    attempt: Callable[[], CommitResult],
    ref: TableRef,
    where: str,
    max_retries: int,
    base_delay_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> CommitResult:
    """Run ``attempt`` until it commits; retry Delta conflicts only, with
    exponential backoff and jitter, ``max_retries`` times at most."""
    if max_retries < 0 or base_delay_s < 0:
        raise ValueError(f"max_retries and base_delay_s must be >= 0, got {max_retries}, {base_delay_s}")
    tries = 0
    while True:
        tries += 1
        try:
            return replace(attempt(), attempts=tries)
        except Exception as exc:  # noqa: BLE001 - re-raised unless a Delta conflict
            if _OUTSIDE_PARTITION in str(exc):
                raise ScoringError(
                    f"output for {ref.name} ({where}) holds rows of another partition; "
                    "filter the input to that partition before scoring"
                ) from exc
            if not _is_conflict(exc):
                raise
            if tries > max_retries:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise WriteConflictError(
                    f"Delta commit to {ref.name} ({where}) still conflicted after {tries} "
                    f"attempts; last error: {type(exc).__name__}: {last[:500]}. Concurrent "
                    "writers must touch disjoint partitions: give each job its own partition "
                    "values and keep the partition column in the merge condition, or run the "
                    "jobs one after another, or raise max_retries"
                ) from exc
            delay = min(_MAX_DELAY_S, base_delay_s * 2 ** (tries - 1))
            sleep(delay * random.uniform(0.5, 1.5))


# -------------------------------------------------------------- change feed
def enable_change_data_feed(spark: SparkSession, ref: TableRef | str) -> None:
    """Turn on Change Data Feed (``delta.enableChangeDataFeed = true``) from the next commit."""
    spark.sql(f"ALTER TABLE {_as_ref(ref).sql} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")


_CDF_CAUSES = (
    (re.compile(r"DELTA_MISSING_CHANGE_DATA|change data was not recorded"),
     "Change Data Feed was not enabled at some version in that range",
     "enable it with enable_change_data_feed (delta.enableChangeDataFeed = true), run a "
     "full `input.mode: snapshot` job once, and start incremental runs after that version"),
    (re.compile(r"DELTA_CDC_START_VERSION_AFTER_LATEST"),
     "the start version is past the table's latest version",
     "start at most at the latest version; the checkpoint may belong to another table"),
    (re.compile(r"DELTA_LOG_FILE_NOT_FOUND|DELTA_CHANGE_DATA_FILE_NOT_FOUND|VersionNotFound"
                r"|DELTA_VERSION_NOT_FOUND|FileNotFoundException"),
     "the versions are past log / change data retention (log cleaned up or vacuumed)",
     "run a full `input.mode: snapshot` job once, and raise delta.logRetentionDuration "
     "if incremental runs are further apart than the retention"),
)


def read_changes(spark: SparkSession, ref: TableRef | str, start_version: int,
                 end_version: int | None = None) -> DataFrame:
    """Rows inserted or updated (``update_postimage``) from ``start_version`` to
    ``end_version`` (both inclusive; None: latest), with ``_change_type`` and
    ``_commit_version``. Problems found while planning raise :class:`ChangeFeedError`;
    change files vacuumed later surface only when the result is computed."""
    ref = _as_ref(ref)
    start = _non_negative_int("start_version", start_version)
    if end_version is not None and _non_negative_int("end_version", end_version) < start:
        raise ValueError(f"end_version {end_version} is before start_version {start}")

    def fail(cause: str, fix: str) -> ChangeFeedError:
        return ChangeFeedError(f"cannot read changes of {ref.name} from version {start}: {cause}; {fix}")

    if not ref.exists(spark):
        raise fail("the table does not exist", "check the input table name")
    latest = ref.latest_version(spark)
    if start > latest:
        raise fail(f"the table's latest version is {latest}",
                   "start at most at the latest version; the checkpoint may belong to another table")
    reader = (spark.read.format("delta").option("readChangeFeed", "true")
              .option("startingVersion", start))
    if end_version is not None:
        reader = reader.option("endingVersion", int(end_version))
    try:
        changes = reader.load(ref.name) if ref.is_path else reader.table(ref.sql)
        changes = changes.where(F.col("_change_type").isin("insert", "update_postimage"))
        if getattr(changes, "_jdf", None) is not None:
            # Delta checks the version range when the scan is planned, not at load:
            # plan now (no job runs; Spark keeps the plan for the caller's action).
            changes._jdf.queryExecution().executedPlan()
    except Exception as exc:
        for pattern, cause, fix in _CDF_CAUSES:
            if pattern.search(str(exc)):
                raise fail(cause, fix) from exc
        raise
    return changes
