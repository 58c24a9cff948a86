"""spark_scoring.job.run_job end to end: real Delta tables on local disk, the real
MLflow registry of the demo models (``models:/demo_churn@champion`` is v1,
``@challenger`` is v2), tiny tables (tens of rows per partition).

Expected predictions come from ``mlflow.pyfunc`` on the driver (pandas, no
Spark), never from spark_scoring itself.
"""
from __future__ import annotations

import functools
import io
import json
import shutil
import threading

import numpy as np
import pandas as pd
import pyspark.sql.functions as F
import pytest
from pyspark.testing import assertDataFrameEqual

from observers import StageHook
from spark_scoring.job import stages as job_mod
from spark_scoring.demo import FEATURES, build_customers_table, demo_frame
from spark_scoring.errors import (
    BadRowsError,
    ChangeFeedError,
    ConfigError,
    ReconciliationError,
    SchemaMismatchError,
    ScoringError,
    WriteConflictError,
)
from spark_scoring import run_job
from spark_scoring.ops.progress import Reporter

CHAMPION = "models:/demo_churn@champion"
CHALLENGER = "models:/demo_churn@challenger"
PRED = "churn_probability"
PARTS = ("2026-11-25", "2026-11-26", "2026-11-27")
ROWS = 20  # per partition; build_customers_table makes 3 of them bad (null, NaN, inf)
# build_customers_table's NaN row arrives as a null (Arrow turns pandas NaN into null)
BAD_REASONS = {"tenure_months is null", "monthly_spend is NaN", "support_calls is infinite"}
VOLATILE = ["scored_at", "scoring_run_id"]


