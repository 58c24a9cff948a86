"""Population Stability Index (PSI) and the Spark aggregations that feed it.

Runs on: the driver. :func:`psi` and :func:`psi_from_counts` are plain numpy;
each Spark helper is one Spark job whose per-row work runs in the Python
workers (:mod:`spark_scoring.executor.profiles`: summaries merged per group,
exact bin counts), so a partition's summary and histograms never collect rows
to the driver. Quantiles are values of the data with a rank error of at most
1/1000 of the rows (exact for tasks of up to 1,001 values); counts, means,
standard deviations, minima and maxima are exact.

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

from ..executor.profiles import bin_index, finite

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
    "sketch_stats",
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
    """Rows per bin: value ``x`` goes to bin ``#{edges <= x}`` (``len(edges) + 1`` bins; the rule of
    :func:`spark_scoring.executor.profiles.bin_index`, which the Spark helpers' tasks use)."""
    return np.bincount(bin_index(_finite(values), edges), minlength=len(edges) + 1)


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
    return finite([np.nan if v is None else v for v in values])


# --------------------------------------------------------------------- Spark
# Each helper is one Spark job whose work runs in the Python workers
# (:mod:`spark_scoring.executor.profiles`): the rows are never collected, only
# per-group summaries and bin counts come back.
_ALL = "all"  # the group key of helpers over a whole DataFrame


def column_quantiles(df, columns: Sequence[str], levels: Sequence[float]) -> dict[str, list[float] | None]:
    """``{column: [quantile at each level]}`` in one Spark job (``None``: no values)."""
    if not columns:
        return {}
    frame, names = _tagged(df, {_ALL: "true"}, columns)
    merged = _summaries(frame, list(names.values()), levels)
    return {c: (None if (_ALL, n) not in merged else merged[(_ALL, n)]["q"]) for c, n in names.items()}


def histograms(df, edges: Mapping[str, Sequence[float]]) -> dict[str, list[int]]:
    """``{column: rows per bin}`` for the given inner edges, in one Spark job."""
    if not edges:
        return {}
    return group_counts(df, {_ALL: "true"}, {_ALL: (_ALL, edges)})[_ALL]


def partition_stats(
    df,
    summary_columns: Sequence[str],
    profile_columns: Sequence[str],
    bins: int,
    reference_edges: Mapping[str, Sequence[float]] | None = None,
) -> dict[str, Any]:
    """One partition's rows (all of ``df``):

    - ``summary``: ``{column: {count, mean, std, min, max, p01, p25, p50, p75, p99}}``
      for each of ``summary_columns`` (the scores);
    - ``quantiles``: ``{column: [the PLOT_QUANTILES]}`` for the summary columns (plots);
    - ``edges``: ``{column: inner bin edges}`` of every ``profile_columns`` entry
      (scores and features), so this partition can be a later partition's reference;
    - ``counts``: ``{column: rows per bin}`` against ``reference_edges`` (for PSI; a second job).
    """
    stats = group_stats(df, {_ALL: "true"}, summary_columns, profile_columns, bins)[_ALL]
    stats["counts"] = histograms(df, reference_edges) if reference_edges else {}
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
    if not groups or not wanted:
        return {key: _stats_of({}, summary_columns, profile_columns, bins) for key in groups}
    frame, names = _tagged(df, groups, wanted)
    merged = _summaries(frame, list(names.values()), _levels(bins))
    return {key: _stats_of({c: merged[(key, names[c])] for c in wanted if (key, names[c]) in merged},
                           summary_columns, profile_columns, bins) for key in groups}


