"""The job config: strict, typed, frozen; read from YAML and ``--set`` overrides.

Runs on: the driver only (nothing here imports pyspark).

``load_config(path_or_dict, overrides)`` is the one way in. Every problem it
finds becomes a single :class:`~spark_scoring.errors.ConfigError` whose message
lists each problem on its own line: the dotted key, the value given, what was
expected and how to fix it, so a bad config fails before Spark starts.
"""
from __future__ import annotations

import copy
import datetime as dt
import difflib
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spark_scoring.errors import ConfigError

__all__ = [
    "JobConfig",
    "ModelSpec",
    "InputConfig",
    "OutputConfig",
    "EngineConfig",
    "TrackingConfig",
    "DriftConfig",
    "MlflowConfig",
    "load_config",
    "parse_overrides",
]

#: Columns the job adds to every output row; prediction columns may not use them.
LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at", "scoring_run_id")
MAX_FILE_BYTES = 1 << 20  # a job config is a few dozen keys
MAX_ALIASES = 100  # YAML "billion laughs" guard
MAX_DEPTH = 64  # nesting depth while composing YAML
MAX_VALUES = 100_000  # values in the loaded document, counting alias expansions


class _Invalid(ValueError):
    """Raised inside validators: what was expected and, optionally, the fix."""

    def __init__(self, expected: str, fix: str | None = None, key: str = "", value: Any = None):
        super().__init__(expected)
        self.expected, self.fix = expected, fix
        self.key, self.value = key, value  # set by model validators, relative to their model


class _Rules(ValueError):
    """Several cross-field problems found at once by a model validator."""

    def __init__(self, problems: list[_Invalid]):
        super().__init__("; ".join(p.expected for p in problems))
        self.problems = problems


# ---------------------------------------------------------------- field types
def _check_name(value: str) -> str:
    if not value.strip():
        raise _Invalid("a non-empty name", "give the name, or remove the key to use the default")
    if "\x00" in value:
        raise _Invalid("a name without NUL characters", "remove the \\x00 character")
    return value


