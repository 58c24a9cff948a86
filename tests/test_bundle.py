"""The Databricks Asset Bundle (databricks.yml, resources/*.yml) uses only keys Databricks
knows, and each target's job runs a valid ``spark-scoring run`` command. Nothing talks to
Databricks.

The job resource is loaded into ``databricks.bundles.jobs.Job``, the typed classes the
``databricks-bundles`` package generates from the CLI's bundle schema. Its ``from_dict``
raises ``ValueError("Unexpected field 'x' for class Y")`` on an unknown key, a ``TypeError``
on a missing required one, and a ``ValueError`` on an unknown enum value (checked here once
the ``${var.*}`` references are resolved per target). It does not check that a string field
holds a string, so the raw job must also come back unchanged from ``as_dict()``.
databricks-bundles has no classes for databricks.yml itself: its mappings are checked
against the bundle settings reference (https://docs.databricks.com/dev-tools/bundles/settings).
"""
from __future__ import annotations

import ast
import copy
import re
import shlex
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.jobs import Job

import spark_scoring
from spark_scoring.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "databricks.yml"
JOB = "score_table"
TARGETS = ("dev", "prod")
TARGET_VARIABLES = ("catalog", "schema", "model_alias")  # each target sets these itself

# The bundle settings reference's mappings (databricks.yml has no typed classes).
TOP_LEVEL_KEYS = {"bundle", "include", "variables", "artifacts", "targets", "workspace", "resources",
                  "sync", "permissions", "presets", "run_as", "experimental", "scripts", "python"}
TARGET_KEYS = {"mode", "default", "variables", "workspace", "resources", "artifacts", "bundle",
               "cluster_id", "compute_id", "git", "permissions", "presets", "run_as", "sync"}
VARIABLE_KEYS = {"description", "default", "type", "lookup"}
ARTIFACT_KEYS = {"type", "path", "build", "executable", "files", "dynamic_version"}
WORKSPACE_KEYS = {"host", "profile", "root_path", "file_path", "artifact_path", "state_path",
                  "resource_path", "auth_type"}
RUN_AS_KEYS = {"service_principal_name", "user_name"}

REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path}: expected a mapping at the top level"
    return data


def _bundle() -> dict[str, Any]:
    return _load(BUNDLE)


def _resource_files(bundle: dict[str, Any]) -> list[Path]:
    files = {p for pattern in bundle["include"] for p in REPO.glob(pattern)}
    return sorted(files)


def _raw_job() -> dict[str, Any]:
    jobs: dict[str, Any] = {}
    for path in _resource_files(_bundle()):
        jobs.update(_load(path).get("resources", {}).get("jobs", {}))
    assert JOB in jobs, f"no job {JOB!r} in the included resources (found {sorted(jobs)})"
    return jobs[JOB]


def _setup_kwargs() -> dict[str, Any]:
    """setup()'s literal keyword arguments, read from setup.py without running it."""
    tree = ast.parse((REPO / "setup.py").read_text())
    names = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
             for t in n.targets if isinstance(t, ast.Name)}
    call = next(n.value for n in tree.body
                if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)
                and getattr(n.value.func, "id", None) == "setup")
    out = {}
    for kw in call.keywords:
        node = names.get(kw.value.id, kw.value) if isinstance(kw.value, ast.Name) else kw.value
        try:
            out[kw.arg] = ast.literal_eval(node)
        except ValueError:
            pass  # computed (long_description, packages): not needed here
    return out


