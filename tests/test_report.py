"""``spark-scoring report``: the terminal summary and the HTML page, whose plots must exist and be PNGs."""
from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
import yaml

from spark_scoring import demo
from spark_scoring.cli import main
from spark_scoring import run_job
from spark_scoring.ops.report import comparison_figure, distribution_figure, drift_figure, report_command, save_png

PARTS = ("2026-11-26", "2026-11-27")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def job(tmp_path_factory, spark, registry):  # noqa: D401
    """A two-partition single-model job with tracking (drift checked on the second partition)."""
    ws = tmp_path_factory.mktemp("report")
    table = demo.build_customers_table(spark, str(ws / "customers"), demo.demo_frame(PARTS, 30))
    config = demo.demo_config(ws, registry.root)
    config["input"]["table"] = table
    config["tracking"] = {"experiment": f"test_report_{uuid.uuid4().hex[:8]}"}
    config["drift"] = {"min_rows": 0}  # 30-row partitions: below the default min_rows
    config["output"]["partitions_per_commit"] = 1  # a commit each: a distribution plot each
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
    images = _image_sources(text)
    assert sorted(images) == sorted([f"plots/score_distribution_{p}.png" for p in PARTS]
                                    + ["drift/drift_report.png"])
    for src in images:
        assert not Path(src).is_absolute() and ".." not in src
        _assert_png(page.parent / src)
    # params, metrics per partition and the drift table are on the page (the HTML parsed, not matched)
    page_tables = _tables(text)
    headings = [h for h, _rows in page_tables]
    assert {"Partitions", "Score summary", "Drift", "Metrics per partition", "Params", "Tags"} <= set(headings)
    rows = dict(page_tables)
    assert ["models", "models:/demo_churn/1"] in rows["Params"]
    assert {"score/churn_probability/p50", "psi/churn_probability"} <= set(rows["Metrics per partition"][0])
    drift = rows["Drift"]
    assert [PARTS[0], ""] == drift[1][:2]  # the first partition has no reference
    assert any(r[:3] == [PARTS[1], PARTS[0], "churn_probability (score)"] for r in drift[1:])
    out = capsys.readouterr().out
    assert f"MLflow run {run_id} (FINISHED)" in out
    assert re.search(r"churn_probability\s.*\bmean\b", out, re.S) and "max PSI" in out  # headers may wrap
    assert re.search(rf"{PARTS[1]} .*scored .*30 .*27 .*3 .*(warn|ok) ", out)
    assert f"report: {page}" in out


def _image_sources(html_text: str) -> list[str]:
    from html.parser import HTMLParser

    found = []

    class Images(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "img":
                found.append(dict(attrs)["src"])

    Images().feed(html_text)
    return found


def _tables(html_text: str) -> list[tuple[str, list[list[str]]]]:
    """[(the h2 heading before it, rows of cell texts incl. the header row)] of each table."""
    from html.parser import HTMLParser

    tables, state = [], {"h2": "", "in_h2": False, "cell": None, "row": None}

    class Tables(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag == "h2":
                state["in_h2"], state["h2"] = True, ""
            elif tag == "table":
                tables.append((state["h2"], []))
            elif tag == "tr":
                state["row"] = []
                tables[-1][1].append(state["row"])
            elif tag in ("td", "th"):
                state["cell"] = ""

        def handle_endtag(self, tag):
            if tag == "h2":
                state["in_h2"] = False
            elif tag in ("td", "th"):
                state["row"].append(state["cell"])
                state["cell"] = None

        def handle_data(self, data):
            if state["in_h2"]:
                state["h2"] += data
            elif state["cell"] is not None:
                state["cell"] += data

    Tables().feed(html_text)
    return tables


def test_the_report_escapes_user_data(tmp_path):
    from spark_scoring.ops.report import RunReport, write_html

    evil = "<script>alert(1)</script>"
    report = RunReport(run_id="r1", experiment=evil, status="FINISHED", start=None, end=None,
                       params={"output_table": evil}, tags={}, metrics={}, totals={},
                       partitions=[{"partition": evil, "status": "scored"}], stats=[], drift={}, folder=tmp_path)
    text = write_html(report).read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert [evil, "scored"] == dict(_tables(text))["Partitions"][1][:2]


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