def _scalar_to_str(value: Any) -> Any:
    """YAML turns ``2026-11-27`` into a date and ``7`` into an int; we want strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (int, float)):
        return str(value)
    return value


def _check_uri(uri: str) -> str:
    _check_name(uri)
    bad = None
    if uri.startswith("models:/"):
        parts = uri[len("models:/") :].split("/")
        name, at, alias = parts[0].rpartition("@")
        if len(parts) > 2 or not all(p.strip() for p in parts) or (at and not (name and alias)):
            bad = "models:/<name>@<alias>, models:/<name>/<version> or models:/<model_id>"
    elif uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
        if not run_id.strip() or not path.strip():
            bad = "runs:/<run_id>/<artifact_path>"
    if bad:
        raise _Invalid(f"a model URI of the form {bad}",
                       "e.g. models:/churn@champion or models:/churn/3")
    return uri


Name = Annotated[str, AfterValidator(_check_name)]
"""A column or table name: any characters (quoted later), but not blank and no NUL."""
PartitionValue = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_check_name)]
ModelUri = Annotated[str, AfterValidator(_check_uri)]


def _names(kind: str, example: str, allow_empty: bool = False) -> Any:
    """A list of unique names, stored as a tuple; empty only if ``allow_empty``."""

    def check(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is not None and len(set(values)) != len(values):
            dupes = sorted({v for v in values if values.count(v) > 1})
            raise _Invalid(f"{kind} without duplicates (repeated: {', '.join(dupes)})",
                           "list each once")
        if values is not None and not values and not allow_empty:
            raise _Invalid(f"a non-empty list of {kind}, e.g. [{example}]",
                           "list at least one, or remove the key")
        return values

    return AfterValidator(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- the schema
class ModelSpec(_Strict):
    """One model to score and the output column its predictions go to."""

    uri: ModelUri = Field(
        description="a model URI: models:/name@alias, models:/name/3, runs:/<id>/path, or a local path"
    )
    output_column: Name = Field(description="the output column for this model's predictions")


class InputConfig(_Strict):
    """What to read: the input table, its partitions and how to read them."""

    table: Name = Field(description="a table name (main.sales.customers) or a Delta table path")
    partition_by: Name | None = Field(
        None, description="the partition column; absent: the whole table is one unit"
    )
    partitions: Annotated[
        tuple[PartitionValue, ...] | None, _names("partition values", '"2026-11-27"')
    ] = Field(
        None,
        description="partition values to score (dates and numbers become strings); "
        "absent: every partition not yet scored by this model version",
    )
    mode: Literal["snapshot", "changes"] = Field(
        "snapshot",
        description="snapshot: read the partitions as they are; changes: read the Change Data Feed",
    )
    version: int | None = Field(
        None, strict=True, ge=0,
        description="pin this input Delta version (time travel); absent: the latest at job start",
    )

    @model_validator(mode="after")
    def _partitions_need_column(self) -> InputConfig:
        if self.partitions is not None and self.partition_by is None:
            raise _Rules([_Invalid(
                "input.partition_by to be set when input.partitions is given",
                "set input.partition_by to the partition column, or remove input.partitions",
                key="partition_by")])
        if self.partitions is not None and self.mode == "changes":
            raise _Rules([_Invalid(
                "no input.partitions with input.mode: changes (the Change Data Feed decides which rows "
                "are scored)",
                "remove input.partitions, or use input.mode: snapshot to score given partitions",
                key="partitions", value=list(self.partitions))])
        return self


class OutputConfig(_Strict):
    """Where and how predictions are written."""

    table: Name = Field(
        description="a table name or path; created if missing, partitioned like the input"
    )
    mode: Literal["overwrite_partitions", "merge", "append"] = Field(
        "overwrite_partitions",
        description="overwrite_partitions: replace the scored partitions; merge: upsert by keys; append",
    )
    keys: Annotated[tuple[Name, ...], _names("key columns", "customer_id", allow_empty=True)] = Field(
        (), description="the columns identifying a row; required for merge"
    )
    prediction_column: Name = Field(
        "prediction", description="the prediction column when one `model` is given"
    )
    audit_table: Name | None = Field(
        None, description='the run audit table; absent: "<output.table>_scoring_runs"'
    )

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> OutputConfig:
        if self.mode == "merge" and not self.keys:
            raise _Rules([_Invalid(
                "a non-empty list of key columns when output.mode is 'merge'",
                "set output.keys, e.g. [customer_id], or use output.mode: overwrite_partitions",
                key="keys", value=[])])
        return self


class EngineConfig(_Strict):
    """How the model is called on the executors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    batch_size: int | None = Field(
        None, strict=True, gt=0,
        description="rows per model call (re-batched across Arrow batches); absent: 8192 for torch and "
                    "pyfunc, 16384 for scikit-learn",
    )
    arrow_batch_rows: int | None = Field(
        None, strict=True, gt=0, le=1_048_576,
        description="rows per Arrow batch Spark hands the UDF: sets spark.sql.parquet.columnarReaderBatchSize "
                    "and spark.sql.execution.arrow.maxRecordsPerBatch while the job scores; absent: the "
                    "session's values (Spark's 4096 measured as fast as 16384, bench/RESULTS.md)",
    )
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$")] = Field(
        "auto", description="auto, cpu, cuda or cuda:N"
    )
    path: Literal["auto", "udf", "direct_scan"] = Field(
        "auto",
        description="auto: the direct Arrow scan for clean partitions of a path-addressed snapshot job with "
                    "one torch or scikit-learn model, else the UDF path; udf: always the UDF path; "
                    "direct_scan: as auto, catalog tables included, logging each partition that cannot take it",
    )
    result_type: Name | None = Field(
        None, description="a Spark DDL type string overriding the model signature's output"
    )
    params: dict[str, Any] | None = Field(
        None, description="inference params for the model's predict, checked against its signature's "
                          "ParamSchema (as spark_udf's params=)",
    )
    pyfunc_config: dict[str, Any] | None = Field(
        None, alias="model_config",
        description="passed to mlflow.pyfunc.load_model(..., model_config=) on the executors (YAML key "
                    "model_config; pydantic reserves the name)",
    )


