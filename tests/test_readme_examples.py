"""The README's Python example runs as written (against the demo registry and table)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 1


def test_readme_python_examples_run(spark, registry, tmp_path, capsys):
    from spark_scoring import demo

    # The JVM keeps its own working directory, so point the README's relative
    # demo_workspace/ paths at this test's folder.
    workspace = tmp_path / "demo_workspace"
    demo.build_customers_table(spark, str(workspace / "tables" / "customers"), demo.demo_frame(rows_per_partition=50))
    namespace: dict = {}
    for block in _python_blocks():
        block = block.replace('"demo_workspace/', f'"{workspace}/')
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "models:/demo_churn/1 1 pytorch" in out
    scored = namespace["scored"]
    rows = scored.where("churn IS NOT NULL").count()
    assert rows == 50 - 3  # the three bad demo rows get null predictions
    assert {r.model_version for r in scored.select("model_version").distinct().collect()} == {"1"}
