"""The vectorized scoring UDF: a drop-in for ``mlflow.pyfunc.spark_udf``.

Runs on: the driver builds the UDF (resolving the model, its output type,
params, and shipping the artifacts once); executors run
:func:`spark_scoring.executor.task.score_stream` once per task, over the
task's Arrow batches.

The UDF is a scalar *iterator* Arrow UDF: Spark passes each task's Arrow
batches as pyarrow arrays (no pandas round-trip), the model comes from the
per-worker cache, and the predictor re-batches across Arrow batches. Numeric
feature columns of a torch or scikit-learn model are cast to the model's
float type in the JVM, before they cross to Python; everything else is
converted in the task (arrays, vectors, structs, timestamps, binary).

What it accepts, as spark_udf does: positional columns (``udf("a", "b")``),
no columns (the signature's input names, or ``features=``), one struct column
whose fields are the inputs by name (``udf(struct("a", "b"))``), models
without a signature (columns named ``"0"``, ``"1"``, ... and a double result),
``params=``, ``model_config=``, ``extra_env=``, and every ``result_type``
spark_udf takes. Where it deliberately differs: a scalar ``result_type`` over
a model that returns several columns raises :class:`ResultTypeError` instead
of silently returning the leftmost one.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Mapping, Sequence

import pyarrow as pa

from ..errors import SchemaMismatchError
from ..executor.predictor import DEFAULT_BATCH_SIZE, ERROR_FIELD, MEDIA_BATCH_SIZE
from ..executor.task import DIAGNOSTICS_TYPE, TaskSpec, score_stream
from ..model.registry import ScoringModel, load_model
from ..model.shipping import ship as ship_model
from ..model.signature import apply_result_type
from .binding import Plan, named_inputs, native_dtype, plan_binding
from .taskinfo import current_task

__all__ = ["scoring_udf", "ScoringUDF", "validate_params"]


def validate_params(model: ScoringModel, params: Mapping[str, Any] | None) -> dict | None:
    """Driver: ``params`` checked against the signature's ParamSchema (defaults filled), as spark_udf does."""
    if params is None:
        return None
    if not isinstance(params, Mapping):
        raise SchemaMismatchError(f"params={params!r}: expected a dict of parameter names to values.")
    from mlflow.exceptions import MlflowException
    from mlflow.models.utils import _enforce_params_schema

    try:
        checked = _enforce_params_schema(dict(params), model.params_schema)
    except MlflowException as exc:
        schema = model.params_schema
        names = [p.name for p in schema.params] if schema is not None else []
        raise SchemaMismatchError(
            f"params {dict(params)!r} do not fit model {model.uri!r}'s params schema {names}: {exc.message}. "
            "Fix: pass the names and types the signature declares."
        ) from exc
    return checked or None


def _column_name(col) -> str:
    """A column's name for messages: the string, or the name inside ``Column<'name'>``."""
    if isinstance(col, str):
        return col
    text = str(col)
    return text[len("Column<'"):-2] if text.startswith("Column<'") and text.endswith("'>") else text


