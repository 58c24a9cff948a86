"""The job config: strict, typed, frozen; read from YAML and ``--set`` overrides.

Runs on: the driver only (nothing here imports pyspark).

``load_config(path_or_dict, overrides)`` is the one way in. Every problem it
finds becomes a single :class:`~spark_scoring.errors.ConfigError` whose message
lists each problem on its own line: the dotted key, the value given, what was
expected and how to fix it, so a bad config fails before Spark starts.

- :mod:`.schema`: the pydantic models; :mod:`.messages`: the error lines;
- :mod:`.yaml_guard`: safe YAML; :mod:`.overrides`: ``--set``.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from .messages import format_errors, show
from .overrides import apply_override, parse_overrides
from .schema import (
    DriftConfig,
    EngineConfig,
    InputConfig,
    JobConfig,
    MlflowConfig,
    ModelSpec,
    OutputConfig,
    TrackingConfig,
)
from .yaml_guard import check_size, read_file

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
        data = read_file(Path(source))
        if isinstance(data, dict) and isinstance(data.get("mlflow"), dict):  # before --set: those are the caller's
            data["mlflow"] = {k: _relative_to(v, Path(source).resolve().parent) for k, v in data["mlflow"].items()}
    elif isinstance(source, Mapping):
        check_size(source, "config")
        data = copy.deepcopy(dict(source))
    else:
        raise ConfigError("config source must be a YAML file path, a dict or a JobConfig, "
                          f"got {type(source).__name__}")
    if not isinstance(data, dict):
        shown = "an empty file" if data is None else f"{type(data).__name__} {show(data)}"
        raise ConfigError(f"{where or 'config'}: the top level must be a mapping of keys "
                          f"(model, input, output, ...), got {shown}")
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        for key, value in overrides.items():
            if not isinstance(key, str) or not key.strip():
                raise ConfigError("override key must be a dotted string like engine.batch_size, "
                                  f"got {show(key)}")
            apply_override(data, key.strip(), value)
        check_size(data, where or "config")
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, where)) from None


def _relative_to(uri: Any, folder: Path) -> Any:
    """``sqlite:///rel/mlflow.db`` (a relative path) made absolute against ``folder``; others as they are."""
    if not isinstance(uri, str) or not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    rel = uri[len("sqlite:///"):]
    if rel.startswith(":memory:") or not rel:
        return uri
    return "sqlite:///" + str((folder / rel).resolve())