class MlflowConfig(_Strict):
    """Where the MLflow tracking server and model registry are.

    Precedence, for each: the CLI flag (``--tracking-uri`` / ``--registry-uri``),
    then this section, then ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``, then
    MLflow's default (the registry defaults to the tracking server). A relative
    ``sqlite:///`` path is relative to the config file's folder.
    """

    tracking_uri: Name | None = Field(
        None, description="the MLflow tracking URI (sqlite:///path/mlflow.db, http://host:5000, databricks)"
    )
    registry_uri: Name | None = Field(
        None, description="the model registry URI (databricks-uc for Unity Catalog); absent: the tracking URI"
    )


class TrackingConfig(_Strict):
    """Logging the run to MLflow."""

    enabled: bool = Field(True, strict=True, description="log the run to MLflow")
    experiment: Name = Field("spark_scoring", description="the MLflow experiment name")


class DriftConfig(_Strict):
    """Score drift (PSI) against a reference partition."""

    enabled: bool = Field(True, strict=True, description="compute drift")
    reference: PartitionValue = Field(
        "previous", description='"previous" or a partition value to compare against'
    )
    threshold: float = Field(0.2, gt=0, allow_inf_nan=False, description="PSI above this is drift")
    on_drift: Literal["warn", "fail"] = Field("warn", description="warn or fail when drift is found")
    bins: int = Field(10, strict=True, ge=2, le=1000, description="histogram bins for PSI")
    min_rows: int = Field(
        100, strict=True, ge=0,
        description="skip PSI when the partition or its reference has fewer scored rows "
        "(PSI of a few dozen rows is noise: two draws of one distribution can exceed 1)",
    )

    @field_validator("threshold", mode="before")
    @classmethod
    def _no_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise _Invalid("a finite number > 0, e.g. 0.2")
        return value


class JobConfig(_Strict):
    """A whole scoring job. Build it with :func:`load_config` (which turns
    pydantic's ``ValidationError`` into one readable :class:`ConfigError`).

    Give exactly one of ``model`` (one model, predictions in
    ``output.prediction_column``) or ``models`` (several, each with its column);
    :attr:`model_specs` returns them uniformly.
    """

    model: ModelUri | None = Field(None, description="the model URI (or use `models:`)")
    models: tuple[ModelSpec, ...] | None = Field(
        None, description="several models scored in one pass (or use `model:`)"
    )
    input: InputConfig = Field(description="the input table and partitions")
    features: Annotated[tuple[Name, ...] | None, _names("feature columns", "f1, f2")] = Field(
        None, description="the feature columns; absent: the model signature's inputs"
    )
    output: OutputConfig = Field(description="the output table and write mode")
    bad_rows: Literal["fail", "quarantine"] = Field(
        "fail", description="rows with null/NaN/infinite features: fail the run, or quarantine them"
    )
    quarantine_table: Name | None = Field(
        None, description="where quarantined rows go; required for bad_rows: quarantine"
    )
    spark: dict[str, str] = Field(
        default_factory=dict,
        description="extra Spark conf for the embedded session (numbers and booleans become strings)",
    )
    engine: EngineConfig = Field(default_factory=EngineConfig, description="batch size, device, path")
    force: bool = Field(
        False, strict=True,
        description="rescore partitions even if already scored by this model and input version",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig,
                                 description="the MLflow tracking server and registry")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow run logging")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="score drift checks")

    def __hash__(self) -> int:  # ``spark`` is a dict, so hash the serialized form
        return hash(self.model_dump_json())

    @field_validator("spark", mode="before")
    @classmethod
    def _spark_values_to_str(cls, value: Any) -> Any:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {k: _scalar_to_str(v) for k, v in value.items()}
        return value

    @field_validator("engine", "tracking", "drift", "mlflow", mode="before")
    @classmethod
    def _empty_section(cls, value: Any) -> Any:
        return {} if value is None else value  # `engine:` with every child commented out

    @model_validator(mode="after")
    def _cross_field_rules(self) -> JobConfig:
        problems = []
        if self.model is not None and self.models is not None:
            problems.append(_Invalid(
                "exactly one of 'model' or 'models', not both",
                "use one: 'model: <uri>' for one model, or 'models:' for several",
                key="model", value="both 'model' and 'models'"))
        elif self.model is None and not self.models:
            problems.append(_Invalid(
                "one of 'model' (a model URI) or 'models' (a non-empty list)",
                "add 'model: models:/<name>@<alias>' or a 'models:' list", key="model"))
        seen: set[str] = set()
        for i, spec in enumerate(self.model_specs):
            key = "output.prediction_column" if self.models is None else f"models[{i}].output_column"
            if spec.output_column in LINEAGE_COLUMNS:
                problems.append(_Invalid(
                    f"a column other than the lineage columns {', '.join(LINEAGE_COLUMNS)}",
                    "choose another output column name", key=key, value=spec.output_column))
            elif spec.output_column in seen:
                problems.append(_Invalid(
                    "a unique output column per model", "give each model its own output_column",
                    key=key, value=spec.output_column))
            seen.add(spec.output_column)
        if self.bad_rows == "quarantine" and self.quarantine_table is None:
            problems.append(_Invalid(
                "a table name or path when bad_rows is 'quarantine'",
                "set quarantine_table, or use bad_rows: fail", key="quarantine_table"))
        if self.input.mode == "changes" and self.output.mode != "merge":
            problems.append(_Invalid(
                "output.mode 'merge' with output.keys when input.mode is 'changes' "
                "(changed rows are upserted into the output by key, replacing their earlier scores)",
                "set output.mode: merge and output.keys: [<key columns>], or use input.mode: snapshot",
                key="input.mode", value="changes"))
        if problems:
            raise _Rules(problems)
        return self

    @property
    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The models to score: one spec per model, each with its output column."""
        if self.models is not None:
            return self.models
        if self.model is None:
            return ()
        return (ModelSpec(uri=self.model, output_column=self.output.prediction_column),)

    @property
    def audit_table(self) -> str:
        """``output.audit_table``, else ``output.table + "_scoring_runs"``."""
        return self.output.audit_table or self.output.table + "_scoring_runs"


# ------------------------------------------------------------- error messages
_SECTIONS: dict[str, type[BaseModel]] = {
    "input": InputConfig, "output": OutputConfig, "engine": EngineConfig,
    "tracking": TrackingConfig, "drift": DriftConfig, "models": ModelSpec, "mlflow": MlflowConfig,
}
_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlevel = 70, 70, 3


def _keys(model: type[BaseModel]) -> list[str]:
    """The keys a section takes, as they are written in YAML (aliases where a field has one)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def _field(model: type[BaseModel], key: str):
    return next((f for name, f in model.model_fields.items() if (f.alias or name) == key), None)


