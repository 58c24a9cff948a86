#!/usr/bin/env python
"""End-to-end jobs side by side: Delta table in, Delta table out, in ONE process run.

    .venv/bin/python bench/jobs.py --rows 2000000 --files 8
    .venv/bin/python bench/jobs.py --smoke          # tiny; what tests/test_bench_smoke.py runs

Runs on: the driver; Spark is ``local[2]``. Same data and models as bench/run.py
(``bench/_setup.py``). Each run writes a fresh output table; the paths are
interleaved per repeat so they share the machine's noise:

- ``stacks``: the MLOps Stacks batch job's shape, ``mlflow.pyfunc.spark_udf`` then
  one overwrite of the whole output table with ``model_id`` and ``timestamp`` columns.
- ``job[udf]``: ``spark_scoring.run_job`` with ``engine.path: udf``.
- ``job[auto]``: ``run_job`` with the default ``engine.path: auto`` (the direct Arrow
  scan for a clean, path-addressed snapshot).

Both ``run_job`` runs do all of their work: count and bad-row check, scoring,
one idempotent Delta commit with its metadata, the row reconciliation and the
audit row (tracking and drift off). Reported: wall seconds (median), rows/s and
the ratio to ``stacks``, and the ``engine_path`` the commit recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _setup as S  # noqa: E402

PATHS = ("stacks", "job[udf]", "job[auto]")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="mlp,hgb")
    ap.add_argument("--work", default=str(HERE / "out" / "work"), help="data and registry cache")
    ap.add_argument("--out", default=None, help="folder for results.json and results.md")
    ap.add_argument("--smoke", action="store_true", help="20,000 rows, 2 files, 1 repeat")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.files, args.repeats = 20_000, 2, 1
    args.models = [m for m in args.models.split(",") if m]
    return args


def _stacks(spark, src: str, out: str, uri: str, kind: str) -> int:
    """MLOps Stacks' batch job: spark_udf, then overwrite the whole table."""
    import mlflow.pyfunc
    import pyspark.sql.functions as F

    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type="double", env_manager="local")
    df = spark.read.format("delta").load(src)
    cast = "float" if kind == "mlp" else "double"  # MLflow refuses double -> float32 inputs
    scored = df.withColumn("prediction", udf(*[F.col(c).cast(cast) for c in S.FEATURES]))
    scored = scored.withColumn("model_id", F.lit(uri)).withColumn("timestamp", F.current_timestamp())
    scored.write.format("delta").mode("overwrite").save(out)
    return spark.read.format("delta").load(out).count()


def _job(spark, src: str, out: str, uri: str, path: str) -> tuple[int, str]:
    from spark_scoring import run_job
    from spark_scoring.ops.progress import Reporter

    cfg = {
        "model": uri,
        "input": {"table": src},
        "output": {"table": out, "mode": "overwrite_partitions"},
        "bad_rows": "fail",
        "engine": {"path": path},
        "tracking": {"enabled": False},
        "drift": {"enabled": False},
    }
    result = run_job(cfg, spark=spark, reporter=Reporter(quiet=True))
    meta = json.loads(spark.sql(f"DESCRIBE HISTORY delta.`{out}` LIMIT 1").head()["userMetadata"])
    return result.rows_scored, meta["engine_path"]


def _predictions(spark, out: str):
    import numpy as np

    rows = spark.read.format("delta").load(out).select("id", "prediction").orderBy("id").toPandas()
    return rows["prediction"].to_numpy(np.float64)


def main(argv=None) -> int:
    args = parse_args(argv)
    out_dir = Path(args.out or HERE / "out" / f"jobs-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    import run as R  # the benchmark's own session settings

    spark = R._session(R.parse_args([]))
    ds = S.make_dataset(spark, Path(args.work) / "data", args.rows, args.files)
    uris = S.setup_models(Path(args.work) / "mlflow")
    scratch = Path(tempfile.mkdtemp(prefix="bench_jobs_"))
    report = {"command": " ".join([".venv/bin/python", "bench/jobs.py", *(argv or sys.argv[1:])]),
              "rows": args.rows, "files": args.files, "repeats": args.repeats,
              "loadavg_start": os.getloadavg(), "models": {}}
    try:
        for kind in args.models:
            uri = uris[kind]
            runs = {p: [] for p in PATHS}
            engine_paths, first_outputs = {}, {}
            for r in range(args.repeats):
                for path in PATHS:
                    out = str(scratch / f"{kind}-{path.replace('[', '_').rstrip(']')}-{r}")
                    t0 = time.perf_counter()
                    if path == "stacks":
                        rows = _stacks(spark, ds.delta, out, uri, kind)
                    else:
                        rows, engine_paths[path] = _job(spark, ds.delta, out, uri, path[4:-1])
                    wall = time.perf_counter() - t0
                    if rows != args.rows:
                        raise SystemExit(f"{kind} {path}: wrote {rows} rows, expected {args.rows}")
                    runs[path].append(wall)
                    print(f"  [{kind} r{r}] {path:10s} {wall:7.2f}s  {args.rows / wall / 1e6:.3f} M rows/s", flush=True)
                    if r == 0:
                        first_outputs[path] = out
                    else:
                        shutil.rmtree(out, ignore_errors=True)
            preds = {p: _predictions(spark, o) for p, o in first_outputs.items()}
            diff = max(float(abs(preds[p] - preds["stacks"]).max()) for p in PATHS)
            med = {p: statistics.median(v) for p, v in runs.items()}
            report["models"][kind] = {"uri": uri, "wall_s": runs, "median_s": med, "engine_path": engine_paths,
                                      "x_stacks": {p: med["stacks"] / med[p] for p in PATHS},
                                      "max_abs_diff": diff}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    lines = [f"# Jobs end to end: {args.rows:,} rows x {len(S.FEATURES)} features, {args.files} files, local[2]",
             "", f"Command: `{report['command']}`; medians of {args.repeats} interleaved repeats; load average "
             f"{report['loadavg_start'][0]:.1f} at start, {report['loadavg_end'][0]:.1f} at end.", ""]
    for kind, m in report["models"].items():
        lines += [f"## {kind} (`{m['uri']}`)", "", "| path | wall s | M rows/s | x stacks | engine_path |",
                  "|---|---:|---:|---:|---|"]
        for p in PATHS:
            lines.append(f"| {p} | {m['median_s'][p]:.2f} | {args.rows / m['median_s'][p] / 1e6:.3f} | "
                         f"{m['x_stacks'][p]:.2f} | {m['engine_path'].get(p, '-')} |")
        lines += ["", f"max |prediction difference| to stacks: {m['max_abs_diff']:.1e}", ""]
    text = "\n".join(lines)
    print(text)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "results.md").write_text(text)
    print(f"results: {out_dir / 'results.md'}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
