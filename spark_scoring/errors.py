"""Every error spark_scoring raises on purpose.

One base class, :class:`ScoringError`, so a scheduler can tell "the job said no"
(bad config, bad input, unknown model: nothing written) from a crash. Each
subclass is raised for one kind of problem, and each message names the thing at
fault, the value seen, and what to do about it.

Runs on: driver and executors (the predictor raises :class:`BadRowsError`).
"""
from __future__ import annotations

__all__ = [
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


class ScoringError(Exception):
    """Base class of every error raised on purpose by spark_scoring.

    ``exit_code`` is what the CLI exits with: 2 for problems found before
    anything was written (config, model, schema), 1 for failures while running.
    """

    exit_code = 1


class ConfigError(ScoringError, ValueError):
    """The job config is invalid: unknown key, wrong type, missing value."""

    exit_code = 2


class ModelResolutionError(ScoringError, LookupError):
    """A model URI names no model, version, alias or artifact that exists."""

    exit_code = 2


class RegistryUnavailableError(ModelResolutionError):
    """The MLflow tracking / registry server could not be reached."""


class ModelLoadError(ModelResolutionError):
    """The model artifacts were found but could not be read or loaded."""


class SchemaMismatchError(ScoringError, TypeError):
    """Input columns are missing, or cannot be safely cast to the model's types."""

    exit_code = 2


class ResultTypeError(SchemaMismatchError):
    """The requested ``result_type`` does not fit what the model returns."""


class BadRowsError(ScoringError, ValueError):
    """Rows with null / NaN / infinite features were found under ``on_null="error"``
    (engine) or ``bad_rows: fail`` (jobs)."""

    exit_code = 1


class WriteConflictError(ScoringError):
    """A Delta commit kept conflicting with concurrent writers after all retries,
    or the output was already written by another run."""

    exit_code = 1


class ReconciliationError(ScoringError):
    """Rows in != rows scored + rows quarantined for a partition."""

    exit_code = 1


class ChangeFeedError(ScoringError):
    """The input's Change Data Feed cannot serve the versions the job needs."""

    exit_code = 2


class DriftError(ScoringError):
    """Score or feature drift crossed a threshold configured to fail the run."""

    exit_code = 1
