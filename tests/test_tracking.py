"""A job run as recorded in MLflow (read back through MlflowClient), drift exit codes, and
multi-model scoring: the input read once per write, both predictions equal to single-model scoring.

One module-scoped job (two models, three tiny partitions) feeds most tests; the drift tests then
rescore its last partition through the CLI (``force``), so they run last, in file order.
"""
from __future__ import annotations

import json
import re
import uuid

import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from spark_scoring import demo
from spark_scoring.job import stages as job_mod
from spark_scoring.cli import main
from spark_scoring.ops.drift import PLOT_QUANTILES
from spark_scoring import run_job

PARTS = ("2026-11-25", "2026-11-26", "2026-11-27")
ROWS = 40  # per partition; 3 of them are bad rows (quarantined)
MODELS = {"score_champion": "models:/demo_churn@champion", "score_challenger": "models:/demo_churn@challenger"}


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, spark, registry):
    """Run one two-model job with tracking and drift; capture the plan of each output write."""
    ws = tmp_path_factory.mktemp("tracking")
    table = demo.build_customers_table(spark, str(ws / "customers"), demo.demo_frame(PARTS, ROWS))
    output = str(ws / "scores")
    config = {
        "models": [{"uri": uri, "output_column": col} for col, uri in MODELS.items()],
        "input": {"table": table, "partition_by": "ds"},
        "output": {"table": output},
        "bad_rows": "quarantine",
        "quarantine_table": str(ws / "quarantine"),
        "tracking": {"experiment": f"test_tracking_{uuid.uuid4().hex[:8]}"},
        # tiny partitions are noisy (and under the default min_rows); drift outcomes are tested below
        "drift": {"threshold": 50.0, "min_rows": 0},
    }
    plans = []
    real_write = job_mod.write_partition

    def spy(spark_, df, ref, **kwargs):
        if getattr(ref, "name", ref) == output:
            plans.append(df._jdf.queryExecution().executedPlan().toString())
        return real_write(spark_, df, ref, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job_mod, "write_partition", spy)
        result = run_job(config, spark=spark)
    client = MlflowClient()
    return {"ws": ws, "table": table, "output": output, "config": config, "result": result,
            "plans": plans, "client": client, "run": client.get_run(result.run_id)}


def _output(spark, tracked):
    return spark.read.format("delta").load(tracked["output"])


# ------------------------------------------------------------- multi-model
def test_two_models_read_the_input_once_per_write(tracked):
    assert len(tracked["plans"]) == 1  # the three partitions are one group commit (partitions_per_commit)
    for plan in tracked["plans"]:
        scans = re.findall(r"FileScan (?:parquet|delta)", plan)
        assert len(scans) == 1, f"expected one scan of the input per write, got {len(scans)}:\n{plan}"
        # Spark plans one ArrowEvalPython node per scalar-iterator Arrow UDF, stacked on that scan
        assert plan.count("ArrowEvalPython") == 2, plan


def test_two_models_equal_single_model_scoring(spark, tracked):
    from spark_scoring import score

    out = _output(spark, tracked).where(f"ds = '{PARTS[-1]}'")
    features = out.select("customer_id", *demo.FEATURES)
    got = {r["customer_id"]: r for r in out.collect()}
    assert len(got) == ROWS - 3
    assert {v for r in got.values() for v in [tuple(sorted(r["model_versions"].items()))]} == {
        (("score_challenger", "models:/demo_churn/2"), ("score_champion", "models:/demo_churn/1"))}
    for column, version in (("score_champion", "models:/demo_churn/1"), ("score_challenger", "models:/demo_churn/2")):
        single = score(features, version, output_col="single", lineage=False).collect()
        assert len(single) == len(got)
        for row in single:
            assert row["single"] == pytest.approx(got[row["customer_id"]][column], rel=1e-6, abs=1e-9)


