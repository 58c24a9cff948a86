"""spark_scoring.config: the YAML schema, its rules, overrides and error wording.

No Spark needed; the whole file runs in a few seconds.
"""
from __future__ import annotations

import datetime as dt
import re
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spark_scoring.config import (
    DriftConfig,
    EngineConfig,
    InputConfig,
    JobConfig,
    ModelSpec,
    OutputConfig,
    TrackingConfig,
    load_config,
    parse_overrides,
)
from spark_scoring.errors import ConfigError, ScoringError

CONF = Path(__file__).resolve().parent.parent / "conf"
BASE = {
    "model": "models:/churn@champion",
    "input": {"table": "main.sales.customers", "partition_by": "ds"},
    "output": {"table": "main.sales.customer_scores"},
}


def cfg(**changes):
    """BASE with top-level keys replaced (None removes a key)."""
    data = {**BASE, **changes}
    return {k: v for k, v in data.items() if v is not None}


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ conf files
@pytest.mark.parametrize("name", ["demo.yaml", "nightly_example.yaml", "backfill_example.yaml"])
def test_conf_files_load(name):
    config = load_config(CONF / name)
    assert isinstance(config, JobConfig)
    assert len(config.model_specs) == 1


def test_demo_conf_contents():
    config = load_config(CONF / "demo.yaml")
    assert config.model == "models:/demo_churn@champion"
    assert config.input.table == "demo_workspace/tables/customers"
    assert config.input.partition_by == "ds"
    assert config.output.table == "demo_workspace/tables/customer_scores"
    assert config.output.mode == "overwrite_partitions"
    assert config.bad_rows == "quarantine"
    assert config.quarantine_table == "demo_workspace/tables/customer_scores_quarantine"
    assert config.features is None
    assert config.audit_table == "demo_workspace/tables/customer_scores_scoring_runs"


def test_nightly_and_backfill_contents():
    nightly = load_config(str(CONF / "nightly_example.yaml"))
    assert (nightly.output.mode, nightly.output.keys) == ("merge", ("customer_id",))
    assert nightly.tracking.enabled and (nightly.drift.on_drift, nightly.drift.threshold) == ("fail", 0.25)
    assert nightly.spark == {"spark.sql.shuffle.partitions": "64"}  # YAML int -> str
    backfill = load_config(CONF / "backfill_example.yaml")
    assert backfill.output.mode == "overwrite_partitions"
    assert backfill.input.partitions == ("2026-11-01", "2026-11-02", "2026-11-03")


# --------------------------------------------------------------- the schema
def test_defaults_and_properties():
    config = load_config(BASE)
    assert config.model_specs == (ModelSpec(uri="models:/churn@champion", output_column="prediction"),)
    assert config.audit_table == "main.sales.customer_scores_scoring_runs"
    assert config.engine == EngineConfig() and config.tracking == TrackingConfig() and config.drift == DriftConfig()
    assert (config.bad_rows, config.force, config.spark) == ("fail", False, {})
    assert (config.input.mode, config.input.version, config.input.partitions) == ("snapshot", None, None)
    explicit = load_config(cfg(output={"table": "o", "audit_table": "ops.runs"}))
    assert explicit.audit_table == "ops.runs"


def test_several_models():
    config = load_config(cfg(model=None, models=[
        {"uri": "models:/churn@champion", "output_column": "score_champion"},
        {"uri": "models:/churn@challenger", "output_column": "score_challenger"},
    ]))
    assert [s.output_column for s in config.model_specs] == ["score_champion", "score_challenger"]


@pytest.mark.parametrize("uri", ["models:/churn@champion", "models:/main.ml.churn/3", "models:/m-0123abcd",
                                 "runs:/abc123/model", "/tmp/model", "file:///tmp/model", "s3://b/model"])
def test_model_uri_forms_accepted(uri):
    assert load_config(cfg(model=uri)).model == uri


@pytest.mark.parametrize("uri", ["models:/", "models:/a/b/c", "models:/a@", "models:/a/", "runs:/abc", "runs://x"])
def test_bad_model_uri(uri):
    with pytest.raises(ConfigError, match=r"- model: got .*; expected a model URI of the form "
                                          r".*Fix: e\.g\. models:/churn@champion"):
        load_config(cfg(model=uri))


