"""A single partition of 10 million rows streams through ``score()``: nothing is
collected, the driver's memory stays flat (``drivers/big_partition.py``).

``RELIABILITY_BIG_ROWS`` sets the row count (default 10,000,000; see
RELIABILITY.md for the measured time on this 2-core machine).
"""
from __future__ import annotations

import pytest

import reliability_helpers as H

ROWS = H.env_int("RELIABILITY_BIG_ROWS", 10_000_000)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_one_huge_partition_streams_with_flat_driver_memory(registry, tmp_path):
    env = H.child_env(registry, SPARK_SCORING_MASTER="local[2]", REL_BIG_ROWS=ROWS)
    code, log = H.run([H.PYTHON, H.DRIVERS / "big_partition.py"], env=env, log=tmp_path / "driver.log",
                      timeout=2200)
    assert code == 0, log[-8000:]
    got = H.result_line(log)
    assert got["rows"] == ROWS and got["partitions"] == 1 and got["samples"] >= 2
    # 10M rows x 9 doubles is ~720 MB as raw columns: a collect (or a buffered task)
    # would not fit the 1 GiB heap next to Spark's own use, nor leave the Python sides flat.
    assert got["peak_driver_py_rss_mb"] - got["baseline"]["driver_py_rss_mb"] < 100, got
    assert got["peak_heap_used_mb"] < 0.9 * got["heap_max_mb"], got
    assert got["peak_worker_rss_mb"] < 1500, got
    # The Python worker warms up (allocator pools, prefetch queue) in the first part of the run,
    # then must stay flat: between 50 % and 90 % it sees 4M more rows, which buffered would be
    # ~290 MB (9 doubles a row); streaming keeps it within noise.
    _at10, at50, at90 = got["worker_rss_mb_at_10_50_90"]
    assert at90 - at50 < 150, got
    H.report("large_partition", {k: (round(v, 1) if isinstance(v, float) else
                                     [round(x) for x in v] if isinstance(v, list) else v) for k, v in got.items()})
