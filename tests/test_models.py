"""The conformance matrix: every model a user brings, logged the way MLflow 3.17 logs it by default.

For each format (torch pt2 / pickle / TorchScript, scikit-learn skops /
cloudpickle, pyfunc) and each input and output form, ``score``,
``scoring_udf`` and ``run_job`` are checked against
``mlflow.pyfunc.load_model(uri).predict`` on the same rows (1e-5), and the
spark_udf forms against ``mlflow.pyfunc.spark_udf`` on the same DataFrame
where spark_udf is right. The models: tests/model_zoo.py (the ``zoo`` fixture).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyspark.sql.functions as F
import pytest
from pyspark.ml.functions import array_to_vector
from pyspark.sql import types as T

from model_zoo import FEATURES, ROWS, features, typed_frame
from spark_scoring import (
    ModelLoadError,
    ResultTypeError,
    SchemaMismatchError,
    load_model,
    run_job,
    score,
    scoring_udf,
)

NATIVE = ["torch_pt2", "torch_pickle", "torch_script", "sklearn_skops", "sklearn_hgb", "sklearn_cloudpickle",
          "pyfunc_torch"]


# ----------------------------------------------------------------- helpers
def reference(zoo, key: str, frame: pd.DataFrame | None = None) -> list:
    """What mlflow.pyfunc predicts for the model's rows, one value per row."""
    z = zoo[key]
    frame = z.frame if frame is None else frame
    out = mlflow.pyfunc.load_model(z.uri).predict(frame)
    if isinstance(out, pd.DataFrame):
        return out.to_dict("records") if out.shape[1] > 1 else out.iloc[:, 0].tolist()
    return np.asarray(out).reshape(len(frame), -1).tolist() if np.ndim(out) > 1 and np.shape(out)[1] > 1 \
        else np.asarray(out).reshape(-1).tolist()


def collected(df, col="p") -> list:
    return [r[col] for r in df.orderBy("id").select(col).collect()]


def close(got, want, tol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, dict):
            g = g.asDict(recursive=True) if hasattr(g, "asDict") else g
            assert g.keys() == w.keys()
            close(list(g.values()), list(w.values()), tol)
        elif isinstance(w, (list, tuple, np.ndarray)):
            close(list(g), list(w), tol)
        elif isinstance(w, float):
            assert g == pytest.approx(w, abs=tol), (g, w)
        else:
            assert g == w


@pytest.fixture(scope="module")
def num_df(spark, zoo):
    """id, the four double features, and the same features as array<float>, array<double> and a Vector."""
    x = features(0)
    pdf = x.assign(id=np.arange(ROWS))
    df = spark.createDataFrame(pdf).select("id", *FEATURES)
    arr = F.array(*[F.col(c) for c in FEATURES])
    return df.withColumns({"vec64": arr, "vec32": arr.cast("array<float>"), "vecml": array_to_vector(arr)}).cache()


@pytest.fixture(scope="module")
def typed_df(spark, zoo):
    pdf = typed_frame().assign(id=np.arange(ROWS))
    schema = T.StructType([
        T.StructField("i", T.IntegerType()), T.StructField("l", T.LongType()), T.StructField("f", T.FloatType()),
        T.StructField("d", T.DoubleType()), T.StructField("s", T.StringType()), T.StructField("b", T.BooleanType()),
        T.StructField("ts", T.TimestampType()), T.StructField("bin", T.BinaryType()),
        T.StructField("arr", T.ArrayType(T.DoubleType())),
        T.StructField("st", T.StructType([T.StructField("x", T.LongType())])), T.StructField("id", T.LongType()),
    ])
    rows = [(int(r.i), int(r.l), float(r.f), float(r.d), r.s, bool(r.b), r.ts.to_pydatetime(), bytes(r.bin),
             [float(v) for v in r.arr], (int(r.st["x"]),), int(r.id)) for r in pdf.itertuples(index=False)]
    return spark.createDataFrame(rows, schema).cache()


# ------------------------------------------------------------ formats
def test_the_zoo_holds_mlflow_3s_default_formats(zoo):
    assert load_model(zoo["torch_pt2"].uri).format == "pt2"
    assert load_model(zoo["torch_pickle"].uri).format == "pickle"
    assert load_model(zoo["sklearn_skops"].uri).format == "skops"
    assert load_model(zoo["sklearn_cloudpickle"].uri).format == "cloudpickle"
    assert zoo["torch_pt2"].logged_uri.startswith("models:/m-")