def test_frozen():
    config = load_config(BASE)
    with pytest.raises(ValidationError, match="frozen"):
        config.force = True
    with pytest.raises(ValidationError, match="frozen"):
        config.output.mode = "merge"
    assert hash(config) == hash(load_config(BASE))


def test_date_and_int_partitions_coerced(tmp_path):
    path = write(tmp_path, "model: models:/m/1\ninput: {table: t, partition_by: ds, partitions: [2026-11-27, 7, true]}\n"
                           "output: {table: o}\ndrift: {reference: 2026-11-20}\n")
    config = load_config(path)
    assert config.input.partitions == ("2026-11-27", "7", "true")
    assert config.drift.reference == "2026-11-20"
    assert load_config(cfg(input={"table": "t", "partition_by": "ds", "partitions": [dt.date(2026, 1, 2)]})
                       ).input.partitions == ("2026-01-02",)


def test_spark_values_become_strings():
    config = load_config(cfg(spark={"a": 4, "b": True, "c": 0.5, "d": "x"}))
    assert config.spark == {"a": "4", "b": "true", "c": "0.5", "d": "x"}


def test_names_allow_any_characters():
    config = load_config(cfg(output={"table": "`weird` table;-- ü", "prediction_column": "score (p)"}))
    assert config.model_specs[0].output_column == "score (p)"


# ------------------------------------------------------------------ the rules
def test_model_and_models_both():
    with pytest.raises(ConfigError, match=r"- model: got \"both 'model' and 'models'\"; expected exactly one of "
                                          r"'model' or 'models'.*Fix: use one"):
        load_config(cfg(models=[{"uri": "models:/a/1", "output_column": "a"}]))


def test_model_missing():
    with pytest.raises(ConfigError, match=r"- model: got null; expected one of 'model' .* or 'models'.*Fix: add"):
        load_config(cfg(model=None))


def test_output_columns_unique():
    models = [{"uri": "models:/a/1", "output_column": "s"}, {"uri": "models:/a/2", "output_column": "s"}]
    with pytest.raises(ConfigError,
                       match=r"- models\[1\]\.output_column: got 's'; expected a unique output column"):
        load_config(cfg(model=None, models=models))


@pytest.mark.parametrize("column", ["model_name", "model_version", "scored_at", "scoring_run_id"])
def test_output_column_lineage_collision(column):
    with pytest.raises(ConfigError, match=rf"- output\.prediction_column: got '{column}'; expected a column other "
                                          r"than the lineage columns .*Fix: choose another"):
        load_config(cfg(output={"table": "o", "prediction_column": column}))
    with pytest.raises(ConfigError, match=rf"- models\[0\]\.output_column: got '{column}'"):
        load_config(cfg(model=None, models=[{"uri": "models:/a/1", "output_column": column}]))


def test_merge_requires_keys():
    with pytest.raises(ConfigError, match=r"- output\.keys: got \[\]; expected a non-empty list of key columns when "
                                          r"output\.mode is 'merge'\. Fix: set output\.keys, e\.g\. \[customer_id\]"):
        load_config(cfg(output={"table": "o", "mode": "merge"}))
    assert load_config(cfg(output={"table": "o", "mode": "merge", "keys": ["id"]})).output.keys == ("id",)


def test_quarantine_requires_table():
    with pytest.raises(ConfigError, match=r"- quarantine_table: got null; expected a table name or path when "
                                          r"bad_rows is 'quarantine'\. Fix: set quarantine_table"):
        load_config(cfg(bad_rows="quarantine"))


def test_changes_requires_merge_and_keys():
    with pytest.raises(ConfigError, match=r"- input\.mode: got 'changes'; expected output\.mode 'merge' with "
                                          r"output\.keys .*upserted into the output by key.*Fix: set output\.mode: merge"):
        load_config(cfg(input={"table": "t", "mode": "changes"}))
    ok = load_config(cfg(input={"table": "t", "mode": "changes"},
                         output={"table": "o", "mode": "merge", "keys": ["id"]}))
    assert ok.input.mode == "changes"


