"""spark_scoring: batch inference of MLflow models on Apache Spark.

Public API (everything else is internal):

- :func:`load_model` resolves ``models:/name@alias`` to a pinned version once, on the driver.
- :func:`scoring_udf` builds a vectorized Arrow UDF (drop-in for ``mlflow.pyfunc.spark_udf``).
- :func:`score` appends predictions and lineage columns to a DataFrame.
- :func:`run_job` runs a partition-by-partition, idempotent Delta scoring job.
- :func:`load_config` validates a job config; :func:`get_spark` gives the session.
"""
from .errors import (
    BadRowsError,
    ChangeFeedError,
    ConfigError,
    DriftError,
    ModelLoadError,
    ModelResolutionError,
    ReconciliationError,
    RegistryUnavailableError,
    ResultTypeError,
    SchemaMismatchError,
    ScoringError,
    WriteConflictError,
)

__version__ = "0.1.0"


# Spark-facing names load on first use, so executor-side modules
# (spark_scoring.executor) import without pyspark.
_LAZY = {
    "get_spark": "session",
    "load_model": "model.registry",
    "ScoringModel": "model.registry",
    "scoring_udf": "engine.udf",
    "score": "engine.score",
    "ScoringUDF": "engine.udf",
    "score_table_direct": "engine.direct_scan",
    "direct_scan_supported": "engine.direct_scan",
    "arrow_batch_rows": "session",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in ("run_job", "JobResult"):
        from . import run

        return getattr(run, name)
    if name in ("load_config", "JobConfig"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module 'spark_scoring' has no attribute {name!r}")


__all__ = [
    "__version__",
    "get_spark",
    "load_model",
    "ScoringModel",
    "scoring_udf",
    "ScoringUDF",
    "score",
    "score_table_direct",
    "direct_scan_supported",
    "arrow_batch_rows",
    "run_job",
    "JobResult",
    "load_config",
    "JobConfig",
    "ScoringError",
    "ConfigError",
    "ModelResolutionError",
    "RegistryUnavailableError",
    "ModelLoadError",
    "SchemaMismatchError",
    "ResultTypeError",
    "BadRowsError",
    "WriteConflictError",
    "ReconciliationError",
    "ChangeFeedError",
    "DriftError",
]
