"""What a model takes and returns, read from its MLflow signature, in Arrow and Spark types.

Runs on: the driver (reading signatures, checking a DataFrame's schema before
any job runs). The specs it returns (:mod:`spark_scoring.executor.specs`) are
shipped to executors.

Output types follow ``mlflow.pyfunc.spark_udf`` where it is right:

- one ColSpec: its type exactly (``integer`` -> int, ``float`` -> float, ...);
  several: a struct of them;
- a TensorSpec: the per-row shape (the shape after a leading ``-1`` batch
  dimension, else the whole shape) gives a scalar ``()``, an array ``(k,)``
  or nested arrays ``(a, b)``; ``(-1, 1)`` is one value per row (spark_udf
  infers ``array<array<...>>`` there and the task crashes); several tensors: a struct;
- no output signature: double, as spark_udf (``declared=False``).

``result_type`` (:func:`apply_result_type`) takes every type string spark_udf
takes (``bool``, ``boolean``, ``int``, ``long``, ``bigint``, ``float``,
``double``, ``string``, ``array<...>``, ``struct<...>`` and ``"a int, b
string"``) and Spark ``DataType`` objects. It refuses, naming the type, what
cannot hold the model's output: a scalar over a multi-column output (never a
silently picked column), fields the model does not return, unsupported types.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..errors import ResultTypeError, SchemaMismatchError
from ..executor.specs import InputSpec, ModelInput, OutputSpec

__all__ = [
    "input_spec_from_signature",
    "output_spec_from_signature",
    "apply_result_type",
    "parse_result_type",
    "plan_feature_casts",
    "SUPPORTED_RESULT_TYPES",
]

SUPPORTED_RESULT_TYPES = (
    "boolean (bool), tinyint, smallint, int (integer), bigint (long), float, double, decimal, string, "
    "binary, date, timestamp; arrays, structs and maps (string keys) of those"
)


_MLFLOW_TO_ARROW = {
    "double": pa.float64(),
    "float": pa.float32(),
    "long": pa.int64(),
    "integer": pa.int32(),
    "boolean": pa.bool_(),
    "string": pa.string(),
    "binary": pa.binary(),
    "datetime": pa.timestamp("us", tz="UTC"),
}


def _arrow_of(spec_type) -> pa.DataType:
    """The Arrow type of an MLflow ColSpec type (DataType, Array, Object, Map); no Spark needed."""
    from mlflow.types.schema import Array, DataType, Map, Object

    if isinstance(spec_type, DataType):
        return _MLFLOW_TO_ARROW[spec_type.name]
    if isinstance(spec_type, Array):
        return pa.list_(_arrow_of(spec_type.dtype))
    if isinstance(spec_type, Object):
        return pa.struct([pa.field(p.name, _arrow_of(p.dtype)) for p in spec_type.properties])
    if isinstance(spec_type, Map):
        return pa.map_(pa.string(), _arrow_of(spec_type.value_type))
    raise ResultTypeError(f"MLflow type {spec_type!r} has no Arrow equivalent spark_scoring can use.")


def _arrow(spark_type) -> pa.DataType:
    from pyspark.sql.pandas.types import to_arrow_type

    return to_arrow_type(spark_type, timezone="UTC")


def _numpy_arrow(dtype) -> pa.DataType:
    try:
        return pa.from_numpy_dtype(np.dtype(dtype))
    except (pa.ArrowNotImplementedError, TypeError):
        return pa.float64()


def _row_shape(shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = tuple(shape or (-1,))
    return shape[1:] if shape and shape[0] == -1 else shape


def input_spec_from_signature(signature) -> InputSpec | None:
    """The model's inputs from its MLflow signature; ``None`` when it has no input signature."""
    if signature is None or signature.inputs is None or not signature.inputs.inputs:
        return None
    schema = signature.inputs
    if schema.is_tensor_spec():
        inputs = tuple(
            ModelInput(spec.name if spec.name is not None else str(i), _numpy_arrow(spec.type), _row_shape(spec.shape))
            for i, spec in enumerate(schema.inputs)
        )
        named = len(inputs) > 1 or schema.inputs[0].name is not None
        return InputSpec(inputs, form="tensors" if named and len(inputs) > 1 else "tensor")
    inputs = tuple(
        ModelInput(col.name if col.name is not None else str(i), _arrow_of(col.type),
                   optional=not getattr(col, "required", True))
        for i, col in enumerate(schema.inputs)
    )
    return InputSpec(inputs, form="frame")