@pytest.mark.parametrize("section, key, value, expected", [
    ("engine", "batch_size", 0, r"a number > 0"),
    ("engine", "batch_size", -5, r"a number > 0"),
    ("engine", "batch_size", 1.5, r"a whole number"),
    ("engine", "batch_size", True, r"a whole number"),
    ("engine", "device", "gpu", r"auto, cpu, cuda or cuda:N"),
    ("engine", "path", "fast", r"one of 'auto', 'udf' or 'direct_scan'"),
    ("drift", "threshold", 0, r"a number > 0"),
    ("drift", "threshold", float("inf"), r"a finite number"),
    ("drift", "bins", 1, r"a number >= 2"),
    ("drift", "bins", 1001, r"a number <= 1000"),
    ("drift", "on_drift", "panic", r"one of 'warn' or 'fail'"),
    ("tracking", "enabled", "maybe", r"true or false"),
])
def test_section_values(section, key, value, expected):
    value_repr = re.escape(repr(value))
    with pytest.raises(ConfigError, match=rf"- {section}\.{key}: got {value_repr}; expected {expected}\. "
                                          rf"Fix: set {section}\.{key} to"):
        load_config(cfg(**{section: {key: value}}))


@pytest.mark.parametrize("name", ["", "   ", "a\x00b"])
def test_bad_names(name):
    with pytest.raises(ConfigError, match=r"- output\.table: got .*; expected a (non-empty name|name without NUL)"):
        load_config(cfg(output={"table": name}))
    with pytest.raises(ConfigError, match=r"- input\.partition_by: got"):
        load_config(cfg(input={"table": "t", "partition_by": name}))


def test_partitions_need_partition_by_and_a_list():
    with pytest.raises(ConfigError, match=r"- input\.partition_by: got null; expected input\.partition_by to be set"):
        load_config(cfg(input={"table": "t", "partitions": ["a"]}))
    with pytest.raises(ConfigError, match=r"- input\.partitions: got 'a'; expected a list"):
        load_config(cfg(input={"table": "t", "partition_by": "ds", "partitions": "a"}))
    with pytest.raises(ConfigError, match=r"- input\.partitions: got \[\]; expected a non-empty list"):
        load_config(cfg(input={"table": "t", "partition_by": "ds", "partitions": []}))


def test_changes_mode_refuses_partitions():
    with pytest.raises(ConfigError, match=r"- input\.partitions: got \['a'\]; expected no input\.partitions with "
                                          r"input\.mode: changes.*Fix: remove input\.partitions"):
        load_config(cfg(input={"table": "t", "partition_by": "ds", "partitions": ["a"], "mode": "changes"}))


def test_required_keys_missing():
    with pytest.raises(ConfigError, match=r"- input: got nothing; expected a value \(this key is required\)\. "
                                          r"Fix: add 'input': the input table"):
        load_config(cfg(input=None))
    with pytest.raises(ConfigError, match=r"- output\.table: got nothing; .*Fix: add 'output\.table'"):
        load_config(cfg(output={"mode": "append"}))


def test_every_problem_listed_once():
    bad = cfg(output={"table": "o", "mode": "overwrite"}, engine={"batch_size": 0}, drift={"bins": 1})
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid job config (3 problems):"
    assert [line.split(":")[0] for line in lines[1:]] == ["- output.mode", "- engine.batch_size", "- drift.bins"]


def test_long_values_truncated():
    with pytest.raises(ConfigError) as info:
        load_config(cfg(output={"table": "o", "mode": "x" * 500}))
    assert max(len(part) for part in re.findall(r"got (.*?); expected", str(info.value))) <= 80


# -------------------------------------------------------------- unknown keys
def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError, match=r"- unknown key 'output\.moed' \(got 'merge'\); did you mean "
                                          r"'output\.mode'\? Valid keys under 'output': audit_table, keys, mode"):
        load_config(cfg(output={"table": "o", "moed": "merge"}))
    with pytest.raises(ConfigError, match=r"unknown key 'modle' .*did you mean 'model'\? Valid keys at the top level"):
        load_config({**BASE, "modle": "x"})
    with pytest.raises(ConfigError, match=r"unknown key 'models\[0\]\.urii' .*did you mean 'models\[0\]\.uri'"):
        load_config(cfg(model=None, models=[{"urii": "models:/a/1", "output_column": "s"}]))