@pytest.mark.parametrize("key", NATIVE)
def test_score_and_scoring_udf_match_pyfunc_for_every_format(num_df, zoo, key):
    z = zoo[key]
    want = reference(zoo, key)
    got = collected(score(num_df, z.uri, features=list(z.columns), output_col="p"))
    close(got, want)
    udf = scoring_udf(z.uri, features=list(z.columns))
    assert collected(num_df.withColumn("p", udf())) == got


@pytest.mark.parametrize("form", ["logged", "runs", "path_str", "path_obj"])
def test_every_uri_mlflow_hands_out_pins_once_with_its_identity_on_the_rows(num_df, zoo, form, tmp_path):
    z = zoo["torch_pt2"]
    folder = tmp_path / "pt2_copy"
    shutil.copytree(load_model(z.uri).local_path, folder)
    uri = {"logged": z.logged_uri, "runs": z.run_uri, "path_str": str(folder), "path_obj": Path(folder)}[form]
    model = load_model(uri)
    assert model.format == "pt2"
    out = score(num_df, model, features=list(FEATURES), output_col="p")
    close(collected(out), reference(zoo, "torch_pt2"))
    names = {r.model_name for r in out.select("model_name").distinct().collect()}
    assert names == {model.display_name} and model.display_name == model.uri
    if form == "logged":
        assert model.model_id == z.logged_uri.split("/")[-1] and model.uri == z.logged_uri


# ------------------------------------------------------------ pt2 input forms
@pytest.mark.parametrize("column", ["vec32", "vec64", "vecml"])
def test_a_pt2_tensor_takes_k_columns_an_array_column_or_a_vector(num_df, zoo, column):
    z = zoo["torch_pt2"]
    want = reference(zoo, "torch_pt2")
    close(collected(score(num_df, z.uri, features=[column], output_col="p")), want)
    close(collected(num_df.withColumn("p", scoring_udf(z.uri)(column))), want)


def test_an_array_of_the_wrong_length_is_a_bad_row_never_a_crashed_task(spark, num_df, zoo):
    z = zoo["torch_pt2"]
    bad = num_df.withColumn("vec64", F.when(F.col("id") == 3, F.array(F.lit(1.0), F.lit(2.0)))
                            .when(F.col("id") == 5, F.lit(None)).otherwise(F.col("vec64")))
    got = collected(score(bad, z.uri, features=["vec64"], output_col="p", on_null="null_prediction"))
    want = reference(zoo, "torch_pt2")
    assert got[3] is None and got[5] is None
    close([g for i, g in enumerate(got) if i not in (3, 5)], [w for i, w in enumerate(want) if i not in (3, 5)])
    with pytest.raises(Exception, match=r"BadRowsError: 2 of \d+ rows have null, NaN or infinite features \(vec64: 2\)"):
        score(bad, z.uri, features=["vec64"], output_col="p").collect()


def test_several_tensor_inputs_take_one_column_each_in_order(spark, zoo):
    z = zoo["torch_two_inputs"]
    frame = z.frame
    df = spark.createDataFrame(pd.DataFrame({"id": np.arange(ROWS), "x": [list(map(float, v)) for v in frame["x"]],
                                             "y": [list(map(float, v)) for v in frame["y"]]}))
    import torch

    module = mlflow.pytorch.load_model(z.uri)  # no pyfunc flavor for a two-tensor pt2 program
    with torch.inference_mode():
        want = module(torch.tensor(np.stack(frame["x"])), torch.tensor(np.stack(frame["y"]))).numpy()[:, 0].tolist()
    close(collected(df.withColumn("p", scoring_udf(z.uri)("x", "y"))), want)
    close(collected(score(df, z.uri, output_col="p")), want)
    with pytest.raises(SchemaMismatchError, match=r"takes 2 tensors \['x', 'y'\], got 1 columns"):
        scoring_udf(z.uri)("x")


# ------------------------------------------------------------ pyfunc input forms
def test_every_spark_type_reaches_a_pyfunc_with_the_dtype_its_signature_enforces(typed_df, zoo):
    z = zoo["pyfunc_types"]
    want = reference(zoo, "pyfunc_types")
    got = collected(score(typed_df, z.uri, output_col="p"))
    assert got == want  # the same string per row: dtypes, naive timestamps, bytes, arrays, structs
    assert "tz=None" in got[0]
    spark_udf = mlflow.pyfunc.spark_udf(typed_df.sparkSession, z.uri, env_manager="local")
    theirs = collected(typed_df.withColumn("p", spark_udf(*z.columns)))
    assert got == theirs


