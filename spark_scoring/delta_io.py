"""Delta reads and idempotent, partition-by-partition writes.

Runs on: the driver. Every function takes the SparkSession and starts Spark jobs
or Delta commits from the driver; nothing here is shipped to executors.

- Quoting is the security boundary: partition values and column names reach SQL
  text (``replaceWhere``, MERGE conditions) only through :func:`quote_identifier`
  and :func:`sql_literal`.
- One partition, one commit, tagged with Delta's idempotent-write pair
  (``txnAppId``, ``txnVersion``): a rerun with the same pair is skipped by Delta
  (verified on delta-spark 4.4.0, MERGE included, through the session confs).
- Delta's commit conflicts are retried with backoff; anything else propagates.
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

from spark_scoring.errors import ChangeFeedError, SchemaMismatchError, ScoringError, WriteConflictError

__all__ = [
    "quote_identifier", "quote_table_name", "sql_literal", "partition_predicate",
    "TableRef", "partition_counts", "CommitResult", "write_partition", "append_rows",
    "committed_txn_version", "enable_change_data_feed", "read_changes",
]

WRITE_MODES = ("overwrite_partitions", "append", "merge")
_MAX_DELAY_S = 30.0
_MERGE_CONFS = (  # MERGE reads these session confs instead of writer options
    "spark.databricks.delta.commitInfo.userMetadata",
    "spark.databricks.delta.write.txnAppId",
    "spark.databricks.delta.write.txnVersion",
)
# Delta's commit conflicts (io.delta.exceptions.*), by class name or error class.
_CONFLICT_NAMES = frozenset(
    "ConcurrentAppendException ConcurrentDeleteReadException ConcurrentDeleteDeleteException "
    "MetadataChangedException ConcurrentTransactionException ProtocolChangedException "
    "ConcurrentWriteException DeltaConcurrentModificationException ConcurrentModificationException".split())
_CONFLICT_TEXT = re.compile(r"Concurrent\w*Exception|MetadataChangedException|ProtocolChangedException"
                            r"|\[DELTA_(?:CONCURRENT_\w+|METADATA_CHANGED|PROTOCOL_CHANGED)")
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

    @property
    def sql(self) -> str:
        """The table in SQL text: ``delta.`/path``` or ```schema`.`table```."""
        if self.is_path:
            return "delta." + quote_identifier(self.name)
        return quote_table_name(self.name)

    def exists(self, spark: SparkSession) -> bool:
        if self.is_path and _is_connect(spark):
            try:
                spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT 1").collect()
                return True
            except AnalysisException:  # [DELTA_TABLE_ONLY_OPERATION]: no Delta table there
                return False
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
        return int(spark.sql(f"DESCRIBE HISTORY {self.sql} LIMIT 1").head()["version"])

    def history(self, spark: SparkSession, limit: int | None = None) -> list[dict]:
        """``DESCRIBE HISTORY`` rows as dicts, newest first."""
        # SQL, not DeltaTable.history(): the same rows, and it also works on Spark
        # Connect servers without the Delta Connect plugin.
        limit_sql = f" LIMIT {_non_negative_int('limit', limit)}" if limit is not None else ""
        frame = spark.sql(f"DESCRIBE HISTORY {self.sql}{limit_sql}")
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
        return dict(spark.sql(f"DESCRIBE DETAIL {self.sql}").head()["properties"] or {})


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
    spark: SparkSession, df: DataFrame, ref: TableRef | str, *, mode: str,
    partition_column: str | None, partition_value: Any, txn_app_id: str, txn_version: int,
    user_metadata: Mapping[str, Any], keys: Sequence[str] | None = None,
    max_retries: int = 6, base_delay_s: float = 0.5,
) -> CommitResult:
    """Write one partition (the whole table when ``partition_column`` is None) in
    one idempotent Delta commit, creating the table (partitioned) on the first write.

    ``mode``: ``overwrite_partitions`` (``replaceWhere`` on the partition),
    ``append``, or ``merge`` (upsert on ``keys``; the condition names the partition
    literal so MERGEs into disjoint partitions do not conflict). Every row of ``df``
    must belong to the partition: a stray row fails the write (:class:`ScoringError`).
    A ``txn_version`` at most the last one committed for ``txn_app_id`` is skipped
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
    missing = [c for c in [*(keys or ()), *([partition_column] if partition_column else [])]
               if c not in columns]
    if missing:
        raise SchemaMismatchError(f"key / partition columns {missing} are not in the output {columns}")
    partitions = [partition_column] if partition_column else []
    predicate = partition_predicate(partition_column, partition_value) if partition_column else None
    source = _rows_in_partition(df, partition_column, predicate) if predicate else df
    txn = {"txnAppId": txn_app_id, "txnVersion": str(txn_version),
           "userMetadata": json.dumps(dict(user_metadata), sort_keys=True, default=str)}

    def attempt() -> CommitResult:
        before = _version_checked(spark, ref, partitions)
        if mode == "merge" and before is not None:
            condition = " AND ".join(f"t.{q} <=> s.{q}" for q in map(quote_identifier, keys or ()))
            _merge(spark, source, ref, condition + (f" AND t.{predicate}" if predicate else ""), txn)
        elif mode == "overwrite_partitions":
            _save(source, ref, "overwrite", [] if before is not None else partitions,
                  {**txn, "replaceWhere": predicate} if predicate else txn)
        else:  # append, or the MERGE that creates the table
            _save(source, ref, "append", [] if before is not None else partitions, txn)
        after = ref.latest_version(spark)
        if before is not None and after == before:
            return CommitResult(None, True, 0)
        version = _txn_commit(spark, ref, txn_app_id, txn_version, 0 if before is None else before + 1, after)
        return CommitResult(version, version is None, 0)

    where = f"{partition_column}={partition_value!r}" if partition_column else "whole table"
    return _retry_conflicts(attempt, ref, where, max_retries, base_delay_s)


