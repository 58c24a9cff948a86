"""Hostile input: every case ends in a clear error before any write (exit 2) or
in quarantined rows whose counts reconcile (rows in = scored + quarantined, in
the result, the audit row and the tables).

Property-based tests elsewhere cover the same ground for arbitrary values:
``tests/test_config.py`` (junk dicts and YAML files raise only ConfigError; YAML
round trip) and ``tests/test_delta_io.py`` (a partition predicate built from any
string selects exactly the rows equal to it). The hypothesis test here adds the
bad-row rules: any mix of null / NaN / +-inf / finite features is split exactly.
"""
from __future__ import annotations

import math
import re
import time
import uuid
from pathlib import Path

import pyspark.sql.functions as F
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import types as T

import reliability_helpers as H
from spark_scoring import cli
from spark_scoring.demo import FEATURES
from spark_scoring.errors import SchemaMismatchError
from spark_scoring import run_job
from spark_scoring.ops.progress import Reporter

SCHEMA = T.StructType(
    [T.StructField("customer_id", T.LongType()), T.StructField("ds", T.StringType())]
    + [T.StructField(f, T.DoubleType()) for f in FEATURES]
)


def _row(i, ds, **values):
    feats = [values.get(f, 0.1 * (k + 1) + 0.01 * i) for k, f in enumerate(FEATURES)]
    return (i, ds, *feats)


def _write(spark, rows, path, schema=SCHEMA, **options):
    writer = spark.createDataFrame(rows, schema).write.format("delta").mode("overwrite").partitionBy("ds")
    writer.options(**options).save(path)
    return path


def _run(spark, cfg, **kw):
    return run_job(cfg, spark=spark, reporter=Reporter(quiet=True), **kw)


def _reconciles(spark, result, out):
    """The counts agree in the JobResult, the audit rows and both tables."""
    assert result.rows_in == result.rows_scored + result.rows_quarantined
    from spark_scoring.delta.tables import TableRef

    scored = spark.read.format("delta").load(out).count() if TableRef.parse(out).exists(spark) else 0
    quarantined = (spark.read.format("delta").load(out + "_quarantine").count()
                   if TableRef.parse(out + "_quarantine").exists(spark) else 0)
    assert (scored, quarantined) == (result.rows_scored, result.rows_quarantined)
    audit = spark.read.format("delta").load(out + "_scoring_runs").where(F.col("run_id") == result.run_id)
    sums = audit.agg(F.sum("rows_in"), F.sum("rows_scored"), F.sum("rows_quarantined")).head()
    assert tuple(int(x or 0) for x in sums) == (result.rows_in, result.rows_scored, result.rows_quarantined)
    return {"rows_in": result.rows_in, "scored": scored, "quarantined": quarantined}


@pytest.mark.slow
def test_null_nan_and_infinite_features_are_quarantined_with_reasons(spark, registry, tmp_path):
    f0, f1, f2 = FEATURES[:3]
    rows = [_row(i, "h1") for i in range(6)] + [
        _row(10, "h1", **{f0: None}),
        _row(11, "h1", **{f1: math.nan}),
        _row(12, "h1", **{f2: math.inf}),
        _row(13, "h1", **{f0: -math.inf}),
        _row(14, "h1", **{f: None for f in FEATURES}),
        _row(15, "h1", **{f0: math.nan, f1: None, f2: -math.inf}),
    ] + [_row(20 + i, "h2_all_bad", **{f1: math.nan}) for i in range(4)]  # a partition with nothing to score
    inp = _write(spark, rows, str(tmp_path / "in"))
    out = str(tmp_path / "scores")
    result = _run(spark, H.job_config(inp, out))
    assert [(p.partition, p.status, p.rows_scored, p.rows_quarantined) for p in result.partitions] == [
        ("h1", "scored", 6, 6), ("h2_all_bad", "scored", 0, 4)]
    counts = _reconciles(spark, result, out)
    reasons = {r["customer_id"]: r["quarantine_reason"]
               for r in spark.read.format("delta").load(out + "_quarantine").collect()}
    assert reasons[10] == f"{f0} is null"
    assert reasons[11] == f"{f1} is NaN"
    assert reasons[12] == f"{f2} is infinite" and reasons[13] == f"{f0} is infinite"
    assert reasons[14] == "; ".join(f"{f} is null" for f in FEATURES)
    assert reasons[15] == f"{f0} is NaN; {f1} is null; {f2} is infinite"
    assert H.partition_counts(spark, out, "ds") == {"h1": 6}  # the all-bad partition wrote no rows
    H.report("hostile_bad_values", counts)


