"""Plan a job run once: models pinned, input version pinned, every check done, units listed.

Runs on: the driver. :func:`make_plan` does everything that can fail before
compute (a failure here exits 2: nothing was written) and returns a frozen
:class:`JobPlan` that the runner consumes; nothing is set on it later.

1. Table names the session catalog would refuse after writing files, the input
   table's existence and the pinned version (``input.version`` or the latest now).
2. Each model URI resolved to a pinned version and its scoring UDF built;
   every feature column checked against the model's inputs (strings that parse
   as numbers are allowed in jobs: unparsable values become bad rows).
3. The output and quarantine tables' partitioning, key and lineage columns.
4. The bad-row checks (:mod:`.quality`) and the job key that names the job's
   commits (output, input, partitioning, model versions, write mode).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..config import JobConfig
from ..delta.tables import TableRef
from ..engine.lineage import added_columns
from ..engine.score import check_input
from ..engine.udf import ScoringUDF, scoring_udf
from ..errors import ConfigError, SchemaMismatchError
from ..model.registry import ScoringModel, load_model, validate_model
from .quality import FeatureCheck, feature_checks

__all__ = ["ModelPlan", "JobPlan", "make_plan", "validate_models", "digest"]


def digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelPlan:
    """One model of the job: pinned, with its output column, input columns and UDF."""

    model: ScoringModel
    output_column: str
    columns: tuple[str, ...]      # input columns fed to the model, in model order
    spark_types: tuple[Any, ...]  # the type each column feeds (None: not a scalar feature)
    udf: ScoringUDF = field(compare=False, repr=False)
    widths: tuple[int | None, ...] = ()  # values per row an array column must have (tensor inputs)


@dataclass(frozen=True)
class JobPlan:
    """Everything a run decided before compute. Frozen: the runner only reads it."""

    cfg: JobConfig
    spark: Any = field(compare=False, repr=False)
    input_ref: TableRef = None
    output_ref: TableRef = None
    quarantine_ref: TableRef | None = None
    audit_table: str = ""
    input_version: int = 0
    snapshot: Any = field(default=None, compare=False, repr=False)  # the pinned input DataFrame
    models: tuple[ModelPlan, ...] = ()
    checks: tuple[FeatureCheck, ...] = field(default=(), compare=False)
    job_key: str = ""

    @property
    def partition_by(self) -> str | None:
        return self.cfg.input.partition_by

    @property
    def first(self) -> ScoringModel:
        return self.models[0].model


def _plan_models(cfg: JobConfig, schema, spark) -> tuple[ModelPlan, ...]:
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import NumericType, StringType, StructField, StructType

    plans = []
    available = {f.name: f.dataType for f in schema.fields}
    for spec in cfg.model_specs:
        model = load_model(spec.uri, validate=False)
        udf = scoring_udf(model, features=cfg.features, batch_size=cfg.engine.batch_size, device=cfg.engine.device,
                          result_type=cfg.engine.result_type, params=cfg.engine.params,
                          model_config=cfg.engine.pyfunc_config, max_row_errors=cfg.engine.max_row_errors,
                          spark=spark)
        columns = list(udf.columns)
        binding = udf.plan(columns).binding
        widths = [None] * len(columns)
        if binding.stacked and not binding.struct_fields:
            targets = [binding.spec.inputs[0].arrow_type] * len(columns)
        elif binding.spec.declared and len(binding.spec.inputs) == len(columns):
            targets = [None if i.is_tensor else i.arrow_type for i in binding.spec.inputs]
            widths = [i.width if i.is_tensor and i.shape else None for i in binding.spec.inputs]
        else:
            targets = [None] * len(columns)
        # strings that parse as numbers are allowed in jobs: unparsable values are bad rows
        lenient = {c: from_arrow_type(t) for c, t in zip(columns, targets)
                   if t is not None and isinstance(available.get(c), StringType)
                   and isinstance(from_arrow_type(t), NumericType)}
        check_input(udf, StructType([StructField(f.name, lenient.get(f.name, f.dataType), True)
                                     for f in schema.fields]), columns)
        plans.append(ModelPlan(model, spec.output_column, tuple(columns),
                               tuple(None if t is None else from_arrow_type(t) for t in targets), udf,
                               tuple(widths)))
    return tuple(plans)


def _validate_schema(cfg: JobConfig, df, plans: Sequence[ModelPlan], spark) -> None:
    cols = set(df.columns)
    part = cfg.input.partition_by
    if part is not None and part not in cols:
        raise SchemaMismatchError(
            f"input.partition_by {part!r} is not a column of {cfg.input.table!r}. Columns: "
            f"{sorted(cols)}. Fix: set input.partition_by to one of them."
        )
    missing_keys = [k for k in cfg.output.keys if k not in cols]
    if missing_keys:
        raise SchemaMismatchError(
            f"output.keys {missing_keys} are not columns of the input {cfg.input.table!r}. "
            f"Columns: {sorted(cols)}. Fix: name key columns that exist."
        )
    added = [p.output_column for p in plans] + added_columns(len(plans), job=True)
    clash = sorted(set(added) & cols)
    if clash:
        raise SchemaMismatchError(
            f"the input {cfg.input.table!r} already has column(s) {clash} that scoring adds. "
            "Fix: choose another output.prediction_column / output_column, or drop them from the input."
        )
    wanted = [part] if part else []
    targets = [("output table", cfg.output.table)]
    if cfg.bad_rows == "quarantine" and cfg.quarantine_table:
        targets.append(("quarantine_table", cfg.quarantine_table))
    for what, name in targets:
        ref = TableRef.parse(name)
        if not ref.exists(spark):
            continue
        existing = ref.partition_columns(spark)
        if existing != wanted:
            raise SchemaMismatchError(
                f"{what} {name!r} is partitioned by {existing}, but the input is "
                f"partitioned by {wanted}. Fix: write to a new table, or set input.partition_by "
                "to match."
            )


def _check_table_names(spark, refs) -> None:
    """Spark's session catalog takes only ``[A-Za-z0-9_]`` database and table names, and
    refuses others only after Delta has written the new table's first files into the
    warehouse: check the tables a job may create before anything is written."""
    default = spark.conf.get("spark.sql.defaultCatalog", "spark_catalog")
    for what, ref in refs:
        if ref is None or ref.is_path:
            continue
        parts = ref.name.split(".")
        if (parts[0] if len(parts) == 3 else default) != "spark_catalog":
            continue  # another catalog (e.g. Unity Catalog) has its own rules
        bad = [p for p in parts[-2:] if not re.fullmatch(r"[A-Za-z0-9_]+", p)]
        if bad:
            raise ConfigError(
                f"{what} {ref.name!r}: Spark's session catalog accepts only letters, digits and _ in "
                f"database and table names, not {bad}. Fix: rename it, or give a path (with a '/') "
                "for a path-based Delta table."
            )


def make_plan(cfg: JobConfig, spark) -> JobPlan:
    """Driver: validate and pin everything before compute (errors exit 2, nothing written)."""
    input_ref = TableRef.parse(cfg.input.table)
    output_ref = TableRef.parse(cfg.output.table)
    quarantine_ref = TableRef.parse(cfg.quarantine_table) if cfg.quarantine_table else None
    _check_table_names(spark, [("output.table", output_ref), ("quarantine_table", quarantine_ref),
                               ("output.audit_table", TableRef.parse(cfg.audit_table))])
    if not input_ref.exists(spark):
        raise ConfigError(
            f"input.table {cfg.input.table!r}: no Delta table there. Fix: check the name or "
            "path (relative paths are relative to the working directory)."
        )
    latest = input_ref.latest_version(spark)
    version = cfg.input.version if cfg.input.version is not None else latest
    if version > latest:
        raise ConfigError(
            f"input.version {version} does not exist; the latest version of "
            f"{cfg.input.table!r} is {latest}. Fix: omit input.version or use <= {latest}."
        )
    snapshot = input_ref.read(spark, version)
    models = _plan_models(cfg, snapshot.schema, spark)
    _validate_schema(cfg, snapshot, models, spark)
    models_key = [(p.model.uri, p.model.fingerprint, p.output_column) for p in models]
    job_key = digest(output_ref.name, input_ref.name, cfg.input.partition_by, models_key, cfg.output.mode)
    feature_cols, targets, widths = [], [], []
    for p in models:
        for c, t, w in zip(p.columns, p.spark_types, p.widths or [None] * len(p.columns)):
            if c not in feature_cols:
                feature_cols.append(c)
                targets.append(t)
                widths.append(w)
    checks = tuple(feature_checks(snapshot.schema, feature_cols, targets, widths))
    return JobPlan(cfg=cfg, spark=spark, input_ref=input_ref, output_ref=output_ref, quarantine_ref=quarantine_ref,
                   audit_table=cfg.audit_table, input_version=int(version), snapshot=snapshot, models=models,
                   checks=checks, job_key=job_key)


def validate_models(plan: JobPlan) -> None:
    """Driver: load every model once here, before the first write (corrupt artifacts exit 2).

    Only when there is work: a run with nothing to do never imports torch or scikit-learn.
    """
    for p in plan.models:
        validate_model(p.model)