def _show(value: Any) -> str:
    text = "null" if value is None else _repr.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _section(loc: tuple[Any, ...]) -> type[BaseModel]:
    names = [p for p in loc if isinstance(p, str)]
    return _SECTIONS.get(names[0], JobConfig) if names else JobConfig


def _unknown_key(loc: tuple[Any, ...], value: Any) -> str:
    key, where = _dotted(loc), _dotted(loc[:-1])
    fields = sorted(_keys(_section(loc[:-1])))
    name = str(loc[-1])
    guess = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    if guess:
        hint = f"{where}.{guess[0]}" if where else guess[0]
    else:  # a known key at the wrong level, e.g. `prediction_column` at the top
        hint = next((f"{s}.{name}" for s, m in _SECTIONS.items()
                     if s != "models" and name in _keys(m)), "")
    valid = f"keys {f'under {where!r}' if where else 'at the top level'}: {', '.join(fields)}"
    line = f"- unknown key '{key}' (got {_show(value)})"
    if hint:
        return f"{line}; did you mean '{hint}'? Valid {valid}. Fix: rename it to '{hint}'."
    return f"{line}; valid {valid}. Fix: remove it or use one of those keys."


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _expected(err: Mapping[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "literal_error":
        return f"one of {ctx['expected']}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        model = _SECTIONS.get(_dotted(err["loc"][:1]))
        return f"a mapping of {', '.join(_keys(model))}" if model else "a mapping of key: value"
    simple = {
        "missing": "a value (this key is required)", "string_type": "a string", "bool_type": "true or false",
        "int_type": "a whole number", "int_parsing": "a whole number", "int_from_float": "a whole number",
        "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
        "tuple_type": "a list, e.g. [a, b]", "list_type": "a list, e.g. [a, b]",
        "greater_than": f"a number > {_num(ctx.get('gt'))}",
        "greater_than_equal": f"a number >= {_num(ctx.get('ge'))}",
        "less_than_equal": f"a number <= {_num(ctx.get('le'))}",
        "string_pattern_mismatch": "auto, cpu, cuda or cuda:N",
    }
    return simple.get(kind, str(err.get("msg", "a valid value")).lower())


def _problem_lines(err: Mapping[str, Any]) -> list[str]:
    loc = tuple(err["loc"])
    if err["type"] in ("extra_forbidden", "invalid_key"):
        return [_unknown_key(loc, err.get("input"))]
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _Rules):
        prefix = _dotted(loc)
        return [_line(f"{prefix}.{p.key}" if prefix else p.key, _show(p.value), p.expected, p.fix)
                for p in cause.problems]
    key = _dotted(loc) or "(top level)"
    if isinstance(cause, _Invalid):
        return [_line(key, _show(err.get("input")), cause.expected, cause.fix)]
    value = "nothing" if err["type"] == "missing" else _show(err.get("input"))
    fix = f"add '{key}'" if err["type"] == "missing" else None
    field = _field(_section(loc[:-1]), str(loc[-1])) if loc else None
    if fix and field is not None and field.description:
        fix += f": {field.description}"
    return [_line(key, value, _expected(err), fix)]


def _line(key: str, value: str, expected: str, fix: str | None) -> str:
    return f"- {key}: got {value}; expected {expected}. Fix: {fix or f'set {key} to {expected}'}."


def _format_errors(exc: ValidationError, source: str = "") -> str:
    lines = [line for err in exc.errors() for line in _problem_lines(err)]
    where = f" {source}" if source else ""
    count = f"{len(lines)} problem{'s' * (len(lines) != 1)}"
    return f"invalid job config{where} ({count}):\n" + "\n".join(lines)


# ------------------------------------------------------------------ YAML input
class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load`` semantics, refusing alias bombs, deep nesting and duplicate keys."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (line {mark.line + 1}); "
                                  "refusing a possible alias bomb. Fix: write the values out")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConfigError(f"YAML nested deeper than {MAX_DEPTH} levels; "
                              "a job config is a few levels deep")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if ident in seen:
                    raise ConfigError(
                        f"duplicate key {key_node.value!r} at line {line} (first at line "
                        f"{seen[ident]}); YAML would silently keep the last. Fix: keep one")
                seen[ident] = line
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str, where: str) -> Any:
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "cannot parse"
        raise ConfigError(f"{where}: YAML syntax error{at}: {problem}. "
                          "Fix: check indentation, colons and quoting on that line") from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: cannot read YAML: {exc}") from None
    _check_size(data, where)
    return data


