"""Media columns: images (binary) and texts (string) through score(), scoring_udf and jobs.

The demo's image tagger and text moderator (spark_scoring.demo_media, registered by the
``registry`` fixture) declare ``preprocess`` apart from ``predict_batch``: spark_scoring
overlaps them and catches the rows a model raises on (a corrupt JPEG, an empty value, a
decompression bomb) inside the task. Every prediction is compared with
``mlflow.pyfunc.load_model(uri).predict`` on the same rows.
"""
from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pyspark.sql.functions as F
import pytest

from spark_scoring import BadRowsError, run_job, score, scoring_udf
from spark_scoring.demo_media import build_media_tables, corrupt_images, images_frame, texts_frame
from spark_scoring.ops.progress import Reporter

TAGGER = "models:/demo_image_tagger@champion"
MODERATOR = "models:/demo_text_moderator@champion"
PER_PARTITION = 24


@pytest.fixture(scope="module")
def media(spark, registry, tmp_path_factory):
    return build_media_tables(spark, tmp_path_factory.mktemp("media"), images=PER_PARTITION, texts=20)


def _by_id(df, key, col="pred"):
    return {r[key]: r[col] for r in df.select(key, col).collect()}


def _reference(uri: str, frame: pd.DataFrame, column: str) -> list:
    out = mlflow.pyfunc.load_model(uri).predict(frame[[column]])
    return out.to_dict("records")


def test_an_image_tagger_scores_jpegs_like_pyfunc_and_sets_corrupt_ones_aside(spark, media):
    df = spark.read.format("delta").load(media["images"])
    udf = scoring_udf(TAGGER, row_errors="capture", on_null="null_prediction")
    out = df.withColumn("pred", udf("image"))
    got = {r.image_id: (r.pred.prediction, r.pred.error) for r in out.select("image_id", "pred").collect()}
    frame = images_frame(PER_PARTITION)
    good = frame[frame["source"] == "crop"]
    want = dict(zip(good["image_id"], _reference(TAGGER, good, "image")))
    for image_id, expected in want.items():
        prediction, error = got[image_id]
        assert error is None and prediction["label"] == expected["label"]
        assert prediction["score"] == pytest.approx(expected["score"], abs=1e-5)
    reasons = {frame.loc[frame["image_id"] == i, "source"].item(): e for i, (_p, e) in got.items() if e}
    assert set(reasons) == set(corrupt_images())  # each corrupt image is its own row's error
    assert "DecompressionBombError" in reasons["bomb"] and "UnidentifiedImageError" in reasons["garbage"]
    null_row = frame.loc[frame["source"] == "null", "image_id"].item()
    assert got[null_row] == (None, None)  # a null image is a bad row (on_null), not a model error


def test_without_capture_a_corrupt_image_fails_the_task_naming_the_exception(spark, media):
    df = spark.read.format("delta").load(media["images"]).where("source = 'garbage'")
    with pytest.raises(Exception, match="UnidentifiedImageError"):
        df.withColumn("pred", scoring_udf(TAGGER)("image")).collect()


def test_a_text_moderator_scores_a_string_column_through_score(spark, media):
    df = spark.read.format("delta").load(media["texts"])
    out = score(df, MODERATOR, output_col="pred", lineage=False)
    got = _by_id(out, "text_id")
    frame = texts_frame(20)
    want = dict(zip(frame["text_id"], _reference(MODERATOR, frame, "text")))
    for text_id, expected in want.items():
        assert got[text_id]["label"] == expected["label"]
        assert got[text_id]["score"] == pytest.approx(expected["score"], abs=1e-9)


def _media_job(media, out, **extra):
    cfg = {"model": TAGGER, "input": {"table": media["images"], "partition_by": "ds"},
           "output": {"table": out, "prediction_column": "tag", "keys": ["image_id"]},
           "bad_rows": "quarantine", "quarantine_table": out + "_quarantine",
           "tracking": {"enabled": False}, "drift": {"enabled": False}}
    cfg.update(extra)
    return cfg


def test_a_job_quarantines_the_rows_the_model_raises_on_and_reconciles(spark, media, tmp_path):
    out = str(tmp_path / "tags")
    result = run_job(_media_job(media, out), spark=spark, reporter=Reporter(quiet=True))
    total = 2 * PER_PARTITION + len(corrupt_images()) + 1
    assert result.rows_in == total == result.rows_scored + result.rows_quarantined
    assert result.rows_quarantined == len(corrupt_images()) + 1  # the corrupt images and the null one
    quarantined = spark.read.format("delta").load(out + "_quarantine")
    reasons = {r.source: r.quarantine_reason for r in quarantined.select("source", "quarantine_reason").collect()}
    assert reasons["null"] == "image is null"
    assert reasons["bomb"].startswith("model error: DecompressionBombError")
    assert reasons["truncated"].startswith("model error: ")
    scored = spark.read.format("delta").load(out)
    assert scored.count() == 2 * PER_PARTITION and scored.where(F.col("tag").isNull()).count() == 0
    assert {r.ds: r.n for r in scored.groupBy("ds").agg(F.count("*").alias("n")).collect()} == {
        "2026-11-26": PER_PARTITION, "2026-11-27": PER_PARTITION}


def test_with_bad_rows_fail_the_error_names_the_rows_keys_and_the_exception(spark, media, tmp_path):
    out = str(tmp_path / "tags")
    cfg = _media_job(media, out, quarantine_table=None)
    cfg["bad_rows"] = "fail"
    cfg["input"] = {**cfg["input"], "partitions": ["2026-11-26"]}  # no null image there: the model decides
    clean = run_job(cfg, spark=spark, reporter=Reporter(quiet=True))
    assert clean.rows_scored == PER_PARTITION
    df = spark.read.format("delta").load(media["images"]).where("ds = '2026-11-27' AND source != 'null'")
    bad_input = str(tmp_path / "bad_images")
    df.write.format("delta").partitionBy("ds").save(bad_input)
    cfg["input"] = {"table": bad_input, "partition_by": "ds"}
    with pytest.raises(BadRowsError, match=r"the model raised on 4 row\(s\).*\{'image_id': \d+\}: "
                                           r"(UnidentifiedImageError|DecompressionBombError|OSError)") as info:
        run_job({**cfg, "output": {**cfg["output"], "table": str(tmp_path / "other")}}, spark=spark,
                reporter=Reporter(quiet=True))
    assert info.value.exit_code == 2


def test_a_model_that_raises_on_every_row_stops_at_the_row_error_limit(spark, media):
    df = spark.read.format("delta").load(media["images"]).where("source != 'crop'").where("image IS NOT NULL")
    udf = scoring_udf(TAGGER, row_errors="capture", max_row_errors=2)
    with pytest.raises(Exception, match=r"RowErrorLimit: the model raised on more than 2 rows of one task"):
        df.coalesce(1).withColumn("pred", udf("image")).collect()


def test_the_overlapped_model_still_works_alone(media):
    frame = images_frame(4, corrupt=False)
    model = mlflow.pyfunc.load_model(TAGGER)
    alone = model.predict(frame[["image"]])
    staged = model.unwrap_python_model()
    again = staged.predict_batch(staged.preprocess(frame[["image"]]))
    pd.testing.assert_frame_equal(alone, again)
    assert np.all(alone["score"].between(0, 1))
