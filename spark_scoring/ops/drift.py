"""Population Stability Index (PSI) and the Spark aggregations that feed it.

Runs on: the driver. :func:`psi` and :func:`psi_from_counts` are plain numpy;
the Spark helpers build one ``DataFrame.agg`` each (one Spark job), so a
partition's summary and histograms never collect rows to the driver.

PSI compares the distribution of a column in an ``actual`` sample with an
``expected`` (reference) sample over the same bins::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

where ``e_i`` and ``a_i`` are the fractions of the expected and actual samples
in bin ``i``. Bins are quantile bins of the expected sample: the inner edges
are its ``1/bins, 2/bins, ...`` quantiles (repeated edges merged), the outer
bins are open (``-inf``, ``+inf``), and a value ``x`` falls in bin
``#{edges <= x}``. A bin with no rows on either side would make the log
undefined, so each fraction is floored at ``eps`` (default ``1e-4``) before
the sum. Rules of thumb: < 0.1 stable, 0.1 to 0.25 a shift worth a look,
> 0.25 a real change. Nulls and NaN are ignored (jobs quarantine them anyway).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "EPSILON",
    "SUMMARY_QUANTILES",
    "PLOT_QUANTILES",
    "psi",
    "psi_from_counts",
    "quantile_edges",
    "bin_counts",
    "column_quantiles",
    "histograms",
    "partition_stats",
    "group_stats",
    "group_counts",
    "compare_scores",
]

#: The floor for a bin's fraction (see the module docstring).
EPSILON = 1e-4
#: Quantiles of the score summary: p01, p25, p50, p75, p99.
SUMMARY_QUANTILES: tuple[tuple[str, float], ...] = (
    ("p01", 0.01), ("p25", 0.25), ("p50", 0.5), ("p75", 0.75), ("p99", 0.99),
)
#: Quantiles kept for plots: every percentile (the distribution without the rows).
PLOT_QUANTILES: tuple[float, ...] = tuple(round(i / 100, 2) for i in range(101))
_ACCURACY = 10_000  # percentile_approx accuracy: relative rank error about 1e-4


# --------------------------------------------------------------------- numpy
def quantile_edges(expected: Sequence[float], bins: int = 10) -> np.ndarray:
    """The inner bin edges of ``expected``: its ``k/bins`` quantiles, repeats merged."""
    values = _finite(expected)
    if values.size == 0:
        raise ValueError("the expected sample has no finite values; PSI needs a reference")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an int >= 2, got {bins!r}")
    levels = np.arange(1, bins) / bins
    return np.unique(np.quantile(values, levels))


def bin_counts(values: Sequence[float], edges: Sequence[float]) -> np.ndarray:
    """Rows per bin: value ``x`` goes to bin ``#{edges <= x}`` (``len(edges) + 1`` bins)."""
    return np.bincount(
        np.searchsorted(np.asarray(edges, dtype=float), _finite(values), side="right"),
        minlength=len(edges) + 1,
    )