def test_unknown_key_at_wrong_level():
    with pytest.raises(ConfigError, match=r"unknown key 'batch_size' .*did you mean 'engine\.batch_size'\?"):
        load_config({**BASE, "batch_size": 10})


def test_unknown_key_without_guess_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown key 'engine\.zzz' \(got 1\); valid keys under 'engine': "
                                          r"arrow_batch_rows, batch_size, device, max_row_errors, model_config, params, path, result_type\. Fix: remove it"):
        load_config(cfg(engine={"zzz": 1}))


# ------------------------------------------------------------------ overrides
def test_parse_overrides():
    assert parse_overrides(["engine.batch_size=4096", "input.partitions=[a,b]", "force=true", "model=models:/a@b",
                            "engine.result_type=", "x=a=b", "y=[unclosed"]) == {
        "engine.batch_size": 4096, "input.partitions": ["a", "b"], "force": True, "model": "models:/a@b",
        "engine.result_type": None, "x": "a=b", "y": "[unclosed"}


@pytest.mark.parametrize("item", ["engine.batch_size", "=3", 5])
def test_parse_overrides_bad_item(item):
    with pytest.raises(ConfigError,
                       match=rf"bad override {re.escape(repr(item))}: expected the form key\.path=value"):
        parse_overrides([item])


def test_parse_overrides_needs_a_list():
    with pytest.raises(ConfigError, match="must be a list"):
        parse_overrides("engine.batch_size=3")


def test_overrides_applied():
    source = cfg()
    config = load_config(source, ["engine.batch_size=4096", "input.partitions=[2026-11-27, b]",
                                  "spark.spark.sql.shuffle.partitions=8", "drift.enabled=false"])
    assert config.engine.batch_size == 4096
    assert config.input.partitions == ("2026-11-27", "b")
    assert config.spark == {"spark.sql.shuffle.partitions": "8"}
    assert config.drift.enabled is False
    assert source == cfg()  # the caller's dict is not changed


def test_overrides_dict_and_jobconfig_source():
    base = load_config(BASE)
    assert load_config(base) is base
    changed = load_config(base, {"output.mode": "merge", "output.keys": ["id"], "engine": {"device": "cuda:1"}})
    assert (changed.output.mode, changed.output.keys, changed.engine.device) == ("merge", ("id",), "cuda:1")
    assert base.output.mode == "overwrite_partitions"


def test_override_switches_model_form():
    several = load_config(BASE, ["models=[{uri: 'models:/a/1', output_column: a}, "
                                 "{uri: 'models:/a/2', output_column: b}]"])
    assert several.model is None and len(several.model_specs) == 2
    one = load_config(several, {"model": "models:/a/3"})
    assert one.models is None and one.model == "models:/a/3"
    assert load_config(several, ["models.1.uri=models:/a/9"]).models[1].uri == "models:/a/9"


def test_override_unknown_key():
    with pytest.raises(ConfigError, match=r"override 'output\.moed': unknown key 'moed' under 'output'\. "
                                          r"Did you mean 'output\.mode'\? Valid keys under 'output': audit_table, keys"):
        load_config(BASE, ["output.moed=merge"])
    with pytest.raises(ConfigError, match=r"override 'zzz': unknown key 'zzz' at the top level\. Valid keys at the "
                                          r"top level: bad_rows, drift"):
        load_config(BASE, {"zzz": 1})
    with pytest.raises(ConfigError, match=r"override 'force\.x': 'force' is a single value, not a section"):
        load_config(BASE, ["force.x=1"])
    with pytest.raises(ConfigError, match=r"override 'models\.0\.uri': 'models' has no item 0"):
        load_config(BASE, ["models.0.uri=x"])


def test_override_into_non_mapping():
    with pytest.raises(ConfigError, match=r"override 'input\.table': 'input' is \[1\], not a mapping"):
        load_config(cfg(input=[1]), ["input.table=t"])
    with pytest.raises(ConfigError, match=r"override 'spark\.': name the Spark setting"):
        load_config(BASE, ["spark.=1"])


