"""Reading YAML safely: ``yaml.safe_load`` semantics, refusing alias bombs, deep nesting and duplicate keys.

Runs on: the driver. Every refusal is a :class:`~spark_scoring.errors.ConfigError`
that says where and why, before pydantic sees the document.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["parse_yaml", "check_size", "read_file", "MAX_FILE_BYTES", "MAX_ALIASES", "MAX_DEPTH", "MAX_VALUES"]


MAX_FILE_BYTES = 1 << 20  # a job config is a few dozen keys


MAX_ALIASES = 100  # YAML "billion laughs" guard


MAX_DEPTH = 64  # nesting depth while composing YAML


MAX_VALUES = 100_000  # values in the loaded document, counting alias expansions


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


def parse_yaml(text: str, where: str) -> Any:
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
    check_size(data, where)
    return data


def check_size(data: Any, where: str) -> None:
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


def read_file(path: Path) -> Any:
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
    return parse_yaml(text, str(path))