def psi_from_counts(expected: Sequence[float], actual: Sequence[float], eps: float = EPSILON) -> float:
    """PSI of two histograms over the same bins (counts or fractions)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.ndim != 1 or e.size == 0:
        raise ValueError(f"expected and actual must be 1-d histograms of equal length, got {e.shape} and {a.shape}")
    if e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("both histograms need at least one row")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = 10, eps: float = EPSILON) -> float:
    """The PSI of ``actual`` against ``expected`` over ``bins`` quantile bins of ``expected``.

    >>> round(psi(range(100), [10] * 40 + [30] * 30 + [60] * 20 + [90] * 10, bins=4), 4)
    0.2282
    """
    edges = quantile_edges(expected, bins)
    return psi_from_counts(bin_counts(expected, edges), bin_counts(actual, edges), eps)


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    return arr[~np.isnan(arr)]


# --------------------------------------------------------------------- Spark
def column_quantiles(df, columns: Sequence[str], levels: Sequence[float]) -> dict[str, list[float] | None]:
    """``{column: [quantile at each level]}`` in one Spark job (``None``: no values)."""
    import pyspark.sql.functions as F

    if not columns:
        return {}
    frame, values, _ = _prepare(df, columns, {})
    row = frame.agg(
        *[F.percentile_approx(values[c], list(levels), _ACCURACY).alias(f"q{i}") for i, c in enumerate(columns)]
    ).head()
    return {c: (None if row[f"q{i}"] is None else [float(v) for v in row[f"q{i}"]]) for i, c in enumerate(columns)}


def histograms(df, edges: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
    """``{column: rows per bin}`` for the given inner edges, in one Spark job."""
    import pyspark.sql.functions as F

    if not edges:
        return {}
    frame, _, bins = _prepare(df, [], edges)
    names = list(edges)
    row = frame.agg(*[F.count_if(bins[c] == b).alias(f"h{i}_{b}")
                      for i, c in enumerate(names) for b in range(len(edges[c]) + 1)]).head()
    return {c: [int(row[f"h{i}_{b}"]) for b in range(len(edges[c]) + 1)] for i, c in enumerate(names)}


def partition_stats(
    df,
    summary_columns: Sequence[str],
    profile_columns: Sequence[str],
    bins: int,
    reference_edges: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """One Spark job over one partition's rows:

    - ``summary``: ``{column: {count, mean, std, min, max, p01, p25, p50, p75, p99}}``
      for each of ``summary_columns`` (the scores);
    - ``quantiles``: ``{column: [the PLOT_QUANTILES]}`` for the summary columns (plots);
    - ``edges``: ``{column: inner bin edges}`` of every ``profile_columns`` entry
      (scores and features), so this partition can be a later partition's reference;
    - ``counts``: ``{column: rows per bin}`` against ``reference_edges`` (for PSI).
    """
    import pyspark.sql.functions as F

    reference_edges = dict(reference_edges or {})
    wanted = list(dict.fromkeys([*summary_columns, *profile_columns]))
    frame, values, index = _prepare(df, wanted, reference_edges)
    aggs = _stat_aggs(values, summary_columns, profile_columns, bins)
    hist_names = list(reference_edges)
    for i, c in enumerate(hist_names):
        aggs += [F.count_if(index[c] == b).alias(f"h{i}_{b}") for b in range(len(reference_edges[c]) + 1)]
    if not aggs:
        return {"summary": {}, "quantiles": {}, "edges": {}, "counts": {}}
    row = frame.agg(*aggs).head()
    stats = _stat_values(row, summary_columns, profile_columns)
    stats["counts"] = {c: [int(row[f"h{i}_{b}"]) for b in range(len(reference_edges[c]) + 1)]
                       for i, c in enumerate(hist_names)}
    return stats


def group_stats(
    df,
    groups: Mapping[str, str],
    summary_columns: Sequence[str],
    profile_columns: Sequence[str],
    bins: int,
) -> dict[str, dict[str, Any]]:
    """:func:`partition_stats` (without ``counts``) of several partitions in one Spark job.

    ``groups`` maps a key to the SQL predicate of its rows (one partition each,
    disjoint); returns ``{key: {summary, quantiles, edges}}`` for every key, with
    empty entries for a key without rows.
    """
    wanted = list(dict.fromkeys([*summary_columns, *profile_columns]))
    aggs = []
    if groups and wanted:
        frame, values = _tagged(df, groups, wanted)
        aggs = _stat_aggs(values, summary_columns, profile_columns, bins)
    found = {}
    if aggs:
        for row in frame.groupBy("_group").agg(*aggs).collect():
            found[row["_group"]] = _stat_values(row, summary_columns, profile_columns)
    empty = {"summary": {}, "quantiles": {}, "edges": {}}
    return {key: found.get(key, empty) for key in groups}


def group_counts(
    df,
    groups: Mapping[str, str],
    requests: Mapping[str, tuple[str, Mapping[str, Sequence[float]]]],
    bins: int,
) -> dict[str, dict[str, list[int]]]:
    """Histograms of several partitions against several edge sets, in one Spark job.

    ``groups``: ``{key: SQL predicate}`` as for :func:`group_stats`; ``requests``:
    ``{request id: (group key, {column: inner edges})}`` (at most ``bins - 1`` edges
    each). Returns ``{request id: {column: rows per bin}}``. The edges travel as
    data (a broadcast join on the group key), so the plan has one bin expression
    per column however many partitions and edge sets there are.
    """
    import pyspark.sql.functions as F
    from pyspark.sql.types import ArrayType, DoubleType, StringType, StructField, StructType

    columns = list(dict.fromkeys(c for _key, edges in requests.values() for c in edges))
    if not requests or not columns:
        return {rid: {} for rid in requests}
    frame, values = _tagged(df, groups, columns)
    schema = StructType([StructField("_group", StringType()), StructField("_request", StringType()),
                         *[StructField(f"e{i}", ArrayType(DoubleType())) for i in range(len(columns))]])
    table = [(key, rid, *[None if c not in edges else [float(x) for x in edges[c]] for c in columns])
             for rid, (key, edges) in requests.items()]
    edges_df = df.sparkSession.createDataFrame(table, schema)
    joined = frame.join(F.broadcast(edges_df), "_group")
    # Long form: one (request, column, bin) row per value, then one small grouped count.
    # A count per (column, bin) in one wide aggregation would repeat each column's bin
    # expression once per bin, a generated method past the JVM's 64 KB limit (Spark then
    # logs the failed compile and runs it interpreted).
    indexes = F.array(*[_bin_index(values[c], F.col(f"e{i}"), bins) for i, c in enumerate(columns)])
    long = joined.select("_request", F.posexplode(indexes).alias("_column", "_bin"))
    found: dict[tuple[str, int, int], int] = {}
    for row in long.where(F.col("_bin").isNotNull()).groupBy("_request", "_column", "_bin").count().collect():
        found[(row["_request"], int(row["_column"]), int(row["_bin"]))] = int(row["count"])
    out: dict[str, dict[str, list[int]]] = {}
    for rid, (_key, edges) in requests.items():
        out[rid] = {c: [found.get((rid, i, b), 0) for b in range(len(edges[c]) + 1)]
                    for i, c in enumerate(columns) if c in edges}
    return out


def _bin_index(value, edges, bins: int):
    """Bin ``#{edges <= x}`` of ``value`` for an array column of sorted inner edges (null: no bin)."""
    import pyspark.sql.functions as F

    expr = F.when(value.isNull() | edges.isNull(), F.lit(None).cast("int"))
    for k in range(bins - 1):
        expr = expr.when(value < F.try_element_at(edges, F.lit(k + 1)), F.lit(k))
    return expr.otherwise(F.size(edges))