def test_one_struct_column_whose_fields_are_the_inputs_by_name(num_df, zoo):
    z = zoo["pyfunc_multi_out"]
    udf = scoring_udf(z.uri)
    positional = collected(num_df.withColumn("p", udf("a", "b")))
    by_struct = collected(num_df.withColumn("p", udf(F.struct(F.col("b"), F.col("a")))))  # fields by name
    assert by_struct == positional
    close(positional, reference(zoo, "pyfunc_multi_out"))


def test_more_named_columns_than_inputs_take_the_inputs_by_name(num_df, zoo):
    """spark_udf's form udf("a", "b", "c", "d") for a model of inputs a, b: the inputs by name."""
    z = zoo["pyfunc_multi_out"]
    udf = scoring_udf(z.uri)
    assert collected(num_df.withColumn("p", udf("id", "b", "a"))) == collected(num_df.withColumn("p", udf("a", "b")))
    with pytest.raises(SchemaMismatchError, match=r"takes 2 columns \['a', 'b'\], got 3"):
        udf("id", "b", "c")


def test_a_signature_less_model_takes_positional_columns_named_as_spark_udf_names_them(num_df, zoo):
    z = zoo["pyfunc_no_signature"]
    udf = scoring_udf(z.uri)
    assert udf.return_type == T.DoubleType()
    got = collected(num_df.withColumn("p", udf("a", "b")))
    close(got, reference(zoo, "pyfunc_no_signature"))
    theirs = mlflow.pyfunc.spark_udf(num_df.sparkSession, z.uri, env_manager="local")
    assert got == collected(num_df.withColumn("p", theirs("a", "b")))
    with pytest.raises(SchemaMismatchError, match=r"has no named input signature.*Fix: pass features="):
        udf()


# ------------------------------------------------------------ outputs
def test_inferred_output_types_equal_spark_udfs_where_spark_udf_is_right(num_df, zoo):
    for key, ddl in [("pyfunc_multi_out", "struct<n:int,x:double>"),
                     ("pyfunc_tensor_out", "struct<r1:array<bigint>,r4:array<array<double>>>"),
                     ("sklearn_cloudpickle", "double"), ("pyfunc_torch", "float")]:
        z = zoo[key]
        ours = scoring_udf(z.uri)
        theirs = mlflow.pyfunc.spark_udf(num_df.sparkSession, z.uri, env_manager="local")
        assert ours.return_type.simpleString() == ddl
        a = collected(num_df.withColumn("p", ours(*z.columns)))
        b = collected(num_df.withColumn("p", theirs(*z.columns)))
        assert num_df.withColumn("p", theirs(*z.columns)).schema["p"].dataType.simpleString() == ddl
        close(a, [r.asDict(recursive=True) if hasattr(r, "asDict") else r for r in b])


def test_pt2_outputs_of_shape_minus1_1_are_one_value_per_row(num_df, zoo):
    # spark_udf infers array<array<float>> for Tensor(float32, (-1, 1)) and the task crashes
    assert scoring_udf(zoo["torch_pt2"].uri).return_type == T.FloatType()


@pytest.mark.parametrize("result_type", ["double", "float", "string", "array<double>", T.DoubleType(),
                                         T.ArrayType(T.DoubleType()), "array<float>"])
def test_every_result_type_spark_udf_takes_gives_spark_udfs_values(num_df, zoo, result_type):
    z = zoo["sklearn_cloudpickle"]
    ours = num_df.withColumn("p", scoring_udf(z.uri, result_type=result_type)(*z.columns))
    theirs = num_df.withColumn("p", mlflow.pyfunc.spark_udf(num_df.sparkSession, z.uri, result_type=result_type,
                                                            env_manager="local")(*z.columns))
    assert ours.schema["p"].dataType == theirs.schema["p"].dataType
    a, b = collected(ours), collected(theirs)
    if isinstance(a[0], str):
        close([float(v) for v in a], [float(v) for v in b])
    else:
        close(a, b)


def test_bool_and_struct_result_types(num_df, zoo):
    z = zoo["pyfunc_multi_out"]
    got = collected(num_df.withColumn("p", scoring_udf(z.uri, result_type="x double, n bool")("a", "b")))
    want = reference(zoo, "pyfunc_multi_out")
    close(got, [{"x": w["x"], "n": bool(w["n"])} for w in want])


