"""The audit table: one row per partition per run, next to the output table.

Runs on: the driver.

Columns: ``run_id, job_key, output_table, partition_column, partition,
model_uris, model_versions, input_table, input_version, input_mode,
output_version, rows_in, rows_scored, rows_quarantined, seconds, status,
message, started_at, finished_at``.

Statuses: ``scored`` (committed by this run), ``recovered`` (committed by an
earlier run that died before writing its audit row; found through the Delta
transaction id), ``failed``, and ``checkpoint`` (partition null: a
``changes`` run committed every change up to ``input_version``). The audit
table is how a rerun knows what is done and how the Change Data Feed mode knows
where it stopped.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from ..delta import log as delta_log
from ..delta.tables import TableRef
from ..delta.writes import append_rows

__all__ = ["AuditRecord", "AUDIT_SCHEMA", "write_audit", "read_audit", "scored_partitions", "last_input_version"]

_FIELDS = (
    ("run_id", "string"), ("job_key", "string"), ("output_table", "string"), ("partition_column", "string"),
    ("partition", "string"), ("model_uris", "string"), ("model_versions", "string"), ("input_table", "string"),
    ("input_version", "long"), ("input_mode", "string"), ("output_version", "long"), ("rows_in", "long"),
    ("rows_scored", "long"), ("rows_quarantined", "long"), ("seconds", "double"), ("status", "string"),
    ("message", "string"), ("started_at", "timestamp"), ("finished_at", "timestamp"),
)
AUDIT_SCHEMA = ", ".join(f"{name} {kind}" for name, kind in _FIELDS)  # Spark's DDL


def _arrow_schema():
    """The same columns as Arrow (what delta-rs creates a local audit table with)."""
    import pyarrow as pa

    kinds = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(),
             "timestamp": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, kinds[kind]) for name, kind in _FIELDS])


@dataclass(frozen=True)
class AuditRecord:
    run_id: str
    job_key: str
    output_table: str
    partition_column: str | None
    partition: str | None
    model_uris: str
    model_versions: str
    input_table: str
    input_version: int
    input_mode: str
    output_version: int | None
    rows_in: int
    rows_scored: int
    rows_quarantined: int
    seconds: float
    status: str
    message: str
    started_at: dt.datetime
    finished_at: dt.datetime


def write_audit(spark, table: str, records: list[AuditRecord]) -> None:
    """Append records to the audit Delta table (created on first use): one commit, written by
    delta-rs for a local table (:func:`spark_scoring.delta.log.append`), else by Spark."""
    if not records:
        return
    ref = TableRef.parse(table)
    local = ref.local_log(spark)
    if local and delta_log.append(local, [asdict(r) for r in records], _arrow_schema()):
        return
    df = spark.createDataFrame([tuple(asdict(r).values()) for r in records], AUDIT_SCHEMA)
    append_rows(spark, df, ref)


def read_audit(spark, table: str, job_key: str | None = None):
    """The audit table as a DataFrame (``None`` when it does not exist yet)."""
    ref = TableRef.parse(table)
    if not ref.exists(spark):
        return None
    df = ref.read(spark)
    if job_key is not None:
        df = df.where(df.job_key == job_key)
    return df


def scored_partitions(spark, table: str, job_key: str) -> dict[str | None, int]:
    """``{partition: newest input_version}`` already scored or recovered for ``job_key``."""
    import pyspark.sql.functions as F

    key = delta_log.text_literal(job_key)
    found = _query(spark, table, f"SELECT \"partition\" AS p, max(input_version) AS v FROM t WHERE job_key = {key} "
                                 "AND status IN ('scored', 'recovered') GROUP BY \"partition\"")
    if found is not None:
        return {r["p"]: int(r["v"]) for r in found}
    df = read_audit(spark, table, job_key)
    if df is None:
        return {}
    rows = (
        df.where(F.col("status").isin("scored", "recovered"))
        .groupBy("partition")
        .agg(F.max("input_version").alias("v"))
        .collect()
    )
    return {r["partition"]: int(r["v"]) for r in rows}


def last_input_version(spark, table: str, job_key: str) -> int | None:
    """The newest input version a ``changes`` job of ``job_key`` processed completely.

    Only ``checkpoint`` rows count: a run that committed some partitions and then
    failed or was killed has not processed its changes of the other partitions.
    """
    import pyspark.sql.functions as F

    key = delta_log.text_literal(job_key)
    found = _query(spark, table, f"SELECT max(input_version) AS v FROM t WHERE job_key = {key} AND status = 'checkpoint'")
    if found is not None:
        return None if not found or found[0]["v"] is None else int(found[0]["v"])
    df = read_audit(spark, table, job_key)
    if df is None:
        return None
    row = df.where(F.col("status") == "checkpoint").agg(F.max("input_version")).collect()[0]
    return None if row[0] is None else int(row[0])


def _query(spark, table: str, sql: str) -> list[dict] | None:
    """``sql`` over a local audit table through delta-kernel (:mod:`spark_scoring.delta.log`, no Spark
    job); ``[]`` when the table does not exist yet; None: ask Spark."""
    local = TableRef.parse(table).local_log(spark)
    if local is None:
        return None
    if delta_log.exists(local) is False:
        return []
    return delta_log.query(local, sql)