def append_rows(
    spark: SparkSession, df: DataFrame, ref: TableRef | str, *,
    partition_by: str | Sequence[str] | None = None, user_metadata: Mapping[str, Any] | None = None,
    max_retries: int = 6, base_delay_s: float = 0.5,
) -> CommitResult:
    """Plain append (audit, quarantine tables), creating the table partitioned by
    ``partition_by`` when missing. Not idempotent (no txn pair); ``table_version``
    is the latest version after the append."""
    ref = _as_ref(ref)
    parts = [partition_by] if isinstance(partition_by, str) else list(partition_by or [])
    options = {} if user_metadata is None else {
        "userMetadata": json.dumps(dict(user_metadata), sort_keys=True, default=str)}

    def attempt() -> CommitResult:
        _save(df, ref, "append", [] if ref.exists(spark) else parts, options)
        return CommitResult(ref.latest_version(spark), False, 0)

    return _retry_conflicts(attempt, ref, "append", max_retries, base_delay_s)


def _rows_in_partition(df: DataFrame, column: str, predicate: str) -> DataFrame:
    # Delta checks replaceWhere rows only once the table exists (not on the write
    # that creates it) and never for MERGE: check every row, inside the same job.
    fail = F.raise_error(F.lit(f"{_OUTSIDE_PARTITION}: expected {predicate}"))
    return df.withColumn(column, F.when(F.expr(predicate), F.col(quote_identifier(column))).otherwise(fail))


def _version_checked(spark: SparkSession, ref: TableRef, expected: list[str]) -> int | None:
    if not ref.exists(spark):
        return None
    actual = ref.partition_columns(spark)
    if actual != expected:
        raise SchemaMismatchError(
            f"{ref.name} is partitioned by {actual} but this write partitions by {expected}; "
            "set partition_column to the table's partition column or write to a new table")
    return ref.latest_version(spark)