@pytest.mark.slow
def test_strings_in_a_numeric_column_parse_or_are_quarantined(spark, registry, tmp_path):
    schema = T.StructType([T.StructField(f.name, T.StringType()) if f.name == FEATURES[0] else f
                           for f in SCHEMA.fields])
    texts = {0: "1.5", 1: " 2 ", 2: "-3e-2", 3: "abc", 4: "", 5: "NaN", 6: "1e400", 7: "Infinity",
             8: None, 9: "1.5; DROP TABLE x"}
    rows = [(i, "s1", t, *_row(i, "s1")[3:]) for i, t in texts.items()]
    inp = _write(spark, rows, str(tmp_path / "in"), schema=schema)
    out = str(tmp_path / "scores")
    result = _run(spark, H.job_config(inp, out))
    assert (result.rows_scored, result.rows_quarantined) == (3, 7)
    counts = _reconciles(spark, result, out)
    assert sorted(r[0] for r in spark.read.format("delta").load(out).select("customer_id").collect()) == [0, 1, 2]
    reasons = {r[0]: r[1] for r in spark.read.format("delta").load(out + "_quarantine")
               .select("customer_id", "quarantine_reason").collect()}
    assert reasons[3] == f"{FEATURES[0]}=abc is not a finite float"
    assert reasons[8] == f"{FEATURES[0]} is null"
    assert all(reasons[i].endswith("is not a finite float") for i in (4, 5, 6, 7, 9)), reasons
    H.report("hostile_strings_in_numeric_column", counts)


