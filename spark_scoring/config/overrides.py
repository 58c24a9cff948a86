"""``--set key.path=value`` overrides, checked against the schema before they are applied.

Runs on: the driver.
"""
from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel

from ..errors import ConfigError
from .messages import SECTIONS, dotted, keys_of, show
from .schema import JobConfig, ModelSpec
from .yaml_guard import parse_yaml

__all__ = ["parse_overrides", "apply_override"]


# ------------------------------------------------------------------- overrides
def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Parse ``["engine.batch_size=4096", "input.partitions=[a,b]"]`` (the CLI's ``--set``).

    Values are YAML scalars or flow collections; a value YAML cannot read is
    kept as the plain string. Later items win over earlier ones.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, (list, tuple)):
        raise ConfigError(f"overrides must be a list of 'key.path=value' strings, got {show(items)}")
    out: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise ConfigError(f"bad override {show(item)}: expected the form key.path=value, "
                              "e.g. engine.batch_size=4096 or input.partitions=[2026-11-27]")
        key, text = item.split("=", 1)
        try:
            value = parse_yaml(text, f"override {key.strip()}") if text.strip() else None
        except ConfigError:
            value = text
        out[key.strip()] = value
    return out


def override_path(key: str) -> list[str | int]:
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
        fields = sorted(keys_of(model))
        if part not in fields:
            guess = difflib.get_close_matches(part, fields, n=1, cutoff=0.6)
            mean = f" Did you mean '{'.'.join([*parts[:i], guess[0]])}'?" if guess else ""
            level = f"under '{where}'" if where else "at the top level"
            raise ConfigError(f"override '{key}': unknown key '{part}' {level}.{mean} "
                              f"Valid keys {level}: {', '.join(fields)}")
        path.append(part)
        model = SECTIONS.get(part) if model is JobConfig else None
    return path


def apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (dotted) in ``data``, creating missing sections."""
    path = override_path(key)
    if path == ["model"] and value is not None:
        data.pop("models", None)  # an override picks the model, whichever form the file used
    elif path == ["models"] and value is not None:
        data.pop("model", None)
    node: Any = data
    for i, part in enumerate(path[:-1]):
        where, index_next = dotted(tuple(path[: i + 1])), isinstance(path[i + 1], int)
        if isinstance(part, int):
            child = node[part] if part < len(node) else None
        else:
            child = node.get(part)
            child = {} if child is None and not index_next else child
        child = list(child) if isinstance(child, tuple) else child
        if index_next and not (isinstance(child, list) and path[i + 1] < len(child)):
            raise ConfigError(f"override '{key}': '{where}' has no item {path[i + 1]}")
        if not index_next and not isinstance(child, dict):
            raise ConfigError(f"override '{key}': '{where}' is {show(child)}, not a mapping")
        node[part] = child
        node = child
    node[path[-1]] = value