def _tensor_output(spec) -> pa.DataType:
    t = _numpy_arrow(spec.type)
    shape = _row_shape(spec.shape)
    if shape in ((), (1,)) and tuple(spec.shape or (-1,))[:1] == (-1,):
        return t  # one value per row
    for _dim in shape:
        t = pa.list_(t)
    return t


def output_spec_from_signature(signature, uri: str = "") -> OutputSpec:
    """The prediction's type from the output signature (double, undeclared, when there is none)."""
    outputs = None if signature is None else signature.outputs
    if outputs is None or not outputs.inputs:
        return OutputSpec("scalar", pa.float64(), declared=False)
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        types = [_tensor_output(s) for s in specs]
    else:
        types = [_arrow_of(s.type) for s in specs]
    if len(specs) == 1:
        return OutputSpec.of(types[0])
    return OutputSpec.of(pa.struct([pa.field(s.name or str(i), t) for i, (s, t) in enumerate(zip(specs, types))]))


_ALIASES = {"bool": "boolean", "str": "string", "integer": "int", "long": "bigint"}


def parse_result_type(result_type: Any):
    """A Spark DataType from a DDL string (spark_udf's aliases too) or a DataType; refuses others."""
    from pyspark.sql.types import DataType

    if isinstance(result_type, DataType):
        spark_type = result_type
    elif isinstance(result_type, str):
        import re

        text = re.sub(r"\bbool\b", "boolean", result_type.strip(), flags=re.IGNORECASE)  # spark_udf's alias
        try:
            spark_type = DataType.fromDDL(_ALIASES.get(text.lower(), text))
        except Exception as exc:  # noqa: BLE001
            raise ResultTypeError(
                f"result_type {result_type!r} is not a Spark type. Fix: use a DDL string such as 'double', "
                f"'array<double>', 'struct<score: double, label: string>' or 'score double, label string'; "
                f"supported: {SUPPORTED_RESULT_TYPES}."
            ) from exc
    else:
        raise ResultTypeError(
            f"result_type {result_type!r} ({type(result_type).__name__}) is neither a DDL string nor a Spark "
            "DataType. Fix: pass e.g. 'double' or pyspark.sql.types.DoubleType()."
        )
    bad = _unsupported(spark_type)
    if bad is not None:
        raise ResultTypeError(
            f"result_type {spark_type.simpleString()!r}: {bad} is not supported as a prediction type. "
            f"Supported: {SUPPORTED_RESULT_TYPES}."
        )
    return spark_type


def _unsupported(t) -> str | None:
    from pyspark.sql import types as T

    if isinstance(t, (T.BooleanType, T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType,
                      T.DoubleType, T.DecimalType, T.StringType, T.BinaryType, T.DateType, T.TimestampType,
                      T.TimestampNTZType)):
        return None
    if isinstance(t, T.ArrayType):
        return _unsupported(t.elementType)
    if isinstance(t, T.StructType):
        return next((b for b in (_unsupported(f.dataType) for f in t.fields) if b), None)
    if isinstance(t, T.MapType):
        if not isinstance(t.keyType, T.StringType):
            return f"map key type {t.keyType.simpleString()}"
        return _unsupported(t.valueType)
    return t.simpleString()


def ddl(output: OutputSpec) -> str:
    """The Spark DDL of a prediction type (``double``, ``array<double>``, ``struct<...>``)."""
    from pyspark.sql.pandas.types import from_arrow_type

    return from_arrow_type(output.arrow_type).simpleString()


def apply_result_type(output: OutputSpec, result_type: Any, uri: str) -> OutputSpec:
    """Override the inferred output type with ``result_type`` (DDL string or Spark DataType).

    Raises :class:`ResultTypeError` when the requested shape cannot hold what
    the model returns (e.g. a scalar for a model that returns two class
    probabilities: spark_scoring never silently takes the leftmost column).
    """
    if result_type is None:
        return output
    spark_type = parse_result_type(result_type)
    wanted = OutputSpec.of(_arrow(spark_type), declared=output.declared)
    if output.declared:
        ok = (wanted.kind == output.kind
              or (wanted.kind == "array" and output.kind == "scalar"))  # one value per row, wrapped
        if not ok:
            raise ResultTypeError(
                f"result_type {spark_type.simpleString()!r} is a {wanted.kind}, but model {uri!r} returns "
                f"{ddl(output)} (a {output.kind}). Fix: use result_type={ddl(output)!r} or leave "
                "result_type unset; spark_scoring never picks one column of a multi-column output silently."
            )
        if wanted.kind == "struct":
            missing = [f for f in wanted.fields if f not in output.fields]
            if missing:
                raise ResultTypeError(
                    f"result_type asks for fields {missing} that model {uri!r} does not return; it "
                    f"returns {list(output.fields)}. Fix: name only those fields."
                )
    return wanted


