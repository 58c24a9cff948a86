"""The package's shape is enforced, not described: layer contracts and private names.

- import-linter runs the contracts in ``.importlinter``: layers one way (entry points
  -> run -> ops -> job -> engine / delta -> model -> executor), executor code importing
  no Spark and no driver layer, no import circles between the modules of a package;
- no module imports another module's private (``_``-prefixed) name.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "spark_scoring"


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def _private_imports(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("spark_scoring")):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{node.lineno} imports {alias.name} from "
                                 f"{'.' * node.level}{node.module or ''}")
    return found


def test_no_module_imports_another_modules_private_name():
    offenders = [line for path in sorted(PACKAGE.rglob("*.py")) for line in _private_imports(path)]
    assert offenders == []


def test_the_private_name_check_sees_a_private_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from .job import _partition_text\nfrom spark_scoring.udf import __doc__, ok\n")
    assert _private_imports(probe, tmp_path) == ["probe.py:1 imports _partition_text from .job"]
