"""Which runner scores a model, and how the caller's columns feed its inputs.

Runs on: the driver, when a UDF is applied to its columns (the number of
columns decides some forms) and when ``score()`` or a job plans.

- torch and scikit-learn models run natively (a float matrix or tensors
  straight into the module or estimator) unless ``params`` or
  ``model_config`` are given, or the signature has non-numeric columns: those
  go through the model's pyfunc flavor, exactly as ``mlflow.pyfunc`` scores them.
- A one-tensor signature ``Tensor(float32, (-1, k))`` (MLflow 3's ``pt2``
  default) takes *k* numeric columns (stacked into the matrix), one array
  column of length *k*, or one Spark ML vector column; several tensor inputs
  take one column each, in order.
- Column signatures take one column per input, in order, or one struct column
  whose fields are the inputs by name; no signature: the columns as given,
  named ``"0"``, ``"1"``, ... as spark_udf names them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..errors import SchemaMismatchError
from ..executor.inputs import Binding
from ..executor.specs import InputSpec, ModelInput

__all__ = ["Plan", "plan_binding", "native_dtype", "named_inputs"]


@dataclass(frozen=True)
class Plan:
    """``runner`` (pytorch / sklearn / pyfunc), the pyfunc ``input_kind``, and the column binding."""

    runner: str
    input_kind: str
    binding: Binding
    reason: str = ""  # why a torch / scikit-learn model goes through pyfunc

    @property
    def stacked(self) -> bool:
        return self.binding.stacked


def named_inputs(spec, columns):
    """More named columns than the signature's inputs, the inputs among them: the inputs, by
    name (spark_udf passes every column and MLflow's schema check keeps the inputs by name)."""
    if (spec is not None and spec.form == "frame" and len(columns) > len(spec.inputs)
            and all(isinstance(c, str) for c in columns) and set(spec.names) <= set(columns)):
        return tuple(spec.names)
    return columns


def native_dtype(runner: str, spec: InputSpec | None) -> np.dtype:
    """The float type the native runner feeds: torch the signature's (float32 by default), sklearn float64."""
    if runner == "sklearn":
        return np.dtype(np.float64)
    if spec is not None and spec.form != "frame" and len(spec.inputs) == 1:
        t = spec.inputs[0].arrow_type
        if pa.types.is_floating(t):
            return np.dtype(t.to_pandas_dtype())
    return np.dtype(np.float32)


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t)


def _stacked(columns: Sequence[str], dtype, spec: InputSpec | None, name: str = "x") -> Binding:
    inp = ModelInput(name, pa.from_numpy_dtype(np.dtype(dtype)), (len(columns),))
    return Binding(InputSpec((inp,), form="tensor"), tuple(columns), stacked=True)


def _tensor_binding(model, spec: InputSpec, columns: Sequence[str], dtype) -> Binding:
    uri = model.uri
    if len(spec.inputs) == 1:
        inp = spec.inputs[0]
        if len(columns) == 1:
            return Binding(spec, tuple(columns))
        if len(columns) == inp.width and len(inp.shape or ()) <= 1:
            return Binding(InputSpec((ModelInput(inp.name, pa.from_numpy_dtype(np.dtype(dtype)), (inp.width,)),),
                                     form=spec.form), tuple(columns), stacked=True)
        raise SchemaMismatchError(
            f"model {uri!r} takes one tensor of shape {('rows',) + tuple(inp.shape or ())} "
            f"({inp.width} values per row), got {len(columns)} columns {list(columns)[:10]}. Fix: pass "
            f"{inp.width} numeric columns (features=[...]), one array column of length {inp.width}, or a "
            "Spark ML vector column."
        )
    if len(columns) != len(spec.inputs):
        raise SchemaMismatchError(
            f"model {uri!r} takes {len(spec.inputs)} tensors {list(spec.names)}, got {len(columns)} columns "
            f"{list(columns)[:10]}. Fix: pass one column (an array column for a vector input) per tensor, in order."
        )
    return Binding(spec, tuple(columns))


def plan_binding(model, columns: Sequence[str], *, params: dict | None = None,
                 model_config: dict | None = None) -> Plan:
    """Driver: the runner and binding for ``model`` applied to ``columns`` (names, for messages)."""
    spec = model.inputs
    columns = tuple(columns)
    reason = ""
    native = model.flavor in ("pytorch", "sklearn")
    if native and (params or model_config):
        reason = "params or model_config are given: the model's pyfunc flavor takes them"
        native = False
    if native and spec is not None and spec.form == "frame" and not all(_numeric(t) for t in spec.types):
        reason = "the signature has non-numeric columns: the model's pyfunc flavor builds its frame"
        native = False
    if not native and not model.has_pyfunc:
        raise SchemaMismatchError(
            f"model {model.uri!r} has no pyfunc flavor (MLflow logs none for a pt2 program with several tensor "
            f"inputs), and {reason or 'it is not a torch or scikit-learn model'}. Fix: drop params / "
            "model_config, or re-log the model with a pyfunc flavor."
        )
    if native:
        dtype = native_dtype(model.flavor, spec)
        if spec is None or spec.form == "frame":
            if spec is not None and len(columns) != len(spec.inputs) and len(columns) != 1:
                raise SchemaMismatchError(
                    f"model {model.uri!r} takes {len(spec.inputs)} columns {list(spec.names)}, got "
                    f"{len(columns)}: {list(columns)[:10]}. Fix: pass one column per model input, in order."
                )
            if spec is not None and len(columns) == 1 and len(spec.inputs) > 1:
                # one struct column holding the named inputs: flattened by name in the task
                inp = ModelInput("x", pa.from_numpy_dtype(np.dtype(dtype)), (len(spec.inputs),))
                binding = Binding(InputSpec((inp,), form="tensor"), tuple(columns), stacked=True,
                                  struct_fields=spec.names)
                return Plan(model.flavor, "tensor", binding)
            return Plan(model.flavor, "tensor", _stacked(columns, dtype, spec))
        return Plan(model.flavor, "tensor", _tensor_binding(model, spec, columns, dtype))
    if spec is None:
        return Plan("pyfunc", "frame", Binding(InputSpec((), form="frame", declared=False), columns), reason)
    if spec.form == "frame":
        if len(columns) not in (len(spec.inputs), 1):
            raise SchemaMismatchError(
                f"model {model.uri!r} takes {len(spec.inputs)} columns {list(spec.names)}, got {len(columns)}: "
                f"{list(columns)[:10]}. Fix: pass one column per model input, in order, or one struct column."
            )
        return Plan("pyfunc", "frame", Binding(spec, columns), reason)
    dtype = spec.inputs[0].arrow_type.to_pandas_dtype() if len(spec.inputs) == 1 else None
    return Plan("pyfunc", "tensor", _tensor_binding(model, spec, columns, dtype or np.float32), reason)

