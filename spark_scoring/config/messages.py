"""One readable line per config problem: the dotted key, the value given, what was expected, the fix.

Runs on: the driver. :func:`format_errors` turns pydantic's ``ValidationError``
into the text of the one :class:`~spark_scoring.errors.ConfigError` a bad config raises.
"""
from __future__ import annotations

import difflib
import reprlib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from .schema import (
    DriftConfig,
    EngineConfig,
    InputConfig,
    Invalid,
    JobConfig,
    MlflowConfig,
    ModelSpec,
    OutputConfig,
    Rules,
    TrackingConfig,
)

__all__ = ["SECTIONS", "format_errors", "keys_of", "show", "dotted"]


# ------------------------------------------------------------- error messages
SECTIONS: dict[str, type[BaseModel]] = {
    "input": InputConfig, "output": OutputConfig, "engine": EngineConfig,
    "tracking": TrackingConfig, "drift": DriftConfig, "models": ModelSpec, "mlflow": MlflowConfig,
}


_repr = reprlib.Repr()


def keys_of(model: type[BaseModel]) -> list[str]:
    """The keys a section takes, as they are written in YAML (aliases where a field has one)."""
    return [f.alias or name for name, f in model.model_fields.items()]


def field_of(model: type[BaseModel], key: str):
    return next((f for name, f in model.model_fields.items() if (f.alias or name) == key), None)


def show(value: Any) -> str:
    text = "null" if value is None else _repr.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def section_of(loc: tuple[Any, ...]) -> type[BaseModel]:
    names = [p for p in loc if isinstance(p, str)]
    return SECTIONS.get(names[0], JobConfig) if names else JobConfig


def _unknown_key(loc: tuple[Any, ...], value: Any) -> str:
    key, where = dotted(loc), dotted(loc[:-1])
    fields = sorted(keys_of(section_of(loc[:-1])))
    name = str(loc[-1])
    guess = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    if guess:
        hint = f"{where}.{guess[0]}" if where else guess[0]
    else:  # a known key at the wrong level, e.g. `prediction_column` at the top
        hint = next((f"{s}.{name}" for s, m in SECTIONS.items()
                     if s != "models" and name in keys_of(m)), "")
    valid = f"keys {f'under {where!r}' if where else 'at the top level'}: {', '.join(fields)}"
    line = f"- unknown key '{key}' (got {show(value)})"
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
        model = SECTIONS.get(dotted(err["loc"][:1]))
        return f"a mapping of {', '.join(keys_of(model))}" if model else "a mapping of key: value"
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
    if isinstance(cause, Rules):
        prefix = dotted(loc)
        return [_line(f"{prefix}.{p.key}" if prefix else p.key, show(p.value), p.expected, p.fix)
                for p in cause.problems]
    key = dotted(loc) or "(top level)"
    if isinstance(cause, Invalid):
        return [_line(key, show(err.get("input")), cause.expected, cause.fix)]
    value = "nothing" if err["type"] == "missing" else show(err.get("input"))
    fix = f"add '{key}'" if err["type"] == "missing" else None
    field = field_of(section_of(loc[:-1]), str(loc[-1])) if loc else None
    if fix and field is not None and field.description:
        fix += f": {field.description}"
    return [_line(key, value, _expected(err), fix)]


def _line(key: str, value: str, expected: str, fix: str | None) -> str:
    return f"- {key}: got {value}; expected {expected}. Fix: {fix or f'set {key} to {expected}'}."


def format_errors(exc: ValidationError, source: str = "") -> str:
    lines = [line for err in exc.errors() for line in _problem_lines(err)]
    where = f" {source}" if source else ""
    count = f"{len(lines)} problem{'s' * (len(lines) != 1)}"
    return f"invalid job config{where} ({count}):\n" + "\n".join(lines)