def sketch_stats(sketches: Mapping[str, Any], summary_columns: Sequence[str], profile_columns: Sequence[str],
                 bins: int) -> dict[str, Any]:
    """What :func:`group_stats` gives for one partition, from its column sketches
    (:class:`~spark_scoring.executor.profiles.ColumnSketch`, made in the scoring pass): no Spark job."""
    levels = _levels(bins)
    found = {}
    for c in dict.fromkeys([*summary_columns, *profile_columns]):
        sk = sketches.get(c)
        if sk is not None and sk.n:
            base = sk.summary()
            found[c] = {"n": base["count"], "mean": base["mean"], "std": base["std"], "lo": base["min"],
                        "hi": base["max"], "q": sk.quantiles(levels)}
    return _stats_of(found, summary_columns, profile_columns, bins)


def _levels(bins: int) -> list[float]:
    """The quantile levels a partition's statistics need: the plots' and the bin edges'."""
    return sorted(set(PLOT_QUANTILES) | {k / bins for k in range(1, bins)})


def _stats_of(found: Mapping[str, Mapping[str, Any]], summary_columns, profile_columns, bins: int) -> dict:
    """``{summary, quantiles, edges}`` of one partition from its merged columns
    (``{column: {n, mean, std, lo, hi, q (at _levels(bins))}}``; a column without values is absent)."""
    if not found:
        return {"summary": {}, "quantiles": {}, "edges": {}}
    levels = _levels(bins)
    plot_at = [levels.index(x) for x in PLOT_QUANTILES]
    edge_at = [levels.index(k / bins) for k in range(1, bins)]
    summary, quantiles, edges = {}, {}, {}
    for c in summary_columns:
        m = found.get(c)
        if m is None:  # no value of this score in the partition
            quantiles[c] = None
            summary[c] = {"count": 0, **dict.fromkeys(["mean", "std", "min", "max",
                                                        *(name for name, _ in SUMMARY_QUANTILES)])}
            continue
        q = quantiles[c] = [m["q"][i] for i in plot_at]
        summary[c] = {"count": int(m["n"]), "mean": _num(m["mean"]), "std": _num(m["std"]),
                      "min": _num(m["lo"]), "max": _num(m["hi"]),
                      **{name: float(q[PLOT_QUANTILES.index(level)]) for name, level in SUMMARY_QUANTILES}}
    for c in profile_columns:
        if c in found:
            edges[c] = sorted(set(float(found[c]["q"][i]) for i in edge_at))
    return {"summary": summary, "quantiles": quantiles, "edges": edges}


def group_counts(
    df,
    groups: Mapping[str, str],
    requests: Mapping[str, tuple[str, Mapping[str, Sequence[float]]]],
    bins: int | None = None,
) -> dict[str, dict[str, list[int]]]:
    """Exact histograms of several partitions against several edge sets, in one Spark job.

    ``groups``: ``{key: SQL predicate}`` as for :func:`group_stats`; ``requests``:
    ``{request id: (group key, {column: inner edges})}``; ``bins``, when given, is
    the most bins an edge set may make. Returns ``{request id: {column: rows per
    bin}}``. Each task bins its rows with numpy (:func:`~spark_scoring.executor.profiles.task_bin_counts`,
    the rule of :func:`bin_counts`); Spark sums the tasks' counts.
    """
    import functools

    import pyspark.sql.functions as F

    from ..executor.profiles import COUNTS_SCHEMA, task_bin_counts

    columns = list(dict.fromkeys(c for _key, edges in requests.values() for c in edges))
    if bins is not None:
        too_many = [(rid, c) for rid, (_k, edges) in requests.items() for c, e in edges.items() if len(e) >= bins]
        if too_many:
            raise ValueError(f"edge sets with more than {bins - 1} inner edges: {too_many[:3]}")
    if not requests or not columns:
        return {rid: {} for rid in requests}
    frame, names = _tagged(df, groups, columns)
    plain = {rid: (key, {names[c]: [float(x) for x in e] for c, e in edges.items()})
             for rid, (key, edges) in requests.items()}
    task = functools.partial(task_bin_counts, requests=plain)
    long = frame.mapInArrow(task, _ddl(COUNTS_SCHEMA))
    found = {(r["r"], r["c"], int(r["b"])): int(r["n"])
             for r in long.groupBy("r", "c", "b").agg(F.sum("n").alias("n")).collect()}
    return {rid: {c: [found.get((rid, names[c], b), 0) for b in range(len(e) + 1)] for c, e in edges.items()}
            for rid, (_key, edges) in requests.items()}