@pytest.mark.slow
def test_missing_column_is_a_clear_error_before_any_write(spark, registry, tmp_path, capsys):
    schema = T.StructType([f for f in SCHEMA.fields if f.name != FEATURES[-1]])
    inp = _write(spark, [_row(i, "m1")[:-1] for i in range(3)], str(tmp_path / "in"), schema=schema)
    out = str(tmp_path / "scores")
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(H.job_config(inp, out)))
    assert cli.main(["run", "--config", str(cfg_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"SchemaMismatchError: model 'models:/demo_churn/1' needs feature column(s) ['{FEATURES[-1]}']" in err
    assert not Path(out).exists() and not Path(out + "_scoring_runs").exists()


@pytest.mark.slow
def test_extra_columns_pass_through_unchanged(spark, registry, tmp_path):
    rows = [_row(i, "e1") for i in range(5)]
    base = _write(spark, rows, str(tmp_path / "base"))
    extra = spark.read.format("delta").load(base).withColumns({
        "notes": F.concat(F.lit("note "), F.col("customer_id").cast("string")),
        "tags": F.array(F.lit("a"), F.lit("b")),
        "nested": F.struct(F.col("customer_id").alias("id"), F.lit(True).alias("flag")),
    })
    extra.write.format("delta").partitionBy("ds").save(str(tmp_path / "extra"))
    outs = {}
    for name in ("base", "extra"):
        outs[name] = str(tmp_path / f"scores_{name}")
        _run(spark, H.job_config(str(tmp_path / name), outs[name]))
    got = spark.read.format("delta").load(outs["extra"])
    assert {"notes", "tags", "nested"} <= set(got.columns)
    assert got.where(F.col("notes") != F.concat(F.lit("note "), F.col("customer_id").cast("string"))).count() == 0
    pred = lambda p: {r[0]: r[1] for r in spark.read.format("delta").load(p).select("customer_id", H.PRED).collect()}  # noqa: E731
    assert pred(outs["extra"]) == pred(outs["base"])


@pytest.mark.slow
def test_column_renamed_by_schema_evolution_is_a_clear_error_and_a_pinned_version_still_scores(
    spark, registry, tmp_path
):
    inp = _write(spark, [_row(i, "r1") for i in range(5)], str(tmp_path / "in"))
    spark.sql(f"ALTER TABLE delta.`{inp}` SET TBLPROPERTIES ('delta.columnMapping.mode' = 'name', "
              "'delta.minReaderVersion' = '2', 'delta.minWriterVersion' = '5')")
    before_rename = H.latest_version(spark, inp)
    spark.sql(f"ALTER TABLE delta.`{inp}` RENAME COLUMN {FEATURES[0]} TO tenure")
    out = str(tmp_path / "scores")
    with pytest.raises(SchemaMismatchError, match=rf"needs feature column\(s\) \['{FEATURES[0]}'\].*'tenure'") as info:
        _run(spark, H.job_config(inp, out))
    assert info.value.exit_code == 2 and not Path(out).exists()
    # pinned to the version before the rename, the same job scores the old schema
    result = _run(spark, H.job_config(inp, out, input={"version": before_rename}))
    assert result.rows_scored == 5 and not result.failed

    # the whole table overwritten with a new schema (the feature became a date): refused the same way
    inp2 = str(tmp_path / "in2")
    _write(spark, [_row(i, "r1") for i in range(5)], inp2)
    (spark.read.format("delta").load(inp2).withColumn(FEATURES[0], F.current_date())
     .write.format("delta").mode("overwrite").option("overwriteSchema", "true").partitionBy("ds").save(inp2))
    with pytest.raises(SchemaMismatchError, match=rf"column '{FEATURES[0]}': expected float, got date"):
        _run(spark, H.job_config(inp2, str(tmp_path / "scores2")))


@pytest.mark.slow
def test_empty_input_table_and_empty_dataframe(spark, registry, tmp_path):
    from spark_scoring import score

    inp = _write(spark, [], str(tmp_path / "in"))
    out = str(tmp_path / "scores")
    result = _run(spark, H.job_config(inp, out))
    assert result.partitions == () and result.rows_in == 0 and not Path(out).exists()
    empty = spark.createDataFrame([], SCHEMA)
    assert score(empty, H.MODEL).count() == 0


HOSTILE_VALUES = ["' OR 1=1 --", "a`b``c", "line\nbreak", "'; DROP TABLE t; --", "back\\slash'",
                  "tab\there", "ünï ☃", "%_*"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("mode", ["overwrite_partitions", "merge"])
def test_injection_shaped_partition_values_and_table_names(spark, registry, tmp_path, mode):
    rows = [_row(10 * k + i, v) for k, v in enumerate(HOSTILE_VALUES) for i in range(3)]
    inp = _write(spark, rows, str(tmp_path / "in ' OR 1=1 -- `x`"))
    out = str(tmp_path / "out ' OR 1=1 --\n`y`")
    output = {"mode": mode, "keys": ["customer_id"]} if mode == "merge" else {"mode": mode}
    result = _run(spark, H.job_config(inp, out, output=output))
    assert sorted(p.partition for p in result.partitions) == sorted(HOSTILE_VALUES)
    assert H.partition_counts(spark, out, "ds") == {v: 3 for v in HOSTILE_VALUES}
    # rescoring one hostile partition touches exactly its rows
    first = {r[0]: r[1] for r in spark.read.format("delta").load(out).select("customer_id", "scoring_run_id").collect()}
    again = _run(spark, H.job_config(inp, out, output=output, force=True), partitions=["' OR 1=1 --"])
    now = {r[0]: r[1] for r in spark.read.format("delta").load(out).select("customer_id", "scoring_run_id").collect()}
    changed = {k for k in now if now[k] != first[k]}
    assert changed == {0, 1, 2} and set(now) == set(first) and set(now[k] for k in changed) == {again.run_id}
    counts = _reconciles(spark, result, out)
    H.report(f"hostile_injection_{mode}", {**counts, "partitions": len(HOSTILE_VALUES)})


@pytest.mark.slow
def test_injection_shaped_metastore_table_name_is_refused_before_any_write(spark, registry, tmp_path, capsys):
    """Spark's session catalog takes only [A-Za-z0-9_] table names, and refuses others only
    after Delta has written the table's first files into the warehouse: the job must refuse
    such a name first (ConfigError, exit 2) and leave no files and no table behind."""
    inp = _write(spark, [_row(i, "' OR 1=1 --") for i in range(3)], str(tmp_path / "in"))
    name = f"rel_{uuid.uuid4().hex[:6]}`; DROP TABLE x; --"
    warehouse = Path(spark.conf.get("spark.sql.warehouse.dir").replace("file:", "", 1))
    before = {t.name for t in spark.catalog.listTables()}
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(H.job_config(inp, name)))
    assert cli.main(["run", "--config", str(cfg_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"ConfigError: output.table {name!r}: Spark's session catalog accepts only letters" in err, err
    assert {t.name for t in spark.catalog.listTables()} == before
    prefix = name.split("`")[0]
    assert not [p for p in (warehouse.iterdir() if warehouse.exists() else []) if p.name.startswith(prefix)]


@pytest.mark.parametrize("text, words", [
    ("model: models:/demo_churn@champion\ninput: {table: t}\noutput: {table: o}\nmodle: x\n",
     "unknown key 'modle'"),
    ("model: models:/demo_churn@champion\ninput: {table: t, version: '3'}\noutput: {table: o}\n"
     "engine: {batch_size: -1}\n", "engine.batch_size: got -1; expected a number > 0"),
    ("a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
     "more than 100000 values once YAML aliases are expanded"),
    ("model: [unclosed\n", "YAML syntax error at line"),
    ("- just\n- a list\n", "the top level must be a mapping"),
])
def test_hostile_yaml_exits_2_before_spark_starts(tmp_path, text, words):
    """Through the console script: the config is refused before any JVM starts."""
    path = tmp_path / "job.yaml"
    path.write_text(text)
    started = time.monotonic()
    code, log = H.run([Path(H.PYTHON).parent / "spark-scoring", "run", "--config", path],
                      env=H.child_env(None), log=tmp_path / "cli.log", timeout=300)
    assert code == 2, log
    assert "ConfigError" in log and words in log, log
    assert "SparkContext" not in log and "ivy" not in log.lower()  # no Spark was started
    H.report("hostile_yaml_" + re.sub(r"\W+", "_", words[:24]).strip("_"),
             {"exit": code, "seconds": round(time.monotonic() - started, 1)})


_value = st.sampled_from([None, math.nan, math.inf, -math.inf]) | st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(st.tuples(_value, _value), min_size=1, max_size=25))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_bad_row_rule_splits_any_mix_exactly(spark, values):
    """quality.bad_condition flags exactly the rows with a null / NaN / inf feature."""
    from spark_scoring.job.quality import bad_condition, count_rows, feature_checks

    schema = T.StructType([T.StructField("a", T.DoubleType()), T.StructField("b", T.FloatType())])
    df = spark.createDataFrame(values, schema)
    checks = feature_checks(schema, ["a", "b"], [T.FloatType(), T.FloatType()])
    finite = lambda x: x is not None and math.isfinite(x)  # noqa: E731
    expected_bad = sum(1 for a, b in values if not (finite(a) and finite(b)))
    rows_in, bad, _ = count_rows(df, checks)
    assert (rows_in, bad) == (len(values), expected_bad)
    assert df.where(bad_condition(checks)).count() == expected_bad