def test_array_of_struct_result_type(spark, zoo):
    import mlflow.pyfunc

    class Boxes(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return [[{"label": "cat", "score": float(v)}, {"label": "dog", "score": 1 - float(v)}]
                    for v in model_input.iloc[:, 0]]  # no signature: spark_udf names the column "0"

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="boxes", python_model=Boxes(), pip_requirements=["pandas"])
    df = spark.createDataFrame(pd.DataFrame({"id": [0, 1], "a": [0.25, 0.5]}))
    got = collected(df.withColumn("p", scoring_udf(info.model_uri,
                                                   result_type="array<struct<label: string, score: double>>")("a")))
    assert [[r.asDict() for r in row] for row in got] == [
        [{"label": "cat", "score": 0.25}, {"label": "dog", "score": 0.75}],
        [{"label": "cat", "score": 0.5}, {"label": "dog", "score": 0.5}]]


def test_unsupported_or_ill_fitting_result_types_are_refused_naming_the_type(zoo):
    with pytest.raises(ResultTypeError, match=r"interval day to second is not supported.*Supported: boolean"):
        scoring_udf(zoo["sklearn_cloudpickle"].uri, result_type="interval day to second")
    with pytest.raises(ResultTypeError, match=r"map key type int"):
        scoring_udf(zoo["sklearn_cloudpickle"].uri, result_type="map<int, double>")
    with pytest.raises(ResultTypeError, match=r"is not a Spark type"):
        scoring_udf(zoo["sklearn_cloudpickle"].uri, result_type="dubble")
    with pytest.raises(ResultTypeError, match=r"result_type 'double' is a scalar, but model .* returns "
                                              r"struct<n:int,x:double>.*never picks one column"):
        scoring_udf(zoo["pyfunc_multi_out"].uri, result_type="double")


# ------------------------------------------------------------ params, model_config, extra_env
def test_params_are_checked_on_the_driver_and_reach_predict(num_df, zoo):
    z = zoo["pyfunc_params"]
    got = collected(num_df.withColumn("p", scoring_udf(z.uri, params={"scale": 3.0, "label": "x3"})("a")))
    close(got, [{"value": 3.0 * a, "label": "x3"} for a in features(0)["a"]])
    defaults = collected(score(num_df, z.uri, output_col="p"))
    close(defaults, [{"value": a, "label": "none"} for a in features(0)["a"]])
    theirs = mlflow.pyfunc.spark_udf(num_df.sparkSession, z.uri, params={"scale": 3.0, "label": "x3"},
                                     env_manager="local")
    close(got, [r.asDict() for r in collected(num_df.withColumn("p", theirs("a")))])
    with pytest.raises(SchemaMismatchError, match=r"params .* do not fit model .*params schema \['scale', 'label'\]"):
        scoring_udf(z.uri, params={"scale": "not a number"})


def test_model_config_and_the_task_device_reach_a_pyfunc_model(num_df, zoo):
    z = zoo["pyfunc_config"]
    got = collected(num_df.withColumn("p", scoring_udf(z.uri, model_config={"offset": 5.0})("a")))
    close(got, [{"value": a + 5.0, "device": "cpu"} for a in features(0)["a"]])
    plain = collected(score(num_df, z.uri, output_col="p"))
    close(plain, [{"value": a, "device": "cpu"} for a in features(0)["a"]])


def test_extra_env_is_set_in_the_worker_while_it_scores(spark, zoo):
    import mlflow.pyfunc

    class Env(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            import os

            return [os.environ.get("SPARK_SCORING_TEST_ENV", "unset")] * len(model_input)

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="env", python_model=Env(), pip_requirements=["pandas"])
    df = spark.createDataFrame(pd.DataFrame({"id": [0, 1], "a": [1.0, 2.0]}))
    udf = scoring_udf(info.model_uri, result_type="string", extra_env={"SPARK_SCORING_TEST_ENV": "on"})
    assert collected(df.withColumn("p", udf("a"))) == ["on", "on"]


# ------------------------------------------------------------ jobs
@pytest.mark.parametrize("key", ["torch_pt2", "sklearn_skops", "pyfunc_types"])
def test_run_job_scores_default_format_models_like_pyfunc(spark, zoo, key, tmp_path, num_df, typed_df):
    from spark_scoring.ops.progress import Reporter

    z = zoo[key]
    src = typed_df if key == "pyfunc_types" else num_df.select("id", *FEATURES)
    inp = str(tmp_path / "in")
    src.withColumn("ds", F.when(F.col("id") % 2 == 0, "2026-11-26").otherwise("2026-11-27")) \
        .write.format("delta").partitionBy("ds").save(inp)
    cfg = {"model": z.uri, "input": {"table": inp, "partition_by": "ds"},
           "output": {"table": str(tmp_path / "out"), "prediction_column": "p"},
           "tracking": {"enabled": False}, "drift": {"enabled": False}}
    if key == "torch_pt2":
        cfg["features"] = list(FEATURES)
    result = run_job(cfg, spark=spark, reporter=Reporter(quiet=True))
    assert result.rows_in == result.rows_scored == ROWS
    out = spark.read.format("delta").load(str(tmp_path / "out"))
    close(collected(out), reference(zoo, key))
    paths = {json_meta["engine_path"] for json_meta in _commit_meta(spark, str(tmp_path / "out"))}
    assert paths == ({"direct_scan"} if key != "pyfunc_types" else {p for p in paths if p.startswith("udf")})