def _variables(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    """The target's variable values: the declared defaults, then the target's own."""
    values = {name: spec["default"] for name, spec in bundle["variables"].items() if "default" in spec}
    values.update(bundle["targets"][target].get("variables") or {})
    return values


def _resolve(value: Any, context: dict[str, Any]) -> Any:
    """Substitute ``${...}`` references like the CLI; an unknown reference raises KeyError."""
    if isinstance(value, dict):
        return {k: _resolve(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, context) for v in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value)
    if whole:  # a whole-value reference keeps the value's type (num_workers: 2)
        return _resolve(context[whole.group(1)], context)
    return REFERENCE.sub(lambda m: str(_resolve(context[m.group(1)], context)), value)


def _context(target: str) -> dict[str, Any]:
    bundle = _bundle()
    context = {f"var.{k}": v for k, v in _variables(bundle, target).items()}
    context.update({
        "bundle.name": bundle["bundle"]["name"],
        "bundle.target": target,
        "workspace.current_user.short_name": "jdoe",
        "workspace.current_user.userName": "jdoe@example.com",
        "workspace.file_path": str(REPO),  # the synced files; the checkout stands in for them
    })
    return context


def _references(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_references(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_references(v) for v in value)) if value else set()
    return set(REFERENCE.findall(value)) if isinstance(value, str) else set()


# -- databricks.yml -------------------------------------------------------------------------

def test_databricks_yml_uses_known_mappings():
    bundle = _bundle()
    assert set(bundle) <= TOP_LEVEL_KEYS, f"unknown top-level keys: {set(bundle) - TOP_LEVEL_KEYS}"
    assert bundle["bundle"]["name"]
    for name, spec in bundle["variables"].items():
        assert set(spec) <= VARIABLE_KEYS, f"variable {name}: unknown keys {set(spec) - VARIABLE_KEYS}"
        assert spec.get("description"), f"variable {name} has no description"
    for name, spec in bundle["artifacts"].items():
        assert set(spec) <= ARTIFACT_KEYS, f"artifact {name}: unknown keys {set(spec) - ARTIFACT_KEYS}"
    for target, spec in bundle["targets"].items():
        assert set(spec) <= TARGET_KEYS, f"target {target}: unknown keys {set(spec) - TARGET_KEYS}"
        workspace = spec.get("workspace") or {}
        assert set(workspace) <= WORKSPACE_KEYS, f"target {target}: unknown workspace keys {set(workspace)}"
        assert set(spec.get("run_as") or {}) <= RUN_AS_KEYS


def test_targets_dev_and_prod_each_set_catalog_schema_and_model_alias():
    bundle = _bundle()
    targets = bundle["targets"]
    assert set(TARGETS) <= set(targets), f"targets: {sorted(targets)}"
    assert targets["dev"]["mode"] == "development" and targets["dev"].get("default") is True
    assert targets["prod"]["mode"] == "production"
    assert targets["prod"]["workspace"]["root_path"], "production mode needs an explicit root_path"
    declared = set(bundle["variables"])
    assert set(TARGET_VARIABLES) <= declared
    for target in TARGETS:
        own = targets[target].get("variables") or {}
        assert set(own) <= declared, f"target {target} sets undeclared variables {set(own) - declared}"
        assert set(TARGET_VARIABLES) <= set(own), f"target {target} sets only {sorted(own)}"
        missing = declared - set(_variables(bundle, target))
        assert not missing, f"target {target}: no value (nor default) for {sorted(missing)}"
    assert {_variables(bundle, t)["catalog"] for t in TARGETS} == {"dev", "main"}


def test_every_variable_referenced_is_declared_and_every_declared_one_is_used():
    bundle = _bundle()
    used = _references(bundle)
    for path in _resource_files(bundle):
        used |= _references(_load(path))
    used_vars = {ref.split(".", 1)[1] for ref in used if ref.startswith("var.")}
    declared = set(bundle["variables"])
    assert used_vars <= declared, f"undeclared variables referenced: {sorted(used_vars - declared)}"
    assert declared <= used_vars, f"declared but never used: {sorted(declared - used_vars)}"


def test_include_globs_match_every_resource_file():
    bundle = _bundle()
    for pattern in bundle["include"]:
        assert list(REPO.glob(pattern)), f"include {pattern!r} matches no file"
    on_disk = sorted(p for p in (REPO / "resources").iterdir() if p.suffix in (".yml", ".yaml"))
    assert on_disk and _resource_files(bundle) == on_disk


def test_wheel_task_runs_the_entry_point_setup_py_declares():
    setup = _setup_kwargs()
    scripts = dict(item.replace(" ", "").split("=", 1) for item in setup["entry_points"]["console_scripts"])
    job = _raw_job()
    [task] = job["tasks"]
    wheel_task = task["python_wheel_task"]
    assert wheel_task["package_name"] == setup["name"]
    assert scripts.get(wheel_task["entry_point"]) == "spark_scoring.cli:entry", scripts
    assert task["job_cluster_key"] in {c["job_cluster_key"] for c in job["job_clusters"]}
    # The library is the wheel the bundle's artifact builds: `python -m build --wheel` in the
    # bundle root writes dist/*.whl, which the resource names relative to its own folder.
    [artifact] = _bundle()["artifacts"].values()
    assert artifact["type"] == "whl" and shlex.split(artifact["build"]) == ["python", "-m", "build", "--wheel"]
    assert (BUNDLE.parent / artifact["path"]).resolve() == REPO
    [library] = task["libraries"]
    [resource_file] = [p for p in _resource_files(_bundle()) if JOB in _load(p)["resources"]["jobs"]]
    whl = Path(library["whl"])
    assert whl.name == "*.whl" and (resource_file.parent / whl.parent).resolve() == REPO / "dist"


# -- the job resource, typed ----------------------------------------------------------------

def test_job_resource_loads_into_the_typed_job_classes_unchanged():
    raw = _raw_job()
    job = Job.from_dict(copy.deepcopy(raw))
    assert job.as_dict() == raw  # nothing dropped, renamed or coerced
    assert job.tasks[0].python_wheel_task.entry_point == "spark-scoring"


@pytest.mark.parametrize("path, key, misspelled", [
    ((), "schedule", "schedul"),
    (("schedule",), "timezone_id", "timezone"),
    (("tasks", 0), "python_wheel_task", "python_wheeltask"),
    (("tasks", 0, "python_wheel_task"), "entry_point", "entrypoint"),
    (("job_clusters", 0, "new_cluster"), "node_type_id", "node_type"),
    (("tasks", 0, "libraries", 0), "whl", "wheel"),
])
def test_a_misspelled_key_fails_to_load(path, key, misspelled):
    raw = _raw_job()
    node = raw
    for step in path:
        node = node[step]
    node[misspelled] = node.pop(key)
    with pytest.raises(ValueError, match=f"Unexpected field '{misspelled}'"):
        Job.from_dict(raw)


def test_an_unknown_enum_value_or_missing_required_key_fails_to_load():
    raw = _resolve(_raw_job(), _context("prod"))
    bad = copy.deepcopy(raw)
    bad["schedule"]["pause_status"] = "PAUSE"
    with pytest.raises(ValueError, match="PAUSE"):
        Job.from_dict(bad)
    bad = copy.deepcopy(raw)
    bad["job_clusters"][0]["new_cluster"]["data_security_mode"] = "SINGLE"
    with pytest.raises(ValueError, match="SINGLE"):
        Job.from_dict(bad)
    bad = copy.deepcopy(raw)
    del bad["tasks"][0]["python_wheel_task"]["package_name"]
    with pytest.raises(TypeError, match="package_name"):
        Job.from_dict(bad)


@pytest.mark.parametrize("target", TARGETS)
def test_each_targets_resolved_job_loads_with_its_schedule_and_cluster(target):
    resolved = _resolve(_raw_job(), _context(target))
    assert not _references(resolved), f"unresolved references: {_references(resolved)}"
    job = Job.from_dict(copy.deepcopy(resolved))
    fields = job.schedule.quartz_cron_expression.split()
    assert len(fields) in (6, 7) and fields[:3] == ["0", "0", "2"], "Quartz: sec min hour ..."
    zoneinfo.ZoneInfo(job.schedule.timezone_id)
    assert job.schedule.pause_status.value == {"dev": "PAUSED", "prod": "UNPAUSED"}[target]
    assert job.max_concurrent_runs == 1
    [cluster] = job.job_clusters
    spec = cluster.new_cluster
    assert isinstance(spec.num_workers, int) and spec.num_workers >= 1
    assert spec.spark_version.startswith("19.") and "-ml-" in spec.spark_version  # Spark 4.2, ML runtime
    assert spec.node_type_id


def test_gpu_choice_documented_in_databricks_yml_is_a_gpu_ml_runtime():
    text = BUNDLE.read_text()
    match = re.search(r'--var="node_type_id=(\S+)" --var="spark_version=(\S+)"', text)
    assert match, "databricks.yml should show the GPU --var overrides"
    node_type, runtime = match.groups()
    assert node_type.startswith("g5.") and "-gpu-ml-" in runtime and runtime.startswith("19.")


@pytest.mark.parametrize("target", TARGETS)
def test_each_targets_job_parameters_are_a_valid_run_command(target):
    context = _context(target)
    resolved = _resolve(_raw_job(), context)
    params = resolved["tasks"][0]["python_wheel_task"]["parameters"]
    args = build_parser().parse_args(params)  # the wheel task passes these as argv[1:]
    assert args.command == "run"
    config = Path(args.config_opt)
    assert config == REPO / "conf" / "nightly_example.yaml" and config.is_file()
    cfg = spark_scoring.load_config(str(config), overrides=args.set)
    catalog, schema, alias = (_resolve(context[f"var.{k}"], context) for k in TARGET_VARIABLES)
    assert cfg.model == f"models:/{catalog}.{schema}.churn@{alias}"
    assert cfg.input.table == f"{catalog}.{schema}.customers"
    assert cfg.output.table == f"{catalog}.{schema}.customer_enrichment"
    assert cfg.output.mode == "merge" and cfg.input.partitions is None  # nightly: what landed since


# -- README "On a schedule" -----------------------------------------------------------------

def _readme_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("### On a schedule")
    end = text.index("\n## ", start)
    return text[start:end]


def test_readme_schedule_section_matches_the_bundle():
    section = _readme_section()
    assert f"databricks bundle run {JOB} -t prod" in section
    for target in TARGETS:
        assert f"databricks bundle deploy -t {target}" in section
    context = _context("prod")
    prod_row = next(line for line in section.splitlines() if line.startswith("| `prod`"))
    assert f"`{context['var.catalog']}.{context['var.schema']}`" in prod_row
    assert f"`{context['var.model_alias']}`" in prod_row and "unpaused" in prod_row
    job = _resolve(_raw_job(), context)
    assert f"`{job['schedule']['quartz_cron_expression']}`" in section


def test_readme_and_job_script_show_the_same_valid_crontab_line():
    [line] = [ln for ln in _readme_section().splitlines() if ln.startswith("0 2 * * * ")]
    script_doc = (REPO / "jobs" / "score_table.py").read_text()
    assert line in script_doc
    command = line.removeprefix("0 2 * * * ").split(" >> ")[0]
    command = command.replace(r"$(date -u -d yesterday +\%F)", "2026-11-27")
    argv = shlex.split(command.split(" && ", 1)[1])
    assert argv[:4] == ["spark-submit", "--packages", "io.delta:delta-spark_4.2_2.13:4.4.0", "jobs/score_table.py"]
    assert (REPO / argv[3]).is_file()
    args = build_parser().parse_args(["run", *argv[4:]])  # the script prepends "run"
    assert (REPO / args.config_opt).is_file() and args.partition == ["2026-11-27"]
