"""spark_scoring.engine.direct_scan: the direct Arrow scan gives what the normal read + score() gives.

Every test compares ``score_table_direct`` with the normal path on the same
pinned snapshot (``score(spark.read...load(path)).select(...)``): same rows,
same columns, same types, predictions within 1e-6 (``scored_at`` is the clock,
so it is compared by type only). Tables are made the way Databricks makes them:
deletion vectors after DELETE, UPDATE and MERGE, column mapping with renamed and
dropped columns, V2 and multi-part checkpoints, timestamp partitions; each must
take the direct scan and equal Spark's own read. The fallback tests check the
reason as well as the result.
"""
from __future__ import annotations

import datetime as dt
import logging
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from spark_scoring import score
from spark_scoring.demo import FEATURES
from spark_scoring.engine.direct_scan import count_bad_rows_direct, direct_scan_supported, plan_scan, score_table_direct

TORCH = "models:/demo_churn/1"  # float32 inputs
SKLEARN = "models:/demo_price/1"  # float64 inputs


def _frame(rows: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=list(FEATURES))
    frame.insert(0, "customer_id", np.arange(rows, dtype=np.int64))
    frame.insert(1, "ds", [dt.date(2026, 11, 25 + i % 3) for i in range(rows)])
    frame.insert(2, "bucket", (np.arange(rows) % 4).astype(np.int32))
    frame.insert(3, "region", np.where(np.arange(rows) % 2 == 0, "north", "south"))
    return frame


def _normal(spark, path, model, *, fmt="delta", version=None, where=None, keep=None, **kw):
    reader = spark.read.format(fmt)
    if version is not None:
        reader = reader.option("versionAsOf", version)
    df = reader.load(path)
    if where is not None:
        df = df.where(where)
    out = score(df, model, **kw)
    keep = list(df.columns) if keep is None else keep
    return out.select(*keep, "prediction", "model_name", "model_version", "scored_at")


def assert_same(direct, normal):
    assert direct.columns == normal.columns
    assert direct.schema == normal.schema, (direct.schema.simpleString(), normal.schema.simpleString())
    assertDataFrameEqual(direct.drop("scored_at"), normal.drop("scored_at"), checkRowOrder=False,
                         rtol=1e-6, atol=1e-6)


def plan_of(spark, path, version=None, **kwargs):
    """The direct-scan plan score_table_direct makes for ``path``."""
    return plan_scan(spark, path, version, **kwargs)[0]


@pytest.fixture(scope="module")
def partitioned(spark, registry, tmp_path_factory):
    """A Delta table partitioned by a date and an int column, written in two commits."""
    path = str(tmp_path_factory.mktemp("direct") / "partitioned")
    frame = _frame()
    df = spark.createDataFrame(frame)
    df.where("customer_id < 200").write.format("delta").partitionBy("ds", "bucket").save(path)
    df.where("customer_id >= 200").write.format("delta").mode("append").save(path)
    return path


@pytest.mark.parametrize("model", [TORCH, SKLEARN])
def test_partitioned_delta_equals_normal_path(spark, partitioned, model):
    direct = score_table_direct(spark, partitioned, model)
    plan = plan_of(spark, partitioned)
    assert plan.direct, plan.reason
    assert plan.version == 1 and plan.partition_columns == ("ds", "bucket")
    normal = _normal(spark, partitioned, model, version=1)
    assert_same(direct, normal)
    assert direct.count() == 300
    types = dict(direct.dtypes)
    assert types["ds"] == "date" and types["bucket"] == "int"  # restored with the table's types
    assert direct.where(F.col("ds") == dt.date(2026, 11, 26)).count() == 100


def test_partition_filter_and_keep_columns(spark, partitioned):
    kept = ["customer_id", "ds", "bucket"]
    direct = score_table_direct(spark, partitioned, SKLEARN, keep_columns=kept,
                                partition_filter={"ds": "2026-11-26", "bucket": [1, 2]})
    assert plan_of(spark, partitioned, partition_filter={"ds": "2026-11-26", "bucket": [1, 2]}).direct
    normal = _normal(spark, partitioned, SKLEARN, version=1, keep=kept,
                     where=(F.col("ds") == dt.date(2026, 11, 26)) & F.col("bucket").isin(1, 2))
    assert_same(direct, normal)
    rows = direct.collect()
    assert rows and {(r.ds, r.bucket) for r in rows} <= {(dt.date(2026, 11, 26), 1), (dt.date(2026, 11, 26), 2)}
    # a date object and its string select the same files
    same = score_table_direct(spark, partitioned, SKLEARN, keep_columns=kept,
                              partition_filter={"ds": dt.date(2026, 11, 26), "bucket": [1, 2]})
    assert same.count() == len(rows)