# ------------------------------------------------------------------ the run
def test_run_id_is_the_mlflow_run_id(spark, tracked):
    run_id = tracked["result"].run_id
    assert tracked["run"].info.run_id == run_id
    assert tracked["run"].data.tags["spark_scoring.run_id"] == run_id
    ids = {r[0] for r in _output(spark, tracked).select("scoring_run_id").distinct().collect()}
    assert ids == {run_id}
    audit = spark.read.format("delta").load(tracked["result"].audit_table)
    assert {r[0] for r in audit.select("run_id").distinct().collect()} == {run_id}


def test_mlflow_run_holds_params_tags_and_artifacts(tracked, tmp_path):
    client, run = tracked["client"], tracked["run"]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["models"] == "models:/demo_churn/1,models:/demo_churn/2"
    assert params["output_columns"] == "score_champion,score_challenger"
    assert params["input_table"] == tracked["table"]
    assert params["input_version"] == "0"
    assert params["output_table"] == tracked["output"]
    assert params["drift_reference"] == "previous" and params["drift_threshold"] == "50.0"
    tags = run.data.tags
    assert tags["spark_scoring.model.demo_churn"] == "1,2"
    assert tags["spark_scoring.output_table"] == tracked["output"]
    assert tags["spark_scoring.drift"] == "ok"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.json", "partitions.json", "partition_stats.json", "plots", "drift"} <= names
    plots = {a.path for a in client.list_artifacts(run_id, "plots")}
    assert plots == {f"plots/score_distribution_{PARTS[0]}_to_{PARTS[-1]}.png"}  # one commit: one figure
    drift = {a.path for a in client.list_artifacts(run_id, "drift")}
    assert drift == {"drift/drift_report.json", "drift/drift_report.png", "drift/drift_report.html"}
    with open(client.download_artifacts(run_id, "drift/drift_report.json", str(tmp_path))) as fh:
        report = json.load(fh)
    assert report["status"] == "ok" and report["reference"] == "previous"
    assert [p["reference"] for p in report["partitions"]] == [None, PARTS[0], PARTS[1]]
    assert report["partitions"][0]["note"] == "no input partition before ds='2026-11-25'"
    assert set(report["partitions"][2]["psi"]) == {*MODELS, *demo.FEATURES}


def test_metrics_per_partition(tracked):
    client, run_id = tracked["client"], tracked["run"].info.run_id

    def history(key):
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    assert history("rows_in") == {0: ROWS, 1: ROWS, 2: ROWS}
    assert history("rows_quarantined") == {0: 3, 1: 3, 2: 3}
    for col in MODELS:
        for stat in ("mean", "std", "p01", "p25", "p50", "p75", "p99"):
            assert set(history(f"score/{col}/{stat}")) == {0, 1, 2}, (col, stat)
        assert set(history(f"psi/{col}")) == {1, 2}  # the first partition has no previous one
    assert set(history("psi/tenure_months")) == {1, 2}
    assert set(history("drift/max_psi")) == {1, 2}
    assert tracked["run"].data.metrics["total_rows_scored"] == 3 * (ROWS - 3)


def test_score_summary_comes_from_the_committed_output(spark, tracked, tmp_path):
    import pyspark.sql.functions as F

    client, run_id = tracked["client"], tracked["run"].info.run_id
    with open(client.download_artifacts(run_id, "partition_stats.json", str(tmp_path))) as fh:
        stats = json.load(fh)
    assert [s["partition"] for s in stats] == list(PARTS)
    out = _output(spark, tracked)
    for s in stats:
        row = out.where(F.col("ds") == s["partition"]).agg(
            F.count("score_champion"), F.mean("score_champion"), F.stddev("score_champion")).head()
        summary = s["summary"]["score_champion"]
        assert summary["count"] == row[0] == ROWS - 3
        assert summary["mean"] == pytest.approx(row[1])
        assert summary["std"] == pytest.approx(row[2])
        assert summary["min"] <= summary["p01"] <= summary["p50"] <= summary["p99"] <= summary["max"]
        assert len(s["quantiles"]["score_champion"]) == len(PLOT_QUANTILES)
        history = {m.step: m.value for m in client.get_metric_history(run_id, "score/score_champion/mean")}
        assert history[s["step"]] == pytest.approx(summary["mean"])