class ScoringUDF:
    """A Spark UDF for one pinned model: ``df.withColumn("p", udf("f1", "f2"))``, ``udf()``, ``udf(struct(...))``.

    Built on the driver by :func:`scoring_udf`. The binding of columns to the
    model's inputs is decided when it is applied (the number of columns
    decides some forms: k columns or one array column for a ``(-1, k)`` tensor).
    """

    def __init__(self, model: ScoringModel, base: dict, features: Sequence[str] | None):
        self.model = model
        self.output = base["output"]
        self.features = tuple(features) if features else None
        arrow_type = self.output.arrow_type
        if base.get("row_errors") == "capture":
            arrow_type = pa.struct([("prediction", arrow_type), (ERROR_FIELD, pa.string())])
        if base["diagnostics"]:
            arrow_type = pa.struct([("prediction", arrow_type), ("diagnostics", DIAGNOSTICS_TYPE)])
        from pyspark.sql.pandas.types import from_arrow_type

        self.return_type = from_arrow_type(arrow_type)
        self._base = base
        self._udfs: dict = {}
        if self.features:
            spec = model.inputs
            widths = {len(spec.inputs), 1} if spec is not None and spec.form == "frame" else set()
            if spec is not None and spec.form != "frame" and len(spec.inputs) == 1:
                widths = {spec.inputs[0].width, 1}
            if widths and len(self.features) not in widths:
                raise SchemaMismatchError(
                    f"features={list(self.features)} names {len(self.features)} columns, but model {model.uri!r} "
                    f"takes {max(widths)}: {list(spec.names) if spec.form == 'frame' else spec.inputs[0].shape}. "
                    "Fix: name one input column per model input, in order."
                )
            self.plan(self.features)  # the other forms fail here, on the driver

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns ``udf()`` feeds: ``features=``, else the signature's input names."""
        if self.features:
            return self.features
        spec = self.model.inputs
        if spec is not None and spec.form == "frame":
            return spec.names
        if spec is not None and all(not n.isdigit() for n in spec.names):
            return spec.names
        raise SchemaMismatchError(
            f"model {self.model.uri!r} has no named input signature, so spark_scoring cannot tell which columns "
            "to feed it. Fix: pass features=[...] (column names in the order the model was trained on), or the "
            "columns themselves (udf('f1', 'f2')), or log the model with a signature."
        )

    def plan(self, columns: Sequence) -> Plan:
        """Driver: the runner and binding for these columns."""
        return plan_binding(self.model, [_column_name(c) for c in columns], params=self._base["params"],
                            model_config=self._base["model_config"])

    def capturing(self) -> "ScoringUDF":
        """The same UDF returning ``struct<prediction, error>``: rows the model raises on come back
        null, with their error, instead of failing the task (what jobs quarantine)."""
        return ScoringUDF(self.model, {**self._base, "row_errors": "capture"}, self.features)

    def task_spec(self, plan: Plan, **overrides) -> TaskSpec:
        """Driver: what each task gets for ``plan`` (shared by the UDF and the direct scan)."""
        b = self._base
        default = DEFAULT_BATCH_SIZE.get(plan.runner, 8192)
        if plan.runner == "pyfunc" and any(pa.types.is_binary(t) or pa.types.is_large_binary(t)
                                           for t in plan.binding.spec.types):
            default = MEDIA_BATCH_SIZE  # images and audio: a decoded row is about a megabyte
        spec = TaskSpec(
            handle=b["handle"], runner=plan.runner, binding=plan.binding, output=b["output"],
            batch_size=b["batch_size"] or default, device=b["device"],
            on_null=b["on_null"], autocast=b["autocast"], input_kind=plan.input_kind, params=b["params"],
            model_config=b["model_config"], extra_env=b["extra_env"], timezone=b["timezone"],
            diagnostics=b["diagnostics"], row_errors=b.get("row_errors", "raise"),
            max_row_errors=b.get("max_row_errors", 1000),
        )
        return dataclasses.replace(spec, **overrides) if overrides else spec

    def _spark_udf(self, plan: Plan):
        key = (plan.runner, plan.input_kind, plan.binding)
        if key not in self._udfs:
            spec = self.task_spec(plan)

            def score_batches(batches):
                return score_stream(spec, batches, current_task())

            from pyspark.sql.functions import arrow_udf
            from pyspark.sql.pandas.functions import ArrowUDFType

            with warnings.catch_warnings():  # "prefer type hints": the explicit type is deliberate
                warnings.simplefilter("ignore", UserWarning)
                udf = arrow_udf(score_batches, self.return_type, ArrowUDFType.SCALAR_ITER)
            self._udfs[key] = udf.asNondeterministic()  # never re-evaluated or reordered by the optimizer
        return self._udfs[key]

    def __call__(self, *cols):
        import pyspark.sql.functions as F
        from pyspark.sql.types import DataType

        cols = named_inputs(self.model.inputs, cols or self.columns)  # udf("a", "b", "c", "d") for a, b, c
        plan = self.plan(cols)
        args = [F.col(c) if isinstance(c, str) else c for c in cols]
        if plan.stacked and not plan.binding.struct_fields:
            # numeric features become the model's float type in the JVM, before they cross to Python
            float32 = native_dtype(plan.runner, self.model.inputs) == "float32"
            args = [a.cast(DataType.fromDDL("float" if float32 else "double")) for a in args]
        return self._spark_udf(plan)(*args)

    def __repr__(self) -> str:
        return f"ScoringUDF({self.model.uri!r} -> {self.return_type.simpleString()})"