def test_time_travel_pins_the_version(spark, partitioned):
    direct = score_table_direct(spark, partitioned, SKLEARN, version=0, keep_columns=["customer_id"])
    assert plan_of(spark, partitioned, 0).version == 0
    assert_same(direct, _normal(spark, partitioned, SKLEARN, version=0, keep=["customer_id"]))
    assert direct.count() == 200


def test_filter_on_a_data_column_falls_back(spark, partitioned, caplog):
    ok, reason = direct_scan_supported(spark, partitioned, partition_filter={"region": "north"})
    assert not ok and "non-partition" in reason and "region" in reason
    with caplog.at_level(logging.WARNING, logger="spark_scoring.engine.direct_scan"):
        direct = score_table_direct(spark, partitioned, SKLEARN, partition_filter={"region": "north"})
    assert "falls back" in caplog.text
    assert_same(direct, _normal(spark, partitioned, SKLEARN, version=1, where=F.col("region") == "north"))


def test_parquet_folder(spark, registry, tmp_path):
    path = str(tmp_path / "pq")
    spark.createDataFrame(_frame(240)).drop("ds").write.partitionBy("region").parquet(path)
    direct = score_table_direct(spark, path, TORCH, keep_columns=["customer_id", "region", "bucket"])
    plan = plan_of(spark, path)
    assert plan.direct and plan.format == "parquet" and plan.partition_columns == ("region",)
    normal = _normal(spark, path, TORCH, fmt="parquet", keep=["customer_id", "region", "bucket"])
    assert_same(direct, normal)
    with pytest.raises(Exception, match="not a Delta table"):
        score_table_direct(spark, path, TORCH, version=0)


