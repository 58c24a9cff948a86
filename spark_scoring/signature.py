"""What a model takes and returns, in Arrow and Spark types.

Runs on: the driver (reading signatures, checking DataFrame schemas before any
job runs) and the executors (:class:`OutputSpec` and :class:`InputSpec` are
shipped inside the UDF closure). Nothing here imports Spark at module level, so
the executor-side predictor can use these classes without a JVM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pyarrow as pa

from .errors import ResultTypeError, SchemaMismatchError

__all__ = [
    "InputSpec",
    "OutputSpec",
    "input_spec_from_signature",
    "output_spec_from_model",
    "apply_result_type",
    "plan_feature_casts",
]

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


def _arrow_of(mlflow_type) -> pa.DataType:
    """Arrow type of an MLflow ColSpec type (``DataType.double`` ...); double when unknown."""
    return _MLFLOW_TO_ARROW.get(getattr(mlflow_type, "name", str(mlflow_type)), pa.float64())


@dataclass(frozen=True)
class InputSpec:
    """The feature columns a model takes, in order, with the Arrow type each is cast to.

    ``tensor=True`` means the model takes one numeric matrix (a TensorSpec or a
    torch / scikit-learn model): every column is cast to ``types[0]``.
    """

    names: tuple[str, ...]
    types: tuple[pa.DataType, ...]
    tensor: bool = False


@dataclass(frozen=True)
class OutputSpec:
    """What one prediction looks like.

    kind: ``"scalar"`` (one value per row), ``"array"`` (a list per row, e.g.
    class probabilities) or ``"struct"`` (several named outputs).
    arrow_type: the exact Arrow type of the result column.
    declared: ``False`` when the model has no output signature and the type was guessed.
    """

    kind: str
    arrow_type: pa.DataType
    declared: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        if self.kind != "struct":
            return ()
        return tuple(self.arrow_type.field(i).name for i in range(self.arrow_type.num_fields))

    def spark_type(self):
        """The Spark DataType of the result column (driver; imports pyspark)."""
        from pyspark.sql.pandas.types import from_arrow_type

        return from_arrow_type(self.arrow_type)

    def ddl(self) -> str:
        return self.spark_type().simpleString()


def _widen(t: pa.DataType) -> pa.DataType:
    """Outputs: floats to double, integers to bigint, so results are uniform."""
    if pa.types.is_floating(t):
        return pa.float64()
    if pa.types.is_integer(t):
        return pa.int64()
    return t


def input_spec_from_signature(signature) -> InputSpec | None:
    """Named column inputs from an MLflow signature; ``None`` when there are none."""
    if signature is None or signature.inputs is None:
        return None
    schema = signature.inputs
    if schema.is_tensor_spec():
        return None  # unnamed tensor: the caller names the features
    names, types = [], []
    for i, col in enumerate(schema.inputs):
        names.append(col.name if col.name is not None else str(i))
        types.append(_arrow_of(col.type))
    return InputSpec(tuple(names), tuple(types))


def output_spec_from_model(signature, flavor: str, uri: str) -> OutputSpec:
    """Infer the prediction type from the output signature (double when there is none)."""
    outputs = None if signature is None else signature.outputs
    if outputs is None or not outputs.inputs:
        return OutputSpec("scalar", pa.float64(), declared=False)
    specs = outputs.inputs
    if outputs.is_tensor_spec():
        if len(specs) != 1:
            raise ResultTypeError(
                f"model {uri!r} declares {len(specs)} output tensors; spark_scoring scores models "
                "with one output tensor or named column outputs. Fix: re-log with one output."
            )
        t = _widen(pa.from_numpy_dtype(specs[0].type))
        shape = tuple(specs[0].shape or (-1,))
        width = shape[1] if len(shape) == 2 else 1
        if len(shape) > 2:
            return OutputSpec("array", pa.list_(pa.list_(t)))
        if width == 1:
            return OutputSpec("scalar", t)
        return OutputSpec("array", pa.list_(t))
    if len(specs) == 1:
        return OutputSpec("scalar", _widen(_arrow_of(specs[0].type)))
    fields = [
        pa.field(s.name or f"_{i}", _widen(_arrow_of(s.type)))
        for i, s in enumerate(specs)
    ]
    return OutputSpec("struct", pa.struct(fields))


def _kind_of(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "array"
    return "scalar"


def apply_result_type(output: OutputSpec, result_type: Any, uri: str) -> OutputSpec:
    """Override the inferred output type with ``result_type`` (DDL string or Spark DataType).

    Raises :class:`ResultTypeError` when the requested shape cannot hold what
    the model returns (e.g. a scalar for a model that returns two class
    probabilities: we never silently take the leftmost column).
    """
    if result_type is None:
        return output
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import DataType

    if isinstance(result_type, str):
        try:
            spark_type = DataType.fromDDL(result_type)
        except Exception as exc:  # noqa: BLE001
            raise ResultTypeError(
                f"result_type {result_type!r} is not a Spark type. Fix: use a DDL string such as "
                "'double', 'array<double>' or 'struct<score: double, label: string>'."
            ) from exc
    else:
        spark_type = result_type
    arrow_type = to_arrow_type(spark_type)
    wanted = _kind_of(arrow_type)
    if output.declared and wanted != output.kind:
        raise ResultTypeError(
            f"result_type {spark_type.simpleString()!r} is a {wanted}, but model {uri!r} returns "
            f"{output.ddl()} (a {output.kind}). Fix: use result_type={output.ddl()!r} or leave "
            "result_type unset; spark_scoring never picks one column of a multi-column output silently."
        )
    if output.declared and wanted == "struct":
        missing = [f for f in (arrow_type.field(i).name for i in range(arrow_type.num_fields))
                   if f not in output.fields]
        if missing:
            raise ResultTypeError(
                f"result_type asks for fields {missing} that model {uri!r} does not return; it "
                f"returns {list(output.fields)}. Fix: name only those fields."
            )
    return OutputSpec(wanted, arrow_type, declared=output.declared)


def _safe_cast(source: pa.DataType, target: pa.DataType) -> bool:
    if source.equals(target):
        return True
    numeric_src = pa.types.is_integer(source) or pa.types.is_floating(source) or pa.types.is_decimal(source)
    if pa.types.is_floating(target):
        # ints, decimals and doubles to float32/float64: what every model expects
        return numeric_src or pa.types.is_boolean(source)
    if pa.types.is_integer(target):
        return pa.types.is_integer(source) or pa.types.is_boolean(source)
    if pa.types.is_boolean(target):
        return pa.types.is_boolean(source)
    if pa.types.is_string(target):
        return pa.types.is_string(source) or pa.types.is_large_string(source)
    return False


def plan_feature_casts(
    available: dict[str, Any], spec: InputSpec, uri: str, given_features: Sequence[str] | None = None
) -> list[tuple[str, Any]]:
    """Check every feature column exists and casts safely; return ``[(column, spark_type)]``.

    ``available`` maps column name to Spark DataType (``dict(df.dtypes)`` style,
    but DataTypes). Runs on the driver before any Spark job.
    """
    from pyspark.sql.pandas.types import from_arrow_type, to_arrow_type

    missing = [c for c in spec.names if c not in available]
    if missing:
        raise SchemaMismatchError(
            f"model {uri!r} needs feature column(s) {missing} that the input does not have. "
            f"Input columns: {sorted(available)}. Fix: rename or add the columns, or pass "
            "features=[...] naming the input columns in the model's order."
        )
    plan = []
    problems = []
    for name, target in zip(spec.names, spec.types):
        source_spark = available[name]
        try:
            source = to_arrow_type(source_spark)
        except Exception:  # noqa: BLE001 - e.g. map or interval types
            source = None
        if source is None or not _safe_cast(source, target):
            problems.append(
                f"column {name!r}: expected {from_arrow_type(target).simpleString()}, got "
                f"{source_spark.simpleString()}"
            )
            continue
        plan.append((name, from_arrow_type(target)))
    if problems:
        raise SchemaMismatchError(
            f"model {uri!r}: input columns cannot be safely cast to the model's types: "
            + "; ".join(problems)
            + ". Fix: cast the columns yourself (e.g. df.withColumn(c, F.col(c).cast('double')) "
            "after cleaning non-numeric values), or select the right columns with features=[...]."
        )
    return plan
