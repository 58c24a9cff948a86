"""The vectorized UDF around the predictor, and ``score()``.

Runs on: the driver builds the UDF (resolving features, types, output type and
shipping the model); executors run :func:`_score_iterator` once per task, over
the task's Arrow batches.

The UDF is a scalar *iterator* Arrow UDF: Spark passes each task's Arrow
batches as pyarrow arrays (no pandas round-trip), the model is fetched from the
per-worker cache once per task, and the predictor re-batches across Arrow
batches. Features are cast to the model's types in the JVM, before they cross
to Python, and only the feature columns cross; only the prediction comes back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from .errors import SchemaMismatchError
from .predictor import DEFAULT_BATCH_SIZE
from .registry import ScoringModel, load_model
from .signature import InputSpec, OutputSpec, apply_result_type, plan_feature_casts

__all__ = ["scoring_udf", "score", "ScoringUDF", "LINEAGE_COLUMNS", "DIAGNOSTICS_TYPE"]

#: Columns ``score(lineage=True)`` appends (jobs add ``scoring_run_id``).
LINEAGE_COLUMNS = ("model_name", "model_version", "scored_at")

#: One row per batch of executor facts, for tests and debugging (``diagnostics=True``).
DIAGNOSTICS_TYPE = pa.struct(
    [
        ("pid", pa.int64()),
        ("model_loads", pa.int64()),
        ("cache_hits", pa.int64()),
        ("device", pa.string()),
        ("gpu_addresses", pa.string()),
        ("batch_size", pa.int64()),
        ("partition_id", pa.int64()),
        ("attempt", pa.int64()),
    ]
)


#: Test-only fault injection, off unless a test sets this Spark local property on
#: the driver (``sc.setLocalProperty``): ``raise`` / ``exit`` make attempt 0 of
#: each scoring task raise / kill its Python worker after reading its first batch
#: (``raise_always`` / ``exit_always``: every attempt). tests/reliability use it to
#: prove retried tasks give correct output with no duplicate rows.
TEST_FAULT_PROPERTY = "spark_scoring.test.fault"


def _test_fault() -> None:
    """Executor: apply :data:`TEST_FAULT_PROPERTY` to the current task, if set."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    mode = ctx.getLocalProperty(TEST_FAULT_PROPERTY) if ctx is not None else None
    if not mode or (not mode.endswith("_always") and ctx.attemptNumber() != 0):
        return
    where = f"partition {ctx.partitionId()} attempt {ctx.attemptNumber()}"
    if mode.startswith("exit"):
        os._exit(86)
    raise RuntimeError(f"spark_scoring test fault ({mode}) in {where}")


def _model_input_spec(model: ScoringModel, features: Sequence[str] | None) -> tuple[list[str], InputSpec, str]:
    """Driver: (input column names, the model's InputSpec, runner kind) for ``model``."""
    spec = model.inputs
    if spec is None:
        if not features:
            raise SchemaMismatchError(
                f"model {model.uri!r} has no named input signature, so spark_scoring cannot tell "
                "which columns to feed it. Fix: pass features=[...] (column names in the order "
                "the model was trained on), or log the model with a signature."
            )
        tensor_type = pa.float64()
        sig = model.signature
        if sig is not None and sig.inputs is not None and sig.inputs.is_tensor_spec():
            tensor_type = pa.from_numpy_dtype(sig.inputs.inputs[0].type)
        spec = InputSpec(tuple(features), tuple(tensor_type for _ in features), tensor=True)
    columns = list(features) if features else list(spec.names)
    if len(columns) != len(spec.names):
        raise SchemaMismatchError(
            f"features={columns} names {len(columns)} columns, but model {model.uri!r} takes "
            f"{len(spec.names)}: {list(spec.names)}. Fix: name one input column per model input, in order."
        )
    numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) for t in spec.types)
    kind = model.flavor
    if kind == "pytorch":
        spec = InputSpec(spec.names, tuple(pa.float32() for _ in spec.names), tensor=True)
    elif kind == "sklearn" and not numeric:
        kind = "pyfunc"  # e.g. a pipeline with string columns: let pyfunc build the frame
    elif kind == "sklearn":
        spec = InputSpec(spec.names, tuple(pa.float64() for _ in spec.names), tensor=True)
    return columns, spec, kind


def _make_runner(kind: str, model: Any, device: str, names: Sequence[str], predict_method, autocast):
    """Executor: wrap a loaded model in the runner for its kind."""
    from . import predictor as P

    if kind == "pytorch":
        return P.TorchRunner(model, device, autocast=autocast)
    if kind == "sklearn":
        return P.SklearnRunner(model, predict_method or "predict")
    if hasattr(model, "metadata"):  # an mlflow PyFuncModel
        return P.PyfuncRunner(model, names)
    # a raw scikit-learn estimator with non-numeric inputs: called with a DataFrame
    return P.PyfuncRunner(_SklearnFrameAdapter(model, predict_method or "predict"), names)


