"""spark_scoring.engine: scoring_udf() and score() on real Spark with real models.

Each prediction is compared with ``mlflow.pyfunc.load_model(uri).predict`` on
the same rows. Errors that can be found on the driver must be raised before any
Spark job runs: checked with a job group and the status tracker.
"""
from __future__ import annotations

import functools
import os
import uuid
from collections import defaultdict
from contextlib import contextmanager

import mlflow
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from spark_scoring import (
    ModelLoadError,
    ResultTypeError,
    SchemaMismatchError,
    load_model,
    score,
    scoring_udf,
)
from spark_scoring.demo import FEATURES, demo_frame

URIS = {
    "churn": "models:/demo_churn@champion",
    "fraud": "models:/demo_fraud@champion",
    "price": "models:/demo_price/1",
    "segments": "models:/demo_segments@champion",
}
SEGMENT_FEATURES = ["tenure_months", "support_calls"]
ROWS = 120


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _pyfunc(uri: str):
    return mlflow.pyfunc.load_model(uri)


def reference(key: str, frame: pd.DataFrame) -> list:
    """mlflow.pyfunc's predictions for ``frame``, one Python value per row."""
    model = _pyfunc(URIS[key])
    if key == "churn":  # float32 signature: pyfunc refuses float64 input
        return np.asarray(model.predict(frame[list(FEATURES)].astype(np.float32))).reshape(-1).tolist()
    if key == "segments":
        out = model.predict(frame[SEGMENT_FEATURES])
        return [{"score": s, "segment": g} for s, g in zip(out["score"], out["segment"])]
    return np.asarray(model.predict(frame[list(FEATURES)])).tolist()


def assert_same_predictions(got: list, want: list, key: str):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if key == "segments":
            g = g.asDict() if hasattr(g, "asDict") else g
            assert g["segment"] == w["segment"]
            assert g["score"] == pytest.approx(w["score"], abs=1e-6)
        elif key == "fraud":
            assert g == pytest.approx(w, abs=1e-6)
        else:
            assert g == pytest.approx(w, abs=1e-6)


def predictions(df, col: str = "prediction") -> list:
    return [r[col] for r in df.orderBy("customer_id").select(col).collect()]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return demo_frame(partitions=("2026-11-25",), rows_per_partition=ROWS, bad_rows=False, seed=11)


@pytest.fixture(scope="module")
def df(spark, registry, frame):
    cached = spark.createDataFrame(frame).repartition(2).cache()
    yield cached
    cached.unpersist()


@contextmanager
def no_spark_jobs(spark):
    """Fail if any Spark job starts inside the block."""
    sc = spark.sparkContext
    group = f"must_not_run_{uuid.uuid4().hex}"
    sc.setJobGroup(group, "errors are found on the driver, before any job")
    try:
        yield
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
        sc.setLocalProperty("spark.job.interruptOnCancel", None)
    assert sc.statusTracker().getJobIdsForGroup(group) == []


@contextmanager
def arrow_batch_rows(spark, n: int):
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    old = spark.conf.get(key)
    spark.conf.set(key, str(n))
    try:
        yield
    finally:
        spark.conf.set(key, old)


# ---------------------------------------------------------------------------
# predictions equal mlflow.pyfunc's
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["churn", "fraud", "price", "segments"])
def test_score_matches_pyfunc(df, frame, key):
    out = score(df, URIS[key])
    expected_type = {
        "churn": T.DoubleType(),
        "price": T.DoubleType(),
        "fraud": T.ArrayType(T.DoubleType()),
        "segments": T.StructType(
            [T.StructField("score", T.DoubleType()), T.StructField("segment", T.StringType())]
        ),
    }[key]
    assert out.schema["prediction"].dataType == expected_type
    assert out.columns == list(df.columns) + ["prediction", "model_name", "model_version", "scored_at"]
    got = predictions(out)
    assert all(g is not None for g in got)
    assert_same_predictions(got, reference(key, frame.sort_values("customer_id")), key)


def test_lineage_records_the_pinned_version(df):
    rows = score(df, "models:/demo_churn@champion").select("model_name", "model_version", "scored_at").collect()
    assert {(r.model_name, r.model_version) for r in rows} == {("demo_churn", "1")}
    assert all(r.scored_at is not None for r in rows)
    challenger = score(df, "models:/demo_churn@challenger").select("model_version").distinct().collect()
    assert [r.model_version for r in challenger] == ["2"]
    out = score(df, "models:/demo_churn@champion")
    assert out.schema["model_version"].dataType == T.StringType()
    assert out.schema["scored_at"].dataType == T.TimestampType()


