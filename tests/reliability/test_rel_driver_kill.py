"""The driver killed with SIGKILL at random moments of a 12-partition job, then rerun.

Each run is ``spark-scoring run`` in a child process (``drivers/job_driver.py``,
``local[2]``) in its own process group; a kill takes the whole group (driver
Python, its JVM, the Python workers), like a lost driver node.

- Kill 1 lands between a partition's Delta commit and its audit row (the
  ``after_commit`` test hook of ``spark_scoring.job``).
- Kills 2..N land at random moments: during start-up or after a random number
  of finished partitions plus a random delay.
- After every kill the tables are checked: no duplicate key, every partition
  present is complete (17 scored rows and 3 quarantined rows), nothing half-written.
- A last rerun finishes; the output and quarantine tables then equal an
  uninterrupted run row for row (``scored_at`` / ``scoring_run_id`` aside).

``RELIABILITY_KILLS`` (default 2: the commit/audit gap and one random moment) sets N;
``RELIABILITY_SEED`` fixes the moments.
"""
from __future__ import annotations

import random
import re
import time

import pytest
import yaml

import reliability_helpers as H

KILLS = H.env_int("RELIABILITY_KILLS", 2)
SCRIPT = H.DRIVERS / "job_driver.py"
PLAN = re.compile(r"plan:\s+(\d+) partition\(s\)")
PROGRESS = re.compile(r"^\[(\d+)/(\d+)\] partition (\S+): (\w+)", re.M)


def _check_consistent(spark, out: str) -> dict:
    """Every partition present is whole in both tables, and no key appears twice."""
    from spark_scoring.delta.tables import TableRef

    state = {"output_partitions": 0, "quarantine_partitions": 0, "duplicates": 0}
    for path, key, per_part in ((out, "output_partitions", H.ROWS - H.BAD_PER_PARTITION),
                                (out + "_quarantine", "quarantine_partitions", H.BAD_PER_PARTITION)):
        if not TableRef.parse(path).exists(spark):
            continue
        counts = H.partition_counts(spark, path, "ds")
        assert set(counts.values()) <= {per_part}, f"partial partition in {path}: {counts}"
        state[key] = len(counts)
        state["duplicates"] += H.duplicate_keys(spark, path, ["customer_id"])
    assert state["duplicates"] == 0, state
    return state


def _progress(text: str) -> int:
    return len(PROGRESS.findall(text))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_driver_killed_at_random_moments_then_rerun_equals_uninterrupted_run(
    spark, registry, rel_input, rel_reference, tmp_path
):
    seed = H.env_int("RELIABILITY_SEED", random.SystemRandom().randrange(1 << 30))
    rng = random.Random(seed)
    out = str(tmp_path / "scores")
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump(H.job_config(rel_input, out)))
    env = H.child_env(registry, SPARK_SCORING_MASTER="local[2]")
    cmd = [H.PYTHON, SCRIPT, "--config", config]
    kills, runs, after_kill = [], 0, []

    # Kill 1: after a data commit, before the audit row.
    target = rng.choice(H.PARTITIONS[1:4])  # early: leaves partitions for the random kills
    runs += 1
    code, log = H.run(cmd, env={**env, "REL_KILL_AFTER_COMMIT": target}, log=tmp_path / "run1.log",
                      timeout=1200)
    assert code == -9 and f"REL_HOOK kill -9 after the commit of {target}" in log, log[-4000:]
    kills.append({"run": runs, "moment": f"after the commit of {target}, before its audit row"})
    after_kill.append(_check_consistent(spark, out))
    assert target in H.partition_counts(spark, out, "ds")  # committed, audit row missing

    # Kills 2..N: random moments.
    while len(kills) < KILLS:
        runs += 1
        proc = H.start(cmd, env=env, log=tmp_path / f"run{runs}.log")
        try:
            if rng.random() < 0.2:
                moment, delay = "start-up", rng.uniform(1.0, 8.0)
                time.sleep(delay)
                moment += f" (+{delay:.1f} s)"
            else:
                H.wait_for(lambda: PLAN.search(H.read_log(proc)) or proc.poll() is not None,
                           timeout=600, what="job plan")
                todo = int(m.group(1)) if (m := PLAN.search(H.read_log(proc))) else 0
                left = KILLS - len(kills)
                n = rng.randint(0, max(0, todo - 1) // max(1, left))
                H.wait_for(lambda: _progress(H.read_log(proc)) >= n or proc.poll() is not None,
                           timeout=900, what=f"{n} partitions done")
                delay = rng.uniform(0.0, 2.0)
                time.sleep(delay)
                moment = f"{_progress(H.read_log(proc))} of {todo} partitions done (+{delay:.1f} s)"
            finished = proc.poll() is not None
        finally:
            H.stop(proc)
        if finished:
            assert proc.returncode == 0, H.read_log(proc)[-4000:]
            pytest.fail(f"run {runs} finished before its kill; raise the partition count or lower "
                        f"RELIABILITY_KILLS (seed {seed})")
        kills.append({"run": runs, "moment": moment})
        after_kill.append(_check_consistent(spark, out))

    # The last rerun finishes the job.
    runs += 1
    code, log = H.run(cmd, env=env, log=tmp_path / f"run{runs}.log", timeout=1200)
    assert code == 0, log[-6000:]
    final = _check_consistent(spark, out)
    assert final["output_partitions"] == final["quarantine_partitions"] == len(H.PARTITIONS)

    got_rows, got_quarantine = H.rows(spark, out), H.rows(spark, out + "_quarantine")
    assert got_rows == rel_reference["rows"]
    assert got_quarantine == rel_reference["quarantine"]

    # The audit table accounts for every partition once as done (scored or recovered).
    audit = spark.read.format("delta").load(out + "_scoring_runs")
    done = [r["partition"] for r in audit.where("status in ('scored', 'recovered')").collect()]
    assert sorted(done) == sorted(H.PARTITIONS), done
    recovered = [r["partition"] for r in audit.where("status = 'recovered'").collect()]
    assert target in recovered

    H.report("driver_kill", {
        "seed": seed, "runs": runs, "runs_killed": len(kills), "reruns": runs - 1, "kills": kills,
        "state_after_each_kill": after_kill, "rows_compared": len(got_rows) + len(got_quarantine),
        "duplicates_found": final["duplicates"], "partitions_missing": len(H.PARTITIONS) - final["output_partitions"],
        "recovered_partitions": recovered,
    })