# ---------------------------------------------------------------------------
# input checks before any job (score(), jobs)
# ---------------------------------------------------------------------------

def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t)


def _is_vector(spark_type) -> bool:
    return type(spark_type).__name__ == "VectorUDT"


def _safe_cast(source: pa.DataType, target: pa.DataType) -> bool:
    if source.equals(target):
        return True
    if pa.types.is_floating(target) or pa.types.is_integer(target):
        # ints, decimals, booleans and doubles to a numeric feature: what every model expects
        return _numeric(source) and (pa.types.is_floating(target) or not pa.types.is_floating(source)
                                     and not pa.types.is_decimal(source))
    if pa.types.is_boolean(target):
        return pa.types.is_boolean(source)
    if pa.types.is_string(target) or pa.types.is_large_string(target):
        return pa.types.is_string(source) or pa.types.is_large_string(source)
    if pa.types.is_timestamp(target):
        return pa.types.is_timestamp(source) or pa.types.is_date(source)
    return False


def _tensor_source_ok(spark_type, inp: ModelInput, stacked: bool) -> str | None:
    """Why a column cannot feed a tensor input (None: it can)."""
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_type

    expected = from_arrow_type(inp.arrow_type).simpleString() + ("" if stacked or inp.width == 1 else " array")

    if _is_vector(spark_type):
        return None if not stacked else "a vector column cannot be one feature of a stacked matrix"
    try:
        source = to_arrow_type(spark_type, timezone="UTC")
    except Exception:  # noqa: BLE001 - map or interval types
        return f"expected {expected}, got {spark_type.simpleString()}"
    depth = 0
    while pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source):
        source, depth = source.value_type, depth + 1
    if not _numeric(source):
        return f"expected {expected}, got {spark_type.simpleString()}"
    if stacked and depth:
        return "an array column cannot be one feature of a stacked matrix"
    if not stacked and inp.shape and depth == 0 and inp.width != 1:
        return f"the model input takes {inp.width} values per row; give an array column of that length"
    return None


def plan_feature_casts(available: dict[str, Any], feeds: Sequence[tuple[str, ModelInput | None]], uri: str,
                       *, stacked: bool = False) -> None:
    """Check every input column exists and can feed its model input; raise :class:`SchemaMismatchError`.

    ``available`` maps column name to Spark DataType; ``feeds`` pairs each
    input column with the model input it feeds. Runs on the driver before any Spark job.
    """
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_type

    missing = [c for c, _i in feeds if c not in available]
    if missing:
        raise SchemaMismatchError(
            f"model {uri!r} needs feature column(s) {missing} that the input does not have. "
            f"Input columns: {sorted(available)}. Fix: rename or add the columns, or pass "
            "features=[...] naming the input columns in the model's order."
        )
    problems = []
    for name, inp in feeds:
        source_spark = available[name]
        if inp is None:
            continue  # only its presence is checked here
        if inp.is_tensor:
            why = _tensor_source_ok(source_spark, inp, stacked)
            if why:
                problems.append(f"column {name!r}: {why}")
            continue
        try:
            source = to_arrow_type(source_spark, timezone="UTC")
        except Exception:  # noqa: BLE001
            source = None
        target = inp.arrow_type
        if source is None or not (_safe_cast(source, target) or _nested_ok(source, target)):
            problems.append(
                f"column {name!r}: expected {from_arrow_type(target).simpleString()}, got "
                f"{source_spark.simpleString()}"
            )
    if problems:
        raise SchemaMismatchError(
            f"model {uri!r}: input columns cannot be safely cast to the model's types: "
            + "; ".join(problems)
            + ". Fix: cast the columns yourself (e.g. df.withColumn(c, F.col(c).cast('double')) "
            "after cleaning non-numeric values), or select the right columns with features=[...]."
        )


def _nested_ok(source: pa.DataType, target: pa.DataType) -> bool:
    """Arrays, structs, maps, binary: the same shape (MLflow's own schema check decides the rest)."""
    if pa.types.is_binary(target) or pa.types.is_large_binary(target):
        return pa.types.is_binary(source) or pa.types.is_large_binary(source)
    for check in (pa.types.is_list, pa.types.is_struct, pa.types.is_map):
        if check(target):
            return check(source) or (check is pa.types.is_list and pa.types.is_large_list(source))
    return False