def test_lineage_for_a_path_model_and_lineage_off(df, tmp_path):
    m = load_model("models:/demo_price/1")
    rows = score(df, m.local_path).select("model_name", "model_version").distinct().collect()
    assert [(r.model_name, r.model_version) for r in rows] == [(m.local_path, None)]
    plain = score(df, m, lineage=False, output_col="price")
    assert plain.columns == list(df.columns) + ["price"]


def test_a_loaded_model_keeps_its_version_after_the_alias_moves(df, frame, registry):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    champion = load_model("models:/demo_churn@champion")
    v1 = predictions(score(df, champion))
    client.set_registered_model_alias("demo_churn", "champion", "2")
    try:
        out = score(df, champion)
        assert predictions(out) == v1
        assert {r.model_version for r in out.select("model_version").collect()} == {"1"}
        moved = score(df, "models:/demo_churn@champion")
        assert {r.model_version for r in moved.select("model_version").collect()} == {"2"}
        assert predictions(moved) != v1
    finally:
        client.set_registered_model_alias("demo_churn", "champion", "1")


# ---------------------------------------------------------------------------
# scoring_udf: columns from the signature, explicit columns, features=
# ---------------------------------------------------------------------------

def test_scoring_udf_without_columns_uses_the_signature(df, frame):
    udf = scoring_udf(URIS["price"])
    assert udf.columns == FEATURES
    assert udf.return_type == T.DoubleType()
    got = predictions(df.withColumn("prediction", udf()))
    assert_same_predictions(got, reference("price", frame.sort_values("customer_id")), "price")


def test_scoring_udf_with_explicit_columns(df, frame):
    udf = scoring_udf(URIS["segments"])
    by_name = predictions(df.withColumn("prediction", udf("tenure_months", "support_calls")))
    by_col = predictions(df.withColumn("prediction", udf(F.col("tenure_months"), F.col("support_calls"))))
    assert by_name == by_col
    assert_same_predictions(by_name, reference("segments", frame.sort_values("customer_id")), "segments")
    # one column for a two-input model is spark_udf's struct form: a plain column fails in the task, naming both
    with pytest.raises(Exception, match=r"takes 2 inputs \['tenure_months', 'support_calls'\], got 1 columns"):
        df.withColumn("prediction", udf("tenure_months")).collect()
    with pytest.raises(SchemaMismatchError, match=r"column 'tenure_months' is double.*struct with the fields"):
        score(df, URIS["segments"], features=["tenure_months"])


def test_features_rename_inputs(df, frame):
    renamed_cols = [f"f{i}" for i in range(len(FEATURES))]
    renamed = df.select("customer_id", *[F.col(a).alias(b) for a, b in zip(FEATURES, renamed_cols)])
    udf = scoring_udf(URIS["churn"], features=renamed_cols)
    assert udf.columns == tuple(renamed_cols)
    via_udf = predictions(renamed.withColumn("prediction", udf()))
    via_score = predictions(score(renamed, URIS["churn"], features=renamed_cols))
    want = reference("churn", frame.sort_values("customer_id"))
    assert_same_predictions(via_udf, want, "churn")
    assert via_score == via_udf
    with pytest.raises(SchemaMismatchError, match=r"features=\['f0', 'f1'\] names 2 columns, but model .* takes 8"):
        scoring_udf(URIS["churn"], features=renamed_cols[:2])


@pytest.mark.parametrize("key", ["churn", "fraud", "segments"])
def test_batch_size_smaller_and_larger_than_arrow_batches(df, frame, key):
    want = reference(key, frame.sort_values("customer_id"))
    with arrow_batch_rows(df.sparkSession, 25):
        small = predictions(score(df, URIS[key], batch_size=7))
        large = predictions(score(df, URIS[key], batch_size=100_000))
        default = predictions(score(df, URIS[key]))
    for got in (small, large, default):
        assert_same_predictions(got, want, key)


def test_diagnostics_report_the_batch_size_and_device(df):
    out = score(df, URIS["price"], batch_size=7, diagnostics=True)
    diag = out.select("scoring_diagnostics.*").distinct().collect()
    assert {d.batch_size for d in diag} == {7}
    assert {d.device for d in diag} == {"cpu"}
    assert {d.partition_id for d in diag} == {0, 1}
    assert all(d.pid > 0 and d.model_loads >= 1 for d in diag)
    assert "scoring_diagnostics" in out.columns and out.schema["prediction"].dataType == T.DoubleType()