def test_model_versions_are_tagged_in_the_registry(tracked):
    client, run_id = tracked["client"], tracked["run"].info.run_id
    for version in ("1", "2"):
        tags = client.get_model_version("demo_churn", version).tags
        assert tags["spark_scoring.last_run_id"] == run_id
        assert tags["spark_scoring.last_scored_table"] == tracked["output"]
        assert tags["spark_scoring.last_scored_partitions"] == ",".join(PARTS)
        assert tags["spark_scoring.last_experiment_id"] == tracked["run"].info.experiment_id


# ------------------------------------------------------- drift exit codes
def _rescore_last(tracked, tmp_path, *settings):
    """``spark-scoring run`` rescoring the last partition (force) against the previous one."""
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(tracked["config"]))
    return main(["run", str(path), "--partition", PARTS[-1], "--set", "force=true",
                 "--set", "drift.threshold=0.000001", "--set", "drift.min_rows=0",
                 *[x for s in settings for x in ("--set", s)]])


def _newest_run(tracked):
    client = tracked["client"]
    return client.search_runs([tracked["run"].info.experiment_id], order_by=["attributes.start_time DESC"],
                              max_results=1)[0]


def test_drift_warns_and_exits_0_with_on_drift_warn(tracked, tmp_path, capsys):
    assert _rescore_last(tracked, tmp_path, "drift.on_drift=warn") == 0
    err = capsys.readouterr().err
    assert re.search(r"drift warning: drift in partition ds='2026-11-27' against reference ds='2026-11-26': "
                     r"PSI of (score|feature) column '\w+' = \d+\.\d{3} > threshold 1e-06", err), err
    run = _newest_run(tracked)
    assert run.info.status == "FINISHED" and run.data.tags["spark_scoring.drift"] == "warn"


def test_drift_fails_the_run_after_commit_and_audit_with_on_drift_fail(spark, tracked, tmp_path, capsys):
    assert _rescore_last(tracked, tmp_path, "drift.on_drift=fail") == 1
    err = capsys.readouterr().err
    assert re.search(r"spark-scoring: error: DriftError: drift in partition ds='2026-11-27' against reference "
                     r"ds='2026-11-26': PSI of (score|feature) column '\w+' = \d+\.\d{3} > threshold 1e-06"
                     r".*The partition is committed \(output version \d+\) and audited\. Fix: .*"
                     r"drift\.on_drift=warn", err), err
    assert "Committed before the failure: ['2026-11-27']" in err
    run = _newest_run(tracked)
    assert run.info.status == "FAILED" and run.data.tags["spark_scoring.drift"] == "fail"
    failing = run.info.run_id
    audit = spark.read.format("delta").load(tracked["result"].audit_table).where(f"run_id = '{failing}'")
    assert [(r["partition"], r["status"]) for r in audit.collect()] == [(PARTS[-1], "scored")]
    written = _output(spark, tracked).where(f"ds = '{PARTS[-1]}'").select("scoring_run_id").distinct().collect()
    assert [r[0] for r in written] == [failing]


def test_drift_fails_the_run_with_mlflow_tracking_off(tracked, tmp_path, capsys):
    assert _rescore_last(tracked, tmp_path, "drift.on_drift=fail", "tracking.enabled=false") == 1
    assert "DriftError: drift in partition ds='2026-11-27'" in capsys.readouterr().err


def test_psi_is_skipped_below_min_rows_so_tiny_partitions_cannot_fail(tracked, tmp_path, capsys):
    # the same rescoring that fails with min_rows=0 passes when the sides are below min_rows
    assert _rescore_last(tracked, tmp_path, "drift.on_drift=fail", "drift.min_rows=1000000") == 0


