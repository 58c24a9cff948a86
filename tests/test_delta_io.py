"""spark_scoring.delta: quoting, TableRef, idempotent partition writes, txn
state, Change Data Feed, conflict retries. Real Delta tables on local disk."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import re
import threading
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from delta.exceptions import ConcurrentAppendException, ProtocolChangedException
from pyspark.sql import types as T

from spark_scoring.delta import writes as delta_io
from spark_scoring.delta.changes import enable_change_data_feed, read_changes
from spark_scoring.delta.sql import partition_predicate, quote_identifier, quote_table_name, sql_literal
from spark_scoring.delta.tables import TableRef, partition_counts
from spark_scoring.delta.writes import (
    CommitResult,
    append_rows,
    committed_txn_version,
    write_partition,
)
from spark_scoring.errors import (
    ChangeFeedError,
    SchemaMismatchError,
    ScoringError,
    WriteConflictError,
)

SCHEMA = "k int, ds string, v double"
HOSTILE = [
    "x' OR '1'='1",
    "' OR 1=1 --",
    "a`b``c",
    "back\\slash\\",
    "\\'",
    "new\nline\r\tend",
    'dq"uote',
    "ünïcødé ✓ 日本",
    "nul\x00012",
    "%_*",
]


def _order(row):
    return tuple((value is not None, value) for value in row)  # None sorts first


def rows(df, *cols):
    cols = cols or tuple(df.columns)
    return sorted((tuple(r[c] for c in cols) for r in df.collect()), key=_order)


def write(spark, data, ref, ds, *, app="job", version=1, mode="overwrite_partitions", **kw):
    return write_partition(
        spark, spark.createDataFrame(data, SCHEMA), ref, mode=mode, partition_column="ds",
        partition_value=ds, txn_app_id=f"{app}/{ds}", txn_version=version,
        user_metadata={"run": version, "ds": ds}, base_delay_s=0.05, **kw)


# ------------------------------------------------------------------ quoting
@pytest.mark.parametrize("name, quoted", [
    ("ds", "`ds`"), ("a.b", "`a.b`"), ("a`b", "`a``b`"), ("``", "``````"), ("x y", "`x y`"),
])
def test_quote_identifier(name, quoted):
    assert quote_identifier(name) == quoted


def test_quote_table_name_quotes_each_part():
    assert quote_table_name("main.sales.scores") == "`main`.`sales`.`scores`"
    assert quote_table_name("we`ird.t") == "`we``ird`.`t`"
    with pytest.raises(ValueError, match="non-empty parts"):
        quote_table_name("main..t")


@pytest.mark.parametrize("value, literal", [
    (None, "NULL"), (True, "true"), (False, "false"), (42, "42"), (-7, "-7"), (1.5, "1.5"),
    (float("nan"), "CAST('NaN' AS DOUBLE)"), (float("inf"), "CAST('Infinity' AS DOUBLE)"),
    (float("-inf"), "CAST('-Infinity' AS DOUBLE)"),
    (dt.date(2026, 11, 27), "DATE'2026-11-27'"),
    (dt.datetime(2026, 11, 27, 8, 30, 1), "TIMESTAMP'2026-11-27 08:30:01'"),
    (dt.datetime(2026, 11, 27, 8, 30, tzinfo=dt.timezone.utc), "TIMESTAMP'2026-11-27 08:30:00+00:00'"),
    ("2026-11-27", "'2026-11-27'"), ("it's", r"'it\'s'"), ("a\\b", r"'a\\b'"),
    ("l1\nl2\r\t", r"'l1\nl2\r\t'"), ("\x00" + "12", r"'\u000012'"),
])
def test_sql_literal(value, literal):
    assert sql_literal(value) == literal


@pytest.mark.parametrize("value", [b"bytes", [1], object(), {"a": 1}])
def test_sql_literal_refuses_other_types(value):
    with pytest.raises(TypeError, match="no SQL literal"):
        sql_literal(value)


def test_partition_predicate():
    assert partition_predicate("ds", "2026-11-27") == "`ds` = '2026-11-27'"
    assert partition_predicate("ds", None) == "`ds` IS NULL"


def test_literals_round_trip_through_spark(spark):
    values = [None, True, 3, -2.5, float("nan"), dt.date(2026, 1, 2),
              dt.datetime(2026, 1, 2, 3, 4, 5, 600000), *HOSTILE, ""]
    got = spark.sql("SELECT " + ", ".join(sql_literal(v) for v in values)).head()
    for value, back in zip(values, got):
        assert back == value or (value != value and back != back)


def test_hostile_values_select_exactly_their_rows(spark):
    values = HOSTILE + ["plain", "", None]
    data = [(i, value) for i, value in enumerate(values)] * 2
    df = spark.createDataFrame(data, "id int, `p.a``rt` string")
    for i, value in enumerate(values):
        hit = df.where(partition_predicate("p.a`rt", value))
        assert rows(hit) == [(i, value), (i, value)], value


@settings(max_examples=25, deadline=None)
@given(value=st.text(), column=st.text(min_size=1, max_size=6))
def test_predicate_selects_only_equal_rows_property(spark, value, column):
    schema = T.StructType([T.StructField(column, T.StringType())])
    df = spark.createDataFrame([(value,), (value + "x",), (value,), ("x" + value,)], schema)
    assert [r[0] for r in df.where(partition_predicate(column, value)).collect()] == [value, value]


def test_hostile_values_as_replace_where(spark, tmp_table):
    values = ["x' OR '1'='1", "' OR 1=1 --\\", "a`b\nü ✓", None, "plain"]
    seed = spark.createDataFrame([(i, v, 0.0) for i, v in enumerate(values)], SCHEMA)
    seed.write.format("delta").partitionBy("ds").save(tmp_table)
    for i, value in enumerate(values[:4]):
        result = write(spark, [(i, value, 1.0), (100 + i, value, 1.0)], tmp_table, value)
        assert not result.skipped
    table = TableRef.parse(tmp_table).read(spark)
    expected = [(i, v, 1.0) for i, v in enumerate(values[:4])]
    expected += [(100 + i, v, 1.0) for i, v in enumerate(values[:4])] + [(4, "plain", 0.0)]
    assert rows(table, "k", "ds", "v") == sorted(expected, key=_order)
    assert partition_counts(table, "ds") == {**{v: 2 for v in values[:4]}, "plain": 1}
    for i, value in enumerate(values):  # and as a filter on the Delta table
        assert {r["k"] for r in table.where(partition_predicate("ds", value)).collect()} == (
            {i, 100 + i} if value != "plain" else {4})


# ----------------------------------------------------------------- TableRef
@pytest.mark.parametrize("text, name, is_path, sql", [
    ("main.sales.scores", "main.sales.scores", False, "`main`.`sales`.`scores`"),
    ("scores", "scores", False, "`scores`"),
    ("/data/scores", "/data/scores", True, "delta.`/data/scores`"),
    ("s3://bucket/x", "s3://bucket/x", True, "delta.`s3://bucket/x`"),
    ("abfss://c@acct.dfs.core.windows.net/t", "abfss://c@acct.dfs.core.windows.net/t", True,
     "delta.`abfss://c@acct.dfs.core.windows.net/t`"),
    ("dbfs:/mnt/t", "dbfs:/mnt/t", True, "delta.`dbfs:/mnt/t`"),
    ("file:/tmp/t", "file:/tmp/t", True, "delta.`file:/tmp/t`"),
    ("/tmp/we`ird", "/tmp/we`ird", True, "delta.`/tmp/we``ird`"),
])
def test_table_ref_parse(text, name, is_path, sql):
    ref = TableRef.parse(text)
    assert (ref.name, ref.is_path, ref.sql) == (name, is_path, sql)


def test_table_ref_relative_path_is_made_absolute():
    assert TableRef.parse("out/scores") == TableRef(os.path.abspath("out/scores"), True)
    assert TableRef.parse("a\\b").is_path
    with pytest.raises(ValueError, match="non-empty"):
        TableRef.parse("  ")


def test_table_ref_on_a_path_table(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    assert not ref.exists(spark)
    spark.createDataFrame([(1, "a", 1.0)], SCHEMA).write.format("delta").partitionBy("ds").save(tmp_table)
    spark.createDataFrame([(1, "a", 2.0)], SCHEMA).write.format("delta").mode("overwrite").save(tmp_table)
    assert ref.exists(spark) and ref.latest_version(spark) == 1
    assert ref.partition_columns(spark) == ["ds"]
    assert rows(ref.read(spark, version=0)) == [(1, "a", 1.0)]
    assert rows(ref.read(spark)) == [(1, "a", 2.0)]
    assert [h["version"] for h in ref.history(spark)] == [1, 0]
    assert [h["version"] for h in ref.history(spark, limit=1)] == [1]
    spark.sql(f"ALTER TABLE {ref.sql} SET TBLPROPERTIES ('spark_scoring.owner' = 'x')")
    assert ref.table_properties(spark)["spark_scoring.owner"] == "x"


def test_local_log_answers_what_spark_answers_on_a_databricks_style_table(spark, tmp_table):
    """delta-rs reads a local table's log (spark_scoring.delta.log) with deletion vectors,
    column mapping after a rename, and a checkpoint, and says what Spark's queries say."""
    from spark_scoring.delta import log as delta_log

    ref = TableRef.parse(tmp_table)
    assert ref.local_log(spark) == tmp_table and not ref.exists(spark)
    spark.createDataFrame([(i, "ab"[i % 2], float(i)) for i in range(40)], SCHEMA).write.format("delta") \
        .partitionBy("ds").option("delta.checkpointInterval", "2").option("delta.columnMapping.mode", "name") \
        .option("delta.enableDeletionVectors", "true").save(tmp_table)
    write(spark, [(100, "c", 1.0)], ref, "c", app="job", version=5)                       # v1, txn
    spark.sql(f"DELETE FROM {ref.sql} WHERE k < 6")                                       # v2, deletion vectors
    spark.sql(f"ALTER TABLE {ref.sql} RENAME COLUMN v TO value")                           # v3, checkpoint at 2
    assert glob.glob(os.path.join(tmp_table, "_delta_log", "*.checkpoint*.parquet"))
    spark_history = [r.asDict(recursive=True) for r in spark.sql(f"DESCRIBE HISTORY {ref.sql}").collect()]
    assert ref.exists(spark) and ref.latest_version(spark) == 3 == spark_history[0]["version"]
    assert ref.partition_columns(spark) == ["ds"]
    ours = ref.history(spark)
    assert [h["version"] for h in ours] == [h["version"] for h in spark_history] == [3, 2, 1, 0]
    for mine, theirs in zip(ours, spark_history):
        assert mine["operation"] == theirs["operation"]
        assert mine.get("userMetadata") == theirs["userMetadata"]
        assert (mine.get("operationMetrics") or {}) == (theirs["operationMetrics"] or {})
    assert [h["version"] for h in ref.history(spark, limit=2)] == [3, 2]
    assert delta_io._txn_commit(spark, ref, "job/c", 5, 0, 3) == 1   # found in the commit file
    assert delta_io._txn_commit(spark, ref, "job/c", 6, 0, 3) is None
    # the table read through delta-rs' engine drops the deleted rows, as Spark's read does
    local = delta_log.query(tmp_table, "SELECT count(*) AS n, min(k) AS lo FROM t")
    spark_row = spark.read.format("delta").load(tmp_table).selectExpr("count(*) AS n", "min(k) AS lo").head()
    assert local == [{"n": spark_row["n"], "lo": spark_row["lo"]}] == [{"n": 35, "lo": 6}]
    assert delta_log.text_literal("it's") == "'it''s'"