def _tagged(df, groups: Mapping[str, str], columns: Sequence[str]):
    """``df``'s rows of the groups, tagged with their key (``_group``), narrowed to ``columns``' values."""
    import pyspark.sql.functions as F

    col = _resolver(df)
    tag = None
    for key, predicate in groups.items():
        tag = (F if tag is None else tag).when(F.expr(predicate), F.lit(key))
    values = {c: f"v{i}" for i, c in enumerate(columns)}
    frame = df.select(tag.alias("_group"), *[col(c).alias(n) for c, n in values.items()])
    frame = frame.where(F.col("_group").isNotNull())
    return frame, {c: F.col(n) for c, n in values.items()}


def _stat_aggs(values, summary_columns: Sequence[str], profile_columns: Sequence[str], bins: int) -> list:
    """The aggregations of a partition's summary (scores) and bin edges (scores and features)."""
    import pyspark.sql.functions as F

    bin_levels = [k / bins for k in range(1, bins)]
    aggs = []
    for i, c in enumerate(summary_columns):
        v = values[c]
        aggs += [
            F.count(v).alias(f"s{i}_count"), F.mean(v).alias(f"s{i}_mean"), F.stddev_samp(v).alias(f"s{i}_std"),
            F.min(v).alias(f"s{i}_min"), F.max(v).alias(f"s{i}_max"),
            F.percentile_approx(v, list(PLOT_QUANTILES), _ACCURACY).alias(f"s{i}_q"),
        ]
    for i, c in enumerate(profile_columns):
        aggs.append(F.percentile_approx(values[c], bin_levels, _ACCURACY).alias(f"e{i}"))
    return aggs


def _stat_values(row, summary_columns: Sequence[str], profile_columns: Sequence[str]) -> dict[str, Any]:
    """``{summary, quantiles, edges}`` from one row of :func:`_stat_aggs`."""
    summary, quantiles = {}, {}
    for i, c in enumerate(summary_columns):
        q = row[f"s{i}_q"]
        quantiles[c] = None if q is None else [float(x) for x in q]
        entry = {"count": int(row[f"s{i}_count"])}
        for key in ("mean", "std", "min", "max"):
            entry[key] = _num(row[f"s{i}_{key}"])
        for name, level in SUMMARY_QUANTILES:
            entry[name] = None if q is None else float(q[PLOT_QUANTILES.index(level)])
        summary[c] = entry
    edges = {}
    for i, c in enumerate(profile_columns):
        e = row[f"e{i}"]
        if e is not None:
            edges[c] = sorted(set(float(x) for x in e))
    return {"summary": summary, "quantiles": quantiles, "edges": edges}


