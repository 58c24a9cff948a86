"""PSI: the formula against hand-computed values, and the Spark aggregations against numpy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from spark_scoring.ops.drift import (
    EPSILON,
    PLOT_QUANTILES,
    bin_counts,
    column_quantiles,
    compare_scores,
    group_counts,
    group_stats,
    histograms,
    partition_stats,
    psi,
    psi_from_counts,
    quantile_edges,
)


# ------------------------------------------------------------------ numpy PSI
def test_psi_matches_a_hand_computed_value():
    # expected 0..99, 4 quantile bins: edges 24.75, 49.5, 74.25, so 25% per bin.
    # actual: 40% / 30% / 20% / 10% of its rows in those bins.
    # PSI = .15 ln(.40/.25) + .05 ln(.30/.25) - .05 ln(.20/.25) - .15 ln(.10/.25)
    #     = .15(.470004) + .05(.182322) - .05(-.223144) - .15(-.916291)
    #     = .0705006 + .0091161 + .0111572 + .1374436 = .2282175
    expected = list(range(100))
    actual = [10] * 40 + [30] * 30 + [60] * 20 + [90] * 10
    assert list(quantile_edges(expected, 4)) == [24.75, 49.5, 74.25]
    assert psi(expected, actual, bins=4) == pytest.approx(0.2282175, abs=1e-6)


def test_psi_floors_empty_bins_at_epsilon():
    # expected [1, 2, 3, 4], 2 bins: edge 2.5, 50% / 50%; actual all in bin 2, so bin 1 is empty
    # and its fraction is floored at 1e-4:
    # PSI = (1e-4 - .5) ln(1e-4 / .5) + (1 - .5) ln(1 / .5) = 4.257744 + .346574 = 4.604318
    assert EPSILON == 1e-4
    assert psi([1, 2, 3, 4], [10, 10, 10, 10], bins=2) == pytest.approx(4.604318, abs=1e-6)
    assert math.isfinite(psi([1, 2, 3, 4], [-5] * 3, bins=2))


def test_psi_of_a_sample_with_itself_is_zero_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=5000)
    assert psi(base, base) == 0.0
    small, large = psi(base, base + 0.1), psi(base, base + 1.0)
    assert 0 < small < 0.1 < 0.25 < large


def test_bins_follow_searchsorted_right_and_ties_merge_edges():
    assert list(bin_counts([0, 1, 1.5, 2, 9], [1, 2])) == [1, 2, 2]  # x == edge goes to the upper bin
    assert list(quantile_edges([1, 1, 1, 1, 2], 4)) == [1.0]  # repeated quantiles: one edge
    assert list(bin_counts([float("nan"), None, 3], [1])) == [0, 1]  # NaN and None are ignored


def test_psi_rejects_what_it_cannot_compare():
    with pytest.raises(ValueError, match="no finite values"):
        psi([float("nan")], [1.0])
    with pytest.raises(ValueError, match=r"equal length, got \(2,\) and \(3,\)"):
        psi_from_counts([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one row"):
        psi_from_counts([0, 0], [1, 2])


# ------------------------------------------------- the workers' summaries (no JVM)
def _task(groups, columns, *chunks, k=None):
    """One task's summaries of ``chunks`` ({column: values}, one record batch each)."""
    import pyarrow as pa

    from spark_scoring.executor.profiles import SUMMARY_POINTS, task_summaries

    batches = [pa.record_batch({"_group": groups(len(next(iter(c.values())))), **c}) for c in chunks]
    return next(task_summaries(iter(batches), columns, k=k or SUMMARY_POINTS))


def _merged(parts, column, levels):
    import pyarrow as pa
    import pyarrow.compute as pc

    from spark_scoring.executor.profiles import merge_summaries

    table = pa.Table.from_batches(parts)
    return merge_summaries(table.filter(pc.equal(table["c"], column)), levels).to_pylist()[0]