class _SklearnFrameAdapter:
    def __init__(self, model, method):
        self.fn = getattr(model, method)

    def predict(self, frame):
        return self.fn(frame)


@dataclass(frozen=True)
class _TaskSpec:
    """Everything a task needs, copied out of driver objects so no ``self`` is pickled."""

    handle: Any
    kind: str
    model_names: tuple[str, ...]
    column_names: tuple[str, ...]
    output: OutputSpec
    batch_size: int
    device: str
    on_null: str
    autocast: str | None
    diagnostics: bool
    #: Prepare batch n+1 in a thread while batch n runs. None: on CUDA only, where it
    #: overlaps host work with the GPU; on CPU it measured within noise of off on both
    #: models (bench/RESULTS.md), so the task keeps its one core to itself.
    prefetch: bool | None = None


def _score_iterator(spec: _TaskSpec, batches: Iterator) -> Iterator[pa.Array]:
    """Executor: one task's Arrow batches in, prediction arrays out."""
    from . import device as devices
    from . import model_cache
    from .loading import load_native
    from .predictor import Predictor

    dev = devices.resolve_device(spec.device)
    if dev == "cpu" and spec.kind == "pytorch":
        import torch

        threads = devices.task_cpus()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    handle = spec.handle
    model = model_cache.get_or_load(
        (handle.fingerprint, spec.kind, dev),
        lambda: load_native(handle.flavor if spec.kind != "pytorch" else "pytorch", handle.local_dir(), dev),
    )
    runner = _make_runner(spec.kind, model, dev, spec.model_names, handle.predict_method, spec.autocast)
    predictor = Predictor(
        runner,
        names=spec.column_names,
        output=spec.output,
        batch_size=spec.batch_size,
        on_null=spec.on_null,
        prefetch=dev != "cpu" if spec.prefetch is None else spec.prefetch,
    )

    def as_tuples(it):
        for i, item in enumerate(it):
            if i == 0:
                _test_fault()
            yield (item,) if isinstance(item, pa.Array) else item

    diag = None
    if spec.diagnostics:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        stats = model_cache.stats()
        diag = {
            "pid": os.getpid(),
            "model_loads": stats["loads"],
            "cache_hits": stats["hits"],
            "device": dev,
            "gpu_addresses": ",".join(devices.task_gpu_addresses()),
            "batch_size": spec.batch_size,
            "partition_id": ctx.partitionId() if ctx else -1,
            "attempt": ctx.attemptNumber() if ctx else 0,
        }
    for result in predictor.predict_stream(as_tuples(batches)):
        if diag is not None:
            n = len(result)
            diag_arr = pa.StructArray.from_arrays(
                [pa.array([diag[f.name]] * n, type=f.type) for f in DIAGNOSTICS_TYPE],
                fields=list(DIAGNOSTICS_TYPE),
            )
            result = pa.StructArray.from_arrays(
                [result, diag_arr], names=["prediction", "diagnostics"]
            )
        yield result


class ScoringUDF:
    """A Spark UDF for one pinned model: ``df.withColumn("p", udf("f1", "f2"))`` or ``udf()``.

    Built on the driver by :func:`scoring_udf`. Calling it with no columns
    feeds the model signature's input columns by name.
    """

    def __init__(self, model: ScoringModel, spec: _TaskSpec, input_spec: InputSpec, spark_type, spark_udf):
        self.model = model
        self.output = spec.output
        self.return_type = spark_type
        self.input_spec = input_spec
        self.columns = spec.column_names
        self._spec = spec
        self._udf = spark_udf

    def __call__(self, *cols):
        import pyspark.sql.functions as F
        from pyspark.sql.pandas.types import from_arrow_type

        if not cols:
            cols = self.columns
        if len(cols) != len(self.input_spec.names):
            raise SchemaMismatchError(
                f"the scoring UDF for {self.model.uri!r} takes {len(self.input_spec.names)} columns "
                f"{list(self.input_spec.names)}, got {len(cols)}. Fix: pass one column per model input, in order."
            )
        args = [
            (F.col(c) if isinstance(c, str) else c).cast(from_arrow_type(t))
            for c, t in zip(cols, self.input_spec.types)
        ]
        return self._udf(*args)

    def __repr__(self) -> str:
        return f"ScoringUDF({self.model.uri!r} -> {self.return_type.simpleString()})"


