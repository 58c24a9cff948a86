"""The ``spark-scoring`` command, run in-process through ``spark_scoring.cli.main``:
exit codes, what it prints, ``--set`` and ``--partition``. Real Delta tables and
the demo registry; the SparkSession is the shared test session."""
from __future__ import annotations

import json

import pytest
import yaml
from delta.tables import DeltaTable

from spark_scoring.cli import main
from spark_scoring.demo import build_customers_table, demo_frame

PARTS = ("2026-11-26", "2026-11-27")
ROWS = 10  # per partition, 3 of them bad (null, NaN, inf)


@pytest.fixture(scope="module")
def customers(spark, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli_in") / "customers")
    build_customers_table(spark, path, demo_frame(PARTS, ROWS))
    return path


def write_config(tmp_path, customers, **changes) -> tuple[str, str]:
    out = str(tmp_path / "scores")
    cfg = {
        "model": "models:/demo_churn@champion",
        "input": {"table": customers, "partition_by": "ds"},
        "output": {"table": out, "prediction_column": "churn_probability"},
        "bad_rows": "quarantine",
        "quarantine_table": out + "_quarantine",
        "tracking": {"enabled": False},
        "drift": {"enabled": False},
    }
    for key, value in changes.items():  # None: drop the key (the default applies)
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path), out


def exists(spark, path) -> bool:
    return bool(DeltaTable.isDeltaTable(spark, path))


def test_run_exits_0_and_prints_plan_and_summary_then_nothing_to_do(spark, registry, customers, tmp_path, capsys):
    # tracking and drift at their defaults: the command as a user runs it
    config, out = write_config(tmp_path, customers, tracking=None, drift=None)

    assert main(["run", "--config", config]) == 0
    err = capsys.readouterr().err
    assert "models:/demo_churn@champion -> models:/demo_churn/1" in err
    assert "plan:      2 partition(s), 20 input rows: 2026-11-26, 2026-11-27" in err
    assert "[1/2] partition 2026-11-26: scored, in 10, scored 7, quarantined 3" in err
    assert "rows in 20 = scored 14 + quarantined 6" in err
    assert spark.read.format("delta").load(out).count() == 14

    assert main(["run", config]) == 0  # positional config works too
    err = capsys.readouterr().err
    assert "Nothing to do" in err and "2 already scored, skipped" in err
    assert spark.read.format("delta").load(out).count() == 14


def test_invalid_config_exits_2_and_names_the_key(spark, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    data = yaml.safe_load(open(config))
    data["output"]["mode"] = "upsert"
    data["engine"] = {"batch_sise": 10}
    open(config, "w").write(yaml.safe_dump(data))
    assert main(["run", "--config", config]) == 2
    err = capsys.readouterr().err
    assert "ConfigError" in err
    assert "output.mode" in err and "upsert" in err
    assert "engine.batch_sise" in err
    assert not exists(spark, out)


def test_bad_set_override_exits_2(spark, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    assert main(["run", "--config", config, "--set", "output.mod=merge"]) == 2
    err = capsys.readouterr().err
    assert "output.mod" in err and "output.mode" in err  # the typo and the suggestion
    assert main(["run"]) == 2
    assert "no config given" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert not exists(spark, out)


def test_unknown_model_alias_exits_2_and_writes_nothing(spark, registry, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    assert main(["run", "--config", config, "--set", "model=models:/demo_churn@nope"]) == 2
    err = capsys.readouterr().err
    assert "ModelResolutionError" in err and "nope" in err
    assert not exists(spark, out) and not exists(spark, out + "_scoring_runs")


def test_a_failure_before_the_first_commit_exits_2_nothing_written(spark, registry, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    assert main(["run", "--config", config, "--set", "bad_rows=fail", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "BadRowsError" in err
    assert "3 of 10 rows" in err and "tenure_months: 1, monthly_spend: 1, support_calls: 1" in err
    assert "Committed before the failure: nothing" in err
    assert not exists(spark, out)


def test_a_failure_after_a_commit_exits_1_and_says_what_was_committed(spark, registry, tmp_path, capsys):
    import pandas as pd

    path = str(tmp_path / "mixed")
    clean = demo_frame(PARTS[:1], ROWS, bad_rows=False)
    clean["customer_id"] += 100  # build_customers_table nulls ids ending in 0000000 and 0000001
    bad = demo_frame(PARTS[1:], ROWS, seed=3)
    build_customers_table(spark, path, pd.concat([clean, bad], ignore_index=True))
    config, out = write_config(tmp_path, path)
    assert main(["run", "--config", config, "--set", "bad_rows=fail", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"Committed before the failure: ['{PARTS[0]}']" in err and "BadRowsError" in err
    assert {r.ds for r in spark.read.format("delta").load(out).select("ds").distinct().collect()} == {PARTS[0]}


def test_set_and_partition(spark, registry, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    code = main([
        "run", "--config", config, "--partition", PARTS[1],
        "--set", "output.prediction_column=score",
        "--set", "output.mode=merge", "--set", "output.keys=[customer_id]",
        "--set", "model=models:/demo_churn@challenger",
    ])
    assert code == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "models:/demo_churn@challenger -> models:/demo_churn/2" in err
    assert "plan:      1 partition(s), 10 input rows: 2026-11-27" in err
    df = spark.read.format("delta").load(out)
    assert "score" in df.columns and "churn_probability" not in df.columns
    assert {(r.ds, r.model_version) for r in df.select("ds", "model_version").distinct().collect()} == {
        (PARTS[1], "2")}
    assert df.count() == 7
    history = DeltaTable.forPath(spark, out).history().collect()
    meta = json.loads(history[0]["userMetadata"])
    assert meta["partition"] == PARTS[1] and meta["models"] == {"score": "models:/demo_churn/2"}

    # --partition is repeatable; the partition already scored is skipped
    assert main(["run", "--config", config, "--partition", PARTS[0], "--partition", PARTS[1],
                 "--set", "output.prediction_column=score", "--set", "output.mode=merge",
                 "--set", "output.keys=[customer_id]", "--set", "model=models:/demo_churn@challenger"]) == 0
    err = capsys.readouterr().err
    assert f"plan:      1 partition(s), 10 input rows: {PARTS[0]}; 1 already scored, skipped" in err
    assert spark.read.format("delta").load(out).count() == 14


def test_unknown_partition_exits_2(spark, registry, customers, tmp_path, capsys):
    config, out = write_config(tmp_path, customers)
    assert main(["run", "--config", config, "--partition", "2030-01-01"]) == 2
    err = capsys.readouterr().err
    assert "2030-01-01" in err and "not found" in err
    assert not exists(spark, out)
