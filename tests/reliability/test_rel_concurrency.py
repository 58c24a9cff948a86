"""Concurrent jobs writing one output table (threads sharing the test session).

- Four jobs on disjoint partitions (2 each, one group commit per job), in ``overwrite_partitions`` and in
  ``merge`` mode, started together: the first commits race to create the output,
  quarantine and audit tables, later ones race on the log. Delta's conflicts are
  retried with backoff; all four succeed and the table is exactly the union.
- The same job started twice on the same partition (a double-fired schedule):
  one run commits, the other finds the commit through Delta's idempotent
  transaction id and reports the partition ``recovered`` (or ``skipped`` when it
  planned after the audit row): one copy of the rows, one commit.
- Two different jobs (champion and challenger) on the same partition: Delta
  serializes the two commits; the partition holds exactly one run's rows, whole:
  the run whose commit is later; each run reports its own commit version.
"""
from __future__ import annotations

import threading

import pyspark.sql.functions as F
import pytest

import reliability_helpers as H
from spark_scoring import run_job
from spark_scoring.ops.progress import Reporter


def _together(calls):
    """Run the callables in threads released together; [(result, exception)]."""
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def body(i, call):
        barrier.wait()
        try:
            out[i] = (call(), None)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            out[i] = (None, exc)

    threads = [threading.Thread(target=body, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=1500)
    assert not any(t.is_alive() for t in threads), "a concurrent job did not finish"
    return out


def _ds_index(spark, path):
    cols = sorted(c for c in spark.read.format("delta").load(path).columns if c not in H.RUN_COLUMNS)
    return cols.index("ds")


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.parametrize("mode", ["overwrite_partitions", "merge"])
def test_four_jobs_on_disjoint_partitions_all_commit_and_the_table_is_the_union(
    spark, registry, rel_input, rel_reference, tmp_path, mode
):
    out = str(tmp_path / "scores")
    output = {"mode": mode, "keys": ["customer_id"]} if mode == "merge" else {"mode": mode}
    cfg = H.job_config(rel_input, out, output=output)
    parts = H.PARTITIONS[:8]
    groups = [list(parts[i::4]) for i in range(4)]  # 2 partitions each
    results = _together([
        (lambda g=g: run_job(cfg, partitions=g, spark=spark, reporter=Reporter(quiet=True))) for g in groups
    ])
    errors = [exc for _res, exc in results if exc is not None]
    assert not errors, errors
    for (res, _), group in zip(results, groups):
        assert [p.partition for p in res.partitions] == group
        assert {p.status for p in res.partitions} == {"scored"}
        assert res.rows_in == res.rows_scored + res.rows_quarantined == len(group) * H.ROWS
    got = H.rows(spark, out)
    ds = _ds_index(spark, out)
    assert got == [r for r in rel_reference["rows"] if r[ds] in parts]
    q_ds = _ds_index(spark, out + "_quarantine")
    assert H.rows(spark, out + "_quarantine") == [r for r in rel_reference["quarantine"] if r[q_ds] in parts]
    assert H.duplicate_keys(spark, out, ["customer_id"]) == 0
    audit = spark.read.format("delta").load(out + "_scoring_runs")
    assert audit.where("status = 'scored'").count() == len(parts)
    commits = spark.sql(f"DESCRIBE HISTORY delta.`{out}`").count()
    assert commits == len(groups)  # one commit per job (its 2 partitions together), no retry left a second
    H.report(f"concurrency_disjoint_{mode}", {
        "jobs": 4, "partitions": len(parts), "rows_compared": len(got), "duplicates_found": 0,
        "output_commits": commits, "failed_jobs": 0,
    })


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_same_job_twice_on_one_partition_commits_once(spark, registry, rel_input, rel_reference, tmp_path):
    out = str(tmp_path / "scores")
    cfg = H.job_config(rel_input, out)
    results = _together([
        (lambda: run_job(cfg, partitions=["p03"], spark=spark, reporter=Reporter(quiet=True))) for _ in range(2)
    ])
    assert all(exc is None for _res, exc in results), results
    statuses = sorted(res.partitions[0].status for res, _ in results)
    assert statuses[0] in ("recovered", "skipped") and statuses[1] == "scored", statuses
    winner = next(res for res, _ in results if res.partitions[0].status == "scored")
    part = spark.read.format("delta").load(out)
    assert part.count() == H.ROWS - H.BAD_PER_PARTITION
    assert [r[0] for r in part.select("scoring_run_id").distinct().collect()] == [winner.run_id]
    assert spark.sql(f"DESCRIBE HISTORY delta.`{out}`").count() == 1  # one commit
    ds = _ds_index(spark, out)
    assert H.rows(spark, out) == [r for r in rel_reference["rows"] if r[ds] == "p03"]
    H.report("concurrency_same_job_same_partition", {
        "statuses": statuses, "output_commits": 1, "rows": part.count(), "duplicates_found": 0,
    })


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_champion_and_challenger_on_one_partition_last_commit_wins_whole(spark, registry, rel_input, tmp_path):
    out = str(tmp_path / "scores")
    configs = [H.job_config(rel_input, out, model=f"models:/demo_churn@{alias}") for alias in ("champion", "challenger")]
    results = _together([
        (lambda c=c: run_job(c, partitions=["p04"], spark=spark, reporter=Reporter(quiet=True))) for c in configs
    ])
    assert all(exc is None for _res, exc in results), results
    runs = [res for res, _ in results]
    assert [r.partitions[0].status for r in runs] == ["scored", "scored"]
    versions = [r.partitions[0].output_version for r in runs]
    assert len(set(versions)) == 2
    winner = runs[versions.index(max(versions))]
    part = spark.read.format("delta").load(out)
    mix = part.groupBy("scoring_run_id", "model_version").count().collect()
    assert len(mix) == 1, mix  # never a mix of the two runs
    assert mix[0]["scoring_run_id"] == winner.run_id and mix[0]["count"] == H.ROWS - H.BAD_PER_PARTITION
    assert part.select(F.countDistinct("customer_id")).head()[0] == H.ROWS - H.BAD_PER_PARTITION
    H.report("concurrency_two_models_same_partition", {
        "output_versions": versions, "winner_model_version": mix[0]["model_version"], "rows": mix[0]["count"],
        "mixed_runs_found": len(mix) - 1,
    })
