"""A task's Arrow columns in, what the model takes out: a matrix, tensors or a pandas frame.

Runs on: executors (inside the UDF and the direct scan). No Spark import.

:class:`Binding` (made on the driver) says how the columns a caller passes
feed the model's inputs:

- positional: column *i* feeds input *i* (``udf("a", "b")``);
- stacked: *k* scalar columns form one ``(n, k)`` tensor (a torch or
  scikit-learn model over named feature columns, ``features=[...]``);
- one struct column whose fields are the inputs by name (``udf(struct(...))``,
  spark_udf's documented form), flattened here.

:func:`bind` applies it to one batch; :func:`tensor` and :func:`frame` build
the model's input from the bound arrays (after the bad rows are dropped).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaMismatchError
from .specs import InputSpec, ModelInput

__all__ = ["Binding", "Bound", "bind", "tensor", "frame", "model_input"]


_VECTOR_FIELDS = {"type", "size", "indices", "values"}  # a Spark ML vector in Arrow


@dataclass(frozen=True)
class Binding:
    """How the columns passed to the UDF feed the model's inputs (driver-made, shipped)."""

    spec: InputSpec
    columns: tuple[str, ...]  # the caller's column names (messages), in argument order
    stacked: bool = False  # every column is one scalar feature of the one tensor input
    struct_fields: tuple[str, ...] = ()  # stacked from one struct column: its fields, in this order


@dataclass(frozen=True)
class Bound:
    """One model input and the arrays feeding it (several only when stacked)."""

    input: ModelInput
    arrays: tuple[pa.Array, ...]
    columns: tuple[str, ...]


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _flatten_struct(arr: pa.Array) -> dict[str, pa.Array]:
    """Fields of a struct array, with the struct's own nulls pushed into them."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return {arr.type.field(i).name: f for i, f in enumerate(arr.flatten())}


def _wants_flatten(args: Sequence[pa.Array], binding: Binding) -> bool:
    if len(args) != 1 or not pa.types.is_struct(args[0].type):
        return False
    spec = binding.spec
    if binding.stacked:
        return bool(binding.struct_fields)
    if spec.declared and len(spec.inputs) == 1:
        only = spec.inputs[0]
        # a model whose one input is itself a struct (an MLflow Object), or a tensor fed by a
        # struct of numbers, takes the column as it is
        return not pa.types.is_struct(only.arrow_type) and not only.is_tensor \
            and only.name in _flatten_struct(args[0].slice(0, 0))
    return not any(i.is_tensor for i in spec.inputs)


def bind(args: Sequence[pa.Array], binding: Binding) -> list[Bound]:
    """Executor: the model's inputs for one batch of UDF arguments."""
    spec = binding.spec
    columns = binding.columns
    named_by_fields = False
    if _wants_flatten(args, binding):
        fields = _flatten_struct(args[0])
        wanted = binding.struct_fields or (spec.names if spec.declared else ())
        if wanted:
            missing = [n for n in wanted if n not in fields]
            if missing:
                raise SchemaMismatchError(
                    f"the struct column {columns[0] if columns else ''!r} has fields {list(fields)}, but the "
                    f"model takes {list(wanted)}: {missing} are missing. Fix: build the struct with "
                    "one field per model input, named as in the signature."
                )
            args, columns = [fields[n] for n in wanted], tuple(wanted)
        else:
            args, columns, named_by_fields = list(fields.values()), tuple(fields), True
    if binding.stacked:
        return [_expand(Bound(spec.inputs[0], tuple(args), tuple(columns)))]
    if spec.declared:
        inputs = spec.inputs
    else:  # no signature: spark_udf names positional columns "0", "1", ...
        inputs = tuple(ModelInput(columns[i] if named_by_fields else str(i), a.type) for i, a in enumerate(args))
    if len(args) != len(inputs):
        raise SchemaMismatchError(
            f"the model takes {len(inputs)} inputs {[i.name for i in inputs]}, got {len(args)} columns "
            f"{list(columns)}. Fix: pass one column per model input, in order, or one struct column."
        )
    return [_expand(Bound(inp, (a,), (c,))) for inp, a, c in zip(inputs, args, columns)]


