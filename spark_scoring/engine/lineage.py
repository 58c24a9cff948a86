"""The lineage columns on every scored row, built in one place.

Runs on: the driver (Spark column expressions).

``score()`` appends :data:`LINEAGE_COLUMNS`: ``model_name`` (the registered
name, else the pinned URI), ``model_version`` (the pinned version, never the
alias) and ``scored_at``. Jobs add ``scoring_run_id`` (the MLflow run id) and,
when several models score in one pass, ``model_versions`` (output column ->
pinned URI).
"""
from __future__ import annotations

from typing import Sequence

__all__ = ["LINEAGE_COLUMNS", "JOB_LINEAGE_COLUMNS", "lineage_columns", "added_columns"]

LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at")
JOB_LINEAGE_COLUMNS = LINEAGE_COLUMNS + ("scoring_run_id",)
MODEL_VERSIONS = "model_versions"


def added_columns(n_models: int = 1, *, job: bool = False) -> list[str]:
    """The lineage column names scoring adds (to check clashes before any job)."""
    names = list(JOB_LINEAGE_COLUMNS if job else LINEAGE_COLUMNS)
    return names + ([MODEL_VERSIONS] if n_models > 1 else [])


def lineage_columns(models: Sequence[tuple[str, object]], run_id: str | None = None) -> dict:
    """``{column: expression}`` for ``[(output column, ScoringModel)]`` (the first names the row's model)."""
    import pyspark.sql.functions as F

    first = models[0][1]
    cols = {
        "model_name": F.lit(first.display_name),
        "model_version": F.lit(first.version).cast("string"),
        "scored_at": F.current_timestamp(),
    }
    if run_id is not None:
        cols["scoring_run_id"] = F.lit(run_id)
    if len(models) > 1:
        cols[MODEL_VERSIONS] = F.create_map(*[x for col, m in models for x in (F.lit(col), F.lit(m.uri))])
    return cols