@pytest.mark.parametrize("name, classic, local", [
    ("/data/t", True, "/data/t"), ("file:///data/t", True, "/data/t"), ("file:/data/my%20t", True, "/data/my t"),
    ("/data/t", False, None), ("s3://bucket/t", True, None), ("abfss://c@acct.dfs.core.windows.net/t", True, None),
    ("dbfs:/mnt/t", True, None), ("file://otherhost/t", True, None),
])
def test_only_local_paths_under_classic_spark_have_their_log_read_in_process(name, classic, local):
    from spark_scoring.delta.log import log_path

    assert log_path(name, classic) == local


def test_table_ref_on_a_metastore_table(spark, tmp_path):
    db = f"db_{uuid.uuid4().hex[:8]}"
    spark.sql(f"CREATE DATABASE {db} LOCATION {sql_literal(str(tmp_path / db))}")
    ref = TableRef.parse(f"{db}.scores")
    assert not ref.exists(spark) and not ref.is_path
    assert not write(spark, [(1, "a", 1.0)], ref, "a", version=1).skipped
    assert write(spark, [(1, "a", 9.0)], ref, "a", version=1).skipped
    assert write(spark, [(2, "b", 2.0)], ref, "b", version=1).table_version == 1
    assert ref.exists(spark) and ref.partition_columns(spark) == ["ds"]
    assert rows(ref.read(spark, version=0)) == [(1, "a", 1.0)]
    assert committed_txn_version(spark, ref, "job/a") == 1
    spark.sql(f"DROP DATABASE {db} CASCADE")