def _check_size(data: Any, where: str) -> None:
    """Count values, aliases expanded, and depth (bounded work), so a bomb cannot reach pydantic."""
    stack, count = [(data, 0)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{where}: more than {MAX_VALUES} values once YAML aliases are expanded; "
                              "refusing a possible alias bomb. A job config is a few dozen keys")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested deeper than {MAX_DEPTH} levels; "
                              "a job config is a few levels deep")
        if isinstance(item, Mapping):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((child, depth + 1) for child in item)


def _read_file(path: Path) -> Any:
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path} (working directory: {Path.cwd()})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_FILE_BYTES} bytes; "
                          "a job config is a few KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from None
    return _yaml(text, str(path))


# ------------------------------------------------------------------- overrides
def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse ``["engine.batch_size=4096", "input.partitions=[a,b]"]`` (the CLI's ``--set``).

    Values are YAML scalars or flow collections; a value YAML cannot read is
    kept as the plain string. Later items win over earlier ones.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise ConfigError(f"overrides must be a list of 'key.path=value' strings, got {_show(items)}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"bad override {_show(item)}: expected the form key.path=value, "
                              "e.g. engine.batch_size=4096 or input.partitions=[2026-11-27]")
        key, text = item.split("=", 1)
        try:
            value = _yaml(text, f"override {key.strip()}") if text.strip() else None
        except ConfigError:
            value = text
        out[key.strip()] = value
    return out


def _override_path(key: str) -> list[str | int]:
    """Check a dotted key against the schema; return its path (``spark.`` keeps the rest whole)."""
    parts, path = key.split("."), []
    model: type[BaseModel] | None = JobConfig
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if path == ["spark"]:  # Spark settings contain dots themselves
            setting = ".".join(parts[i:])
            if not setting.strip():
                raise ConfigError(f"override '{key}': name the Spark setting, "
                                  "e.g. spark.spark.sql.shuffle.partitions=8")
            return [*path, setting]
        if path == ["models"]:
            if not part.isdigit():
                raise ConfigError(f"override '{key}': 'models' is a list; use models.<index>.uri "
                                  "or models.<index>.output_column")
            path.append(int(part))
            model = ModelSpec
            continue
        if model is None:
            raise ConfigError(f"override '{key}': '{where}' is a single value, not a section; "
                              f"use '{where}=<value>'")
        fields = sorted(_keys(model))
        if part not in fields:
            guess = difflib.get_close_matches(part, fields, n=1, cutoff=0.6)
            mean = f" Did you mean '{'.'.join([*parts[:i], guess[0]])}'?" if guess else ""
            level = f"under '{where}'" if where else "at the top level"
            raise ConfigError(f"override '{key}': unknown key '{part}' {level}.{mean} "
                              f"Valid keys {level}: {', '.join(fields)}")
        path.append(part)
        model = _SECTIONS.get(part) if model is JobConfig else None
    return path


def _apply(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) in ``data``, creating missing sections."""
    path = _override_path(key)
    if path == ["model"] and value is not None:
        data.pop("models", None)  # an override picks the model, whichever form the file used
    elif path == ["models"] and value is not None:
        data.pop("model", None)
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where, index_next = _dotted(tuple(path[: i + 1])), isinstance(path[i + 1], int)
        if isinstance(part, int):
            child = node[part] if part < len(node) else None
        else:
            child = node.get(part)
            child = {} if child is None and not index_next else child
        child = list(child) if isinstance(child, tuple) else child
        if index_next and not (isinstance(child, list) and path[i + 1] < len(child)):
            raise ConfigError(f"override '{key}': '{where}' has no item {path[i + 1]}")
        if not index_next and not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{where}' is {_show(child)}, not a mapping")
        node[part] = child
        node = child
    node[path[-1]] = value


# ------------------------------------------------------------------ the entry
def load_config(
    source: str | Path | Mapping[str, Any] | JobConfig,
    overrides: list[str] | tuple[str, ...] | Mapping[str, Any] | None = None,
) -> JobConfig:
    """Load and validate a job config; raise :class:`ConfigError` listing every problem.

    ``source`` is a YAML file path, a dict, or a :class:`JobConfig`. ``overrides``
    is a list of ``"key.path=value"`` strings (see :func:`parse_overrides`) or a
    dict of dotted keys to values; each key must exist in the schema. Setting
    ``model`` drops a ``models`` list from the source, and the other way round.
    The caller's dict is not changed.
    """
    where = ""
    if isinstance(source, JobConfig):
        if not overrides:
            return source
        data: Any = source.model_dump(exclude_none=True, by_alias=True)
    elif isinstance(source, (str, Path)):
        where = str(source)
        data = _read_file(Path(source))
        if isinstance(data, dict) and isinstance(data.get("mlflow"), dict):  # before --set: those are the caller's
            data["mlflow"] = {k: _relative_to(v, Path(source).resolve().parent) for k, v in data["mlflow"].items()}
    elif isinstance(source, Mapping):
        _check_size(source, "config")
        data = copy.deepcopy(dict(source))
    else:
        raise ConfigError("config source must be a YAML file path, a dict or a JobConfig, "
                          f"got {type(source).__name__}")
    if not isinstance(data, dict):
        shown = "an empty file" if data is None else f"{type(data).__name__} {_show(data)}"
        raise ConfigError(f"{where or 'config'}: the top level must be a mapping of keys "
                          f"(model, input, output, ...), got {shown}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError("override key must be a dotted string like engine.batch_size, "
                                  f"got {_show(key)}")
            _apply(data, key.strip(), value)
        _check_size(data, where or "config")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, where)) from None


def _relative_to(uri: Any, folder: Path) -> Any:
    """``sqlite:///rel/mlflow.db`` (a relative path) made absolute against ``folder``; others as they are."""
    if not isinstance(uri, str) or not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    rel = uri[len("sqlite:///"):]
    if rel.startswith(":memory:") or not rel:
        return uri
    return "sqlite:///" + str((folder / rel).resolve())
