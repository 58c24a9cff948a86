"""The job config's schema: strict, typed, frozen pydantic models.

Runs on: the driver only (nothing here imports pyspark). Unknown keys are
rejected (``extra="forbid"``); validators raise :class:`Invalid` with what was
expected and the fix, which :mod:`.messages` turns into one readable line.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from ..engine.lineage import JOB_LINEAGE_COLUMNS as LINEAGE_COLUMNS

__all__ = ["JobConfig", "ModelSpec", "InputConfig", "OutputConfig", "EngineConfig", "MlflowConfig",
           "TrackingConfig", "DriftConfig", "Invalid", "Rules", "LINEAGE_COLUMNS"]


class Invalid(ValueError):
    """Raised inside validators: what was expected and, optionally, the fix."""

    def __init__(self, expected: str, fix: str | None = None, key: str = "", value: Any = None):
        super().__init__(expected)
        self.expected, self.fix = expected, fix
        self.key, self.value = key, value  # set by model validators, relative to their model


class Rules(ValueError):
    """Several cross-field problems found at once by a model validator."""

    def __init__(self, problems: list[Invalid]):
        super().__init__("; ".join(p.expected for p in problems))
        self.problems = problems


# ---------------------------------------------------------------- field types
def _check_name(value: str) -> str:
    if not value.strip():
        raise Invalid("a non-empty name", "give the name, or remove the key to use the default")
    if "\x00" in value:
        raise Invalid("a name without NUL characters", "remove the \\x00 character")
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
        raise Invalid(f"a model URI of the form {bad}",
                       "e.g. models:/churn@champion or models:/churn/3")
    return uri


Name = Annotated[str, AfterValidator(_check_name)]


PartitionValue = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_check_name)]


ModelUri = Annotated[str, AfterValidator(_check_uri)]


def _names(kind: str, example: str, allow_empty: bool = False) -> Any:
    """A list of unique names, stored as a tuple; empty only if ``allow_empty``."""

    def check(values: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if values is not None and len(set(values)) != len(values):
            dupes = sorted({v for v in values if values.count(v) > 1})
            raise Invalid(f"{kind} without duplicates (repeated: {', '.join(dupes)})",
                           "list each once")
        if values is not None and not values and not allow_empty:
            raise Invalid(f"a non-empty list of {kind}, e.g. [{example}]",
                           "list at least one, or remove the key")
        return values

    return AfterValidator(check)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- the schema
class ModelSpec(Strict):
    """One model to score and the output column its predictions go to."""

    uri: ModelUri = Field(
        description="a model URI: models:/name@alias, models:/name/3, runs:/<id>/path, or a local path"
    )
    output_column: Name = Field(description="the output column for this model's predictions")


class InputConfig(Strict):
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
            raise Rules([Invalid(
                "input.partition_by to be set when input.partitions is given",
                "set input.partition_by to the partition column, or remove input.partitions",
                key="partition_by")])
        if self.partitions is not None and self.mode == "changes":
            raise Rules([Invalid(
                "no input.partitions with input.mode: changes (the Change Data Feed decides which rows "
                "are scored)",
                "remove input.partitions, or use input.mode: snapshot to score given partitions",
                key="partitions", value=list(self.partitions))])
        return self


class OutputConfig(Strict):
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
    partitions_per_commit: int = Field(
        32, strict=True, ge=1, le=10_000,
        description="partitions scored in one Spark job and committed in one idempotent Delta commit "
                    "(a backfill of many small partitions pays the fixed costs once per group; 1: one commit "
                    "per partition; input.mode: changes always commits per partition)",
    )

    @model_validator(mode="after")
    def _merge_needs_keys(self) -> OutputConfig:
        if self.mode == "merge" and not self.keys:
            raise Rules([Invalid(
                "a non-empty list of key columns when output.mode is 'merge'",
                "set output.keys, e.g. [customer_id], or use output.mode: overwrite_partitions",
                key="keys", value=[])])
        return self


class EngineConfig(Strict):
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
    max_row_errors: int = Field(
        1000, strict=True, ge=0,
        description="rows one task may set aside because the model raised on them (pyfunc models: a corrupt "
                    "image is one row's error) before the partition fails",
    )
    pyfunc_config: dict[str, Any] | None = Field(
        None, alias="model_config",
        description="passed to mlflow.pyfunc.load_model(..., model_config=) on the executors (YAML key "
                    "model_config; pydantic reserves the name)",
    )


class MlflowConfig(Strict):
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


class TrackingConfig(Strict):
    """Logging the run to MLflow."""

    enabled: bool = Field(True, strict=True, description="log the run to MLflow")
    experiment: Name = Field("spark_scoring", description="the MLflow experiment name")


class DriftConfig(Strict):
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
            raise Invalid("a finite number > 0, e.g. 0.2")
        return value


class JobConfig(Strict):
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
            problems.append(Invalid(
                "exactly one of 'model' or 'models', not both",
                "use one: 'model: <uri>' for one model, or 'models:' for several",
                key="model", value="both 'model' and 'models'"))
        elif self.model is None and not self.models:
            problems.append(Invalid(
                "one of 'model' (a model URI) or 'models' (a non-empty list)",
                "add 'model: models:/<name>@<alias>' or a 'models:' list", key="model"))
        seen: set[str] = set()
        for i, spec in enumerate(self.model_specs):
            key = "output.prediction_column" if self.models is None else f"models[{i}].output_column"
            if spec.output_column in LINEAGE_COLUMNS:
                problems.append(Invalid(
                    f"a column other than the lineage columns {', '.join(LINEAGE_COLUMNS)}",
                    "choose another output column name", key=key, value=spec.output_column))
            elif spec.output_column in seen:
                problems.append(Invalid(
                    "a unique output column per model", "give each model its own output_column",
                    key=key, value=spec.output_column))
            seen.add(spec.output_column)
        if self.bad_rows == "quarantine" and self.quarantine_table is None:
            problems.append(Invalid(
                "a table name or path when bad_rows is 'quarantine'",
                "set quarantine_table, or use bad_rows: fail", key="quarantine_table"))
        if self.input.mode == "changes" and self.output.mode != "merge":
            problems.append(Invalid(
                "output.mode 'merge' with output.keys when input.mode is 'changes' "
                "(changed rows are upserted into the output by key, replacing their earlier scores)",
                "set output.mode: merge and output.keys: [<key columns>], or use input.mode: snapshot",
                key="input.mode", value="changes"))
        if problems:
            raise Rules(problems)
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