# ----------------------------------------------------------------- helpers
def job_config(inp: str, out: str, **sections) -> dict:
    """A job dict: champion, partitioned by ds, quarantine next to the output, no MLflow run or drift;
    one commit per partition (the group commits are tested on their own below)."""
    cfg = {
        "model": CHAMPION,
        "input": {"table": inp, "partition_by": "ds"},
        "output": {"table": out, "mode": "overwrite_partitions", "prediction_column": PRED,
                   "partitions_per_commit": 1},
        "bad_rows": "quarantine",
        "quarantine_table": out + "_quarantine",
        "tracking": {"enabled": False},
        "drift": {"enabled": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def quiet() -> Reporter:
    return Reporter(quiet=True)


def read(spark, path, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    return reader.load(path)


def latest_version(spark, path) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").head()["version"])


def history(spark, path) -> list[dict]:
    rows = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    return [r.asDict(recursive=True) for r in rows]


def table_exists(spark, path) -> bool:
    from delta.tables import DeltaTable

    return bool(DeltaTable.isDeltaTable(spark, path))


def spark_frame(spark, frame: pd.DataFrame):
    """``frame`` as a Spark DataFrame, NaN kept as NaN and None as null (no Arrow)."""
    kinds = {"int64": "long", "float64": "double", "object": "string"}
    ddl = ", ".join(f"`{c}` {kinds[str(t)]}" for c, t in frame.dtypes.items())
    records = [tuple(None if v is None else (v.item() if hasattr(v, "item") else v) for v in row)
               for row in frame.itertuples(index=False)]
    return spark.createDataFrame(records, ddl)


def write_clean_input(spark, path, frame: pd.DataFrame, *, cdf: bool = False) -> str:
    """A Delta table partitioned by ds holding exactly ``frame`` (NaN stays NaN, None is null)."""
    spark_frame(spark, frame).write.format("delta").partitionBy("ds").save(path)
    if cdf:  # version 1: Change Data Feed from here on
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES (delta.enableChangeDataFeed = true)")
    return path


@functools.lru_cache(maxsize=None)
def pyfunc_model(uri: str):
    import mlflow

    return mlflow.pyfunc.load_model(uri)


def expected_predictions(frame: pd.DataFrame, uri: str = "models:/demo_churn/1") -> np.ndarray:
    x = frame[list(FEATURES)].astype(np.float64).astype(np.float32)
    out = pyfunc_model(uri).predict(x)
    return np.asarray(out).reshape(len(frame), -1)[:, 0].astype(np.float64)


def good_mask(frame: pd.DataFrame) -> np.ndarray:
    values = frame[list(FEATURES)].astype(np.float64).to_numpy()
    return np.isfinite(values).all(axis=1)


def assert_scored(output: pd.DataFrame, inputs: pd.DataFrame, *, version: str = "1") -> None:
    """Output rows = the good input rows, features unchanged, predictions = pyfunc's."""
    good = inputs[good_mask(inputs)].sort_values(["ds", "customer_id"]).reset_index(drop=True)
    out = output.sort_values(["ds", "customer_id"]).reset_index(drop=True)
    assert list(out["customer_id"]) == list(good["customer_id"]), "scored rows are not the good input rows"
    assert list(out["ds"]) == list(good["ds"])
    for f in FEATURES:
        np.testing.assert_array_equal(out[f].to_numpy(), good[f].to_numpy())
    expected = expected_predictions(good, f"models:/demo_churn/{version}")
    np.testing.assert_allclose(out[PRED].to_numpy(), expected, rtol=1e-5, atol=1e-7)
    assert set(out["model_name"]) == {"demo_churn"}
    assert set(out["model_version"]) == {version}
    assert out["scored_at"].notna().all()


def output_commits(spark, path) -> list[tuple[int, str, dict]]:
    return [(h["version"], h["operation"], json.loads(h["userMetadata"] or "{}")) for h in history(spark, path)]


def assert_commit_metadata(meta: dict, *, run_id: str, input_path: str, input_version: int,
                           partition: str, rows_in: int, rows_quarantined: int,
                           model: str = "models:/demo_churn/1") -> None:
    assert meta["models"] == {PRED: model}
    assert meta["spark_scoring_run_id"] == run_id
    assert meta["input_table"] == input_path
    assert meta["input_version"] == input_version
    assert meta["partition_column"] == "ds"
    assert meta["partition"] == partition
    assert (meta["rows_in"], meta["rows_scored"], meta["rows_quarantined"]) == (
        rows_in, rows_in - rows_quarantined, rows_quarantined)


def audit_rows(spark, out, run_id=None) -> list[dict]:
    df = read(spark, out + "_scoring_runs")
    if run_id is not None:
        df = df.where(F.col("run_id") == run_id)
    return [r.asDict() for r in df.orderBy("partition").collect()]


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def customers(spark, tmp_path_factory):
    """3 partitions x 20 rows; rows 0-2 of each are bad (null, NaN, inf). Read only."""
    path = str(tmp_path_factory.mktemp("job_in") / "customers")
    build_customers_table(spark, path, demo_frame(PARTS, ROWS))
    return path


@pytest.fixture(scope="module")
def customers_pd(spark, customers):
    return read(spark, customers).toPandas()


@pytest.fixture(scope="module")
def reference(spark, registry, customers, tmp_path_factory):
    """One uninterrupted overwrite_partitions run over ``customers``; its output is read only."""
    out = str(tmp_path_factory.mktemp("job_ref") / "scores")
    buf = io.StringIO()
    result = run_job(job_config(customers, out), spark=spark, reporter=Reporter(stream=buf))
    return out, result, buf.getvalue()


def copy_tables(src_out: str, dst_out: str) -> None:
    """Copy an output table with its audit and quarantine tables (Delta logs hold relative paths)."""
    for suffix in ("", "_scoring_runs", "_quarantine"):
        shutil.copytree(src_out + suffix, dst_out + suffix)


# ---------------------------------------------------------- the three modes
def test_overwrite_partitions_rows_lineage_metadata_and_audit(spark, customers, customers_pd, reference):
    out, result, printed = reference
    assert [p.status for p in result.partitions] == ["scored"] * 3
    assert result.models == ("models:/demo_churn/1",)
    assert result.input_version == 0
    assert (result.rows_in, result.rows_scored, result.rows_quarantined) == (60, 51, 9)
    for part in PARTS:
        assert f"{part}" in printed
    assert "plan:      3 partition(s), 60 input rows" in printed
    assert "rows in 60 = scored 51 + quarantined 9" in printed

    output = read(spark, out).toPandas()
    assert_scored(output, customers_pd)
    assert set(output["scoring_run_id"]) == {result.run_id}

    commits = output_commits(spark, out)
    assert [c[0] for c in commits] == [0, 1, 2]  # one commit per partition, nothing else
    for (version, operation, meta), part in zip(commits, PARTS):
        assert operation == "WRITE"
        assert_commit_metadata(meta, run_id=result.run_id, input_path=customers, input_version=0,
                               partition=part, rows_in=ROWS, rows_quarantined=3)
    replace = [h["operationParameters"].get("predicate") for h in history(spark, out)[1:]]
    assert all(p and PARTS[i + 1] in p for i, p in enumerate(replace)), replace

    audit = audit_rows(spark, out)
    assert [a["partition"] for a in audit] == list(PARTS)
    for a in audit:
        assert a["run_id"] == result.run_id and a["status"] == "scored"
        assert a["model_versions"] == "demo_churn/1" and a["model_uris"] == "models:/demo_churn/1"
        assert a["input_version"] == 0 and a["input_table"] == customers
        assert (a["rows_in"], a["rows_scored"], a["rows_quarantined"]) == (ROWS, ROWS - 3, 3)
        assert a["rows_in"] == a["rows_scored"] + a["rows_quarantined"]
        assert a["seconds"] > 0


def test_quarantine_reconciles_with_reason_and_partition(spark, customers, reference):
    out, result, _ = reference
    quarantine = read(spark, out + "_quarantine").toPandas()
    assert len(quarantine) == result.rows_quarantined == 9
    for part in PARTS:
        rows = quarantine[quarantine["ds"] == part]
        assert set(rows["quarantine_reason"]) == BAD_REASONS
        assert set(rows["scoring_run_id"]) == {result.run_id}
        assert set(rows["model_version"]) == {"1"}
    scored = read(spark, out).count()
    assert scored + len(quarantine) == read(spark, customers).count() == result.rows_in
    for p in result.partitions:
        assert p.rows_in == p.rows_scored + p.rows_quarantined
    # the quarantine commits carry the same userMetadata as the data commits
    metas = [m for _v, _op, m in output_commits(spark, out + "_quarantine")]
    assert sorted(m["partition"] for m in metas) == list(PARTS)
    assert all(m["spark_scoring_run_id"] == result.run_id for m in metas)


def test_rerun_of_finished_job_does_nothing_and_says_so(spark, customers, reference):
    out, result, _ = reference
    versions = {s: latest_version(spark, out + s) for s in ("", "_quarantine")}
    count = read(spark, out).count()
    buf = io.StringIO()
    again = run_job(job_config(customers, out), spark=spark, reporter=Reporter(stream=buf))
    assert again.nothing_to_do
    assert [p.status for p in again.partitions] == ["skipped"] * 3
    assert again.rows_scored == 0
    assert "Nothing to do" in buf.getvalue()
    assert {s: latest_version(spark, out + s) for s in ("", "_quarantine")} == versions
    assert read(spark, out).count() == count
    # explicit partitions at the same input version are skipped too
    again = run_job(job_config(customers, out), partitions=[PARTS[1]], spark=spark, reporter=quiet())
    assert [p.status for p in again.partitions] == ["skipped"]
    assert latest_version(spark, out) == versions[""]


def test_merge_mode_upserts_by_key_and_is_idempotent(spark, customers, customers_pd, tmp_path):
    out = str(tmp_path / "merged")
    cfg = job_config(customers, out, output={"mode": "merge", "keys": ["customer_id"]})
    first = run_job(cfg, spark=spark, reporter=quiet())
    assert [p.status for p in first.partitions] == ["scored"] * 3
    output = read(spark, out).toPandas()
    assert_scored(output, customers_pd)
    commits = output_commits(spark, out)
    assert [op for _v, op, _m in commits] == ["WRITE", "MERGE", "MERGE"]  # the first write creates it
    for (_v, _op, meta), part in zip(commits, PARTS):
        assert_commit_metadata(meta, run_id=first.run_id, input_path=customers, input_version=0,
                               partition=part, rows_in=ROWS, rows_quarantined=3)
    merge_predicates = [h["operationParameters"]["predicate"] for h in history(spark, out)[1:]]
    assert all("customer_id" in p and PARTS[i + 1] in p for i, p in enumerate(merge_predicates))

    version = latest_version(spark, out)
    again = run_job(cfg, spark=spark, reporter=quiet())
    assert again.nothing_to_do and latest_version(spark, out) == version

    # the challenger rescoring one partition updates its rows in place: no duplicates
    challenger = job_config(customers, out, model=CHALLENGER,
                            output={"mode": "merge", "keys": ["customer_id"]})
    third = run_job(challenger, partitions=[PARTS[2]], spark=spark, reporter=quiet())
    assert [p.status for p in third.partitions] == ["scored"]
    assert latest_version(spark, out) == version + 1
    after = read(spark, out).toPandas()
    assert len(after) == len(output) == after["customer_id"].nunique()
    rescored = after[after["ds"] == PARTS[2]]
    assert_scored(rescored, customers_pd[customers_pd["ds"] == PARTS[2]], version="2")
    kept = after[after["ds"] != PARTS[2]].sort_values("customer_id").reset_index(drop=True)
    before = output[output["ds"] != PARTS[2]].sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before)


def test_append_mode_and_second_append_of_a_partition_is_refused(spark, registry, tmp_path):
    inp = write_clean_input(spark, str(tmp_path / "in"), demo_frame(PARTS[:2], 10, bad_rows=False))
    out = str(tmp_path / "appended")
    cfg = job_config(inp, out, output={"mode": "append"}, bad_rows="fail", quarantine_table=None)
    first = run_job(cfg, spark=spark, reporter=quiet())
    assert [p.status for p in first.partitions] == ["scored", "scored"]
    inputs = read(spark, inp).toPandas()
    assert_scored(read(spark, out).toPandas(), inputs)
    commits = output_commits(spark, out)
    assert [op for _v, op, _m in commits] == ["WRITE", "WRITE"]
    for (_v, _op, meta), part in zip(commits, PARTS):
        assert_commit_metadata(meta, run_id=first.run_id, input_path=inp, input_version=0,
                               partition=part, rows_in=10, rows_quarantined=0)

    version = latest_version(spark, out)
    again = run_job(cfg, spark=spark, reporter=quiet())
    assert again.nothing_to_do and latest_version(spark, out) == version

    # new input rows land in partition 0; asking for that partition again would append
    # its old rows a second time: refused, nothing written
    extra = demo_frame(PARTS[:1], 2, bad_rows=False, seed=99)
    extra["customer_id"] += 500
    spark_frame(spark, extra).write.format("delta").mode("append").save(inp)
    with pytest.raises(WriteConflictError, match="already appended") as info:
        run_job(cfg, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert info.value.exit_code == 2  # nothing was committed: the scheduler may rerun after the fix
    assert latest_version(spark, out) == version
    assert read(spark, out).count() == 20
    # the default plan knows partition 0 is done for this model version
    assert run_job(cfg, spark=spark, reporter=quiet()).nothing_to_do


# ------------------------------------------------------------------ restart
class Killed(BaseException):
    """Like SIGKILL for the job: not an Exception, so nothing catches or records it."""


@pytest.mark.parametrize("crash,mode", [("kill", "overwrite_partitions"), ("error", "overwrite_partitions"),
                                        ("kill", "merge")])
def test_crash_after_commit_before_audit_then_rerun_recovers(
    spark, customers, reference, tmp_path, monkeypatch, crash, mode
):
    out = str(tmp_path / "scores")
    output = {"mode": mode, "keys": ["customer_id"]} if mode == "merge" else {"mode": mode}
    cfg = job_config(customers, out, output=output)
    seen = []

    def hook(stage, partition):
        seen.append((stage, partition))
        if stage == "after_commit" and partition == PARTS[1]:
            if crash == "kill":
                raise Killed("killed")
            # a class that means "nothing written" (exit 2); after a commit the run must exit 1
            raise SchemaMismatchError("disk on fire")

    hooked = [StageHook(hook)]
    if crash == "kill":
        with pytest.raises(Killed):
            run_job(cfg, spark=spark, reporter=quiet(), observers=hooked)
        assert [a["partition"] for a in audit_rows(spark, out)] == [PARTS[0]]  # no audit row for PARTS[1]
    else:
        with pytest.raises(SchemaMismatchError, match="disk on fire") as info:
            run_job(cfg, spark=spark, reporter=quiet(), observers=hooked)
        assert info.value.exit_code == 1
        assert info.value.job_result.partitions[-1].status == "failed"
        assert [(a["partition"], a["status"]) for a in audit_rows(spark, out)] == [
            (PARTS[0], "scored"), (PARTS[1], "failed")]
    assert ("after_commit", PARTS[2]) not in seen
    assert sorted(read(spark, out).select("ds").distinct().toPandas()["ds"]) == list(PARTS[:2])
    crashed_at = latest_version(spark, out)

    rerun = run_job(cfg, spark=spark, reporter=quiet())
    status = {p.partition: p for p in rerun.partitions}
    assert {k: p.status for k, p in status.items()} == {
        PARTS[0]: "skipped", PARTS[1]: "recovered", PARTS[2]: "scored"}
    recovered = status[PARTS[1]]
    assert (recovered.rows_in, recovered.rows_scored, recovered.rows_quarantined) == (ROWS, ROWS - 3, 3)
    assert recovered.output_version == 1
    assert latest_version(spark, out) == crashed_at + 1  # only PARTS[2] was written

    ref_out = reference[0]
    actual, expected = read(spark, out), read(spark, ref_out)
    assert actual.count() == actual.select("customer_id").distinct().count()  # no duplicates
    assertDataFrameEqual(actual.drop(*VOLATILE), expected.drop(*VOLATILE))
    assertDataFrameEqual(read(spark, out + "_quarantine").drop("quarantined_at", *VOLATILE),
                         read(spark, ref_out + "_quarantine").drop("quarantined_at", *VOLATILE))
    rows = {a["partition"]: a for a in audit_rows(spark, out, rerun.run_id)}
    assert rows[PARTS[1]]["status"] == "recovered" and rows[PARTS[2]]["status"] == "scored"
    assert rows[PARTS[1]]["rows_in"] == rows[PARTS[1]]["rows_scored"] + rows[PARTS[1]]["rows_quarantined"]
    assert run_job(cfg, spark=spark, reporter=quiet()).nothing_to_do


def test_engine_path_auto_takes_the_direct_scan_for_clean_partitions(
    spark, registry, customers_pd, tmp_path, monkeypatch
):
    """auto: clean partitions are scored by the direct Arrow scan, a partition with bad
    rows by the UDF path; the rows equal an all-UDF run and the commit says which path."""
    frame = customers_pd.copy()
    features = list(FEATURES)
    clean = frame["ds"] != PARTS[2]
    frame.loc[clean, features] = (frame.loc[clean, features].astype(np.float64)
                                  .replace([np.inf, -np.inf], np.nan).fillna(0.25))
    inp = write_clean_input(spark, str(tmp_path / "customers"), frame)
    from spark_scoring.engine import direct_scan

    planned, plan_scan = [], direct_scan.plan_scan
    monkeypatch.setattr(direct_scan, "plan_scan", lambda *a, **k: planned.append(k) or plan_scan(*a, **k))
    runs = {}
    for path in ("auto", "udf"):
        out = str(tmp_path / f"scores_{path}")
        runs[path] = run_job(job_config(inp, out, engine={"path": path}), spark=spark, reporter=quiet())
        if path == "auto":  # each partition's log replay serves its count and its scoring
            assert [k["partition_filter"] for k in planned] == [{"ds": [p]} for p in PARTS]
        assert (runs[path].rows_in, runs[path].rows_quarantined) == (3 * ROWS, 3)
        commits = output_commits(spark, out)
        used = {m["partition"]: m["engine_path"] for _v, _op, m in commits}
        if path == "auto":
            assert used[PARTS[0]] == used[PARTS[1]] == "direct_scan"
            assert used[PARTS[2]].startswith("udf (the partition has bad rows")
        else:
            assert set(used.values()) == {"udf"}
    auto = read(spark, str(tmp_path / "scores_auto")).drop(*VOLATILE)
    udf = read(spark, str(tmp_path / "scores_udf")).drop(*VOLATILE)
    assert auto.columns == udf.columns
    assertDataFrameEqual(auto, udf)
    assert_scored(read(spark, str(tmp_path / "scores_auto")).toPandas(), frame)


def test_engine_arrow_batch_rows_applies_while_each_partition_scores(
    spark, registry, customers, monkeypatch, tmp_path
):
    from spark_scoring.session import ARROW_BATCH_CONFS

    before = {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS}
    seen = []
    hook = StageHook(lambda stage, part: seen.append((stage, {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS})))
    cfg = job_config(customers, str(tmp_path / "out"), engine={"arrow_batch_rows": 2048})
    run_job(cfg, partitions=list(PARTS[:2]), spark=spark, reporter=quiet(), observers=[hook])
    during = [conf for stage, conf in seen if stage == "after_commit"]
    assert during == [dict.fromkeys(ARROW_BATCH_CONFS, "2048")] * 2
    after_audit = [conf for stage, conf in seen if stage == "after_audit"]
    assert after_audit == [before] * 2  # restored between partitions and after the run
    assert {k: spark.conf.get(k, None) for k in ARROW_BATCH_CONFS} == before


def test_engine_path_auto_keeps_catalog_tables_on_the_udf_path(spark, registry, tmp_path):
    """A catalog may forbid path reads of its tables (Unity Catalog): auto reads them
    through the catalog; engine.path: direct_scan reads their files on request."""
    inp = write_clean_input(spark, str(tmp_path / "in"), demo_frame(PARTS[:1], 10, bad_rows=False))
    spark.sql(f"CREATE TABLE engine_path_src USING DELTA LOCATION '{inp}'")
    try:
        used = {}
        for path in ("auto", "direct_scan"):
            out = str(tmp_path / f"out_{path}")
            result = run_job(job_config("engine_path_src", out, engine={"path": path}), spark=spark, reporter=quiet())
            assert (result.rows_in, result.rows_scored) == (10, 10)
            used[path] = output_commits(spark, out)[-1][2]["engine_path"]
        assert used["auto"].startswith("udf (the input is a catalog table")
        assert used["direct_scan"] == "direct_scan"
        assertDataFrameEqual(read(spark, str(tmp_path / "out_auto")).drop(*VOLATILE),
                             read(spark, str(tmp_path / "out_direct_scan")).drop(*VOLATILE))
    finally:
        spark.sql("DROP TABLE IF EXISTS engine_path_src")


def test_challenger_rescores_one_partition_atomically(spark, customers, customers_pd, reference, tmp_path):
    out = str(tmp_path / "scores")
    copy_tables(reference[0], out)
    before = read(spark, out).toPandas()
    version = latest_version(spark, out)

    cfg = job_config(customers, out, model=CHALLENGER)
    result = run_job(cfg, partitions=[PARTS[1]], spark=spark, reporter=quiet())
    assert [(p.partition, p.status) for p in result.partitions] == [(PARTS[1], "scored")]
    assert result.models == ("models:/demo_churn/2",)
    assert latest_version(spark, out) == version + 1  # one commit
    last = history(spark, out)[-1]
    assert last["operation"] == "WRITE" and PARTS[1] in last["operationParameters"]["predicate"]
    meta = json.loads(last["userMetadata"])
    assert_commit_metadata(meta, run_id=result.run_id, input_path=customers, input_version=0,
                           partition=PARTS[1], rows_in=ROWS, rows_quarantined=3,
                           model="models:/demo_churn/2")

    after = read(spark, out).toPandas()
    assert_scored(after[after["ds"] == PARTS[1]], customers_pd[customers_pd["ds"] == PARTS[1]], version="2")
    assert set(after.loc[after["ds"] == PARTS[1], "scoring_run_id"]) == {result.run_id}
    others = lambda df: df[df["ds"] != PARTS[1]].sort_values("customer_id").reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(others(after), others(before))
    # the version before the rescoring still has champion scores for that partition
    old = read(spark, out, version).where(F.col("ds") == PARTS[1]).select("model_version").distinct()
    assert [r[0] for r in old.collect()] == ["1"]


# ---------------------------------------------------------------- bad rows
def test_clean_rescore_clears_the_partitions_old_quarantine_rows(spark, registry, customers_pd, tmp_path):
    """A partition whose bad rows were fixed upstream is rescored clean: its earlier
    quarantine rows go, so output + quarantine still equals the input."""
    inp, out = str(tmp_path / "customers"), str(tmp_path / "scores")
    write_clean_input(spark, inp, customers_pd)
    cfg = job_config(inp, out)
    first = run_job(cfg, spark=spark, reporter=quiet())
    assert first.rows_quarantined == 9

    fixed = customers_pd[customers_pd["ds"] == PARTS[0]].copy()
    features = list(FEATURES)
    fixed[features] = fixed[features].astype(np.float64).replace([np.inf, -np.inf], np.nan).fillna(0.5)
    spark_frame(spark, fixed).write.format("delta").mode("overwrite") \
        .option("replaceWhere", f"ds = '{PARTS[0]}'").save(inp)

    rerun = run_job(cfg, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert [(p.partition, p.status, p.rows_quarantined) for p in rerun.partitions] == [(PARTS[0], "scored", 0)]
    quarantine = read(spark, out + "_quarantine").toPandas()
    assert sorted(set(quarantine["ds"])) == list(PARTS[1:])
    assert len(quarantine) == 6
    assert read(spark, out).count() + len(quarantine) == read(spark, inp).count() == 3 * ROWS
    # the clearing commit is stamped like every other one
    meta = output_commits(spark, out + "_quarantine")[-1][2]
    assert (meta["partition"], meta["rows_quarantined"], meta["spark_scoring_run_id"]) == (PARTS[0], 0, rerun.run_id)
    # once clear, a clean rescore (new input version) writes no quarantine commit at all
    version = latest_version(spark, out + "_quarantine")
    spark_frame(spark, fixed).write.format("delta").mode("overwrite") \
        .option("replaceWhere", f"ds = '{PARTS[0]}'").save(inp)
    again = run_job(cfg, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert [p.status for p in again.partitions] == ["scored"]
    assert latest_version(spark, out + "_quarantine") == version


def test_commit_that_does_not_reconcile_fails_and_stays_failed_until_forced(
    spark, customers, customers_pd, tmp_path, monkeypatch
):
    """A commit that wrote a different row count than was counted fails its run; a
    plain rerun must not report it as recovered; force: true rescores it."""
    out = str(tmp_path / "scores")
    cfg = job_config(customers, out)
    counted = job_mod.count

    def one_row_too_many(work):  # the count disagrees with what the write will see
        return {text: (rows_in + 1, bad, per) for text, (rows_in, bad, per) in counted(work).items()}

    monkeypatch.setattr(job_mod, "count", one_row_too_many)
    with pytest.raises(ReconciliationError, match=rf"ds='{PARTS[0]}'.*scored 18.*wrote 17 rows") as first:
        run_job(cfg, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert first.value.exit_code == 1
    monkeypatch.undo()

    with pytest.raises(ReconciliationError, match="force: true"):
        run_job(cfg, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert "recovered" not in {a["status"] for a in audit_rows(spark, out)}

    forced = run_job({**cfg, "force": True}, partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert [(p.status, p.rows_in, p.rows_scored) for p in forced.partitions] == [("scored", ROWS, ROWS - 3)]
    assert_scored(read(spark, out).toPandas(), customers_pd[customers_pd["ds"] == PARTS[0]])


def test_bad_rows_fail_names_columns_and_counts_and_writes_nothing_for_the_partition(
    spark, registry, tmp_path
):
    frame = demo_frame(PARTS[:2], 10, bad_rows=False)
    second = frame.index[frame["ds"] == PARTS[1]]
    frame.loc[second[1], "monthly_spend"] = np.nan
    frame.loc[second[2], "support_calls"] = np.inf
    frame.loc[second[3], "monthly_spend"] = -np.inf
    inp = write_clean_input(spark, str(tmp_path / "in"), frame)
    out = str(tmp_path / "out")
    cfg = job_config(inp, out, bad_rows="fail", quarantine_table=None)
    with pytest.raises(BadRowsError, match=r"3 of 10 rows .*\(monthly_spend: 2, support_calls: 1\)") as info:
        run_job(cfg, spark=spark, reporter=quiet())
    message = str(info.value)
    assert f"ds='{PARTS[1]}'" in message and "nothing was written for this partition" in message
    assert f"Committed before the failure: ['{PARTS[0]}']" in message
    assert info.value.exit_code == 1
    written = read(spark, out).toPandas()
    assert set(written["ds"]) == {PARTS[0]} and len(written) == 10
    assert latest_version(spark, out) == 0
    assert [(a["partition"], a["status"]) for a in audit_rows(spark, out)] == [
        (PARTS[0], "scored"), (PARTS[1], "failed")]


def test_string_feature_with_unparsable_numbers_goes_to_quarantine(spark, registry, tmp_path):
    col = "monthly.spend's"  # a dot and a quote: still one column, quoted wherever it reaches SQL
    frame = demo_frame(PARTS[:1], 12, bad_rows=False).rename(columns={"monthly_spend": col})
    spend = [repr(float(v)) for v in frame[col]]
    spend[3], spend[4], spend[5], spend[6] = "abc", "", "1e999", None
    spend[7] = " 1.25 "  # whitespace around a number is fine
    frame[col] = pd.Series(spend, dtype=object)
    frame.loc[8, "satisfaction"] = np.nan  # a real NaN in a double column
    inp = write_clean_input(spark, str(tmp_path / "in"), frame)
    assert dict(read(spark, inp).dtypes)[col] == "string"
    out = str(tmp_path / "out")
    features = [col if f == "monthly_spend" else f for f in FEATURES]  # input column -> model input, in order
    result = run_job(job_config(inp, out, features=features), spark=spark, reporter=quiet())
    (part,) = result.partitions
    assert (part.rows_in, part.rows_scored, part.rows_quarantined) == (12, 7, 5)

    quarantine = read(spark, out + "_quarantine").toPandas().sort_values("customer_id")
    assert dict(zip(quarantine["customer_id"], quarantine["quarantine_reason"])) == {
        3: f"{col}=abc is not a finite float",
        4: f"{col}= is not a finite float",
        5: f"{col}=1e999 is not a finite float",
        6: f"{col} is null",
        8: "satisfaction is NaN",
    }
    assert set(quarantine["ds"]) == {PARTS[0]}
    assert dict(read(spark, out + "_quarantine").dtypes)[col] == "string"

    output = read(spark, out).toPandas().sort_values("customer_id").reset_index(drop=True)
    good = frame.drop(index=[3, 4, 5, 6, 8]).reset_index(drop=True)
    assert list(output["customer_id"]) == list(good["customer_id"])
    assert list(output[col]) == list(good[col])  # the input column is kept as it was
    parsed = good.rename(columns={col: "monthly_spend"})
    parsed["monthly_spend"] = parsed["monthly_spend"].str.strip().astype(np.float64)
    np.testing.assert_allclose(output[PRED], expected_predictions(parsed), rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- injection
HOSTILE = ["x' OR '1'='1", "' OR 1=1 --", "back`tick``s", "new\nline", "[/bold] [red]markup"]


@pytest.mark.parametrize("mode", ["overwrite_partitions", "merge"])
def test_injection_shaped_partition_values_touch_only_their_partition(spark, registry, tmp_path, mode):
    parts = ["plain", *HOSTILE]
    frame = demo_frame(tuple(parts), 6, bad_rows=False)
    frame["customer_id"] = frame.groupby("ds").cumcount()  # the same keys in every partition
    inp = write_clean_input(spark, str(tmp_path / "in"), frame)
    out = str(tmp_path / "out")
    cfg = job_config(inp, out, bad_rows="fail", quarantine_table=None,
                     output={"mode": mode, "keys": ["customer_id"]})
    printed = io.StringIO()
    result = run_job(cfg, partitions=parts, spark=spark, reporter=Reporter(stream=printed))  # "plain" first
    assert [(p.partition, p.status) for p in result.partitions] == [(p, "scored") for p in parts]
    assert latest_version(spark, out) == len(parts) - 1
    assert "[/bold] [red]markup: scored" in printed.getvalue()  # printed as text, not as rich markup

    def by_partition(version):
        df = read(spark, out, version).drop("scored_at").toPandas()
        return {k: g.sort_values("customer_id").reset_index(drop=True) for k, g in df.groupby("ds")}

    previous = {}
    for version, part in enumerate(parts):
        now = by_partition(version)
        assert set(now) == set(parts[: version + 1]), f"commit {version} for {part!r} changed the partition set"
        for other, rows in previous.items():
            pd.testing.assert_frame_equal(now[other], rows, obj=f"partition {other!r} after commit of {part!r}")
        assert len(now[part]) == 6
        previous = now
    assert_scored(read(spark, out).toPandas(), frame)

    # rescoring one hostile partition with the challenger touches only it
    challenger = {**cfg, "model": CHALLENGER}
    target = HOSTILE[0]
    rescored = run_job(challenger, partitions=[target], spark=spark, reporter=quiet())
    assert [p.status for p in rescored.partitions] == ["scored"]
    after = by_partition(len(parts))
    assert set(after[target]["model_version"]) == {"2"}
    for other in parts:
        if other != target:
            pd.testing.assert_frame_equal(after[other], previous[other])
    audit = {a["partition"] for a in audit_rows(spark, out)}
    assert audit == set(parts)


# ---------------------------------------------------------------- concurrency
@pytest.mark.parametrize("mode", ["merge", "overwrite_partitions"])
def test_concurrent_runs_on_disjoint_partitions_both_succeed(spark, customers, customers_pd, tmp_path, mode):
    out = str(tmp_path / "out")
    cfg = job_config(customers, out, output={"mode": mode, "keys": ["customer_id"]})
    barrier = threading.Barrier(2)
    results, errors = {}, {}

    def worker(part):
        try:
            barrier.wait(timeout=60)
            results[part] = run_job(cfg, partitions=[part], spark=spark, reporter=quiet())
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors[part] = exc

    threads = [threading.Thread(target=worker, args=(p,)) for p in PARTS[:2]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert {p: [x.status for x in r.partitions] for p, r in results.items()} == {
        PARTS[0]: ["scored"], PARTS[1]: ["scored"]}
    output = read(spark, out).toPandas()
    assert_scored(output, customers_pd[customers_pd["ds"].isin(PARTS[:2])])
    assert {p: set(output.loc[output["ds"] == p, "scoring_run_id"]) for p in PARTS[:2]} == {
        p: {results[p].run_id} for p in PARTS[:2]}
    assert len(read(spark, out + "_quarantine").toPandas()) == 6
    audit = audit_rows(spark, out)
    assert sorted((a["partition"], a["status"]) for a in audit) == [(p, "scored") for p in PARTS[:2]]


# ---------------------------------------------------------------- changes
def changes_config(inp, out):
    return job_config(inp, out, input={"mode": "changes"}, output={"mode": "merge", "keys": ["customer_id"]})


def test_changes_mode_scores_only_inserted_and_updated_rows(spark, registry, tmp_path):
    frame = demo_frame(PARTS[:2], 10, bad_rows=False)
    frame.loc[frame["customer_id"] == 10_000_005, "satisfaction"] = np.nan  # quarantined by the first run
    inp = write_clean_input(spark, str(tmp_path / "in"), frame, cdf=True)
    out = str(tmp_path / "out")
    cfg = changes_config(inp, out)
    first = run_job(cfg, spark=spark, reporter=quiet())
    assert [(p.partition, p.status, p.rows_in, p.rows_quarantined) for p in first.partitions] == [
        (PARTS[0], "scored", 10, 0), (PARTS[1], "scored", 10, 1)]
    assert_scored(read(spark, out).toPandas(), read(spark, inp).toPandas())

    spark.sql(f"UPDATE delta.`{inp}` SET monthly_spend = monthly_spend + 3, "
              "satisfaction = -satisfaction WHERE customer_id IN (1, 2)")
    extra = demo_frame(PARTS[1:2], 3, bad_rows=False, seed=5)
    extra["customer_id"] = [10_000_100, 10_000_101, 10_000_102]
    extra.loc[2, "tenure_months"] = np.nan  # one new row is bad
    spark_frame(spark, extra).write.format("delta").mode("append").save(inp)

    second = run_job(cfg, spark=spark, reporter=quiet())
    assert [(p.partition, p.status, p.rows_in, p.rows_scored, p.rows_quarantined) for p in second.partitions] == [
        (PARTS[0], "scored", 2, 2, 0), (PARTS[1], "scored", 3, 2, 1)]
    audit = {a["partition"]: a for a in audit_rows(spark, out, second.run_id) if a["partition"]}
    assert {p: (a["rows_in"], a["input_mode"]) for p, a in audit.items()} == {
        PARTS[0]: (2, "changes"), PARTS[1]: (3, "changes")}

    inputs = read(spark, inp).toPandas()
    output = read(spark, out).toPandas()
    assert_scored(output, inputs)  # updated rows carry new predictions, new rows are there
    by_run = output.groupby("scoring_run_id")["customer_id"].apply(set).to_dict()
    assert by_run[second.run_id] == {1, 2, 10_000_100, 10_000_101}
    assert len(by_run[first.run_id]) == 17
    # the quarantine keeps the first run's bad row next to the new one
    quarantine = read(spark, out + "_quarantine").toPandas()
    assert sorted(zip(quarantine["customer_id"], quarantine["scoring_run_id"])) == [
        (10_000_005, first.run_id), (10_000_102, second.run_id)]

    version = latest_version(spark, out)
    third = run_job(cfg, spark=spark, reporter=quiet())
    assert third.partitions == () and third.nothing_to_do
    assert latest_version(spark, out) == version


def test_changes_mode_failure_midway_does_not_lose_changes(spark, registry, tmp_path, monkeypatch):
    inp = write_clean_input(spark, str(tmp_path / "in"), demo_frame(PARTS[:2], 6, bad_rows=False), cdf=True)
    out = str(tmp_path / "out")
    cfg = changes_config(inp, out)
    run_job(cfg, spark=spark, reporter=quiet())
    spark.sql(f"UPDATE delta.`{inp}` SET monthly_spend = monthly_spend + 4 "
              "WHERE customer_id IN (1, 10000001)")  # one row in each partition

    real_write = job_mod.write_partition

    def failing_write(spark_, df, ref, **kw):
        if kw["partition_value"] == PARTS[1] and ref.name == out:
            raise SchemaMismatchError("executor lost")  # exit 2 by class, but PARTS[0] is committed
        return real_write(spark_, df, ref, **kw)

    monkeypatch.setattr(job_mod, "write_partition", failing_write)
    with pytest.raises(ScoringError, match="executor lost") as info:
        run_job(cfg, spark=spark, reporter=quiet())
    assert info.value.exit_code == 1
    assert f"Committed before the failure: ['{PARTS[0]}']" in str(info.value)
    monkeypatch.setattr(job_mod, "write_partition", real_write)

    rerun = run_job(cfg, spark=spark, reporter=quiet())
    assert {p.partition: p.status for p in rerun.partitions} == {PARTS[0]: "recovered", PARTS[1]: "scored"}
    assert_scored(read(spark, out).toPandas(), read(spark, inp).toPandas())


@pytest.mark.parametrize("cause", ["cdf_not_enabled", "change_data_vacuumed"])
def test_changes_mode_change_feed_error_names_the_fix(spark, registry, tmp_path, cause):
    cdf = cause != "cdf_not_enabled"
    inp = write_clean_input(spark, str(tmp_path / "in"), demo_frame(PARTS[:1], 5, bad_rows=False), cdf=cdf)
    out = str(tmp_path / "out")
    cfg = changes_config(inp, out)
    run_job(cfg, spark=spark, reporter=quiet())
    spark.sql(f"UPDATE delta.`{inp}` SET monthly_spend = 0 WHERE customer_id = 1")
    if cause == "change_data_vacuumed":
        key = "spark.databricks.delta.retentionDurationCheck.enabled"
        spark.conf.set(key, "false")
        try:
            spark.sql(f"VACUUM delta.`{inp}` RETAIN 0 HOURS").collect()
        finally:
            spark.conf.unset(key)
        expected = "retention"
    else:
        expected = "Change Data Feed was not enabled"
    version = latest_version(spark, out)
    with pytest.raises(ChangeFeedError, match=expected) as info:
        run_job(cfg, spark=spark, reporter=quiet())
    assert "snapshot" in str(info.value)  # the fix: a full snapshot run
    assert info.value.exit_code == 2
    assert latest_version(spark, out) == version


def test_changes_mode_refuses_cli_partitions_before_reading(spark, registry, customers, tmp_path):
    out = str(tmp_path / "out")
    with pytest.raises(ConfigError, match=r"cannot be used with input\.mode: changes.*input\.mode=snapshot") as info:
        run_job(changes_config(customers, out), partitions=[PARTS[0]], spark=spark, reporter=quiet())
    assert info.value.exit_code == 2
    assert not table_exists(spark, out)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("case", ["missing_partition", "missing_input", "unknown_feature", "output_partitioned",
                                  "quarantine_partitioned"])
def test_validation_errors_before_any_write(spark, registry, customers, tmp_path, case):
    out = str(tmp_path / "out")
    cfg = job_config(customers, out)
    partitions = None
    if case == "missing_partition":
        partitions, error, match = ["2031-01-01"], ConfigError, r"partition\(s\) \['2031-01-01'\] not found"
    elif case == "missing_input":
        cfg = job_config(str(tmp_path / "nope"), out)
        error, match = ConfigError, "input.table .* no Delta table there"
    elif case == "unknown_feature":
        cfg = job_config(customers, out, features=[*FEATURES[:-1], "satisfactoin"])
        error, match = SchemaMismatchError, r"needs feature column\(s\) \['satisfactoin'\]"
    elif case == "output_partitioned":
        spark.createDataFrame([(1, "x")], "customer_id long, ds string").write.format("delta").save(out)
        error = SchemaMismatchError
        match = r"output table .* partitioned by \[\], but the input is partitioned by \['ds'\]"
    else:  # found before partitions are scored, not at the first bad row
        quarantine = out + "_quarantine"
        spark.createDataFrame([(1, "x")], "customer_id long, ds string").write.format("delta").save(quarantine)
        error, match = SchemaMismatchError, r"quarantine_table .* partitioned by \[\], but the input"
    with pytest.raises(error, match=match) as info:
        run_job(cfg, partitions=partitions, spark=spark, reporter=quiet())
    assert info.value.exit_code == 2
    if case == "output_partitioned":
        assert latest_version(spark, out) == 0 and read(spark, out).count() == 1
    else:
        assert not table_exists(spark, out)
    assert not table_exists(spark, out + "_scoring_runs")
    if case == "quarantine_partitioned":
        assert latest_version(spark, out + "_quarantine") == 0
    else:
        assert not table_exists(spark, out + "_quarantine")


# ------------------------------------------------------------------ group commits
def test_a_group_commit_equals_per_partition_commits_and_audits_each_partition(
    spark, customers, customers_pd, reference, tmp_path
):
    out_ref, _ref_result, _printed = reference
    out = str(tmp_path / "grouped")
    cfg = job_config(customers, out, output={"partitions_per_commit": 32})
    result = run_job(cfg, spark=spark, reporter=quiet())
    assert [(p.partition, p.status) for p in result.partitions] == [(p, "scored") for p in PARTS]
    commits = output_commits(spark, out)
    assert len(commits) == 1 and commits[0][1] == "WRITE"  # one commit for the three partitions
    meta = commits[0][2]
    assert meta["partitions"] == {p: {"rows_in": ROWS, "rows_scored": ROWS - 3, "rows_quarantined": 3} for p in PARTS}
    assert (meta["rows_in"], meta["rows_quarantined"]) == (3 * ROWS, 9)
    assert len([h for h in history(spark, out + "_quarantine")]) == 1  # the quarantine too: one commit
    assertDataFrameEqual(read(spark, out).drop(*VOLATILE), read(spark, out_ref).drop(*VOLATILE))
    audit = audit_rows(spark, out)
    assert [(a["partition"], a["status"], a["output_version"]) for a in audit] == [(p, "scored", 0) for p in PARTS]
    assert run_job(cfg, spark=spark, reporter=quiet()).nothing_to_do


def test_a_group_killed_after_its_commit_is_recovered_whole_on_rerun(spark, customers, reference, tmp_path):
    out_ref, _r, _p = reference
    out = str(tmp_path / "grouped")
    cfg = job_config(customers, out, output={"partitions_per_commit": 2})

    def kill(stage, part):
        if stage == "after_commit" and part == PARTS[1]:
            raise Killed("killed")  # the second partition of the first group, after the group's commit

    with pytest.raises(Killed):
        run_job(cfg, spark=spark, reporter=quiet(), observers=[StageHook(kill)])
    assert not table_exists(spark, out + "_scoring_runs")  # killed before the group's audit rows
    assert sorted(read(spark, out).select("ds").distinct().toPandas()["ds"]) == list(PARTS[:2])
    rerun = run_job(cfg, spark=spark, reporter=quiet())
    assert [(p.partition, p.status) for p in rerun.partitions] == [
        (PARTS[0], "recovered"), (PARTS[1], "recovered"), (PARTS[2], "scored")]
    assert [(p.rows_in, p.rows_quarantined) for p in rerun.partitions] == [(ROWS, 3)] * 3
    assertDataFrameEqual(read(spark, out).drop(*VOLATILE), read(spark, out_ref).drop(*VOLATILE))


def test_a_rerun_that_groups_differently_still_recovers_what_a_group_committed(spark, customers, tmp_path):
    out = str(tmp_path / "grouped")
    cfg = job_config(customers, out, output={"partitions_per_commit": 2})
    def kill(stage, part):
        if stage == "after_commit":
            raise Killed("killed")

    with pytest.raises(Killed):
        run_job(cfg, partitions=list(PARTS[:2]), spark=spark, reporter=quiet(), observers=[StageHook(kill)])
    # the same partitions, grouped with a third one this time: the two committed ones are recovered
    rerun = run_job({**cfg, "output": {**cfg["output"], "partitions_per_commit": 3}}, spark=spark, reporter=quiet())
    assert [(p.partition, p.status) for p in rerun.partitions] == [
        (PARTS[0], "recovered"), (PARTS[1], "recovered"), (PARTS[2], "scored")]
    assert [len(output_commits(spark, out))] == [2]


def test_bad_rows_fail_in_a_group_commit_the_partitions_before_it(spark, registry, tmp_path):
    frame = demo_frame(PARTS, 10, bad_rows=False)
    third = frame.index[frame["ds"] == PARTS[1]]
    frame.loc[third[1], "monthly_spend"] = np.nan
    inp = write_clean_input(spark, str(tmp_path / "in"), frame)
    out = str(tmp_path / "out")
    cfg = job_config(inp, out, bad_rows="fail", quarantine_table=None, output={"partitions_per_commit": 32})
    with pytest.raises(BadRowsError, match=rf"ds='{PARTS[1]}'.*1 of 10 rows") as info:
        run_job(cfg, spark=spark, reporter=quiet())
    assert f"Committed before the failure: ['{PARTS[0]}']" in str(info.value) and info.value.exit_code == 1
    assert set(read(spark, out).toPandas()["ds"]) == {PARTS[0]}
    assert [(a["partition"], a["status"]) for a in audit_rows(spark, out)] == [(PARTS[0], "scored"),
                                                                               (PARTS[1], "failed")]


# ------------------------------------------------------- one pass per group
@pytest.mark.parametrize("stats", ["true", "claim_clean"])
def test_a_clean_direct_scan_partition_is_counted_by_its_scoring_pass(
    spark, registry, tmp_path, monkeypatch, stats
):
    """No count pass before a direct-scan commit whose files' Delta statistics prove the features
    clean; the partition whose statistics show a NaN is counted, quarantined and scored as before.
    ``claim_clean``: statistics that wrongly claim every file clean; the scan's task then meets the
    bad row, its pass fails without committing anything, and the partition goes the usual way."""
    from spark_scoring.engine import scan_log

    if stats == "claim_clean":
        monkeypatch.setattr(scan_log, "_clean_columns",
                            lambda adds, columns, physical: [frozenset(columns)] * adds.num_rows)
    frame = demo_frame(PARTS, 10, bad_rows=False)
    frame.loc[frame.index[frame["ds"] == PARTS[2]][3], "monthly_spend"] = np.nan
    inp = write_clean_input(spark, str(tmp_path / "in"), frame)
    out = str(tmp_path / "out")
    counted, commits_tried = [], []
    real_count, real_commit = job_mod.count, job_mod._commit
    monkeypatch.setattr(job_mod, "count", lambda work: counted.append(work.label) or real_count(work))
    monkeypatch.setattr(job_mod, "_commit", lambda ctx, units, *a, **k: commits_tried.append(units[0].text)
                        or real_commit(ctx, units, *a, **k))
    result = run_job(job_config(inp, out), spark=spark, reporter=quiet())
    assert counted == [PARTS[2]]
    assert commits_tried == list(PARTS) + ([PARTS[2]] if stats == "claim_clean" else [])
    assert (result.rows_in, result.rows_scored, result.rows_quarantined) == (30, 29, 1)
    commits = output_commits(spark, out)
    assert [m["partition"] for _v, _op, m in commits] == list(PARTS)  # a failed pass commits nothing
    assert [m["engine_path"].split(" ")[0] for _v, _op, m in commits] == ["direct_scan", "direct_scan", "udf"]
    assert [(a["partition"], a["status"], a["rows_in"]) for a in audit_rows(spark, out)] == [
        (p, "scored", 10) for p in PARTS]
    assert read(spark, out + "_quarantine").count() == 1
    assert_scored(read(spark, out).toPandas(), frame)


def test_a_single_pass_that_scores_other_rows_than_the_log_lists_fails_the_partition(
    spark, registry, tmp_path, monkeypatch
):
    from spark_scoring.job import sources

    inp = write_clean_input(spark, str(tmp_path / "in"), demo_frame(PARTS[:1], 10, bad_rows=False))
    real = sources.input_partition_counts
    monkeypatch.setattr(sources, "input_partition_counts", lambda plan: {k: v + 1 for k, v in real(plan).items()})
    with pytest.raises(ReconciliationError, match=rf"did not score the rows its Delta log lists \(ds='{PARTS[0]}': "
                                                   r"11 in the input's log, 10 scored\)") as info:
        run_job(job_config(inp, str(tmp_path / "out")), spark=spark, reporter=quiet())
    assert info.value.exit_code == 1  # the commit exists: a scheduler must not read "nothing written"
