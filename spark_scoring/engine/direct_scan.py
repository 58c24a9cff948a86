"""Score a Delta table or a Parquet folder by reading its files inside the Python tasks.

Runs on: the driver plans (:mod:`.scan_plan`: the pinned snapshot's files,
packed into tasks the way Spark packs them) and builds the ``mapInArrow``
plan; executors read and score (:func:`spark_scoring.executor.scan.scan_task`).

Why: in the normal path (``score(spark.read...)``) the JVM decodes Parquet into
rows and converts them to Arrow for Python; on a 2-core machine that hand-off
costs about twice the model itself (bench/RESULTS.md). Here Spark only
schedules a small DataFrame of (file, byte range, partition values) rows; each
Python task reads its row groups with pyarrow, restores the partition columns,
scores with the same task entry point and model cache as the UDF, and hands
back only the kept columns and the prediction.

The snapshot is read through delta-kernel (:mod:`.scan_log`): deletion
vectors (the deleted rows are dropped in the task), column mapping (physical
names in the files, logical names out), V2 and multi-part checkpoints and
timestamp partition values are honoured. When the direct scan cannot honour
the table it falls back to the normal read and logs the reason
(:func:`direct_scan_supported` says it up front): a reader feature delta-rs
does not support, binary partition columns, nested pass-through columns,
non-numeric features, a pyfunc model, a ``partition_filter`` on a
non-partition column, or a file system pyarrow cannot open.
"""
from __future__ import annotations

import logging
from typing import Sequence

import pyarrow as pa

from ..errors import SchemaMismatchError
from ..executor.profiles import KeyedStates, TaskProfiler, merge_task_states, task_rows
from ..executor.scan import ReadSpec, count_task, scan_task
from ..executor.task import DIAGNOSTICS_TYPE
from ..model.registry import load_model
from .lineage import LINEAGE_COLUMNS, lineage_columns
from .scan_plan import ScanPlan, direct_scan_supported, plan_scan
from .score import check_input, score
from .taskinfo import current_task
from .udf import ScoringUDF, scoring_udf

__all__ = ["score_table_direct", "direct_scan_supported", "plan_scan", "scan_dataframe", "scan_schema",
           "count_bad_rows_direct", "ScanPlan", "ScanProfile", "why_not_direct"]

log = logging.getLogger(__name__)


def why_not_direct(udf: ScoringUDF, columns: Sequence[str]) -> str | None:
    """Driver: why this model cannot take the direct scan (None: it can)."""
    plan = udf.plan(columns)
    if plan.runner not in ("pytorch", "sklearn") or not plan.stacked or plan.binding.struct_fields:
        return (f"the model is scored through its pyfunc flavor ({plan.reason or 'a ' + plan.runner + ' model'}); "
                "the direct scan feeds numeric matrices to torch and scikit-learn models only")
    return None


def _tasks_df(spark, plan: ScanPlan):
    """Driver: one row per planned task (its splits), one Spark partition each."""
    rows = [([p for p, *_r in t], [s for _p, s, *_r in t], [n for _p, _s, n, *_r in t],
             [v for _p, _s, _l, v, _d in t], [list(d) for *_r, d in t]) for t in plan.tasks]
    task_schema = ("paths array<string>, starts array<bigint>, lengths array<bigint>, parts array<string>, "
                   "dels array<array<bigint>>")
    try:
        return spark.createDataFrame(spark.sparkContext.parallelize(rows, max(1, len(rows))), task_schema)
    except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext
        return spark.createDataFrame(rows, task_schema).repartition(max(1, len(rows)))


class ScanProfile:
    """Driver: column sketches of the rows a direct scan hands to Spark, gathered by its tasks.

    The tasks (:class:`~spark_scoring.executor.profiles.TaskProfiler`) summarise ``columns`` per value
    of ``group_column`` as the rows stream by and ship the sketches in a Spark accumulator keyed by
    task, so a retried task counts once. Read :meth:`sketches` after the action that ran the scan.
    Not available on Spark Connect (no accumulators): :meth:`make` returns None there.
    """

    def __init__(self, spark, group_column: str | None, columns: Sequence[str]):
        self.group_column, self.columns = group_column, tuple(columns)
        self.accumulator = spark.sparkContext.accumulator({}, KeyedStates())

    @classmethod
    def make(cls, spark, group_column: str | None, columns: Sequence[str],
             rows: bool = False) -> "ScanProfile | None":
        """The profile, or None: nothing asked for (no ``columns``, ``rows`` False) or no accumulators."""
        if not columns and not rows:
            return None
        try:
            return cls(spark, group_column, columns)
        except Exception:  # noqa: BLE001 - Spark Connect: no SparkContext, no accumulators
            return None

    def sketches(self) -> dict:
        """``{(group value, column): ColumnSketch}`` of the rows the scan's tasks handed on."""
        return merge_task_states(self.accumulator.value)

    def rows(self) -> dict:
        """``{group value: rows}`` the scan's tasks handed on."""
        return task_rows(self.accumulator.value)


