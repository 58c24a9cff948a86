"""``score()``: predictions and lineage appended to a DataFrame, checked before any job.

Runs on: the driver (a lazy transformation, like any other); the scoring runs
on executors through :mod:`spark_scoring.engine.udf`.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..errors import SchemaMismatchError
from ..model.registry import ScoringModel, load_model
from ..model.signature import plan_feature_casts
from .lineage import LINEAGE_COLUMNS, lineage_columns
from .udf import ScoringUDF, scoring_udf

__all__ = ["score", "check_input"]


def check_input(udf: ScoringUDF, schema, columns: Sequence[str]) -> None:
    """Driver: every column exists and can feed its model input (:class:`SchemaMismatchError` otherwise)."""
    available = {f.name: f.dataType for f in schema.fields}
    binding = udf.plan(columns).binding
    one_struct = len(columns) == 1 and not binding.stacked and len(binding.spec.inputs) > 1
    if binding.struct_fields or one_struct:
        _check_struct(available, columns[0], binding.struct_fields or binding.spec.names, udf.model.uri)
        feeds = []
    elif not binding.spec.declared:
        feeds = [(c, None) for c in columns]
    elif binding.stacked:
        feeds = [(c, binding.spec.inputs[0]) for c in columns]
    else:
        feeds = list(zip(columns, binding.spec.inputs))
    plan_feature_casts(available, feeds, udf.model.uri, stacked=binding.stacked)


def _check_struct(available: dict, column: str, names: Sequence[str], uri: str) -> None:
    """One struct column feeding several inputs by name: it must be a struct with those fields."""
    from pyspark.sql.types import StructType

    plan_feature_casts(available, [(column, None)], uri)
    source = available[column]
    fields = [f.name for f in source.fields] if isinstance(source, StructType) else None
    missing = [n for n in names if fields is None or n not in fields]
    if missing:
        raise SchemaMismatchError(
            f"model {uri!r} takes {len(names)} inputs {list(names)}, but column {column!r} is "
            f"{source.simpleString()}. Fix: pass one column per input, or one struct with the fields {list(names)} "
            f"(F.struct(...)); missing: {missing}."
        )


def score(
    df,
    model: ScoringModel | str,
    *,
    features: Sequence[str] | None = None,
    output_col: str = "prediction",
    lineage: bool = True,
    result_type: Any = None,
    batch_size: int | None = None,
    device: str = "auto",
    on_null: str = "error",
    autocast: str | None = None,
    diagnostics: bool = False,
    params: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    extra_env: Mapping[str, str] | None = None,
    row_errors: str = "raise",
    max_row_errors: int = 1000,
):
    """Append predictions (and lineage columns) to ``df``; lazy, like any transformation.

    Runs on the driver; checks before any Spark job that every feature column
    exists and casts safely to the model's types, and that the new columns do
    not clash with existing ones. With ``lineage``, appends ``model_name``,
    ``model_version`` (the pinned version, never the alias) and ``scored_at``.
    With ``diagnostics``, also ``scoring_diagnostics`` (see :func:`scoring_udf`).
    The other arguments are :func:`scoring_udf`'s.
    """
    import pyspark.sql.functions as F

    model = load_model(model)
    udf = scoring_udf(
        model, result_type=result_type, batch_size=batch_size, device=device, features=features,
        on_null=on_null, autocast=autocast, diagnostics=diagnostics, params=params,
        model_config=model_config, extra_env=extra_env, row_errors=row_errors, max_row_errors=max_row_errors,
        spark=df.sparkSession,
    )
    columns = list(udf.columns)
    check_input(udf, df.schema, columns)
    schema = {f.name for f in df.schema.fields}
    new_cols = [output_col] + (list(LINEAGE_COLUMNS) if lineage else [])
    if diagnostics:
        new_cols.append("scoring_diagnostics")
    clash = [c for c in new_cols if c in schema]
    if clash:
        raise SchemaMismatchError(
            f"the input already has column(s) {clash} that scoring would add. Fix: drop or rename "
            "them, or choose another output_col."
        )
    result = udf(*[F.col(_quote(c)) for c in columns])
    if diagnostics:
        tmp = "__spark_scoring_result"
        out = df.withColumn(tmp, result)
        out = out.withColumn(output_col, F.col(f"{tmp}.prediction")).withColumn(
            "scoring_diagnostics", F.col(f"{tmp}.diagnostics")
        ).drop(tmp)
    else:
        out = df.withColumn(output_col, result)
    if lineage:
        out = out.withColumns(lineage_columns([(output_col, model)]))
    return out


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