def _prepare(df, columns: Sequence[str], edges: Mapping[str, Sequence[float]]):
    """``df`` narrowed to the values (double, NaN as null) and bin indexes the aggregation needs.

    Returns ``(frame, {column: value Column}, {column: bin index Column})``. The bin
    index is computed once per row in this projection (Spark keeps a projection
    whose non-trivial columns are used many times), not once per bin count.
    """
    import pyspark.sql.functions as F

    col = _resolver(df)
    values = {c: f"v{i}" for i, c in enumerate(columns)}
    index = {c: f"b{i}" for i, c in enumerate(edges)}
    projected = [col(c).alias(name) for c, name in values.items()]
    for c, name in index.items():
        value = col(c)
        expr = F.when(value.isNull(), F.lit(None).cast("int"))
        for k, e in enumerate(edges[c]):  # bin k: edges[k-1] <= x < edges[k], as searchsorted(side="right")
            expr = expr.when(value < F.lit(float(e)), F.lit(k))
        projected.append(expr.otherwise(F.lit(len(edges[c]))).alias(name))
    frame = df.select(*projected)
    return frame, {c: F.col(n) for c, n in values.items()}, {c: F.col(n) for c, n in index.items()}


def compare_scores(df, first: str, second: str, *, threshold: float = 0.5, bins: int = 10) -> dict[str, Any]:
    """Compare two score columns of the same rows (champion vs challenger) in two Spark jobs.

    Returns ``rows``, per column ``mean``/``std``/``quantiles`` (PLOT_QUANTILES),
    ``correlation``, ``mean_abs_diff``, ``max_abs_diff``, ``agreement`` (the
    fraction of rows on the same side of ``threshold``) and ``psi`` of
    ``second`` against ``first``.
    """
    import pyspark.sql.functions as F

    frame, values, _ = _prepare(df, [first, second], {})
    a, b = values[first], values[second]
    frame = frame.where(a.isNotNull() & b.isNotNull())  # the rows both models scored
    row = frame.agg(
        F.count(F.lit(1)).alias("n"),
        F.mean(a).alias("mean_a"), F.mean(b).alias("mean_b"),
        F.stddev_samp(a).alias("std_a"), F.stddev_samp(b).alias("std_b"),
        F.corr(a, b).alias("corr"),
        F.mean(F.abs(a - b)).alias("mad"), F.max(F.abs(a - b)).alias("maxad"),
        F.mean(F.when((a >= threshold) == (b >= threshold), 1.0).otherwise(0.0)).alias("agree"),
        F.percentile_approx(a, list(PLOT_QUANTILES), _ACCURACY).alias("qa"),
        F.percentile_approx(b, list(PLOT_QUANTILES), _ACCURACY).alias("qb"),
        F.percentile_approx(a, [k / bins for k in range(1, bins)], _ACCURACY).alias("ea"),
    ).head()
    if not row["n"]:
        raise ValueError(f"no rows with both {first!r} and {second!r} to compare")
    edges = sorted(set(float(x) for x in row["ea"]))
    counts = histograms(df, {first: edges, second: edges})  # each column's non-null values
    return {
        "rows": int(row["n"]),
        "columns": (first, second),
        first: {"mean": _num(row["mean_a"]), "std": _num(row["std_a"]), "quantiles": [float(x) for x in row["qa"]]},
        second: {"mean": _num(row["mean_b"]), "std": _num(row["std_b"]), "quantiles": [float(x) for x in row["qb"]]},
        "correlation": _num(row["corr"]),
        "mean_abs_diff": _num(row["mad"]),
        "max_abs_diff": _num(row["maxad"]),
        "threshold": threshold,
        "agreement": _num(row["agree"]),
        "psi": psi_from_counts(counts[first], counts[second]),
    }


def _resolver(df):
    """``name -> Column``: a column by its exact name, else ``struct.field`` for a struct's
    field; as double, NaN turned into null."""
    import pyspark.sql.functions as F
    from pyspark.sql.types import StructType

    from ..delta.sql import quote_identifier

    types = {f.name: f.dataType for f in df.schema.fields}

    def col(name: str):
        if name in types:
            c = F.col(quote_identifier(name))
        else:
            top, _, field = name.partition(".")
            if not (isinstance(types.get(top), StructType) and field in types[top].fieldNames()):
                raise ValueError(f"no column {name!r} (columns: {sorted(types)})")
            c = F.col(quote_identifier(top)).getField(field)
        return F.nanvl(c.cast("double"), F.lit(None).cast("double"))

    return col


def _num(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