def _save(df: DataFrame, ref: TableRef, mode: str, partition_by: list[str], options: Mapping[str, str]):
    writer = df.write.format("delta").mode(mode).options(**options)
    writer = writer.partitionBy(*partition_by) if partition_by else writer
    if ref.is_path:
        writer.save(ref.name)
    else:
        writer.saveAsTable(ref.sql)


def _merge(spark: SparkSession, source: DataFrame, ref: TableRef, condition: str,
           txn: Mapping[str, str]) -> None:
    # MERGE takes no writer options: its txn pair and userMetadata are session
    # confs. They are set on a child session (same SparkContext, own SQL conf, the
    # caller's settings copied) so a thread writing through ``spark`` meanwhile is
    # not tagged with them.
    confs = dict(zip(_MERGE_CONFS, (txn["userMetadata"], txn["txnAppId"], txn["txnVersion"])))
    if _is_connect(spark):
        _merge_sql(spark, source, ref, condition, confs)
        return
    session = spark.newSession()
    for key, value in spark.conf.getAll.items():
        if key not in confs and session.conf.get(key, None) != value and session.conf.isModifiable(key):
            session.conf.set(key, value)
    for key, value in confs.items():
        session.conf.set(key, value)
    try:
        (ref.delta_table(session).alias("t").merge(source.alias("s"), condition)
         .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())
    finally:
        for key in confs:
            session.conf.unset(key)


def _is_connect(spark: SparkSession) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _merge_sql(spark: SparkSession, source: DataFrame, ref: TableRef, condition: str,
               confs: Mapping[str, str]) -> None:
    # Spark Connect: no newSession() and no DeltaTable API without the Delta Connect
    # server plugin, so a SQL MERGE with the confs set on this session for its duration
    # (one writer per Connect session at a time).
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        spark.sql(f"MERGE INTO {ref.sql} AS t USING {{source}} AS s ON {condition} "
                  "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *", source=source).collect()
    finally:
        for key in confs:
            spark.conf.unset(key)


_TXN_SCHEMA = T.StructType([T.StructField("txn", T.StructType([
    T.StructField("appId", T.StringType()), T.StructField("version", T.LongType())]))])


def _txn_commit(spark: SparkSession, ref: TableRef, app_id: str, txn_version: int,
                first: int, last: int) -> int | None:
    """The commit in ``first..last`` that recorded (app_id, txn_version), if any: tells our
    commit from a concurrent writer's when ours was skipped."""
    log = ref.location(spark).rstrip("/") + "/_delta_log"
    ours = (F.col("txn.appId") == F.lit(app_id)) & (F.col("txn.version") == F.lit(txn_version))
    files = [f"{log}/{version:020d}.json" for version in range(first, last + 1)]
    found = spark.read.schema(_TXN_SCHEMA).json(files).where(ours).select("_metadata.file_name").collect()
    return min((int(row[0].split(".")[0]) for row in found), default=None)


def committed_txn_version(spark: SparkSession, ref: TableRef | str, app_id: str) -> int | None:
    """The last ``txnVersion`` Delta recorded for ``app_id``, read from the table's
    ``_delta_log`` commits and checkpoints; None for an unknown table or app id."""
    ref = _as_ref(ref)
    if not ref.exists(spark):
        return None
    log = ref.location(spark).rstrip("/") + "/_delta_log"
    actions = spark.read.schema(_TXN_SCHEMA).json(f"{log}/*.json")
    try:
        actions = actions.unionByName(spark.read.schema(_TXN_SCHEMA).parquet(f"{log}/*.checkpoint*.parquet"))
    except AnalysisException:  # no checkpoint yet
        pass
    found = actions.where(F.col("txn.appId") == F.lit(app_id)).agg(F.max("txn.version")).head()[0]
    return None if found is None else int(found)


def _is_conflict(exc: BaseException) -> bool:
    return (any(cls.__name__ in _CONFLICT_NAMES for cls in type(exc).__mro__)
            or bool(_CONFLICT_TEXT.search(str(exc))))