def scoring_udf(
    model,
    *,
    result_type: Any = None,
    batch_size: int | None = None,
    device: str = "auto",
    features: Sequence[str] | None = None,
    on_null: str = "error",
    autocast: str | None = None,
    diagnostics: bool = False,
    params: Mapping[str, Any] | None = None,
    model_config: Mapping[str, Any] | None = None,
    extra_env: Mapping[str, str] | None = None,
    row_errors: str = "raise",
    max_row_errors: int = 1000,
    ship: str | None = None,
    spark=None,
) -> ScoringUDF:
    """Build a vectorized scoring UDF for ``model`` (a drop-in for ``mlflow.pyfunc.spark_udf``).

    Runs on the driver: resolves and downloads the model (if given a URI or a
    ``pathlib.Path``), ships it once (broadcast, or a shared path), and returns
    a callable that makes Spark Columns.

    Args:
        result_type: Spark type (DDL string or DataType) overriding the
            signature's output; refused when it cannot hold the model's output.
        batch_size: rows per model call, re-batched across Arrow batches
            (default by flavor: torch 8192, scikit-learn 16384, pyfunc 8192).
        device: ``"auto"`` (the task's Spark GPU, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        features: input column names, in the model's input order, when they
            differ from the signature's names or the model has no signature.
        on_null: ``"error"`` (a task meeting a null/NaN/inf feature fails,
            naming columns and counts) or ``"null_prediction"``.
        autocast: ``"bf16"`` or ``"fp16"`` mixed precision for torch on CUDA.
        diagnostics: return ``struct<prediction, diagnostics>`` with executor
            facts (pid, model loads, device, GPU addresses, partition, attempt).
        params: inference parameters for the model's ``predict``, checked
            against the signature's ParamSchema here, on the driver.
        model_config: passed to ``mlflow.pyfunc.load_model(..., model_config=)``
            on the executors (the model's pyfunc flavor scores then).
        extra_env: environment variables set in the Python workers while the task scores.
        row_errors: ``"raise"`` (a model error fails the task) or ``"capture"`` (the result is
            ``struct<prediction, error>``: the rows the model raises on are found by splitting the
            batch, and come back null with ``"ExceptionClass: message"``; the others are scored).
        max_row_errors: with ``"capture"``, the most failing rows one task tolerates before it fails.
    """
    from ..session import get_spark

    if on_null not in ("error", "null_prediction"):
        raise SchemaMismatchError(f"on_null={on_null!r}: expected 'error' or 'null_prediction'.")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0):
        raise SchemaMismatchError(f"batch_size={batch_size!r}: expected a positive integer.")
    if autocast not in (None, "bf16", "fp16"):
        raise SchemaMismatchError(f"autocast={autocast!r}: expected None, 'bf16' or 'fp16'.")
    if row_errors not in ("raise", "capture"):
        raise SchemaMismatchError(f"row_errors={row_errors!r}: expected 'raise' or 'capture'.")
    if not isinstance(max_row_errors, int) or isinstance(max_row_errors, bool) or max_row_errors < 0:
        raise SchemaMismatchError(f"max_row_errors={max_row_errors!r}: expected an integer >= 0.")
    if model_config is not None and not isinstance(model_config, Mapping):
        raise SchemaMismatchError(f"model_config={model_config!r}: expected a dict.")
    if extra_env is not None and not (isinstance(extra_env, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in extra_env.items())):
        raise SchemaMismatchError(f"extra_env={extra_env!r}: expected a dict of environment variable names to strings.")
    model = load_model(model)
    spark = spark or get_spark()
    try:
        timezone = spark.conf.get("spark.sql.session.timeZone") or "UTC"
    except Exception:  # noqa: BLE001
        timezone = "UTC"
    base = {
        "output": apply_result_type(model.output, result_type, model.uri),
        "params": validate_params(model, params),
        "model_config": dict(model_config) if model_config else None,
        "extra_env": tuple(sorted((extra_env or {}).items())),
        "handle": ship_model(spark, model, ship),
        "batch_size": batch_size,
        "device": device,
        "on_null": on_null,
        "autocast": autocast,
        "diagnostics": diagnostics,
        "timezone": timezone,
        "row_errors": row_errors,
        "max_row_errors": max_row_errors,
    }
    return ScoringUDF(model, base, features)