def scan_schema(df, udf: ScoringUDF, *, keep: Sequence[str], output_col: str, diagnostics: bool = False):
    """Driver: the Spark schema a direct scan yields (kept columns of ``df``, the prediction)."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    schema = {f.name: f.dataType for f in df.schema.fields}
    out_fields = [StructField(c, schema[c], True) for c in keep]
    out_fields.append(StructField(output_col, from_arrow_type(udf.output.arrow_type), True))
    if diagnostics:
        out_fields.append(StructField("scoring_diagnostics", from_arrow_type(DIAGNOSTICS_TYPE), True))
    return StructType(out_fields)


def scan_dataframe(spark, plan: ScanPlan, df, udf: ScoringUDF, *, keep: Sequence[str], output_col: str,
                   columns: Sequence[str], profile: ScanProfile | None = None, **task_overrides):
    """Driver: the ``mapInArrow`` DataFrame scoring a direct ``plan`` (kept columns + the prediction).

    ``df`` is the plan's normal DataFrame (its schema types the output); ``profile``: the tasks
    also sketch its columns (see :class:`ScanProfile`);
    ``task_overrides`` replace task-spec fields (a benchmark's A/B of ``prefetch``).
    """
    from pyspark.sql.pandas.types import to_arrow_type

    schema = {f.name: f.dataType for f in df.schema.fields}
    binding_plan = udf.plan(columns)
    task = udf.task_spec(binding_plan, **task_overrides)
    out_fields = scan_schema(df, udf, keep=keep, output_col=output_col, diagnostics=task.diagnostics).fields
    target = binding_plan.binding.spec.inputs[0].arrow_type
    read = ReadSpec(
        feature_cols=tuple(columns),
        feature_types=tuple(target for _ in columns),
        keep_cols=tuple(keep),
        out_schema=pa.schema([pa.field(f.name, to_arrow_type(f.dataType, timezone="UTC")) for f in out_fields]),
        partition_types={c: to_arrow_type(schema[c], timezone="UTC") for c in plan.partition_columns},
        read_batch=task.batch_size,
        physical=dict(plan.physical),
    )

    if profile is None:
        def scan(batches):
            return scan_task(task, read, batches, current_task())
    else:
        group, profiled, accumulator = profile.group_column, profile.columns, profile.accumulator

        def scan(batches):
            info, profiler = current_task(), TaskProfiler(group, profiled)
            for batch in scan_task(task, read, batches, info):
                profiler.add(batch)
                yield batch
            if profiler.rows:
                accumulator.add({info.partition_id: profiler.states()})

    from pyspark.sql.types import StructType

    return _tasks_df(spark, plan).mapInArrow(scan, StructType(out_fields))


def _filtered(df, partition_filter: dict | None):
    import pyspark.sql.functions as F

    for col, wanted in (partition_filter or {}).items():
        opts = list(wanted) if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        values = [o for o in opts if o is not None]
        cond = F.col(col).isin(values) if values else F.lit(False)
        if len(values) != len(opts):
            cond = cond | F.col(col).isNull()
        df = df.where(cond)
    return df


def score_table_direct(
    spark,
    path: str,
    model,
    *,
    version: int | None = None,
    features: Sequence[str] | None = None,
    keep_columns: Sequence[str] | None = None,
    output_col: str = "prediction",
    partition_filter: dict | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    on_null: str = "error",
    lineage: bool = True,
    diagnostics: bool = False,
):
    """Score the Delta table (pinned to ``version``, default: the latest now) or Parquet folder at ``path``.

    Runs on the driver; returns a lazy DataFrame with the same rows and columns as::

        df = spark.read.format("delta").option("versionAsOf", v).load(path)   # or .parquet(path)
        df = df.where(<partition_filter>)
        score(df, model, ...).select(*keep_columns, output_col, *lineage columns)

    ``keep_columns`` defaults to every table column. ``partition_filter`` maps
    a partition column to a value or a list of values (``None`` matches null).
    When the direct scan cannot honour the table it returns exactly that
    normal-path DataFrame and logs why (:func:`direct_scan_supported` tells in advance).
    """
    model = load_model(model)
    udf = scoring_udf(model, batch_size=batch_size, device=device, features=features, on_null=on_null,
                      diagnostics=diagnostics, spark=spark)
    columns = list(udf.columns)
    plan, df = plan_scan(spark, path, version, partition_filter=partition_filter,
                         columns=list(keep_columns or []) + columns)
    keep = list(df.columns) if keep_columns is None else list(keep_columns)
    unknown = [c for c in keep if c not in df.columns]
    if unknown:
        raise SchemaMismatchError(f"keep_columns {unknown} are not columns of {path!r}: {df.columns}.")
    added = [output_col] + (list(LINEAGE_COLUMNS) if lineage else []) + (["scoring_diagnostics"] if diagnostics else [])
    reason = plan.reason if not plan.direct else why_not_direct(udf, columns)
    if reason is not None:
        log.warning("direct scan of %s falls back to the normal read: %s", path, reason)
        needed = list(dict.fromkeys(keep + columns))
        out = score(_filtered(df, partition_filter).select(*needed), model, features=features,
                    output_col=output_col, lineage=lineage, batch_size=batch_size, device=device,
                    on_null=on_null, diagnostics=diagnostics)
        return out.select(*keep, *added)
    check_input(udf, df.schema, columns)  # same checks, same messages as score()
    clash = [c for c in added if c in set(keep) | set(columns)]
    if clash:
        raise SchemaMismatchError(
            f"the input already has column(s) {clash} that scoring would add. Fix: drop or rename "
            "them, or choose another output_col."
        )
    out = scan_dataframe(spark, plan, df, udf, keep=keep, output_col=output_col, columns=columns)
    if lineage:
        out = out.withColumns(lineage_columns([(output_col, model)])).select(*keep, *added)
    return out


def count_bad_rows_direct(spark, plan: ScanPlan, df, features: Sequence[str],
                          by: str | None = None) -> tuple[int, int, dict[str, int]] | dict | None:
    """``(rows, bad rows, bad rows per feature)`` of a direct ``plan``, read by pyarrow in the tasks;
    with ``by`` (a partition column), ``{partition value: (rows, bad, per feature)}``.

    Runs on the driver (planning) and the executors (one pass over only the
    feature columns). The same answer as :func:`spark_scoring.job.quality.count_rows`
    for numeric features (the one bad-row rule). Returns None where the plan is
    not direct, a feature is a partition column, or a feature is not numeric
    (the caller then counts through Spark).
    """
    import json

    import pyspark.sql.functions as F
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import NumericType

    from ..executor.scan import partition_values

    features = list(features)
    schema = {f.name: f.dataType for f in df.schema.fields}
    if (not plan.direct or any(f in plan.partition_columns for f in features)
            or not all(isinstance(schema.get(f), NumericType) for f in features)):
        return None
    read = ReadSpec(feature_cols=tuple(features),
                    feature_types=tuple(to_arrow_type(schema[f], timezone="UTC") for f in features),
                    keep_cols=(), out_schema=pa.schema([]), partition_types={}, read_batch=65_536,
                    physical=dict(plan.physical))
    names = ["rows", "bad"] + [f"c{i}" for i in range(len(features))]

    def count(batches):
        return count_task(read, names, batches)

    rows = [] if not plan.tasks else (
        _tasks_df(spark, plan).mapInArrow(count, "part string, " + ", ".join(f"{n} bigint" for n in names))
        .groupBy("part").agg(*[F.sum(n).alias(n) for n in names]).collect())

    def triple(row):
        per_column = {f: int(row[f"c{i}"]) for i, f in enumerate(features) if row[f"c{i}"]}
        return int(row["rows"] or 0), int(row["bad"] or 0), per_column

    if by is None:
        total = [0, 0, {}]
        for row in rows:
            r, b, per = triple(row)
            total[0], total[1] = total[0] + r, total[1] + b
            for k, v in per.items():
                total[2][k] = total[2].get(k, 0) + v
        return total[0], total[1], total[2]
    kind = to_arrow_type(schema[by], timezone="UTC")
    out = {}
    for row in rows:
        text = json.loads(row["part"]).get(by)
        value = None if text is None else partition_values(pa.array([text], pa.string()), kind)[0].as_py()
        r, b, per = triple(row)
        prev = out.get(value)
        if prev is not None:  # the same partition from files of two encodings of its value
            per = {k: per.get(k, 0) + prev[2].get(k, 0) for k in set(per) | set(prev[2])}
            r, b = r + prev[0], b + prev[1]
        out[value] = (r, b, per)
    return out