def _retry_conflicts(attempt: Callable[[], CommitResult], ref: TableRef, where: str, max_retries: int,
                     base_delay_s: float, sleep: Callable[[float], None] = time.sleep) -> CommitResult:
    """Run ``attempt`` until it commits, retrying Delta conflicts only, with
    exponential backoff and jitter, ``max_retries`` times at most."""
    if max_retries < 0 or base_delay_s < 0:
        raise ValueError(f"max_retries and base_delay_s must be >= 0, got {max_retries}, {base_delay_s}")
    tries = 0
    while True:
        tries += 1
        try:
            return replace(attempt(), attempts=tries)
        except Exception as exc:  # noqa: BLE001 - re-raised unless ours or a Delta conflict
            if _OUTSIDE_PARTITION in str(exc):
                raise ScoringError(f"output for {ref.name} ({where}) holds rows of another partition; "
                                   "filter the input to that partition before scoring") from exc
            if not _is_conflict(exc):
                raise
            if tries > max_retries:
                last = (str(exc).strip().splitlines() or [""])[0][:500]
                raise WriteConflictError(
                    f"Delta commit to {ref.name} ({where}) still conflicted after {tries} attempts; "
                    f"last error: {type(exc).__name__}: {last}. Concurrent writers must touch "
                    "disjoint partitions: give each job its own partition values and keep the "
                    "partition column in the merge condition, or run the jobs one after another, "
                    "or raise max_retries") from exc
            sleep(min(_MAX_DELAY_S, base_delay_s * 2 ** (tries - 1)) * random.uniform(0.5, 1.5))


# -------------------------------------------------------------- change feed
def enable_change_data_feed(spark: SparkSession, ref: TableRef | str) -> None:
    """Turn on Change Data Feed (``delta.enableChangeDataFeed = true``) from the next commit."""
    spark.sql(f"ALTER TABLE {_as_ref(ref).sql} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")


_SNAPSHOT_FIX = "run a full `input.mode: snapshot` job once"
_CDF_CAUSES = (  # (Delta's error text, cause, fix)
    (r"DELTA_MISSING_CHANGE_DATA|change data was not recorded",
     "Change Data Feed was not enabled at some version in that range",
     f"enable it (enable_change_data_feed: delta.enableChangeDataFeed = true), {_SNAPSHOT_FIX}, "
     "and start incremental runs after the version that enabled it"),
    (r"DELTA_CDC_START_VERSION_AFTER_LATEST", "the start version is past the latest version",
     "start at most at the latest version; the checkpoint may belong to another table"),
    (r"DELTA_LOG_FILE_NOT_FOUND|DELTA_CHANGE_DATA_FILE_NOT_FOUND|VersionNotFound|FileNotFoundException",
     "the versions are past log / change data retention (log cleaned up or vacuumed)",
     f"{_SNAPSHOT_FIX}, and raise delta.logRetentionDuration if runs are further apart"),
)


def read_changes(spark: SparkSession, ref: TableRef | str, start_version: int,
                 end_version: int | None = None) -> DataFrame:
    """Rows inserted or updated (``update_postimage``) in versions ``start_version``
    to ``end_version`` (inclusive; None: latest), with ``_change_type`` and
    ``_commit_version``. What Delta checks while planning raises :class:`ChangeFeedError`;
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
        raise fail(f"the table's latest version is {latest}", _CDF_CAUSES[1][2])
    reader = spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", start)
    if end_version is not None:
        reader = reader.option("endingVersion", int(end_version))
    try:
        changes = reader.load(ref.name) if ref.is_path else reader.table(ref.sql)
        changes = changes.where(F.col("_change_type").isin("insert", "update_postimage"))
        if getattr(changes, "_jdf", None) is not None:
            # Delta checks the range when the scan is planned, not at load: plan now
            # (no job runs; the DataFrame keeps the plan for the caller's action).
            changes._jdf.queryExecution().executedPlan()
    except Exception as exc:
        for pattern, cause, fix in _CDF_CAUSES:
            if re.search(pattern, str(exc)):
                raise fail(cause, fix) from exc
        raise
    return changes
