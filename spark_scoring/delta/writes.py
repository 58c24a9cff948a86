"""Idempotent, partition-by-partition Delta writes, retried on Delta's own conflict exceptions.

Runs on: the driver. One partition, one commit, tagged with Delta's
idempotent-write pair (``txnAppId``, ``txnVersion``): a rerun with the same
pair is skipped by Delta (verified on delta-spark 4.4.0, MERGE included,
through the session confs). Delta's commit conflicts (the classes of
``delta.exceptions``, on classic Spark and Spark Connect alike) are retried
with backoff; anything else propagates.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from delta import exceptions as delta_exceptions
from pyspark.errors import AnalysisException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ..errors import SchemaMismatchError, ScoringError, WriteConflictError
from . import log as delta_log
from .sql import partition_predicate, partitions_predicate, quote_identifier
from ..session import runtime_conf
from .tables import TableRef, as_ref, is_connect, non_negative_int

__all__ = ["WRITE_MODES", "CommitResult", "write_partition", "append_rows", "committed_txn_version"]


WRITE_MODES = ("overwrite_partitions", "append", "merge")


_MAX_DELAY_S = 30.0


_MERGE_CONFS = (  # MERGE reads these session confs instead of writer options
    "spark.databricks.delta.commitInfo.userMetadata",
    "spark.databricks.delta.write.txnAppId",
    "spark.databricks.delta.write.txnVersion",
)


_OUTSIDE_PARTITION = "spark_scoring: row outside the partition being written"


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
    max_retries: int = 6, base_delay_s: float = 0.5, partition_values: Sequence[Any] | None = None,
) -> CommitResult:
    """Write one partition (the whole table when ``partition_column`` is None), or the
    ``partition_values`` of a group of partitions, in one idempotent Delta commit,
    creating the table (partitioned) on the first write.

    ``mode``: ``overwrite_partitions`` (``replaceWhere`` on the partition),
    ``append``, or ``merge`` (upsert on ``keys``; the condition names the partition
    literal so MERGEs into disjoint partitions do not conflict). Every row of ``df``
    must belong to the partition: a stray row fails the write (:class:`ScoringError`).
    A ``txn_version`` at most the last one committed for ``txn_app_id`` is skipped
    by Delta: ``CommitResult(None, True, n)``.
    """
    ref = as_ref(ref)
    if mode not in WRITE_MODES:
        raise ValueError(f"mode must be one of {WRITE_MODES}, got {mode!r}")
    if mode == "merge" and not keys:
        raise ValueError("mode='merge' needs keys: the columns that identify a row")
    if not isinstance(txn_app_id, str) or not txn_app_id:
        raise ValueError(f"txn_app_id must be a non-empty string, got {txn_app_id!r}")
    txn_version = non_negative_int("txn_version", txn_version)
    columns = df.columns
    missing = [c for c in [*(keys or ()), *([partition_column] if partition_column else [])]
               if c not in columns]
    if missing:
        raise SchemaMismatchError(f"key / partition columns {missing} are not in the output {columns}")
    partitions = [partition_column] if partition_column else []
    if partition_column is None:
        predicate = None
    elif partition_values is not None:
        predicate = partitions_predicate(partition_column, partition_values)
    else:
        predicate = partition_predicate(partition_column, partition_value)
    source = _rows_in_partition(df, partition_column, predicate) if predicate else df
    if partition_column is None:
        target_predicate = None
    elif partition_values is not None:
        target_predicate = partitions_predicate(partition_column, partition_values, alias="t")
    else:
        target_predicate = partition_predicate(partition_column, partition_value, alias="t")
    txn = {"txnAppId": txn_app_id, "txnVersion": str(txn_version),
           "userMetadata": json.dumps(dict(user_metadata), sort_keys=True, default=str)}

    def attempt() -> CommitResult:
        before = _version_checked(spark, ref, partitions)
        if mode == "merge" and before is not None:
            # a group's MERGE matches keys within each row's own partition (one partition's
            # literal already pins that; an IN list does not)
            on = [*(keys or ()), *([partition_column] if partition_values is not None and partition_column
                                   and partition_column not in (keys or ()) else [])]
            condition = " AND ".join(f"t.{q} <=> s.{q}" for q in map(quote_identifier, on))
            _merge(spark, source, ref, condition + (f" AND {target_predicate}" if target_predicate else ""), txn)
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

    if partition_values is not None and partition_column:
        shown = list(partition_values)
        where = f"{partition_column} in {shown[:5]}" + (f" ... ({len(shown)} partitions)" if len(shown) > 5 else "")
    else:
        where = f"{partition_column}={partition_value!r}" if partition_column else "whole table"
    with runtime_conf(spark, plain_floats(spark, df)):
        return _retry_conflicts(attempt, ref, where, max_retries, base_delay_s)


def plain_floats(spark: SparkSession, df: DataFrame) -> dict[str, str]:
    """The session confs that write ``df``'s float columns without a Parquet dictionary.

    parquet-mr starts every column of every file with a dictionary and, for
    high-cardinality values such as scores and float features, gives it up when the
    page is flushed: the hashing is wasted, and a partitioned write pays it on every
    row (measured: 35% of a 30-partition write, files the same size). Strings and
    integers keep theirs. Left to the session when it sets ``parquet.enable.dictionary``
    itself; by logical name, so a column-mapped table's physical columns keep the default.
    """
    from pyspark.sql.types import DoubleType, FloatType

    try:
        if spark.conf.get("parquet.enable.dictionary", None) is not None:
            return {}
    except Exception:  # noqa: BLE001 - a server that will not say: leave it alone
        return {}
    return {f"parquet.enable.dictionary#{f.name}": "false" for f in df.schema.fields
            if isinstance(f.dataType, (DoubleType, FloatType))}


def append_rows(
    spark: SparkSession, df: DataFrame, ref: TableRef | str, *,
    partition_by: str | Sequence[str] | None = None, user_metadata: Mapping[str, Any] | None = None,
    max_retries: int = 6, base_delay_s: float = 0.5,
) -> CommitResult:
    """Plain append (audit, quarantine tables), creating the table partitioned by
    ``partition_by`` when missing. Not idempotent (no txn pair); ``table_version``
    is the latest version after the append."""
    ref = as_ref(ref)
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
    if is_connect(spark):
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
    local = ref.local_log(spark)
    found_locally = delta_log.txn_commit(local, app_id, txn_version, first, last) if local else False
    if found_locally is not False:
        return found_locally
    log = ref.location(spark).rstrip("/") + "/_delta_log"
    ours = (F.col("txn.appId") == F.lit(app_id)) & (F.col("txn.version") == F.lit(txn_version))
    files = [f"{log}/{version:020d}.json" for version in range(first, last + 1)]
    found = spark.read.schema(_TXN_SCHEMA).json(files).where(ours).select("_metadata.file_name").collect()
    return min((int(row[0].split(".")[0]) for row in found), default=None)


def committed_txn_version(spark: SparkSession, ref: TableRef | str, app_id: str) -> int | None:
    """The last ``txnVersion`` Delta recorded for ``app_id``, read from the table's
    ``_delta_log`` commits and checkpoints; None for an unknown table or app id."""
    ref = as_ref(ref)
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


#: Delta's commit conflicts: ``delta.exceptions``' classes, which the classic (py4j) and
#: the Spark Connect error conversions both raise subclasses of.
CONFLICTS = tuple(getattr(delta_exceptions, name) for name in delta_exceptions.__all__)


def _is_conflict(exc: BaseException) -> bool:
    return isinstance(exc, CONFLICTS)


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
