"""A model's raw output in, one Arrow array of the declared result type out.

Runs on: executors. No Spark import.

Models return tensors, ndarrays, pandas Series or DataFrames, dicts of
columns, lists of rows (dicts or pydantic models) or tuples of tensors.
:func:`to_arrow` turns any of them into the result column's exact Arrow type:

- a scalar column from a 1-D array, an ``(n, 1)`` array, a one-column frame;
  never one column picked out of several (spark_udf takes the leftmost one
  silently; this raises :class:`ResultTypeError` naming the columns);
- an array column from an ``(n, k)`` / ``(n, a, b)`` array, a Series of lists,
  every column of a frame (a row as a vector), or one value per row wrapped;
- a struct column from a frame, a dict of columns, a list of dicts, or the
  tensors of a multi-output model in field order.

Floating-point NaN becomes null; ``None`` in a string output stays null
(spark_udf returns the string ``'None'``).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import ResultTypeError
from .specs import OutputSpec

__all__ = ["to_arrow"]


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _untorch(raw: Any) -> Any:
    if hasattr(raw, "detach"):  # torch tensor
        t = raw.detach()
        return (t.float() if t.is_floating_point() else t).cpu().numpy()
    if isinstance(raw, (tuple, list)) and raw and all(hasattr(r, "detach") for r in raw):
        return [_untorch(r) for r in raw]
    return raw


def _numpy_column(values: np.ndarray, arrow_type: pa.DataType) -> pa.Array:
    """A 1-D numeric ndarray as ``arrow_type`` (NaN -> null), without going through Python objects."""
    if values.dtype.kind == "f":
        mask = np.isnan(values)
        arr = pa.array(values, mask=mask if mask.any() else None)
    elif values.dtype.kind in "iub":
        arr = pa.array(values)
    else:
        return _objects(list(values), arrow_type)
    if arr.type.equals(arrow_type):
        return arr
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        if values.dtype.kind == "b":
            return pa.array([None if v is None else str(v) for v in arr.to_pylist()], arrow_type)
        return arr.cast(arrow_type)
    return arr.cast(arrow_type, safe=False)


def _objects(values: list, arrow_type: pa.DataType) -> pa.Array:
    """Python values (lists, dicts, strings, numbers, None) as ``arrow_type``."""
    def clean(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return None
        if hasattr(v, "model_dump"):  # a pydantic row
            return v.model_dump()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, np.generic):
            return v.item()
        if not isinstance(v, (str, bytes, dict)) and hasattr(v, "tolist"):  # a pandas Index or Series
            return v.tolist()
        return v

    cleaned = [clean(v) for v in values]
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        cleaned = [v if v is None or isinstance(v, str) else str(v) for v in cleaned]
    try:
        return pa.array(cleaned, type=arrow_type, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        inferred = pa.array(cleaned, from_pandas=True)
        try:
            return inferred.cast(arrow_type, safe=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise ResultTypeError(
                f"the model returned {inferred.type} values that do not convert to {arrow_type} ({exc}). "
                "Fix: set result_type to the type the model returns, or fix the model's output signature."
            ) from exc


def _column(values: Any, arrow_type: pa.DataType, rows: int) -> pa.Array:
    """One output column (a Series, ndarray or list) as ``arrow_type``."""
    import pandas as pd

    values = _untorch(values)
    if isinstance(values, pd.DataFrame):
        return _from_frame(values, arrow_type, rows)
    if isinstance(values, pd.Series):
        values = values.to_numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        if _is_list(arrow_type):
            return _nested(values, arrow_type, rows)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.ndim != 1:
            raise ResultTypeError(
                f"the model returned shape {values.shape}, but the result type is a single value "
                f"({arrow_type}). Fix: set result_type='array<double>' (e.g. class probabilities); "
                "spark_scoring never silently picks the first column."
            )
        return _numpy_column(values, arrow_type)
    first = next((v for v in values if v is not None), None) if len(values) else None
    sequence = (list, tuple, np.ndarray, pd.Index, pd.Series)
    if _is_list(arrow_type) and len(values) and not isinstance(first, sequence):
        values = [None if v is None else [v] for v in values]  # one value per row, as an array
    elif not _is_list(arrow_type) and not pa.types.is_struct(arrow_type) and isinstance(first, sequence):
        values = _single_values(values, arrow_type)  # [array([1]), array([1])]: one value per row
    return _objects(list(values), arrow_type)


def _single_values(values, arrow_type: pa.DataType) -> list:
    """Rows that are one-element arrays, unwrapped; rows of several values refuse (never pick one)."""
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, (list, tuple, np.ndarray)) and len(v) == 1:
            out.append(v[0])
        else:
            raise ResultTypeError(
                f"the model returned {len(v)} values per row, but the result type is a single value "
                f"({arrow_type}). Fix: set result_type='array<double>'; spark_scoring never silently "
                "picks the first one."
            )
    return out


def _nested(values: np.ndarray, arrow_type: pa.DataType, rows: int) -> pa.Array:
    """An ``(n, k)`` or ``(n, a, b)`` numeric array as (nested) list arrays, zero Python objects."""
    if values.ndim == 1:
        values = values.reshape(-1, 1)  # one value per row, as a one-element array
    leaf_type, depth = arrow_type, 0
    while _is_list(leaf_type):
        leaf_type, depth = leaf_type.value_type, depth + 1
    if values.ndim - 1 != depth:
        raise ResultTypeError(
            f"the model returned shape {values.shape}, but the result type {arrow_type} has {depth} "
            f"array level(s). Fix: set result_type to {'array<' * (values.ndim - 1)}double{'>' * (values.ndim - 1)}."
        )
    arr = _numpy_column(values.reshape(-1), leaf_type)
    for width in reversed(values.shape[1:]):
        arr = pa.FixedSizeListArray.from_arrays(arr, width)
    return arr.cast(arrow_type)


def _from_frame(frame, arrow_type: pa.DataType, rows: int) -> pa.Array:
    cols = list(frame.columns)
    if pa.types.is_struct(arrow_type):
        return _struct({c: frame[c] for c in cols}, arrow_type, rows)
    if len(cols) == 1:
        return _column(frame[cols[0]], arrow_type, rows)
    if _is_list(arrow_type) and not _is_list(arrow_type.value_type):
        # the row's columns of the element type, as one vector: spark_udf's selection
        frame = _of_element_type(frame, arrow_type.value_type)
        if pa.types.is_string(arrow_type.value_type) or pa.types.is_large_string(arrow_type.value_type):
            return _objects([[str(v) for v in r] for r in frame.itertuples(index=False)], arrow_type)
        try:
            return _nested(frame.to_numpy(dtype=arrow_type.value_type.to_pandas_dtype()), arrow_type, rows)
        except (TypeError, ValueError, NotImplementedError):
            return _objects([list(r) for r in frame.itertuples(index=False)], arrow_type)
    raise ResultTypeError(
        f"the model returned {len(cols)} columns {cols[:10]} per row, but the result type is {arrow_type}. "
        "Fix: set result_type to a struct of those columns (e.g. 'struct<a: double, b: string>') or an "
        "array; spark_scoring never silently picks the first column."
    )


def _of_element_type(frame, element: pa.DataType):
    """The columns of ``frame`` an array of ``element`` takes, as spark_udf selects them: ints
    up to int32 for int, up to int64 for long, any number for float / double, bools for
    boolean, every column for string. None of them fit: ResultTypeError naming the dtypes."""
    if pa.types.is_int32(element):
        kinds = [np.byte, np.ubyte, np.short, np.ushort, np.int32]
    elif pa.types.is_int64(element):
        kinds = [np.byte, np.ubyte, np.short, np.ushort, int]
    elif pa.types.is_floating(element):
        kinds = [np.number]
    elif pa.types.is_boolean(element):
        kinds = [bool, np.bool_]
    else:
        return frame
    picked = frame.select_dtypes(include=kinds)
    if not len(picked.columns):
        raise ResultTypeError(
            f"the model returned columns of dtypes {sorted({str(t) for t in frame.dtypes})}, none of which "
            f"fits an array of {element}. Fix: set result_type='array<string>', or a struct of the columns.")
    return picked


def _struct(columns: dict, arrow_type: pa.DataType, rows: int) -> pa.Array:
    fields = list(arrow_type)
    missing = [f.name for f in fields if f.name not in columns]
    if missing:
        raise ResultTypeError(
            f"the model's output has fields {list(columns)[:20]}; {missing} are missing. Fix: name only "
            "the fields the model returns in result_type, or fix the model's output signature."
        )
    arrays = [_column(columns[f.name], f.type, rows) for f in fields]
    return pa.StructArray.from_arrays(arrays, fields=fields)


def to_arrow(raw: Any, output: OutputSpec, rows: int) -> pa.Array:
    """Executor: a model's raw output for ``rows`` rows as ``output.arrow_type``."""
    import pandas as pd

    raw = _untorch(raw)
    t = output.arrow_type
    if output.kind == "struct":
        if isinstance(raw, pd.DataFrame):
            result = _struct({c: raw[c] for c in raw.columns}, t, rows)
        elif isinstance(raw, dict):
            result = _struct(raw, t, rows)
        elif isinstance(raw, list) and len(raw) == t.num_fields and all(isinstance(r, np.ndarray) for r in raw):
            result = _struct(dict(zip(output.fields, raw)), t, rows)  # a multi-output torch model
        elif isinstance(raw, (list, pd.Series)):
            result = _objects(list(raw), t)  # one dict (or pydantic model) per row
        else:
            raise ResultTypeError(
                f"the model returned {type(raw).__name__}, but the output type is a struct of "
                f"{list(output.fields)}; a struct needs a DataFrame, a dict of columns or a list of rows."
            )
    elif isinstance(raw, dict):
        if len(raw) != 1:
            raise ResultTypeError(
                f"the model returned {len(raw)} named outputs {list(raw)[:10]}, but the result type is "
                f"{t}. Fix: set result_type to a struct of them; spark_scoring never silently picks one."
            )
        result = _column(next(iter(raw.values())), t, rows)
    elif np.isscalar(raw):
        result = _column([raw] * rows, t, rows)
    else:
        result = _column(raw, t, rows)
    if len(result) != rows:
        raise ResultTypeError(f"the model returned {len(result)} predictions for {rows} rows.")
    return result
