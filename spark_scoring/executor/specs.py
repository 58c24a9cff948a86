"""What a task knows about a model's inputs and outputs: pure data in Arrow types.

Runs on: the driver builds these from MLflow signatures
(:mod:`spark_scoring.model.signature`) and ships them inside the task spec;
executors read them. No Spark import, so the scoring core runs without a JVM.

- :class:`ModelInput`: one input of the model. A *frame* input is a named
  column of the pandas DataFrame a pyfunc model gets (``shape is None``); a
  *tensor* input is a numeric array with a per-row ``shape`` (``()`` for one
  value per row, ``(k,)`` for a feature vector, ``(3, 224, 224)`` for an image).
- :class:`InputSpec`: the inputs in order and how the model takes them
  (``form``: ``"frame"``, one ``"tensor"``, or several named ``"tensors"``).
- :class:`OutputSpec`: what one prediction looks like: a scalar, an array or
  a struct, as an exact Arrow type.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pyarrow as pa

__all__ = ["ModelInput", "InputSpec", "OutputSpec", "FORMS"]

#: How a model takes its inputs: a pandas DataFrame of named columns, one
#: ndarray / tensor, or a dict of named ndarrays / several tensors.
FORMS = ("frame", "tensor", "tensors")


@dataclass(frozen=True)
class ModelInput:
    """One model input: its name, Arrow type and (for tensors) per-row shape."""

    name: str
    arrow_type: pa.DataType  # a frame column's type, or a tensor's element type
    shape: tuple[int, ...] | None = None  # per-row tensor shape; None: a frame column
    optional: bool = False  # MLflow ``required=False``: nulls are allowed

    @property
    def is_tensor(self) -> bool:
        return self.shape is not None

    @property
    def width(self) -> int:
        """Values per row of a tensor input (1 for a scalar per row)."""
        return math.prod(self.shape) if self.shape else 1


@dataclass(frozen=True)
class InputSpec:
    """The model's inputs, in order, and the form the model takes them in.

    ``declared`` is False when the model has no input signature: the inputs
    are then the columns the caller passes, named ``"0"``, ``"1"``, ... as
    ``mlflow.pyfunc.spark_udf`` names them.
    """

    inputs: tuple[ModelInput, ...]
    form: str = "frame"
    declared: bool = True

    def __post_init__(self):
        if self.form not in FORMS:
            raise ValueError(f"form={self.form!r}: expected one of {FORMS}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.inputs)

    @property
    def types(self) -> tuple[pa.DataType, ...]:
        return tuple(i.arrow_type for i in self.inputs)


def _kind_of(t: pa.DataType) -> str:
    if pa.types.is_struct(t):
        return "struct"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "array"
    if pa.types.is_map(t):
        return "map"
    return "scalar"


@dataclass(frozen=True)
class OutputSpec:
    """What one prediction looks like.

    kind: ``"scalar"`` (one value per row), ``"array"`` (a list per row, e.g.
    class probabilities), ``"struct"`` (several named outputs) or ``"map"``.
    arrow_type: the exact Arrow type of the result column.
    declared: ``False`` when the model has no output signature and the type was
    the default (double) or the caller's ``result_type``.
    """

    kind: str
    arrow_type: pa.DataType
    declared: bool = True

    @classmethod
    def of(cls, arrow_type: pa.DataType, declared: bool = True) -> "OutputSpec":
        return cls(_kind_of(arrow_type), arrow_type, declared)

    @property
    def fields(self) -> tuple[str, ...]:
        if self.kind != "struct":
            return ()
        return tuple(self.arrow_type.field(i).name for i in range(self.arrow_type.num_fields))