def _summaries(frame, columns: Sequence[str], levels: Sequence[float]) -> dict[tuple[str, str], dict]:
    """``{(group key, column): {n, mean, std, lo, hi, q}}``: the tasks' summaries merged per group and
    column in the workers (:mod:`spark_scoring.executor.profiles`), one Spark job."""
    import functools

    from ..executor.profiles import MERGED_SCHEMA, SUMMARY_SCHEMA, merge_at, task_summaries

    parts = frame.mapInArrow(functools.partial(task_summaries, columns=list(columns)), _ddl(SUMMARY_SCHEMA))
    merged = parts.groupBy("g", "c").applyInArrow(merge_at(levels), _ddl(MERGED_SCHEMA))
    return {(r["g"], r["c"]): r.asDict() for r in merged.collect()}


def _ddl(schema) -> str:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema).simpleString()[len("struct<"):-1].replace(":", " ")


def _tagged(df, groups: Mapping[str, str], columns: Sequence[str]):
    """``df``'s rows of the groups, tagged with their key (``_group``), narrowed to ``columns``'
    values as doubles (NaN as null) named ``v0, v1, ...``; returns ``(frame, {column: name})``."""
    import pyspark.sql.functions as F

    col = _resolver(df)
    tag = None
    for key, predicate in groups.items():
        tag = (F if tag is None else tag).when(F.expr(predicate), F.lit(key))
    names = {c: f"v{i}" for i, c in enumerate(columns)}
    frame = df.select(tag.alias("_group"), *[col(c).alias(n) for c, n in names.items()])
    return frame.where(F.col("_group").isNotNull()), names


def compare_scores(df, first: str, second: str, *, threshold: float = 0.5, bins: int = 10) -> dict[str, Any]:
    """Compare two score columns of the same rows (champion vs challenger) in three Spark jobs.

    Returns ``rows``, per column ``mean``/``std``/``quantiles`` (PLOT_QUANTILES),
    ``correlation``, ``mean_abs_diff``, ``max_abs_diff``, ``agreement`` (the
    fraction of rows on the same side of ``threshold``) and ``psi`` of
    ``second`` against ``first``.
    """
    import pyspark.sql.functions as F

    col = _resolver(df)
    a, b = col(first), col(second)
    both = df.where(a.isNotNull() & b.isNotNull())  # the rows both models scored
    row = both.agg(
        F.count(F.lit(1)).alias("n"),
        F.mean(a).alias("mean_a"), F.mean(b).alias("mean_b"),
        F.stddev_samp(a).alias("std_a"), F.stddev_samp(b).alias("std_b"),
        F.corr(a, b).alias("corr"),
        F.mean(F.abs(a - b)).alias("mad"), F.max(F.abs(a - b)).alias("maxad"),
        F.mean(F.when((a >= threshold) == (b >= threshold), 1.0).otherwise(0.0)).alias("agree"),
    ).head()
    if not row["n"]:
        raise ValueError(f"no rows with both {first!r} and {second!r} to compare")
    bin_levels = [k / bins for k in range(1, bins)]
    found = column_quantiles(both, [first, second], list(PLOT_QUANTILES) + bin_levels)
    qa, qb = found[first][:len(PLOT_QUANTILES)], found[second][:len(PLOT_QUANTILES)]
    edges = sorted(set(found[first][len(PLOT_QUANTILES):]))
    counts = histograms(df, {first: edges, second: edges})  # each column's non-null values
    return {
        "rows": int(row["n"]),
        "columns": (first, second),
        first: {"mean": _num(row["mean_a"]), "std": _num(row["std_a"]), "quantiles": qa},
        second: {"mean": _num(row["mean_b"]), "std": _num(row["std_b"]), "quantiles": qb},
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
