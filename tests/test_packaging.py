"""The wheel CI builds: its metadata says what setup.py says, it holds the package's files,
and it runs from an install outside the checkout.

The wheel is built with ``python -m build --wheel --no-isolation`` (the venv's setuptools,
nothing downloaded) from a copy of the checkout's files (tracked, and untracked but not
ignored), so a stale build/ folder cannot leak into it. It is installed with
``pip install --no-deps --target``: the test venv already has the dependencies.
"""
from __future__ import annotations

import ast
import re
import configparser
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "spark_scoring"


def _setup_py() -> tuple[dict[str, Any], dict[str, Any]]:
    """setup.py's module-level literals and setup()'s literal keywords, without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    names: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                names[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    call = next(n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) == "setup")
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if isinstance(kw.value, ast.Name) and kw.value.id in names:
            kwargs[kw.arg] = names[kw.value.id]
        else:
            try:
                kwargs[kw.arg] = ast.literal_eval(kw.value)
            except ValueError:
                pass  # computed (long_description, packages)
    return names, kwargs


def _requirements(items: list[str]) -> set[tuple[str, str, str]]:
    reqs = [Requirement(item) for item in items]
    return {(canonicalize_name(r.name), str(r.specifier), ",".join(sorted(r.extras))) for r in reqs}


def _checkout_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (REPO / f).is_file()})


def _copy_checkout(dest: Path) -> Path:
    for name in _checkout_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(REPO / name, target)
        except FileNotFoundError:  # removed since git listed it
            pass
    return dest


def _build_wheel(src: Path, out: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), "."],
                          cwd=src, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"wheel build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    [wheel] = out.glob("*.whl")
    return wheel


def _package_data_patterns() -> list[str]:
    _, kwargs = _setup_py()
    return list(kwargs.get("package_data", {}).get(PACKAGE, []))


def _wheel_files(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return {n for n in zf.namelist() if not n.endswith("/")}


def _dist_info_file(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as zf:
        [member] = [n for n in zf.namelist() if n.endswith(f".dist-info/{name}")]
        return zf.read(member).decode()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _copy_checkout(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def wheel(source, tmp_path_factory) -> Path:
    return _build_wheel(source, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("install") / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-compile",
                           "--disable-pip-version-check", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


def _run_installed(site: Path, cwd: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PYSPARK", "SPARK_"))}
    env["PYTHONPATH"] = str(site)  # ahead of the venv's editable install of the checkout
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_wheel_is_pure_python_and_named_like_setup(wheel):
    _, kwargs = _setup_py()
    assert wheel.name == f"{kwargs['name']}-{kwargs['version']}-py3-none-any.whl"


def test_wheel_requires_exactly_setup_pys_pins(wheel):
    names, _ = _setup_py()
    metadata = _dist_info_file(wheel, "METADATA")
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    install = [r for r in requires if Requirement(r).marker is None]
    by_extra: dict[str, list[str]] = {}
    for r in requires:
        marker = Requirement(r).marker
        if marker is not None:
            extra = re.search(r'extra == "([^"]+)"', str(marker)).group(1)
            by_extra.setdefault(extra, []).append(r.split(";")[0])
    assert len(install) == len(names["INSTALL_REQUIRES"])
    assert _requirements(install) == _requirements(names["INSTALL_REQUIRES"])
    assert set(by_extra) == {"test", "bench"}
    assert _requirements(by_extra["test"]) == _requirements(names["TEST_REQUIRES"] + names["BENCH_REQUIRES"])
    assert _requirements(by_extra["bench"]) == _requirements(names["BENCH_REQUIRES"])


def test_wheel_declares_the_console_script(wheel):
    parser = configparser.ConfigParser()
    parser.read_string(_dist_info_file(wheel, "entry_points.txt"))
    assert dict(parser["console_scripts"]) == {"spark-scoring": "spark_scoring.cli:entry"}
    _, kwargs = _setup_py()
    declared = dict(s.replace(" ", "").split("=", 1) for s in kwargs["entry_points"]["console_scripts"])
    assert dict(parser["console_scripts"]) == declared


def test_wheel_holds_every_module_and_package_data_file_and_nothing_else(wheel, source):
    patterns = _package_data_patterns()
    assert patterns, "setup.py declares no package_data for spark_scoring"
    root = source / PACKAGE
    expected = {p.relative_to(source).as_posix() for p in root.rglob("*.py")}
    expected |= {p.relative_to(source).as_posix() for pattern in patterns for p in root.glob(pattern)}
    files = _wheel_files(wheel)
    dist_info = {f for f in files if f.split("/")[0].endswith(".dist-info")}
    assert files - dist_info == expected
    assert f"{PACKAGE}/cli.py" in files


def test_package_data_patterns_ship_templates_at_any_depth(tmp_path):
    """Today the package may have no templates: add some to a copy and build that."""
    src = _copy_checkout(tmp_path / "src")
    probes = [f"{PACKAGE}/templates/probe_report.html", f"{PACKAGE}/_probe/templates/probe_page.html.j2",
              f"{PACKAGE}/_probe/deeper/templates/probe.j2"]
    for name in probes:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text("<p>{{ probe }}</p>\n")
    files = _wheel_files(_build_wheel(src, tmp_path / "dist"))
    assert set(probes) <= files, f"missing from the wheel: {set(probes) - files}"


def test_installed_wheel_is_imported_not_the_checkout(installed, tmp_path):
    proc = _run_installed(installed, tmp_path, sys.executable, "-c",
                          "import spark_scoring, spark_scoring.cli as c; print(spark_scoring.__file__); print(c.__file__)")
    assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.split():
        assert Path(line).resolve().is_relative_to(installed.resolve()), proc.stdout


def test_installed_console_script_prints_the_run_options(installed, tmp_path):
    script = installed / "bin" / "spark-scoring"
    assert script.is_file(), sorted(p.name for p in (installed / "bin").iterdir())
    proc = _run_installed(installed, tmp_path, str(script), "run", "--help")
    assert proc.returncode == 0, proc.stderr
    for option in ("--config", "--partition", "--set", "--quiet"):
        assert option in proc.stdout, proc.stdout


def test_installed_console_script_exits_2_on_a_missing_config(installed, tmp_path):
    proc = _run_installed(installed, tmp_path, str(installed / "bin" / "spark-scoring"),
                          "run", "--config", "/nonexistent.yaml")
    assert proc.returncode == 2, f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert "config file not found" in proc.stderr