def scoring_udf(
    model: ScoringModel | str,
    *,
    result_type: Any = None,
    batch_size: int | None = None,
    device: str = "auto",
    features: Sequence[str] | None = None,
    on_null: str = "error",
    autocast: str | None = None,
    diagnostics: bool = False,
    ship: str | None = None,
    spark=None,
) -> ScoringUDF:
    """Build a vectorized scoring UDF for ``model`` (a drop-in for ``mlflow.pyfunc.spark_udf``).

    Runs on the driver: resolves and downloads the model (if given a URI),
    ships it once (broadcast, or a shared path), and returns a callable that
    makes Spark Columns.

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
    """
    from .session import get_spark

    if on_null not in ("error", "null_prediction"):
        raise SchemaMismatchError(f"on_null={on_null!r}: expected 'error' or 'null_prediction'.")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
        raise SchemaMismatchError(f"batch_size={batch_size!r}: expected a positive integer.")
    if autocast not in (None, "bf16", "fp16"):
        raise SchemaMismatchError(f"autocast={autocast!r}: expected None, 'bf16' or 'fp16'.")
    model = load_model(model)
    spark = spark or get_spark()
    columns, input_spec, kind = _model_input_spec(model, features)
    output = apply_result_type(model.output, result_type, model.uri)
    from .shipping import ship as ship_model

    spec = _TaskSpec(
        handle=ship_model(spark, model, ship),
        kind=kind,
        model_names=tuple(input_spec.names),
        column_names=tuple(columns),
        output=output,
        batch_size=batch_size or DEFAULT_BATCH_SIZE.get(kind, 8192),
        device=device,
        on_null=on_null,
        autocast=autocast,
        diagnostics=diagnostics,
    )
    from pyspark.sql.functions import arrow_udf
    from pyspark.sql.pandas.functions import ArrowUDFType
    from pyspark.sql.pandas.types import from_arrow_type

    arrow_type = output.arrow_type
    if diagnostics:
        arrow_type = pa.struct([("prediction", arrow_type), ("diagnostics", DIAGNOSTICS_TYPE)])
    spark_type = from_arrow_type(arrow_type)

    def score_batches(batches):
        return _score_iterator(spec, batches)

    import warnings

    with warnings.catch_warnings():  # "prefer type hints": the explicit type is deliberate
        warnings.simplefilter("ignore", UserWarning)
        udf = arrow_udf(score_batches, spark_type, ArrowUDFType.SCALAR_ITER)
    udf = udf.asNondeterministic()  # never re-evaluated or reordered by the optimizer
    return ScoringUDF(model, spec, input_spec, spark_type, udf)


def score(
    df,
    model: ScoringModel | str,
    *,
    features: Sequence[str] | None = None,
    output_col: str = "prediction",
    lineage: bool = True,
    result_type: Any = None,
    batch_size: int | None = None,
    device: str = "auto",
    on_null: str = "error",
    autocast: str | None = None,
    diagnostics: bool = False,
):
    """Append predictions (and lineage columns) to ``df``; lazy, like any transformation.

    Runs on the driver; checks before any Spark job that every feature column
    exists and casts safely to the model's types, and that the new columns do
    not clash with existing ones. With ``lineage``, appends ``model_name``,
    ``model_version`` (the pinned version, never the alias) and ``scored_at``.
    With ``diagnostics``, also ``scoring_diagnostics`` (see :func:`scoring_udf`).
    """
    import pyspark.sql.functions as F

    model = load_model(model)
    udf = scoring_udf(
        model,
        result_type=result_type,
        batch_size=batch_size,
        device=device,
        features=features,
        on_null=on_null,
        autocast=autocast,
        diagnostics=diagnostics,
        spark=df.sparkSession,
    )
    schema = {f.name: f.dataType for f in df.schema.fields}
    renamed = InputSpec(tuple(udf.columns), udf.input_spec.types, udf.input_spec.tensor)
    plan_feature_casts(schema, renamed, model.uri)
    new_cols = [output_col] + (list(LINEAGE_COLUMNS) if lineage else [])
    if diagnostics:
        new_cols.append("scoring_diagnostics")
    clash = [c for c in new_cols if c in schema]
    if clash:
        raise SchemaMismatchError(
            f"the input already has column(s) {clash} that scoring would add. Fix: drop or rename "
            "them, or choose another output_col."
        )
    result = udf()
    if diagnostics:
        tmp = "__spark_scoring_result"
        out = df.withColumn(tmp, result)
        out = out.withColumn(output_col, F.col(f"{tmp}.prediction")).withColumn(
            "scoring_diagnostics", F.col(f"{tmp}.diagnostics")
        ).drop(tmp)
    else:
        out = df.withColumn(output_col, result)
    if lineage:
        out = out.withColumns(
            {
                "model_name": F.lit(model.display_name),
                "model_version": F.lit(model.version).cast("string"),
                "scored_at": F.current_timestamp(),
            }
        )
    return out