def test_merged_task_summaries_have_exact_moments_and_quantiles_within_one_kth_in_rank():
    rng = np.random.default_rng(5)
    data = {"x": rng.normal(size=25_000), "t": rng.integers(0, 4, size=25_000).astype(float)}  # t: heavy ties
    data["x"][:7] = np.nan  # no value: not counted
    k, levels = 100, [0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0]
    cuts = ((0, 3_000), (3_000, 15_000), (15_000, 25_000))  # three tasks of unequal size, two batches each
    parts = [_task(lambda n: ["g"] * n, ["x", "t"], {c: v[a:(a + b) // 2] for c, v in data.items()},
                   {c: v[(a + b) // 2:b] for c, v in data.items()}, k=k) for a, b in cuts]
    for name in ("x", "t"):
        values = data[name][~np.isnan(data[name])]
        merged = _merged(parts, name, levels)
        assert merged["n"] == values.size
        assert merged["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert merged["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert (merged["lo"], merged["hi"]) == (values.min(), values.max())
        ordered = np.sort(values)
        for level, q in zip(levels, merged["q"]):
            assert q in set(values.tolist())  # a value of the data, as percentile_approx gives
            below = np.searchsorted(ordered, q, side="left") / values.size
            upto = np.searchsorted(ordered, q, side="right") / values.size
            assert below - 1 / k <= level <= upto + 1 / k, (name, level, q, below, upto)


def test_merged_summaries_are_exact_when_each_task_sends_all_its_values():
    rng = np.random.default_rng(6)
    values = rng.exponential(size=900)
    parts = [_task(lambda n: ["a"] * n, ["v"], {"v": values[:400]}), _task(lambda n: ["a"] * n, ["v"], {"v": values[400:]})]
    assert _merged(parts, "v", PLOT_QUANTILES)["q"] == list(np.quantile(values, PLOT_QUANTILES, method="inverted_cdf"))


# ------------------------------------------- the scoring pass's sketches (no JVM)
def _sketch(values, tasks=3, batches=4, k=None):
    """``values`` split into ``tasks`` tasks of ``batches`` record batches each, sketched, merged."""
    from spark_scoring.executor.profiles import SUMMARY_POINTS, ColumnSketch

    k = k or SUMMARY_POINTS
    sketches = []
    for part in np.array_split(np.asarray(values, dtype=float), tasks):
        s = ColumnSketch(k)
        for chunk in np.array_split(part, batches):
            s.add(chunk)
        sketches.append(ColumnSketch.from_state(s.state()))  # shipped as the task ships it
    return ColumnSketch.merge(sketches, k)


@pytest.mark.parametrize("values", [
    np.random.default_rng(1).normal(size=900),                               # every value kept
    np.random.default_rng(2).integers(0, 6, size=200_000).astype(float),    # few distinct values, many rows
], ids=["small", "discrete"])
def test_sketch_is_exact_when_it_keeps_every_distinct_value(values):
    sk = _sketch(values)
    assert sk.n == values.size
    assert sk.summary()["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert sk.summary()["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    assert (sk.summary()["min"], sk.summary()["max"]) == (values.min(), values.max())
    assert sk.quantiles(PLOT_QUANTILES) == list(np.quantile(values, PLOT_QUANTILES, method="inverted_cdf"))
    for edges in (quantile_edges(values, 10), [-1.0, 0.5, 2.0, 2.0 + 1e-9, 99.0]):
        assert sk.bin_counts(edges) == list(bin_counts(values, edges))


def test_sketch_of_many_values_is_within_one_kth_in_rank_and_counts(monkeypatch):
    from spark_scoring.executor import profiles

    monkeypatch.setattr(profiles, "COMPACT_AT", 5_000)  # compactions inside each task too
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.exponential(size=150_000), [np.nan] * 10, rng.normal(5, 1, size=50_000)])
    k = 200
    sk = _sketch(values, tasks=4, batches=9, k=k)
    data = values[~np.isnan(values)]
    ordered, n = np.sort(data), data.size
    assert sk.n == n and sk.summary()["mean"] == pytest.approx(data.mean(), rel=1e-12)
    assert sk.v.size <= 2 * (k + 1)
    for level, q in zip(PLOT_QUANTILES, sk.quantiles(PLOT_QUANTILES)):
        assert q in set(data.tolist())
        below = np.searchsorted(ordered, q, side="left") / n
        upto = np.searchsorted(ordered, q, side="right") / n
        assert below - 1 / k <= level <= upto + 1 / k, (level, q, below, upto)
    edges = quantile_edges(data, 10)
    got, want = np.array(sk.bin_counts(edges)), bin_counts(data, edges)
    assert got.sum() == n and np.max(np.abs(got - want)) <= 2 * n / k
    assert abs(psi_from_counts(want, got)) < 1e-3  # the PSI of the data with itself, through the sketch
    shifted = rng.exponential(1.3, size=100_000)
    exact = psi_from_counts(bin_counts(data, edges), bin_counts(shifted, edges))
    assert psi_from_counts(sk.bin_counts(edges), _sketch(shifted, k=k).bin_counts(edges)) == pytest.approx(exact, abs=0.01)


def test_task_profiler_sketches_per_group_and_struct_field_and_a_retried_task_counts_once():
    import pyarrow as pa

    from spark_scoring.executor.profiles import KeyedStates, TaskProfiler, merge_task_states, task_rows

    def batch(ds, x):
        return pa.record_batch({"ds": pa.array(ds), "x": pa.array(x, pa.float64()),
                                "s": pa.StructArray.from_arrays([pa.array(x, pa.float64())], ["score"])})

    one, two = TaskProfiler("ds", ["x", "s.score", "missing"]), TaskProfiler("ds", ["x", "s.score"])
    one.add(batch(["a"] * 3, [1.0, 2.0, None]))
    one.add(batch(["a", "b", "b"], [3.0, 10.0, float("nan")]))
    two.add(batch(["b"], [20.0]))
    param = KeyedStates()
    acc = param.zero(None)
    for update in ({0: one.states()}, {1: two.states()}, {0: one.states()}):  # task 0 twice: a retry
        acc = param.addInPlace(acc, update)
    assert task_rows(acc) == {"a": 4, "b": 3}  # rows handed on, null features included
    merged = merge_task_states(acc)
    assert merged[("a", "x")].quantiles([0, 0.5, 1]) == [1.0, 2.0, 3.0]
    assert merged[("b", "s.score")].n == 2 and merged[("b", "s.score")].summary()["mean"] == 15.0
    assert ("a", "missing") not in merged


def test_task_bin_counts_equal_numpy_per_group_and_request():
    import pyarrow as pa

    from spark_scoring.executor.profiles import task_bin_counts

    rng = np.random.default_rng(7)
    x, groups = rng.normal(size=2_000), np.where(rng.random(2_000) < 0.5, "p1", "p2")
    x[::50] = np.nan
    edges = [-1.0, 0.0, 0.0, 2.0]  # repeated edge: an empty bin, as numpy's rule gives
    batches = [pa.record_batch({"_group": groups[i:i + 700].tolist(), "v": x[i:i + 700]}) for i in range(0, 2_000, 700)]
    rows = next(task_bin_counts(iter(batches), {"r1": ("p1", {"v": edges}), "r2": ("p2", {"v": edges[:1]})})).to_pylist()
    for rid, group, e in (("r1", "p1", edges), ("r2", "p2", edges[:1])):
        got = [0] * (len(e) + 1)
        for r in rows:
            if r["r"] == rid:
                got[r["b"]] += r["n"]
        assert got == list(bin_counts(x[groups == group], e)), rid


# ------------------------------------------------------------ Spark helpers
@pytest.fixture(scope="module")
def frame(spark):
    rng = np.random.default_rng(3)
    a = rng.normal(size=400)
    b = a * 0.8 + rng.normal(scale=0.3, size=400)
    rows = [(float(x), float(y), (float(x),)) for x, y in zip(a, b)]
    rows.append((float("nan"), None, (None,)))
    df = spark.createDataFrame(rows, "a double, b double, s struct<score: double>")
    return df, a, b


def test_histograms_match_numpy_in_one_job(frame):
    df, a, b = frame
    edges = {"a": list(quantile_edges(a, 10)), "b": [-1.0, 0.0, 1.0]}
    counts = histograms(df, edges)
    assert counts["a"] == list(bin_counts(a, edges["a"]))
    assert counts["b"] == list(bin_counts(b, edges["b"]))
    assert psi_from_counts(counts["a"], histograms(df, {"b": edges["a"]})["b"]) == pytest.approx(
        psi(a, b, bins=10), abs=0.02)  # Spark edges come from the same numpy edges here


def test_partition_stats_summarises_scores_and_profiles_columns(frame):
    df, a, b = frame
    ref_edges = {"a": list(quantile_edges(a, 4))}
    stats = partition_stats(df, ["a", "s.score"], ["a", "b"], bins=4, reference_edges=ref_edges)
    s = stats["summary"]["a"]
    assert s["count"] == 400  # the NaN row is not counted
    assert s["mean"] == pytest.approx(a.mean())
    assert s["std"] == pytest.approx(a.std(ddof=1))
    assert s["p50"] == pytest.approx(np.quantile(a, 0.5), abs=0.02)
    assert s["p01"] < s["p25"] < s["p50"] < s["p75"] < s["p99"]
    assert stats["summary"]["s.score"]["mean"] == pytest.approx(a.mean())  # a struct field
    assert len(stats["quantiles"]["a"]) == len(PLOT_QUANTILES)
    assert len(stats["edges"]["b"]) == 3  # inner edges of 4 bins, for a later reference
    assert stats["counts"]["a"] == [100, 100, 100, 100]


def test_group_stats_and_counts_equal_one_partition_at_a_time(frame, spark):
    """Three partitions in two jobs give what partition_stats / histograms give each alone, and
    each partition's histogram against any edge set equals numpy's."""
    import pyspark.sql.functions as F

    df, a, b = frame
    parted = df.withColumn("ds", F.when(F.col("a") < -0.5, "d1").when(F.col("a") < 0.5, "d2").otherwise("d3"))
    groups = {t: f"ds = '{t}'" for t in ("d1", "d2", "d3", "d4")}  # d4 has no rows
    got = group_stats(parted, groups, ["a", "s.score"], ["a", "b"], bins=4)
    for t in ("d1", "d2", "d3"):
        alone = partition_stats(parted.where(groups[t]), ["a", "s.score"], ["a", "b"], bins=4)
        for c, summary in alone["summary"].items():  # sums in another order: equal to the last bits
            assert got[t]["summary"][c] == pytest.approx(summary, rel=1e-12), (t, c)
        assert got[t]["edges"] == alone["edges"]
        assert got[t]["quantiles"] == alone["quantiles"]
    assert got["d4"] == {"summary": {}, "quantiles": {}, "edges": {}}

    e1 = got["d1"]["edges"]
    requests = {"own:d1": ("d1", e1), "psi:d2": ("d2", e1), "psi:d3": ("d3", {"b": [-1.0, 0.0, 1.0]}),
                "none": ("d4", e1)}
    counts = group_counts(parted, groups, requests, bins=4)
    pdf = parted.toPandas()
    for rid, (t, edges) in requests.items():
        rows = pdf[pdf.ds == t]
        for c, e in edges.items():
            values = rows[c].to_numpy(dtype=float)
            assert counts[rid][c] == list(bin_counts(values, e)), (rid, c)
            assert counts[rid][c] == histograms(parted.where(groups[t]), {c: e})[c], (rid, c)
    assert set(counts["psi:d3"]) == {"b"} and sum(counts["none"]["a"]) == 0


def test_column_quantiles_and_compare_scores(frame):
    df, a, b = frame
    q = column_quantiles(df, ["a"], [0.0, 0.5, 1.0])["a"]
    assert q[0] == pytest.approx(a.min()) and q[2] == pytest.approx(a.max())
    stats = compare_scores(df, "a", "b", threshold=0.0, bins=10)
    assert stats["rows"] == 400
    assert stats["correlation"] == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert stats["agreement"] == pytest.approx(np.mean((a >= 0) == (b >= 0)))
    assert stats["mean_abs_diff"] == pytest.approx(np.abs(a - b).mean())
    assert stats["psi"] == pytest.approx(psi(a, b, bins=10), abs=0.02)


def test_min_rows_is_validated_and_defaults_to_100():
    from spark_scoring.config import load_config
    from spark_scoring.errors import ConfigError

    base = {"model": "models:/m/1", "input": {"table": "t"}, "output": {"table": "o"}}
    assert load_config(base).drift.min_rows == 100
    with pytest.raises(ConfigError, match=r"drift\.min_rows"):
        load_config({**base, "drift": {"min_rows": -1}})
