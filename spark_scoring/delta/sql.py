"""SQL text from values and names: the quoting every Delta write goes through.

Runs on: the driver. Quoting is the security boundary: partition values and
column names reach SQL text (``replaceWhere``, MERGE conditions) only through
:func:`quote_identifier` and :func:`sql_literal`.
"""
from __future__ import annotations

import datetime as _dt
import math
import numbers
from typing import Any

__all__ = ["quote_identifier", "quote_table_name", "sql_literal", "partition_predicate", "partitions_predicate"]


# --------------------------------------------------------------------- quoting
def quote_identifier(name: str) -> str:
    """One identifier in backticks, inner backticks doubled. Dots are not split:
    ``a.b`` is one column named ``a.b``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"identifier must be a non-empty string, got {name!r}")
    return "`" + name.replace("`", "``") + "`"


def quote_table_name(name: str) -> str:
    """``catalog.schema.table`` -> ```catalog`.`schema`.`table```: each dot-separated
    part quoted on its own."""
    parts = name.split(".") if isinstance(name, str) else []
    if not parts or not all(parts):
        raise ValueError(f"table name must be dot-separated non-empty parts, got {name!r}")
    return ".".join(quote_identifier(part) for part in parts)


_STRING_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    if ch in _STRING_ESCAPES:
        return _STRING_ESCAPES[ch]
    if ord(ch) < 0x20 or ord(ch) == 0x7F:
        # \uXXXX, not \0: Spark reads "\0" followed by digits as an octal escape.
        return f"\\u{ord(ch):04x}"
    return ch


def sql_literal(value: Any) -> str:
    """A Spark SQL literal for ``value``, for Spark's default parser (backslash
    escapes on, i.e. ``spark.sql.parser.escapedStringLiterals=false``).

    Naive datetimes are read in the session time zone; aware ones keep their offset.
    """
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "CAST('NaN' AS DOUBLE)"
        if math.isinf(number):
            return "CAST('Infinity' AS DOUBLE)" if number > 0 else "CAST('-Infinity' AS DOUBLE)"
        return repr(number)
    if isinstance(value, _dt.datetime):  # before date: datetime is a date subclass
        return f"TIMESTAMP'{value.isoformat(sep=' ')}'"
    if isinstance(value, _dt.date):
        return f"DATE'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + "".join(_escape_char(ch) for ch in value) + "'"
    raise TypeError(
        f"no SQL literal for {type(value).__name__} value {value!r}; "
        "use None, bool, int, float, str, datetime.date or datetime.datetime"
    )


def _column(column: str, alias: str | None) -> str:
    return quote_identifier(column) if alias is None else f"{alias}.{quote_identifier(column)}"


def partition_predicate(column: str, value: Any, alias: str | None = None) -> str:
    """```ds` = '2026-11-27'``, or ```ds` IS NULL`` for None; ``alias`` qualifies the
    column (``t.`ds` = ...``, for a MERGE condition)."""
    if value is None:
        return f"{_column(column, alias)} IS NULL"
    return f"{_column(column, alias)} = {sql_literal(value)}"


def partitions_predicate(column: str, values, alias: str | None = None) -> str:
    """One value: :func:`partition_predicate`; several: ```ds` IN (...)`` (``OR `ds` IS NULL`` for None)."""
    values = list(values)
    if len(values) == 1:
        return partition_predicate(column, values[0], alias)
    q = _column(column, alias)
    given = [v for v in values if v is not None]
    terms = [f"{q} IN ({', '.join(sql_literal(v) for v in given)})"] if given else []
    if len(given) < len(values):
        terms.append(f"{q} IS NULL")
    return "(" + " OR ".join(terms) + ")"