# ------------------------------------------------ statistics in the scoring pass
def _clean_table(spark, path, rows: int) -> str:
    frame = demo.demo_frame(PARTS, rows, bad_rows=False)
    spark.createDataFrame(frame).write.format("delta").partitionBy("ds").save(str(path))
    return str(path)


def _stats_job(inp, out, path, experiment):
    return {"model": MODELS["score_champion"], "input": {"table": inp, "partition_by": "ds"},
            "output": {"table": out}, "bad_rows": "fail", "engine": {"path": path},
            "tracking": {"experiment": experiment}, "drift": {"threshold": 50.0, "min_rows": 0}}


def _stats_of_run(client, run_id, tmp_path):
    with open(client.download_artifacts(run_id, "partition_stats.json", str(tmp_path))) as fh:
        return json.load(fh)


@pytest.mark.parametrize("rows", [60, 3000], ids=["exact", "sketched"])
def test_direct_scan_computes_the_statistics_in_its_own_pass(spark, registry, tmp_path, monkeypatch, rows):
    """A direct-scan job gets each partition's summary, plot percentiles and PSI from the scoring
    pass (no Spark job reads the output back): exactly what the post-commit path computes from the
    committed output when each task holds at most 1,001 distinct values of a column, and within the
    sketch's bounds above that."""
    from spark_scoring.ops import drift

    inp = _clean_table(spark, tmp_path / "in", rows)
    calls = []
    for name in ("group_stats", "group_counts", "partition_stats"):
        real = getattr(drift, name)
        monkeypatch.setattr(drift, name, lambda *a, _n=name, _r=real, **k: calls.append(_n) or _r(*a, **k))
    client, experiment, stats = MlflowClient(), f"test_scan_stats_{uuid.uuid4().hex[:8]}", {}
    for path in ("auto", "udf"):
        calls.clear()
        out = str(tmp_path / f"scores_{path}")
        result = run_job(_stats_job(inp, out, path, experiment), spark=spark)
        engine = {json.loads(r["userMetadata"])["engine_path"] for r in
                  spark.sql(f"DESCRIBE HISTORY delta.`{out}`").where("operation = 'WRITE'").collect()}
        assert engine == ({"direct_scan"} if path == "auto" else {"udf"})
        assert calls == ([] if path == "auto" else ["group_stats", "group_counts"])
        stats[path] = _stats_of_run(client, result.run_id, tmp_path / path)
    assert [s["partition"] for s in stats["auto"]] == list(PARTS)
    for got, want in zip(stats["auto"], stats["udf"]):
        assert (got["reference"], got["drift"], sorted(got["psi"])) == (want["reference"], want["drift"], sorted(want["psi"]))
        s_got, s_want = got["summary"]["prediction"], want["summary"]["prediction"]
        assert s_got["count"] == s_want["count"] == rows
        for key in ("mean", "std", "min", "max"):
            assert s_got[key] == pytest.approx(s_want[key], rel=1e-9)
        if rows <= 1001:  # every value kept: the same numbers
            assert got["quantiles"] == want["quantiles"]
            assert got["psi"] == pytest.approx(want["psi"], abs=1e-12)
        else:
            scores = np.sort(spark.read.format("delta").load(str(tmp_path / "scores_udf"))
                             .where(f"ds = '{got['partition']}'").toPandas()["prediction"].to_numpy())
            for level, q in zip(PLOT_QUANTILES, got["quantiles"]["prediction"]):
                lo, hi = np.searchsorted(scores, q, "left") / rows, np.searchsorted(scores, q, "right") / rows
                assert lo - 1e-3 <= level <= hi + 1e-3, (level, q)
            assert got["psi"] == pytest.approx(want["psi"], abs=5e-3)