def test_override_creates_missing_section():
    assert load_config(BASE, {"drift.bins": 20, "tracking.experiment": "x"}).drift.bins == 20


def test_override_value_validated_with_file_name(tmp_path):
    path = write(tmp_path, yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=rf"invalid job config {re.escape(str(path))} \(1 problem\):\n"
                                          r"- engine\.batch_size: got 'abc'; expected a whole number"):
        load_config(path, ["engine.batch_size=abc"])


# ------------------------------------------------------------------ YAML input
def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=rf"config file not found: {re.escape(str(tmp_path / 'nope.yaml'))}"):
        load_config(tmp_path / "nope.yaml")


def test_syntax_error_line(tmp_path):
    path = write(tmp_path, "model: m\ninput:\n  table: t\n   bad: [\noutput: {table: o}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: YAML syntax error at line 4, column \d+"):
        load_config(path)


def test_duplicate_key(tmp_path):
    path = write(tmp_path, "model: m\ninput: {table: t}\noutput: {table: o}\ninput: {table: u}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'input' at line 4 \(first at line 2\)"):
        load_config(path)


@pytest.mark.parametrize("text, shown", [("", "an empty file"), ("- a\n", r"list \['a'\]"), ("7\n", "int 7")])
def test_top_level_not_mapping(tmp_path, text, shown):
    with pytest.raises(ConfigError, match=rf"the top level must be a mapping .*got {shown}"):
        load_config(write(tmp_path, text))


def test_file_too_large(tmp_path):
    path = write(tmp_path, "# " + "x" * (1 << 20) + "\n" + yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match=r"larger than 1048576 bytes"):
        load_config(path)


def test_alias_bomb_refused_quickly(tmp_path):
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = write(tmp_path, "\n".join(lines) + "\nmodel: *a9\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(path)
    assert time.perf_counter() - start < 2


def test_too_many_aliases(tmp_path):
    path = write(tmp_path, "x: &x 1\nspark:\n" + "".join(f"  k{i}: *x\n" for i in range(150)))
    with pytest.raises(ConfigError, match=r"more than 100 YAML aliases"):
        load_config(path)


def test_few_aliases_allowed(tmp_path):
    path = write(tmp_path, "model: models:/m/1\ninput: &t {table: t}\noutput: {table: o}\n"
                           "features: &f [a, b]\nspark: {x: &v '1', y: *v}\n")
    assert load_config(path).spark == {"x": "1", "y": "1"}


def test_deep_nesting_refused(tmp_path):
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_config(write(tmp_path, "model: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_deep_dict_refused():
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_config(cfg(features=nested))
    with pytest.raises(ConfigError, match="nested deeper than"):
        load_config(BASE, {"features": nested})


def test_non_string_key():
    with pytest.raises(ConfigError, match=r"- unknown key '\[1\]' .*valid keys at the top level"):
        load_config({**BASE, 1: "x"})


def test_bad_source_type():
    with pytest.raises(ConfigError, match="must be a YAML file path, a dict or a JobConfig, got int"):
        load_config(3)


def test_config_error_is_scoring_error():
    with pytest.raises(ScoringError):
        load_config({})
    assert ConfigError.exit_code == 2


# ---------------------------------------------------------- property-based
_names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12
                 ).filter(lambda s: s.strip() != "")
_uris = st.one_of(
    st.builds("models:/{}@{}".format, st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True),
              st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)),
    st.builds("models:/{}/{}".format, st.from_regex(r"[a-z][a-z0-9_.]{0,8}", fullmatch=True), st.integers(1, 999)),
    st.builds("runs:/{}/model".format, st.from_regex(r"[0-9a-f]{8}", fullmatch=True)),
)
_unique_names = st.lists(_names, min_size=1, max_size=4, unique=True)