# ---------------------------------------------------------------------------
# empty input
# ---------------------------------------------------------------------------

def test_empty_dataframe(df):
    out = score(df.limit(0), URIS["fraud"])
    assert out.collect() == []
    assert out.schema["prediction"].dataType == T.ArrayType(T.DoubleType())


def test_empty_partition(spark, frame):
    small = frame.head(10)
    # every row hashes to the one key: three of the four partitions are empty
    parts = spark.createDataFrame(small).withColumn("k", F.lit(1)).repartition(4, "k").drop("k")
    sizes = parts.rdd.glom().map(len).collect()
    assert len(sizes) == 4 and sizes.count(0) == 3 and sum(sizes) == 10
    got = predictions(score(parts, URIS["churn"]))
    assert_same_predictions(got, reference("churn", small.sort_values("customer_id")), "churn")


# ---------------------------------------------------------------------------
# bad rows
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_df(spark, frame):
    """One partition; row 0 has a null, row 1 a NaN, row 2 a +inf feature."""
    sdf = spark.createDataFrame(frame.head(30)).coalesce(1)
    first = frame["customer_id"].iloc[0]
    sdf = sdf.withColumn(
        "tenure_months",
        F.when(F.col("customer_id") == int(first), F.lit(None).cast("double")).otherwise(F.col("tenure_months")),
    )
    sdf = sdf.withColumn(
        "monthly_spend",
        F.when(F.col("customer_id") == int(frame["customer_id"].iloc[1]), F.lit(float("nan")))
        .otherwise(F.col("monthly_spend")),
    ).withColumn(
        "support_calls",
        F.when(F.col("customer_id") == int(frame["customer_id"].iloc[2]), F.lit(float("inf")))
        .otherwise(F.col("support_calls")),
    )
    return sdf


@pytest.mark.parametrize("key", ["churn", "fraud", "price"])
def test_on_null_prediction_gives_null_at_bad_rows(bad_df, frame, key):
    got = predictions(score(bad_df, URIS[key], on_null="null_prediction"))
    assert [i for i, g in enumerate(got) if g is None] == [0, 1, 2]
    good = frame.head(30).iloc[3:]
    assert_same_predictions(got[3:], reference(key, good), key)


def test_on_null_prediction_for_a_pyfunc_model(bad_df, frame):
    got = predictions(score(bad_df, URIS["segments"], on_null="null_prediction"))
    # segments reads tenure_months (row 0 null) and support_calls (row 2 inf), not monthly_spend
    assert [i for i, g in enumerate(got) if g is None] == [0, 2]
    keep = [i for i in range(30) if i not in (0, 2)]
    assert_same_predictions([got[i] for i in keep], reference("segments", frame.head(30).iloc[keep]), "segments")


@pytest.mark.parametrize(
    ("key", "detail"),
    [
        ("churn", r"3 of 30 rows have null, NaN or infinite features "
                  r"\(tenure_months: 1, monthly_spend: 1, support_calls: 1\)"),
        ("segments", r"2 of 30 rows have null, NaN or infinite features \(tenure_months: 1, support_calls: 1\)"),
    ],
)
def test_on_null_error_fails_the_action_with_the_bad_rows_message(bad_df, key, detail):
    out = score(bad_df, URIS[key], on_null="error", batch_size=1000)
    with pytest.raises(Exception, match=r"BadRowsError: " + detail) as info:
        out.collect()
    assert "on_null='null_prediction'" in str(info.value)


# ---------------------------------------------------------------------------
# errors found on the driver, before any Spark job
# ---------------------------------------------------------------------------

def test_the_no_job_check_can_fail(spark, df):
    with pytest.raises(AssertionError):
        with no_spark_jobs(spark):
            df.count()


def test_missing_feature_column(spark, df):
    short = df.drop("satisfaction")
    with no_spark_jobs(spark), pytest.raises(
        SchemaMismatchError,
        match=r"needs feature column\(s\) \['satisfaction'\] that the input does not have\. "
        r"Input columns: \['customer_id', 'days_since_login', 'discount_rate', 'ds', .*'tenure_months'\]",
    ):
        score(short, URIS["churn"])