def test_row_groups_split_across_tasks(spark, registry, tmp_path):
    """One file of many row groups, split into byte ranges: every row exactly once."""
    folder = tmp_path / "rowgroups"
    folder.mkdir()
    frame = _frame(4000).drop(columns=["ds", "region"])
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet",
                   row_group_size=250)
    spark.conf.set("spark.sql.files.maxPartitionBytes", str(os.path.getsize(folder / "part-0.parquet") // 5))
    try:
        direct = score_table_direct(spark, str(folder), SKLEARN, keep_columns=["customer_id"])
        assert len(plan_of(spark, str(folder)).tasks) >= 4
        normal = _normal(spark, str(folder), SKLEARN, fmt="parquet", keep=["customer_id"])
        assert_same(direct, normal)
        assert direct.select("customer_id").distinct().count() == 4000
    finally:
        spark.conf.unset("spark.sql.files.maxPartitionBytes")


def test_null_features_follow_on_null(spark, registry, tmp_table):
    frame = _frame(60)
    df = spark.createDataFrame(frame).withColumn(
        FEATURES[0], F.when(F.col("customer_id") % 10 == 0, F.lit(None)).otherwise(F.col(FEATURES[0])))
    df.write.format("delta").save(tmp_table)
    direct = score_table_direct(spark, tmp_table, SKLEARN, on_null="null_prediction", lineage=False)
    normal = score(spark.read.format("delta").load(tmp_table), SKLEARN, on_null="null_prediction", lineage=False)
    assertDataFrameEqual(direct, normal, checkRowOrder=False, rtol=1e-6, atol=1e-6)
    assert direct.where("prediction IS NULL").count() == 6
    with pytest.raises(Exception, match="null, NaN or infinite"):
        score_table_direct(spark, tmp_table, SKLEARN, lineage=False).collect()


def test_deletion_vectors_after_delete_update_and_merge_take_the_direct_scan(spark, registry, tmp_table):
    """Databricks' default tables: deletion vectors on, rows deleted, updated and merged away."""
    spark.createDataFrame(_frame(300)).write.format("delta").partitionBy("region") \
        .option("delta.enableDeletionVectors", "true").save(tmp_table)
    spark.sql(f"DELETE FROM delta.`{tmp_table}` WHERE customer_id % 7 = 0")
    spark.sql(f"UPDATE delta.`{tmp_table}` SET tenure_months = 0.5 WHERE customer_id % 11 = 0")
    source = spark.createDataFrame(_frame(40, seed=9)).withColumn("customer_id", F.col("customer_id") * 5)
    from delta.tables import DeltaTable

    (DeltaTable.forPath(spark, tmp_table).alias("t").merge(source.alias("s"), "t.customer_id = s.customer_id")
     .whenMatchedDelete(condition="s.customer_id % 2 = 0").whenMatchedUpdateAll().execute())
    plan = plan_of(spark, tmp_table)
    assert plan.direct, plan.reason
    assert plan.deleted_rows > 0  # the files still hold rows the deletion vectors remove
    assert direct_scan_supported(spark, tmp_table) == (True, "")
    direct = score_table_direct(spark, tmp_table, TORCH)
    assert_same(direct, _normal(spark, tmp_table, TORCH))
    assert direct.count() == spark.read.format("delta").load(tmp_table).count()


def test_partition_row_counts_from_the_log_equal_sparks_count(spark, tmp_table):
    """What a job lists its units with (no Spark job): per partition, the log's row counts less
    the deletion vectors' rows, equal to Spark's groupBy count; a partition whose rows are all
    deleted is not listed; string, integer and date partition columns; other types: None."""
    from spark_scoring.delta.tables import partition_counts
    from spark_scoring.engine.scan_log import partition_row_counts

    frame = _frame(120)
    frame["bucket"] = frame["bucket"].astype("int64")
    for column in ("region", "bucket", "ds"):
        path = f"{tmp_table}_{column}"
        spark.createDataFrame(frame).write.format("delta").partitionBy(column) \
            .option("delta.enableDeletionVectors", "true").save(path)
        spark.sql(f"DELETE FROM delta.`{path}` WHERE customer_id % 5 = 0")
        first = sorted(frame[column].unique())[0]
        spark.sql(f"DELETE FROM delta.`{path}` WHERE `{column}` = '{first}'")
        df = spark.read.format("delta").load(path)
        version = int(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").head()["version"])
        got = partition_row_counts(path, version, column, dict(df.dtypes)[column])
        assert got == partition_counts(df, column), column
        assert first not in got and sum(got.values()) == df.count()
    assert partition_row_counts(f"{tmp_table}_ds", version, "ds", "timestamp") is None
    assert partition_row_counts(f"{tmp_table}_ds", version, "region", "string") is None  # not its partitioning


def test_column_mapping_with_renamed_and_dropped_columns_takes_the_direct_scan(spark, registry, tmp_table):
    spark.createDataFrame(_frame(90)).write.format("delta").save(tmp_table)
    spark.sql(f"ALTER TABLE delta.`{tmp_table}` SET TBLPROPERTIES ('delta.columnMapping.mode' = 'name', "
              "'delta.minReaderVersion' = '2', 'delta.minWriterVersion' = '5')")
    spark.sql(f"ALTER TABLE delta.`{tmp_table}` RENAME COLUMN region TO area")
    spark.sql(f"ALTER TABLE delta.`{tmp_table}` RENAME COLUMN satisfaction TO happiness")
    spark.sql(f"ALTER TABLE delta.`{tmp_table}` DROP COLUMN bucket")
    spark.createDataFrame(_frame(30, seed=5).drop(columns=["bucket"]).rename(
        columns={"region": "area", "satisfaction": "happiness"})).write.format("delta").mode("append").save(tmp_table)
    features = [f if f != "satisfaction" else "happiness" for f in FEATURES]
    plan = plan_of(spark, tmp_table)
    assert plan.direct, plan.reason
    assert plan.physical == {"area": "region", "happiness": "satisfaction"}
    direct = score_table_direct(spark, tmp_table, SKLEARN, features=features, keep_columns=["customer_id", "area"])
    normal = _normal(spark, tmp_table, SKLEARN, features=features, keep=["customer_id", "area"])
    assert_same(direct, normal)
    assert {r.area for r in direct.collect()} == {"north", "south"}


@pytest.mark.parametrize("policy", ["v2", "multipart"])
def test_v2_and_multi_part_checkpoints_take_the_direct_scan(spark, registry, tmp_table, policy):
    frame = _frame(120)
    spark.createDataFrame(frame.iloc[:40]).write.format("delta").partitionBy("region").save(tmp_table)
    props = "'delta.checkpointInterval' = '2'" + (", 'delta.checkpointPolicy' = 'v2'" if policy == "v2" else "")
    spark.sql(f"ALTER TABLE delta.`{tmp_table}` SET TBLPROPERTIES ({props})")
    key = "spark.databricks.delta.checkpoint.partSize"
    if policy == "multipart":
        spark.conf.set(key, "2")  # at most 2 actions per checkpoint part
    try:
        for start in (40, 80):
            spark.createDataFrame(frame.iloc[start:start + 40]).write.format("delta").mode("append").save(tmp_table)
    finally:
        spark.conf.unset(key)
    log = os.listdir(os.path.join(tmp_table, "_delta_log"))
    checkpoints = [f for f in log if ".checkpoint." in f]
    assert checkpoints, log
    if policy == "multipart":
        assert any(".checkpoint.0000000001." in f for f in checkpoints), checkpoints
    plan = plan_of(spark, tmp_table)
    assert plan.direct, plan.reason
    assert_same(score_table_direct(spark, tmp_table, SKLEARN), _normal(spark, tmp_table, SKLEARN))


def test_timestamp_partition_values_are_restored(spark, registry, tmp_table):
    frame = _frame(60)
    frame["hour"] = pd.to_datetime("2026-11-27 08:00:00") + pd.to_timedelta(np.arange(60) % 3, unit="h")
    spark.createDataFrame(frame).write.format("delta").partitionBy("hour").save(tmp_table)
    plan = plan_of(spark, tmp_table)
    assert plan.direct, plan.reason
    direct = score_table_direct(spark, tmp_table, SKLEARN, keep_columns=["customer_id", "hour"])
    assert_same(direct, _normal(spark, tmp_table, SKLEARN, keep=["customer_id", "hour"]))
    one = score_table_direct(spark, tmp_table, SKLEARN, keep_columns=["customer_id", "hour"],
                             partition_filter={"hour": dt.datetime(2026, 11, 27, 9)})
    assert one.count() == 20


def test_pyarrow_bad_row_count_equals_sparks_count(spark, tmp_path):
    """count_bad_rows_direct (what jobs count clean-eligible partitions with) gives exactly
    quality.count_rows' answer: null anywhere, NaN or +-inf in floating columns."""
    import math

    from pyspark.sql.types import DoubleType, FloatType, LongType

    from spark_scoring.job.quality import count_rows, feature_checks

    def count_direct(path, features, version=None, partition_filter=None):
        plan, df = plan_scan(spark, path, version, partition_filter=partition_filter, columns=features)
        return count_bad_rows_direct(spark, plan, df, features)

    rng = np.random.default_rng(7)
    specials = [None, math.nan, math.inf, -math.inf]
    records = []
    for i in range(600):
        def value(kind):
            if rng.random() < 0.06:
                choice = specials[int(rng.integers(0, 4))]
                return None if kind == "l" and choice is not None else choice
            return int(rng.integers(-5, 5)) if kind == "l" else float(rng.normal())
        records.append((i, f"p{i % 3}", value("d"), value("d"), value("f"), value("l")))
    ddl = "id long, ds string, a double, b double, c float, n long"
    path = str(tmp_path / "hostile")
    spark.createDataFrame(records, ddl).write.format("delta").partitionBy("ds").save(path)
    spark.createDataFrame(records[:50], ddl).write.format("delta").mode("append").save(path)  # 2 files/partition

    features = ["a", "b", "c", "n"]
    df = spark.read.format("delta").load(path)
    checks = feature_checks(df.schema, features, [DoubleType(), DoubleType(), FloatType(), LongType()])
    expected_all = count_rows(df, checks)
    assert expected_all[1] > 50 and set(expected_all[2]) == set(features)  # the data really is hostile
    assert count_direct(path, features) == expected_all
    for part in ("p0", "p2"):
        expected = count_rows(df.where(F.col("ds") == part), checks)
        assert count_direct(path, features, partition_filter={"ds": part}) == expected
    # a version pin counts that snapshot; a feature that is a partition column is left to Spark
    assert count_direct(path, features, version=0) == count_rows(
        spark.read.format("delta").option("versionAsOf", 0).load(path), checks)
    assert count_direct(path, ["a", "ds"]) is None


def test_a_relative_path_is_scanned_directly(spark, partitioned):
    """Spark lists absolute files; the planner must resolve a relative path the same way."""
    relative = os.path.relpath(partitioned)
    assert not os.path.isabs(relative)
    assert direct_scan_supported(spark, relative) == (True, "")
