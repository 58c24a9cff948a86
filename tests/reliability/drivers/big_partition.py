"""One partition of N rows (default 10 million) through ``score()`` to the ``noop`` sink.

Run by tests/reliability/test_rel_large_partition.py in a child process with its
own JVM (``local[2]``, 1 GiB driver heap), so the memory it measures is this
job's only. ``spark.range(N, numPartitions=1)`` makes a single task that must
stream every Arrow batch through the model; nothing is collected. A sampling
thread records, every 0.5 s: the driver JVM's used heap (after which no
collect could hide), the driver Python's RSS and the largest Python worker RSS.
Prints ``RESULT {json}``.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid: int) -> list[int]:
    out = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as fh:
                if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
        except OSError:
            continue
    return out


def main() -> int:
    import pyspark.sql.functions as F

    from spark_scoring import score
    from spark_scoring.demo import FEATURES
    from spark_scoring.session import get_spark

    n = int(os.environ.get("REL_BIG_ROWS", "10000000"))
    spark = get_spark(conf={"spark.driver.memory": "1g"})
    jvm = spark.sparkContext._jvm
    runtime = jvm.java.lang.Runtime.getRuntime()
    jvm_pid = int(jvm.java.lang.ProcessHandle.current().pid())
    samples, stop = [], threading.Event()

    def sample():
        while not stop.is_set():
            workers = [c for c in _children(jvm_pid) for c in [c, *_children(c)]]
            samples.append({
                "t": time.monotonic(),
                "heap_used_mb": (runtime.totalMemory() - runtime.freeMemory()) / 2**20,
                "driver_py_rss_mb": _rss_mb(os.getpid()),
                "worker_rss_mb": max([_rss_mb(w) for w in workers] or [0.0]),
            })
            stop.wait(0.5)

    df = spark.range(0, n, 1, numPartitions=1).select(
        "id", *[((F.col("id") * (k + 3)) % 1009 / 1009.0).alias(f) for k, f in enumerate(FEATURES)]
    )
    scored = score(df, "models:/demo_price@champion", lineage=False)
    # warm-up on a slice: JVM, Python worker, model load (not what is measured)
    scored.limit(1000).write.format("noop").mode("overwrite").save()
    thread = threading.Thread(target=sample, daemon=True)
    baseline = {"heap_used_mb": (runtime.totalMemory() - runtime.freeMemory()) / 2**20,
                "driver_py_rss_mb": _rss_mb(os.getpid())}
    thread.start()
    started = time.monotonic()
    scored.write.format("noop").mode("overwrite").save()
    seconds = time.monotonic() - started
    stop.set()
    thread.join()
    heap_max = runtime.maxMemory() / 2**20
    print("RESULT " + json.dumps({
        "rows": n, "seconds": seconds, "rows_per_second": n / seconds, "baseline": baseline,
        "samples": len(samples), "heap_max_mb": heap_max,
        "peak_heap_used_mb": max(s["heap_used_mb"] for s in samples),
        "peak_driver_py_rss_mb": max(s["driver_py_rss_mb"] for s in samples),
        "peak_worker_rss_mb": max(s["worker_rss_mb"] for s in samples),
        # the worker's RSS at 10%, 50% and 90% of the run: flat when batches stream
        "worker_rss_mb_at_10_50_90": [samples[int(q * (len(samples) - 1))]["worker_rss_mb"] for q in (.1, .5, .9)],
        "heap_used_mb_at_10_50_90": [samples[int(q * (len(samples) - 1))]["heap_used_mb"] for q in (.1, .5, .9)],
        "partitions": df.rdd.getNumPartitions(),
    }), flush=True)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