def _commit_meta(spark, path):
    import json

    rows = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    return [json.loads(r["userMetadata"]) for r in rows if r["userMetadata"]]


def test_run_job_passes_engine_params_and_model_config(spark, zoo, tmp_path, num_df):
    from spark_scoring.ops.progress import Reporter

    inp = str(tmp_path / "in")
    num_df.select("id", "a").withColumn("ds", F.lit("2026-11-27")).write.format("delta").partitionBy("ds").save(inp)
    cfg = {"model": zoo["pyfunc_params"].uri, "input": {"table": inp, "partition_by": "ds"},
           "output": {"table": str(tmp_path / "out"), "prediction_column": "p"},
           "engine": {"params": {"scale": 2.0}}, "tracking": {"enabled": False}, "drift": {"enabled": False}}
    run_job(cfg, spark=spark, reporter=Reporter(quiet=True))
    got = collected(spark.read.format("delta").load(str(tmp_path / "out")))
    close(got, [{"value": 2.0 * a, "label": "none"} for a in features(0)["a"]])
    cfg2 = {**cfg, "model": zoo["pyfunc_config"].uri, "output": {"table": str(tmp_path / "out2"),
                                                                  "prediction_column": "p"},
            "engine": {"model_config": {"offset": 1.5}}}
    run_job(cfg2, spark=spark, reporter=Reporter(quiet=True))
    close(collected(spark.read.format("delta").load(str(tmp_path / "out2"))),
          [{"value": a + 1.5, "device": "cpu"} for a in features(0)["a"]])


# ------------------------------------------------------------ errors that tell the truth
def test_a_skops_model_missing_its_trusted_types_says_what_to_pass(zoo, tmp_path):
    folder = tmp_path / "hgb"
    shutil.copytree(load_model(zoo["sklearn_hgb"].uri).local_path, folder)
    mlmodel = folder / "MLmodel"
    text = mlmodel.read_text()
    start = text.index("skops_trusted_types:")
    end = text.index("\n", text.index("\n", start) + 1)
    mlmodel.write_text(text[:start] + "skops_trusted_types: null" + text[end:])
    with pytest.raises(ModelLoadError, match=r"(?s); sklearn, skops\) could not be loaded.*Untrusted types.*"
                                             r"Fix: skops refuses types it was not told to trust\. Log the model "
                                             r"with mlflow\.sklearn\.log_model\(model, name=\.\.\., "
                                             r"skops_trusted_types=\[\.\.\.\]\)"):
        load_model(str(folder))


def test_a_pt2_program_that_cannot_load_names_its_format_and_the_torch_versions(zoo, tmp_path):
    folder = tmp_path / "pt2"
    shutil.copytree(load_model(zoo["torch_pt2"].uri).local_path, folder)
    (folder / "data" / "model.pt2").write_bytes(b"not a program")
    with pytest.raises(ModelLoadError, match=r"(?s); pytorch, pt2 \(torch\.export\) program\) could not be loaded.*"
                                             r"Fix: the program file looks corrupt \(it was logged with torch "
                                             r"2\.\d+.*, the torch installed here\); re-log the model"):
        load_model(str(folder))


def test_a_null_input_of_a_typed_pyfunc_is_a_bad_row_with_a_null_prediction(typed_df, zoo):
    z = zoo["pyfunc_types"]
    df = typed_df.withColumn("s", F.when(F.col("id") == 1, F.lit(None)).otherwise(F.col("s")))
    got = collected(score(df, z.uri, output_col="p", on_null="null_prediction"))
    want = reference(zoo, "pyfunc_types")
    assert got[1] is None and got[:1] + got[2:] == want[:1] + want[2:]
    with pytest.raises(Exception, match=r"BadRowsError: 1 of \d+ rows .*\(s: 1\)"):
        score(df, z.uri, output_col="p").collect()
