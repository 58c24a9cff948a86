"""``spark-scoring report``: the terminal summary and the HTML page, whose plots must exist and be PNGs."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from spark_scoring import demo
from spark_scoring.cli import main
from spark_scoring.job import run_job
from spark_scoring.report import comparison_figure, distribution_figure, drift_figure, report_command, save_png

PARTS = ("2026-11-26", "2026-11-27")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def job(tmp_path_factory, spark, registry):
    """A two-partition single-model job with tracking (drift checked on the second partition)."""
    ws = tmp_path_factory.mktemp("report")
    table = demo.build_customers_table(spark, str(ws / "customers"), demo.demo_frame(PARTS, 30))
    config = demo.demo_config(ws)
    config["input"]["table"] = table
    config["tracking"] = {"experiment": f"test_report_{uuid.uuid4().hex[:8]}"}
    config["drift"] = {"min_rows": 0}  # 30-row partitions: below the default min_rows
    config_path = ws / "job.yaml"
    config_path.write_text(yaml.safe_dump(config))
    result = run_job(config, spark=spark)
    return {"ws": ws, "config_path": config_path, "result": result}


def _assert_png(path: Path) -> None:
    import matplotlib.image

    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_html_report_references_existing_valid_pngs(job, tmp_path, capsys):
    run_id = job["result"].run_id
    page = report_command(run_id, out=str(tmp_path / "rep"))
    assert page == tmp_path / "rep" / "index.html"
    text = page.read_text()
    images = re.findall(r"<img src='([^']+)'", text)
    assert sorted(images) == sorted([f"plots/score_distribution_{p}.png" for p in PARTS]
                                    + ["drift/drift_report.png"])
    for src in images:
        assert not Path(src).is_absolute() and ".." not in src
        _assert_png(page.parent / src)
    # params, metrics per partition and the drift table are on the page
    for needle in ("<h2>Params</h2>", "models:/demo_churn/1", "<h2>Metrics per partition</h2>",
                   "score/churn_probability/p50", "psi/churn_probability", "<h2>Drift</h2>",
                   f"<td>{PARTS[1]}</td><td>{PARTS[0]}</td><td>churn_probability (score)</td>",
                   f"note</th></tr></thead><tbody><tr><td>{PARTS[0]}</td><td></td>"):
        assert needle in text, needle
    out = capsys.readouterr().out
    assert f"MLflow run {run_id} (FINISHED)" in out
    assert re.search(r"churn_probability\s.*\bmean\b", out, re.S) and "max PSI" in out  # headers may wrap
    assert re.search(rf"{PARTS[1]} .*scored .*30 .*27 .*3 .*(warn|ok) ", out)
    assert f"report: {page}" in out


def test_report_last_finds_the_newest_run_of_the_job(job, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # default --out: ./scoring_report_<run id>
    assert main(["report", "--last", "--config", str(job["config_path"])]) == 0
    run_id = job["result"].run_id
    page = tmp_path / f"scoring_report_{run_id}" / "index.html"
    assert page.is_file()
    assert f"report: {page}" in capsys.readouterr().out


def test_report_errors_say_what_to_do(job, capsys):
    assert main(["report", "--run-id", "0" * 32]) == 2
    assert re.search(r"ConfigError: --run-id '0{32}': no such MLflow run at .*Fix: check the id",
                     capsys.readouterr().err)
    assert main(["report", "--last"]) == 2
    assert "--last needs --config" in capsys.readouterr().err
    other = yaml.safe_load(job["config_path"].read_text())
    other["output"]["table"] = str(job["ws"] / "never_written")
    path = job["ws"] / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    assert main(["report", "--last", "--config", str(path)]) == 2
    assert "no MLflow run of this job yet" in capsys.readouterr().err


def test_figures_render_without_rows(tmp_path):
    levels = [i / 100 for i in range(101)]
    constant = [0.5] * 101
    save_png(distribution_figure("t", {"a": levels, "b": constant}), tmp_path / "d.png")
    save_png(drift_figure({"threshold": 0.2, "reference": "previous", "partitions": [
        {"partition": "p2", "reference": "p1", "psi": {"a": 0.05, "b": 0.4}}]}), tmp_path / "h.png")
    stats = {"columns": ("a", "b"), "rows": 10, "psi": 0.1, "threshold": 0.5, "agreement": 0.9,
             "a": {"quantiles": levels}, "b": {"quantiles": [x ** 2 for x in levels]}}
    save_png(comparison_figure(stats), tmp_path / "c.png")
    for name in ("d.png", "h.png", "c.png"):
        _assert_png(tmp_path / name)
    assert drift_figure({"partitions": [{"partition": "p1", "reference": None, "psi": {}}]}) is None