# -------------------------------------------------------------------- writes
def test_overwrite_one_partition_is_one_commit_and_idempotent(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    first = write(spark, [(1, "a", 1.0), (2, "a", 1.0)], ref, "a", version=1)
    assert first == CommitResult(table_version=0, skipped=False, attempts=1)
    write(spark, [(1, "b", 1.0)], ref, "b", version=1)

    again = write(spark, [(3, "a", 2.0)], ref, "a", version=2)
    assert again == CommitResult(2, False, 1)
    assert rows(ref.read(spark)) == [(1, "b", 1.0), (3, "a", 2.0)]
    last = ref.history(spark, limit=1)[0]
    assert last["operation"] == "WRITE" and last["operationParameters"]["predicate"] == "`ds` = 'a'"
    assert json.loads(last["userMetadata"]) == {"ds": "a", "run": 2}

    for version in (2, 1):  # same and older txnVersion: Delta skips, nothing changes
        skipped = write(spark, [(9, "a", 9.0)], ref, "a", version=version)
        assert skipped == CommitResult(None, True, 1)
    assert ref.latest_version(spark) == 2
    assert rows(ref.read(spark)) == [(1, "b", 1.0), (3, "a", 2.0)]

    assert write(spark, [(4, "a", 3.0)], ref, "a", version=3) == CommitResult(3, False, 1)
    assert rows(ref.read(spark)) == [(1, "b", 1.0), (4, "a", 3.0)]
    assert committed_txn_version(spark, ref, "job/a") == 3
    assert committed_txn_version(spark, ref, "job/b") == 1
    assert committed_txn_version(spark, ref, "nobody") is None


def test_rows_of_another_partition_fail_the_write(spark, tmp_table):
    with pytest.raises(ScoringError, match=r"rows of another partition"):
        write(spark, [(1, "a", 1.0), (2, "b", 1.0)], tmp_table, "a")
    assert not TableRef.parse(tmp_table).exists(spark)  # nothing created
    write(spark, [(1, "a", 1.0)], tmp_table, "a")
    with pytest.raises(ScoringError, match=r"rows of another partition"):
        write(spark, [(1, "a", 1.0), (2, None, 1.0)], tmp_table, "a", version=2)
    assert TableRef.parse(tmp_table).latest_version(spark) == 0


def test_full_overwrite_when_there_is_no_partition_column(spark, tmp_table):
    df = spark.createDataFrame([(1, "a", 1.0)], SCHEMA)
    kw = dict(mode="overwrite_partitions", partition_column=None, partition_value=None,
              txn_app_id="whole", user_metadata={})
    assert write_partition(spark, df, tmp_table, txn_version=1, **kw).table_version == 0
    assert write_partition(spark, df.limit(0), tmp_table, txn_version=1, **kw).skipped
    assert write_partition(spark, df.limit(0), tmp_table, txn_version=2, **kw).table_version == 1
    assert TableRef.parse(tmp_table).read(spark).count() == 0
    assert TableRef.parse(tmp_table).partition_columns(spark) == []


def test_append_is_idempotent(spark, tmp_table):
    assert write(spark, [(1, "a", 1.0)], tmp_table, "a", mode="append").table_version == 0
    assert write(spark, [(1, "a", 1.0)], tmp_table, "a", mode="append").skipped
    assert write(spark, [(2, "a", 1.0)], tmp_table, "a", mode="append", version=2).table_version == 1
    assert rows(TableRef.parse(tmp_table).read(spark)) == [(1, "a", 1.0), (2, "a", 1.0)]


def test_append_rows_creates_then_appends(spark, tmp_table):
    df = spark.createDataFrame([(1, "a", 1.0)], SCHEMA)
    assert append_rows(spark, df, tmp_table, partition_by="ds").table_version == 0
    assert append_rows(spark, df, tmp_table, user_metadata={"kind": "audit"}) == CommitResult(1, False, 1)
    ref = TableRef.parse(tmp_table)
    assert ref.read(spark).count() == 2 and ref.partition_columns(spark) == ["ds"]
    assert json.loads(ref.history(spark, limit=1)[0]["userMetadata"]) == {"kind": "audit"}


def test_merge_upserts_by_key_within_the_partition(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    merge = dict(mode="merge", keys=["k"])
    assert write(spark, [(1, "a", 1.0), (2, "a", 1.0)], ref, "a", version=1, **merge).table_version == 0
    write(spark, [(1, "b", 1.0)], ref, "b", version=1, **merge)

    result = write(spark, [(1, "a", 5.0), (3, "a", 5.0)], ref, "a", version=2, **merge)
    assert result == CommitResult(2, False, 1)
    assert rows(ref.read(spark)) == [(1, "a", 5.0), (1, "b", 1.0), (2, "a", 1.0), (3, "a", 5.0)]
    last = ref.history(spark, limit=1)[0]
    assert last["operation"] == "MERGE"
    assert "= a" in last["operationParameters"]["predicate"]  # the partition literal
    assert json.loads(last["userMetadata"]) == {"ds": "a", "run": 2}

    # Delta 4.4 honours the txn session confs for MERGE: the rerun makes no commit.
    assert write(spark, [(1, "a", 7.0)], ref, "a", version=2, **merge) == CommitResult(None, True, 1)
    assert ref.latest_version(spark) == 2 and committed_txn_version(spark, ref, "job/a") == 2
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None


def test_merge_of_a_group_of_partitions_upserts_each_and_leaves_the_others(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    for ds in ("a", "b", "c"):
        write(spark, [(1, ds, 1.0)], ref, ds, app="seed", version=1, mode="merge", keys=["k"])
    data = [(1, "a", 5.0), (2, "b", 5.0)]
    result = write_partition(
        spark, spark.createDataFrame(data, SCHEMA), ref, mode="merge", keys=["k"], partition_column="ds",
        partition_value=None, partition_values=["a", "b"], txn_app_id="job/group", txn_version=1,
        user_metadata={"run": 1}, base_delay_s=0.05)
    assert result.table_version == 3 and not result.skipped
    # (1, c) has the same key but sits outside the group's partitions: untouched, not matched
    assert rows(ref.read(spark)) == [(1, "a", 5.0), (1, "b", 1.0), (1, "c", 1.0), (2, "b", 5.0)]
    assert "IN (a,b)" in ref.history(spark, limit=1)[0]["operationParameters"]["predicate"]


def test_merge_needs_keys_and_known_columns(spark, tmp_table):
    with pytest.raises(ValueError, match="needs keys"):
        write(spark, [(1, "a", 1.0)], tmp_table, "a", mode="merge")
    with pytest.raises(SchemaMismatchError, match=r"columns \['id'\] are not in the output"):
        write(spark, [(1, "a", 1.0)], tmp_table, "a", mode="merge", keys=["id"])
    with pytest.raises(ValueError, match="mode must be one of"):
        write(spark, [(1, "a", 1.0)], tmp_table, "a", mode="upsert")


def test_partition_column_mismatch(spark, tmp_table):
    write(spark, [(1, "a", 1.0)], tmp_table, "a")
    df = spark.createDataFrame([(1, "a", 1.0)], SCHEMA)
    with pytest.raises(SchemaMismatchError, match=r"partitioned by \['ds'\] but this write partitions by \['k'\]"):
        write_partition(spark, df, tmp_table, mode="overwrite_partitions", partition_column="k",
                        partition_value=1, txn_app_id="x", txn_version=1, user_metadata={})
    assert TableRef.parse(tmp_table).latest_version(spark) == 0


# ------------------------------------------------------ txn state, change feed
def test_change_feed_and_txn_state_survive_log_cleanup(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    checkpoint_every = "spark.databricks.delta.properties.defaults.checkpointInterval"
    spark.conf.set(checkpoint_every, "2")
    try:
        write(spark, [(1, "a", 1.0), (2, "a", 1.0)], ref, "a", app="first", version=7)  # v0
    finally:
        spark.conf.unset(checkpoint_every)
    with pytest.raises(ChangeFeedError, match=r"from version 0: Change Data Feed was not enabled"):
        read_changes(spark, ref, 0)
    enable_change_data_feed(spark, ref)  # v1
    write(spark, [(2, "a", 2.0), (3, "a", 2.0)], ref, "a", mode="merge", keys=["k"])  # v2, checkpoint
    write(spark, [(4, "b", 1.0)], ref, "b")  # v3

    changes = read_changes(spark, ref, 2)
    assert rows(changes, "k", "v", "_change_type", "_commit_version") == [
        (2, 2.0, "update_postimage", 2), (3, 2.0, "insert", 2), (4, 1.0, "insert", 3)]
    assert rows(read_changes(spark, ref, 2, 2), "k", "_change_type") == [
        (2, "update_postimage"), (3, "insert")]
    with pytest.raises(ChangeFeedError, match=r"from version 9: the table's latest version is 3"):
        read_changes(spark, ref, 9)

    for version in range(2):  # as if the log had been cleaned up to the checkpoint
        for path in glob.glob(os.path.join(tmp_table, "_delta_log", f"*{version:020d}.json*")):
            os.remove(path)
    assert committed_txn_version(spark, ref, "first/a") == 7  # only in the checkpoint now
    assert committed_txn_version(spark, ref, "job/b") == 1
    with pytest.raises(ChangeFeedError, match=r"from version 1: .*retention.*snapshot"):
        read_changes(spark, ref, 1)
    with pytest.raises(ChangeFeedError, match="does not exist"):
        read_changes(spark, tmp_table + "_missing", 0)
    assert committed_txn_version(spark, tmp_table + "_missing", "job/a") is None


# -------------------------------------------------------------- concurrency
def test_concurrent_merges_into_disjoint_partitions_both_commit(spark, tmp_table):
    ref = TableRef.parse(tmp_table)
    seed = [(k, ds, 0.0) for k in range(5) for ds in ("a", "b")]
    spark.createDataFrame(seed, SCHEMA).write.format("delta").partitionBy("ds").save(tmp_table)
    barrier, results, errors = threading.Barrier(2), {}, []

    def merge(ds):
        try:
            data = spark.createDataFrame([(k, ds, 1.0) for k in range(3, 7)], SCHEMA)
            barrier.wait()
            results[ds] = write_partition(
                spark, data, ref, mode="merge", keys=["k"], partition_column="ds",
                partition_value=ds, txn_app_id=f"job/{ds}", txn_version=1,
                user_metadata={"ds": ds}, base_delay_s=0.05)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=merge, args=(ds,)) for ds in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(r.table_version for r in results.values()) == [1, 2]
    assert not any(r.skipped for r in results.values())
    expected = [(k, ds, 1.0 if k >= 3 else 0.0) for k in range(7) for ds in ("a", "b")]
    assert rows(ref.read(spark)) == sorted(expected)


def _commit_while_blocked(spark, ref, tmp_path, max_retries):
    """Start write_partition into ds='a' on a thread, let another writer replace ds='a'
    while that write's transaction is open (its UDF waits for a marker file), then let
    it finish: a real Delta conflict, every time. Returns the thread's result or error."""
    from pyspark.sql import functions as F

    started, go = str(tmp_path / f"started-{max_retries}"), str(tmp_path / f"go-{max_retries}")

    @F.udf("double")
    def gate(v):
        import os as os_
        import time as time_
        open(started, "w").close()
        deadline = time_.time() + 60
        while not os_.path.exists(go) and time_.time() < deadline:
            time_.sleep(0.05)
        return v

    blocked = spark.createDataFrame([(7, "a", 7.0)], SCHEMA).coalesce(1).withColumn("v", gate("v"))
    outcome = []

    def run():
        try:
            outcome.append(write_partition(
                spark, blocked, ref, mode="overwrite_partitions", partition_column="ds",
                partition_value="a", txn_app_id="slow/a", txn_version=1, user_metadata={},
                max_retries=max_retries, base_delay_s=0.01))
        except Exception as exc:  # noqa: BLE001 - returned to the test
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    while not os.path.exists(started) and thread.is_alive():
        thread.join(0.05)
    write(spark, [(8, "a", 8.0)], ref, "a", app="fast", version=max_retries + 1)
    open(go, "w").close()
    thread.join(120)
    return outcome[0]


def test_a_real_conflict_is_retried_then_reported(spark, tmp_table, tmp_path):
    ref = TableRef.parse(tmp_table)
    write(spark, [(1, "a", 1.0)], ref, "a")
    write(spark, [(2, "b", 1.0)], ref, "b")

    error = _commit_while_blocked(spark, ref, tmp_path, max_retries=0)
    assert isinstance(error, WriteConflictError), error
    assert re.search(r"t_\w+ \(ds='a'\) still conflicted after 1 attempts; last error: "
                     r"Concurrent\w+Exception: .*disjoint partitions", str(error))
    assert rows(ref.read(spark), "k") == [(2,), (8,)]

    result = _commit_while_blocked(spark, ref, tmp_path, max_retries=3)
    assert result == CommitResult(result.table_version, False, 2)
    assert rows(ref.read(spark), "k") == [(2,), (7,)]


def test_conflicts_are_retried_then_reported():
    ref, sleeps, calls = TableRef.parse("/t/scores"), [], []

    def conflicting():
        calls.append(1)
        raise ConcurrentAppendException(message="[DELTA_CONCURRENT_APPEND] Transaction conflict detected.")

    with pytest.raises(WriteConflictError, match=(
            r"/t/scores \(ds='a'\) still conflicted after 3 attempts; last error: "
            r"ConcurrentAppendException: .*disjoint partitions")):
        delta_io._retry_conflicts(conflicting, ref, "ds='a'", 2, 0.5, sleep=sleeps.append)
    assert len(calls) == 3 and len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.75 and 0.5 <= sleeps[1] <= 1.5  # exponential, jittered

    outcomes = [ProtocolChangedException(message="[DELTA_PROTOCOL_CHANGED] x"), None]

    def flaky():
        outcome = outcomes.pop(0)
        if outcome:
            raise outcome
        return CommitResult(5, False, 0)

    assert delta_io._retry_conflicts(flaky, ref, "", 2, 0.0, sleep=sleeps.append) == CommitResult(5, False, 2)

    def broken():
        raise KeyError("not a conflict")

    with pytest.raises(KeyError, match="not a conflict"):
        delta_io._retry_conflicts(broken, ref, "", 5, 0.0, sleep=sleeps.append)


def test_file_statistics_prove_columns_clean_only_without_null_nan_or_infinity(spark, tmp_path):
    """The direct scan skips its count pass only for columns every file's Delta statistics prove
    clean: Spark's min / max are NaN when a NaN is there and +-Infinity with an infinity."""
    from spark_scoring.engine.scan_log import read_snapshot

    rows = [("a", 1, 1.0, 2.0, 3.0, 0.5), ("a", 2, float("nan"), float("inf"), float("-inf"), 0.5),
            ("b", 3, None, 5.0, 1.0, 0.5), ("c", 4, 1.5, 2.5, 3.5, 0.5)]
    path = str(tmp_path / "t")
    (spark.createDataFrame(rows, "ds string, id long, x double, y double, z double, w double")
     .write.format("delta").partitionBy("ds").save(path))
    clean = {f.partition_values["ds"]: f.clean for f in read_snapshot(path, None).files}
    assert clean == {"a": {"id", "w"}, "b": {"id", "y", "z", "w"}, "c": {"id", "x", "y", "z", "w"}}
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.dataSkippingNumIndexedCols' = '2')")
    spark.createDataFrame([("d", 5, 1.0, 1.0, 1.0, 1.0)], "ds string, id long, x double, y double, z double, w double") \
        .write.format("delta").mode("append").save(path)
    newest = {f.partition_values["ds"]: f.clean for f in read_snapshot(path, None).files}["d"]
    assert newest == {"id", "x"}  # no statistics for the columns past the first two: not proven


@pytest.mark.parametrize("created_by", ["delta-rs", "spark with deletion vectors"])
def test_audit_rows_are_written_by_delta_rs_and_read_back_by_spark(spark, tmp_path, created_by):
    """A local audit table is created and appended to by delta-rs (milliseconds, no Spark job); one
    created by Spark with deletion vectors on (an earlier version, or a Databricks default) takes
    delta-rs appends too, after a Spark DELETE that wrote a deletion vector."""
    import dataclasses

    from spark_scoring.delta.log import history
    from spark_scoring.job.audit import AUDIT_SCHEMA, AuditRecord, write_audit
    from spark_scoring.session import runtime_conf

    at = dt.datetime(2026, 12, 7, 10, 30, 15, 123456, tzinfo=dt.timezone.utc)

    def record(i):
        return AuditRecord("run", "key", "out", "ds", f"2026-01-{i:02d}", "models:/m/1", "m/1", "in", 3, "snapshot",
                           None if i == 2 else 7, 10 + i, 9 + i, 1, 0.25 * i, "scored", f"it's {i}", at, at)

    table = str(tmp_path / "audit")
    if created_by == "delta-rs":
        write_audit(spark, table, [record(1)])
    else:
        with runtime_conf(spark, {"spark.databricks.delta.properties.defaults.enableDeletionVectors": "true"}):
            rows = [tuple(dataclasses.asdict(record(i)).values()) for i in (1, 5)]  # one file: a DV, not a rewrite
            spark.createDataFrame(rows, AUDIT_SCHEMA).coalesce(1).write.format("delta").save(table)
    write_audit(spark, table, [record(2), record(3)])
    spark.sql(f"DELETE FROM delta.`{table}` WHERE partition = '2026-01-01'")
    write_audit(spark, table, [record(4)])
    engines = [h.get("engineInfo", "") for h in history(table)]  # newest first; the DELETE is Spark's
    assert [e.startswith("delta-rs") for e in engines] == [True, False, True, created_by == "delta-rs"]
    if created_by != "delta-rs":
        assert any(h.get("operationMetrics", {}).get("numDeletionVectorsAdded") == "1" for h in history(table))
    got = sorted((r.asDict() for r in spark.read.format("delta").load(table).collect()), key=lambda r: r["partition"])
    want = [{**dataclasses.asdict(record(i)), "started_at": at.replace(tzinfo=None),
             "finished_at": at.replace(tzinfo=None)} for i in (2, 3, 4) + (() if created_by == "delta-rs" else (5,))]
    assert got == want


def test_audit_rows_that_do_not_fit_the_table_are_refused_by_spark_as_before(spark, tmp_path):
    from spark_scoring.job.audit import AuditRecord, write_audit

    table = str(tmp_path / "audit")
    spark.createDataFrame([("run",)], "run_id string").write.format("delta").save(table)
    now = dt.datetime.now(dt.timezone.utc)
    with pytest.raises(Exception, match="(?i)schema"):
        write_audit(spark, table, [AuditRecord("r", "k", "o", None, None, "m", "v", "in", 1, "snapshot", 1, 1, 1, 0,
                                               0.1, "scored", "", now, now)])
    assert spark.read.format("delta").load(table).count() == 1