@st.composite
def valid_configs(draw):
    data: dict = {"input": {"table": draw(_names)}, "output": {"table": draw(_names)}}
    columns = draw(st.lists(_names.filter(lambda n: n not in ("model_name", "model_version", "scored_at",
                                                                "scoring_run_id")), min_size=1, max_size=3, unique=True))
    if draw(st.booleans()):
        data["model"] = draw(_uris)
        data["output"]["prediction_column"] = columns[0]
    else:
        data["models"] = [{"uri": draw(_uris), "output_column": c} for c in columns]
    if draw(st.booleans()):
        data["input"]["partition_by"] = draw(_names)
        if draw(st.booleans()):
            data["input"]["partitions"] = draw(_unique_names)
    data["input"]["version"] = draw(st.none() | st.integers(0, 10**9))
    data["output"]["mode"] = draw(st.sampled_from(["overwrite_partitions", "merge", "append"]))
    if data["output"]["mode"] == "merge" or draw(st.booleans()):
        data["output"]["keys"] = draw(_unique_names)
    if data["output"]["mode"] == "merge" and "partitions" not in data["input"]:  # changes takes no partitions
        data["input"]["mode"] = draw(st.sampled_from(["snapshot", "changes"]))
    data["output"]["audit_table"] = draw(st.none() | _names)
    data["features"] = draw(st.none() | _unique_names)
    data["bad_rows"] = draw(st.sampled_from(["fail", "quarantine"]))
    if data["bad_rows"] == "quarantine" or draw(st.booleans()):
        data["quarantine_table"] = draw(_names)
    data["spark"] = draw(st.dictionaries(_names, _names, max_size=3))
    data["engine"] = {"batch_size": draw(st.none() | st.integers(1, 10**6)),
                      "device": draw(st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:3"])),
                      "arrow_batch_rows": draw(st.none() | st.integers(1, 2**20)),
                      "path": draw(st.sampled_from(["auto", "udf", "direct_scan"])),
                      "result_type": draw(st.none() | st.sampled_from(["double", "array<float>", "struct<a:int>"]))}
    data["force"] = draw(st.booleans())
    data["tracking"] = {"enabled": draw(st.booleans()), "experiment": draw(_names)}
    data["drift"] = {"enabled": draw(st.booleans()), "reference": draw(st.just("previous") | _names),
                     "threshold": draw(st.floats(1e-6, 1e6)), "on_drift": draw(st.sampled_from(["warn", "fail"])),
                     "bins": draw(st.integers(2, 1000))}
    return data


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_configs())
def test_yaml_round_trip(data):
    config = load_config(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.yaml"
        # not allow_unicode=True: PyYAML then writes a trailing U+0085 unescaped and reads it back as a line break
        path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
        assert load_config(path) == config


_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8) | st.dates()
_junk = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=10)


def _section_junk(fields):
    return st.fixed_dictionaries({}, optional={f: _junk | st.sampled_from(["merge", "changes", "quarantine", "x"])
                                               for f in fields})


_junk_configs = st.fixed_dictionaries({}, optional={
    "model": _junk | _uris, "models": _junk | st.lists(_section_junk(ModelSpec.model_fields), max_size=3),
    "input": _junk | _section_junk(InputConfig.model_fields),
    "output": _junk | _section_junk(OutputConfig.model_fields),
    "engine": _junk | _section_junk(EngineConfig.model_fields),
    "drift": _junk | _section_junk(DriftConfig.model_fields),
    "tracking": _junk | _section_junk(TrackingConfig.model_fields), "features": _junk, "bad_rows": _junk,
    "quarantine_table": _junk, "spark": _junk, "force": _junk, "typo": _junk,
})


def _only_config_errors(call):
    try:
        result = call()
    except ConfigError:
        return
    assert isinstance(result, JobConfig)


_override_keys = st.sampled_from(["model", "models", "models.0.uri", "models.1", "input", "input.table",
                                  "input.partitions", "spark", "spark.a.b", "engine.device", "output.keys", "x.y"])


@settings(max_examples=150, deadline=None)
@given(st.one_of(_junk, _junk_configs), st.none() | st.lists(st.text(max_size=20), max_size=3)
       | st.dictionaries(st.text(max_size=12) | _override_keys, _junk, max_size=3))
def test_junk_dicts_raise_only_config_error(data, overrides):
    _only_config_errors(lambda: load_config(data, overrides))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200) | _junk_configs.map(lambda d: yaml.safe_dump(d, default_flow_style=True)))
def test_junk_files_raise_only_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(text, encoding="utf-8")
        _only_config_errors(lambda: load_config(path))
