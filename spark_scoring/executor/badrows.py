"""The one bad-row rule: which input values a model cannot score.

Runs on: executors (the Arrow rendering, :func:`bad_mask`) and the driver
(:mod:`spark_scoring.job.quality` renders the same :func:`checks_for` as Spark
column expressions). ``tests/test_badrows.py`` checks both renderings agree on
a hostile table.

The rule, per model input value:

- ``null``: the value is null (not for inputs the signature marks optional);
- ``nan`` / ``inf``: a floating-point value is NaN or +-infinity;
- for arrays feeding a tensor: ``length`` (not the tensor's width) and
  ``element`` (a null, NaN or infinite element).

Strings, binary (images, audio), structs and maps are checked for null only:
they are not numeric features (a pyfunc model decodes or tokenizes them, and
an undecodable value is the model's per-row error, not a bad feature).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["checks_for", "bad_mask", "CHECKS"]

CHECKS = ("null", "nan", "inf", "length", "element")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def checks_for(arrow_type: pa.DataType, *, width: int | None = None, optional: bool = False) -> tuple[str, ...]:
    """The checks a value of ``arrow_type`` must pass (``width``: the tensor width an array must have)."""
    checks = [] if optional else ["null"]
    if pa.types.is_floating(arrow_type):
        checks += ["nan", "inf"]
    elif _is_list(arrow_type) and width is not None:
        checks += ["length", "element"]
    return tuple(checks)


def _flat_values(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(leaf values, the row of each leaf value) of a (nested) list array."""
    rows = np.arange(len(arr), dtype=np.int64)
    while _is_list(arr.type):
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False)
        rows = rows[parents]
        arr = pc.list_flatten(arr)
    return arr, rows


def _element_bad(arr: pa.Array) -> np.ndarray:
    """Rows of a list array holding a null, NaN or infinite leaf element."""
    values, rows = _flat_values(arr)
    if len(values) == 0:
        return np.zeros(len(arr), dtype=bool)
    bad = values.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_floating(values.type):
        bad = bad | ~pc.fill_null(pc.is_finite(values), True).to_numpy(zero_copy_only=False)
    out = np.zeros(len(arr), dtype=bool)
    if bad.any():
        out[rows[bad]] = True
    return out


def _lengths(arr: pa.Array) -> np.ndarray:
    """Leaf values per row of a (nested) list array."""
    values, rows = _flat_values(arr)
    return np.bincount(rows, minlength=len(arr)) if len(values) else np.zeros(len(arr), dtype=np.int64)


def bad_mask(arr: pa.Array, checks: Sequence[str], width: int | None = None) -> np.ndarray | None:
    """Executor: a boolean mask of the rows of ``arr`` failing ``checks`` (None: every row passes)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    mask = None

    def add(m):
        nonlocal mask
        if m is not None and m.any():
            mask = m if mask is None else (mask | m)

    nulls = arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None
    if "null" in checks:
        add(nulls)
    if ("nan" in checks or "inf" in checks) and pa.types.is_floating(arr.type):
        finite = pc.is_finite(arr)
        add(~pc.fill_null(finite, True).to_numpy(zero_copy_only=False))
    if _is_list(arr.type) and n:
        if "length" in checks and width is not None:
            lengths = _lengths(arr)
            wrong = lengths != width
            if nulls is not None:
                wrong &= ~nulls  # a null array is the null check's
            add(wrong)
        if "element" in checks:
            add(_element_bad(arr))
    return mask