def _is_vector(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and {t.field(i).name for i in range(t.num_fields)} == _VECTOR_FIELDS


def _expand(b: Bound) -> Bound:
    """A tensor fed by one struct of numbers: one feature array per field (checked like columns)."""
    if not b.input.is_tensor or len(b.arrays) != 1 or not pa.types.is_struct(b.arrays[0].type) \
            or _is_vector(b.arrays[0].type):
        return b
    fields = _flatten_struct(b.arrays[0])
    return Bound(b.input, tuple(fields.values()), tuple(f"{b.columns[0]}.{k}" for k in fields))


# ---------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------

def _leaves(arr: pa.Array) -> pa.Array:
    while _is_list(arr.type):
        arr = pc.list_flatten(arr)
    return arr


def _dense_vectors(arr: pa.StructArray, width: int, dtype) -> np.ndarray:
    """Spark ML vectors in their Arrow form (type 0 sparse / 1 dense, size, indices, values)."""
    out = np.zeros((len(arr), width), dtype=dtype)
    kinds = arr.field("type").to_numpy(zero_copy_only=False)
    values = arr.field("values")
    indices = arr.field("indices")
    for i in range(len(arr)):
        vals = np.asarray(values[i].values, dtype=dtype) if values[i].is_valid else np.zeros(0, dtype)
        if kinds[i] == 1:
            out[i, : len(vals)] = vals
        else:
            out[i, np.asarray(indices[i].values, dtype=np.int64)] = vals
    return out


def tensor(bound: Bound, dtype) -> np.ndarray:
    """Executor: ``(rows, *shape)`` values of one tensor input, in ``dtype`` (one copy).

    Rows were checked before (:mod:`.badrows`): no nulls, arrays of the right length.
    """
    inp, arrays = bound.input, bound.arrays
    n = len(arrays[0]) if arrays else 0
    dtype = np.dtype(dtype)
    first = arrays[0].type
    if len(arrays) == 1 and _is_list(first):
        flat = _leaves(arrays[0]).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        return flat.reshape((n, *(inp.shape or (-1,))))
    if len(arrays) == 1 and pa.types.is_struct(first):
        # a Spark ML vector (bind() turned any other struct into one array per field)
        return _dense_vectors(arrays[0], inp.width, dtype).reshape((n, *(inp.shape or (inp.width,))))
    out = np.empty((n, len(arrays)), dtype=dtype)
    for j, col in enumerate(arrays):
        out[:, j] = col.to_numpy(zero_copy_only=False)
    if inp.shape == ():
        return out[:, 0]
    if inp.shape is None or len(inp.shape) == 1:
        return out
    return out.reshape((n, *inp.shape))


def model_input(bound: Sequence[Bound], spec: InputSpec, dtype):
    """Executor: the tensor input(s) of a model: one array, or a dict of named arrays."""
    if spec.form == "tensors" or len(bound) > 1:
        return {b.input.name: tensor(b, dtype or _np_of(b.input.arrow_type)) for b in bound}
    b = bound[0]
    return tensor(b, dtype or _np_of(b.input.arrow_type))


def _np_of(t: pa.DataType):
    try:
        return t.to_pandas_dtype()
    except (NotImplementedError, TypeError):
        return np.float64


# ---------------------------------------------------------------------------
# frames (pyfunc models with column signatures)
# ---------------------------------------------------------------------------

def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _to_pandas(arr: pa.Array, target: pa.DataType | None, timezone: str):
    if target is not None and not arr.type.equals(target) and _numeric(arr.type) and _numeric(target) \
            and not pa.types.is_boolean(target):
        arr = arr.cast(target, safe=False)  # the dtype the signature enforces (double -> float, ...)
    if pa.types.is_timestamp(arr.type) and arr.type.tz is not None:
        # what pandas UDFs hand spark_udf: wall-clock time in the session time zone, no zone
        series = arr.to_pandas()
        return series.dt.tz_convert(timezone).dt.tz_localize(None)
    if pa.types.is_map(arr.type):
        return arr.to_pandas(maps_as_pydicts="strict")
    return arr.to_pandas()


def frame(bound: Sequence[Bound], timezone: str = "UTC"):
    """Executor: a pandas DataFrame with one column per model input (a pyfunc model's input)."""
    import pandas as pd

    data = {}
    for b in bound:
        target = b.input.arrow_type if b.input.shape is None else None
        data[b.input.name] = _to_pandas(b.arrays[0], target, timezone).reset_index(drop=True)
    return pd.DataFrame(data, columns=[b.input.name for b in bound])
