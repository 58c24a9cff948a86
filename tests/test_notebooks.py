"""The notebooks: Databricks source format, thin, and each runs as a plain Python script (exit 0).

Each notebook runs in its own process against the embedded demo, with its workspace in a temp
folder and the session's test registry (``SPARK_SCORING_REGISTRY_DIR``), in order, sharing one
workspace the way a user would go through them.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_quickstart.py", "02_score_table.py", "03_backfill.py", "04_champion_vs_challenger.py",
         "05_image_tagging.py")
SEPARATOR = "# COMMAND ----------"


def test_the_notebooks_exist():
    assert NOTEBOOKS.is_dir()
    assert sorted(p.name for p in NOTEBOOKS.glob("*.py")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_databricks_source_format_and_thin(name):
    text = (NOTEBOOKS / name).read_text()
    assert text.startswith("# Databricks notebook source\n")
    cells = text.split(f"\n{SEPARATOR}\n")
    assert len(cells) >= 5
    assert cells[0].splitlines()[1].startswith("# MAGIC %md")  # a title and what the notebook does
    assert any(c.strip().startswith("# MAGIC %md") for c in cells[1:])
    ast.parse(text)  # valid Python as a whole
    assert "sys.path" not in text
    # parameters go through the library (widgets on Databricks, env vars locally); no dbutils here
    assert "params, show = notebook.setup(PARAMS, globals())" in text
    assert not re.search(r"\bdbutils\b", text.replace("# MAGIC", ""))


def test_setup_reads_env_vars_locally_and_widgets_on_databricks(monkeypatch, capsys):
    from spark_scoring import notebook

    defaults = {"partition": "2026-11-27", "demo": "true"}
    monkeypatch.setenv("SPARK_SCORING_PARTITION", "2026-11-26")
    params, show = notebook.setup(defaults, {})
    assert params == {"partition": "2026-11-26", "demo": "true"}
    show("plain")
    assert capsys.readouterr().out == "plain\n"

    class Widgets:  # the two dbutils.widgets calls a notebook makes
        def __init__(self):
            self.values = {"demo": "false"}
            self.declared = {}

        def text(self, name, default):
            self.declared[name] = default
            self.values.setdefault(name, default)

        def get(self, name):
            return self.values[name]

    class DBUtils:
        widgets = Widgets()

    shown = []
    params, show = notebook.setup(defaults, {"dbutils": DBUtils, "display": shown.append})
    assert DBUtils.widgets.declared == defaults  # every parameter becomes a widget
    assert params == {"partition": "2026-11-27", "demo": "false"}  # widget values win, env is ignored
    show("table")
    assert shown == ["table"]


def test_only_the_notebook_helper_reaches_dbutils_or_display():
    for path in (ROOT / "spark_scoring").glob("*.py"):
        if path.name == "notebook.py":  # given the notebook's globals(), never importing them
            continue
        code = path.read_text()
        assert not re.search(r"\bdbutils\b", code), path
        assert not re.search(r"(?<![\w.])display\(", code), path


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, registry):
    return tmp_path_factory.mktemp("notebooks")


def _run(name: str, workspace: Path, registry, **params: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_SCORING_")}
    env.update({
        "SPARK_SCORING_WORKSPACE": str(workspace),
        "SPARK_SCORING_REGISTRY_DIR": registry.root,  # the session's registry: models already trained
        "SPARK_SCORING_DEMO_ROWS": "40",
        "SPARK_SCORING_MASTER": "local[2]",
        "SPARK_SCORING_LOG_LEVEL": "ERROR",
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "PYTHONUNBUFFERED": "1",
        **{f"SPARK_SCORING_{k.upper()}": v for k, v in params.items()},
    })
    proc = subprocess.run([sys.executable, str(NOTEBOOKS / name)], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=840)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_01_quickstart(workspace, registry):
    out = _run("01_quickstart.py", workspace, registry)
    assert "models:/demo_churn@champion -> models:/demo_churn/1" in out
    assert re.search(r"\|customer_id\s*\|ds\s*\|churn_probability\s*\|model_name\s*\|model_version\s*\|scored_at", out)
    assert "|demo_churn|1" in out.replace(" ", "")


@pytest.mark.slow
def test_02_score_table(workspace, registry):
    out = _run("02_score_table.py", workspace, registry)
    match = re.search(r"run ([0-9a-f]{32}): rows in 120 = scored 111 \+ quarantined 9", out)
    assert match, out[-3000:]
    run_id = match.group(1)
    assert (workspace / "reports" / run_id / "index.html").is_file()
    assert f"MLflow run {run_id} (FINISHED)" in out


@pytest.mark.slow
def test_03_backfill(workspace, registry):
    out = _run("03_backfill.py", workspace, registry, start="2026-11-24", end="2026-11-26")
    assert "2 of 3 days in the range have input: ['2026-11-25', '2026-11-26']" in out
    assert "no input for: ['2026-11-24']" in out
    assert re.search(r"\[1/2\] partition 2026-11-25: scored", out) and re.search(r"\[2/2\] partition 2026-11-26", out)
    assert "backfill 2026-11-24..2026-11-26: 2/2 partitions done (0 were already scored)" in out


@pytest.mark.slow
def test_04_champion_vs_challenger(workspace, registry):
    out = _run("04_champion_vs_challenger.py", workspace, registry)
    assert "score_champion: models:/demo_churn@champion" in out
    assert re.search(r"\s+rows: 37\n", out)
    assert re.search(r"agreement: 0\.\d+|agreement: 1\n", out)
    plot = workspace / "plots" / "champion_vs_challenger_2026-11-27.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_05_image_tagging(workspace, registry):
    out = _run("05_image_tagging.py", workspace, registry, demo_images="12")
    assert re.search(r"images: rows in 29 = tagged 24 \+ quarantined 5", out), out[-3000:]
    for reason in ("image is null", "model error: DecompressionBombError", "model error: UnidentifiedImageError"):
        assert reason in out
    assert re.search(r"texts: \d+ of 100 flagged", out)