@pytest.mark.parametrize(("key", "expected"), [("price", "double"), ("churn", "float")])
def test_string_column_where_the_model_wants_a_number(spark, df, key, expected):
    stringly = df.withColumn("monthly_spend", F.col("monthly_spend").cast("string"))
    with no_spark_jobs(spark), pytest.raises(
        SchemaMismatchError,
        match=rf"cannot be safely cast to the model's types: column 'monthly_spend': expected {expected}, got string",
    ):
        score(stringly, URIS[key])


def test_signature_less_model_needs_features(spark, df, frame, tmp_path):
    from sklearn.linear_model import Ridge

    x = frame[list(FEATURES)].to_numpy()
    ridge = Ridge().fit(x, x[:, 0] * 2 - x[:, 3])
    path = str(tmp_path / "no_signature")
    mlflow.sklearn.save_model(
        ridge, path, serialization_format="cloudpickle", pip_requirements=["scikit-learn"]
    )
    m = load_model(path)
    assert m.signature is None and m.inputs is None
    with no_spark_jobs(spark), pytest.raises(
        SchemaMismatchError, match=r"has no named input signature.*Fix: pass features=\[\.\.\.\]"
    ):
        score(df, path)
    got = predictions(score(df, path, features=list(FEATURES)))
    want = ridge.predict(frame.sort_values("customer_id")[list(FEATURES)].to_numpy())
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_result_type_that_does_not_fit(spark, df):
    with no_spark_jobs(spark), pytest.raises(
        ResultTypeError,
        match=r"result_type 'double' is a scalar, but model 'models:/demo_fraud/1' returns array<double>.*"
        r"never picks one column of a multi-column output silently",
    ):
        score(df, URIS["fraud"], result_type="double")
    with no_spark_jobs(spark), pytest.raises(
        ResultTypeError, match=r"asks for fields \['label'\] that model 'models:/demo_segments/1' does not return"
    ):
        score(df, URIS["segments"], result_type="struct<score: double, label: string>")
    with no_spark_jobs(spark), pytest.raises(ResultTypeError, match=r"result_type 'not a type' is not a Spark type"):
        score(df, URIS["price"], result_type="not a type")


def test_result_type_that_fits(df, frame):
    out = score(df, URIS["segments"], result_type="struct<score: double>")
    assert out.schema["prediction"].dataType == T.StructType([T.StructField("score", T.DoubleType())])
    got = [r.score for r in predictions(out)]
    want = [w["score"] for w in reference("segments", frame.sort_values("customer_id"))]
    assert got == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("clash", ["prediction", "model_version", "scored_at"])
def test_output_column_clash(spark, df, clash):
    taken = df.withColumn(clash, F.lit(1))
    with no_spark_jobs(spark), pytest.raises(
        SchemaMismatchError, match=rf"the input already has column\(s\) \['{clash}'\] that scoring would add"
    ):
        score(taken, URIS["price"])


def test_corrupt_model_fails_before_any_job(spark, df, tmp_path):
    import shutil

    folder = tmp_path / "corrupt"
    shutil.copytree(load_model(URIS["price"]).local_path, folder)
    (folder / "model.skops").write_bytes(b"garbage" * 20)
    with no_spark_jobs(spark), pytest.raises(ModelLoadError, match=r"could not be loaded from its artifacts"):
        score(df, str(folder))


def test_bad_arguments(spark, df):
    with no_spark_jobs(spark):
        with pytest.raises(SchemaMismatchError, match=r"on_null='drop': expected 'error' or 'null_prediction'"):
            score(df, URIS["price"], on_null="drop")
        with pytest.raises(SchemaMismatchError, match=r"batch_size=0: expected a positive integer"):
            score(df, URIS["price"], batch_size=0)
        with pytest.raises(SchemaMismatchError, match=r"autocast='fp8': expected None, 'bf16' or 'fp16'"):
            score(df, URIS["churn"], autocast="fp8")


# ---------------------------------------------------------------------------
# the per-worker model cache: one load per worker process
# ---------------------------------------------------------------------------

@pytest.fixture()
def fresh_model_uri(registry):
    """A newly registered version no worker has loaded yet (a copy of demo_price v1).

    ``model_loads`` in the diagnostics counts every load in a worker process,
    whatever the model, so earlier tests raise it; with a fresh model, the
    first task of each worker must load it and a *constant* counter over the
    worker's later tasks means none of them loaded anything again.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    run_id = client.get_model_version("demo_price", "1").run_id
    name = f"cache_probe_{uuid.uuid4().hex[:8]}"
    version = mlflow.register_model(f"runs:/{run_id}/model", name).version
    return f"models:/{name}/{version}"


def loads_per_pid(rows) -> dict[int, dict]:
    """pid -> {"tasks", "loads" (loads during these rows), "hits"} from diagnostics rows."""
    tasks = defaultdict(set)
    loads = defaultdict(set)
    hits = defaultdict(set)
    for r in rows:
        d = r.scoring_diagnostics
        tasks[d.pid].add((r.slice, d.partition_id, d.attempt))
        loads[d.pid].add(d.model_loads)
        hits[d.pid].add(d.cache_hits)
    return {
        pid: {
            "tasks": len(tasks[pid]),
            # the first task loads the fresh model; any later load would raise the counter
            "loads": 1 + max(loads[pid]) - min(loads[pid]),
            "hits": max(hits[pid]) - min(hits[pid]),
        }
        for pid in tasks
    }


def test_one_model_load_per_worker(spark, frame, fresh_model_uri):
    sdf = spark.createDataFrame(frame).repartition(8).withColumn("slice", F.lit(0))
    out = score(sdf, fresh_model_uri, diagnostics=True)
    rows = out.select("slice", "scoring_diagnostics").collect()
    assert len(rows) == ROWS
    per_pid = loads_per_pid(rows)
    assert sum(p["tasks"] for p in per_pid.values()) == 8
    assert max(p["tasks"] for p in per_pid.values()) >= 2  # some worker ran several tasks
    assert {pid: p["loads"] for pid, p in per_pid.items()} == {pid: 1 for pid in per_pid}
    assert all(p["hits"] >= p["tasks"] - 1 for p in per_pid.values())  # later tasks hit the cache


def test_a_new_udf_per_partition_still_loads_once_per_worker(spark, frame, fresh_model_uri):
    sdf = spark.createDataFrame(frame).withColumn("slice", (F.col("customer_id") % 8).cast("int"))
    pieces = [
        # a fresh score() (a fresh UDF, a fresh resolution) per slice, same pinned version
        score(sdf.where(F.col("slice") == i), fresh_model_uri, diagnostics=True)
        for i in range(8)
    ]
    assert len({id(p) for p in pieces}) == 8
    union = functools.reduce(lambda a, b: a.unionByName(b), pieces)
    rows = union.select("customer_id", "slice", "prediction", "scoring_diagnostics").collect()
    assert len(rows) == ROWS
    per_pid = loads_per_pid(rows)
    tasks = sum(p["tasks"] for p in per_pid.values())
    assert tasks >= 8
    assert max(p["tasks"] for p in per_pid.values()) >= 2
    assert {pid: p["loads"] for pid, p in per_pid.items()} == {pid: 1 for pid in per_pid}
    assert all(p["hits"] >= p["tasks"] - 1 for p in per_pid.values())  # later tasks hit the cache
    got = [r.prediction for r in sorted(rows, key=lambda r: r.customer_id)]
    assert_same_predictions(got, reference("price", frame.sort_values("customer_id")), "price")
    assert os.getpid() not in per_pid  # scored in worker processes, not the driver


def test_arrow_batch_rows_sizes_the_batches_a_parquet_read_hands_arrow_udfs(spark, tmp_path):
    """``arrow_batch_rows`` sets the batch Spark 4.2 hands scalar Arrow UDFs for a columnar
    (Parquet) read, then restores the session's settings."""
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf
    from pyspark.sql.pandas.functions import ArrowUDFType

    from spark_scoring.session import ARROW_BATCH_CONFS, arrow_batch_rows

    path = str(tmp_path / "rows")
    spark.range(0, 9000, 1, 1).selectExpr("cast(id as double) as x").write.parquet(path)

    batch_len = arrow_udf(lambda x: pa.array([len(x)] * len(x), pa.int64()), "long", ArrowUDFType.SCALAR)

    def batch_sizes():
        rows = spark.read.parquet(path).select(batch_len("x").alias("n")).distinct().collect()
        return sorted(r["n"] for r in rows)

    before = {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS}
    with arrow_batch_rows(spark, 1000):
        assert all(spark.conf.get(k) == "1000" for k in ARROW_BATCH_CONFS)
        assert batch_sizes() == [1000]  # 9 batches of exactly 1000 rows
    assert {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS} == before
    assert max(batch_sizes()) > 1000
    with arrow_batch_rows(spark, None):  # None leaves the session alone
        assert {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS} == before
