#!/usr/bin/env python
"""Side-by-side scoring benchmark: in-process limit, spark_udf, predict_batch_udf,
spark_scoring.score() and the direct Arrow scan, in ONE process run.

    .venv/bin/python bench/run.py --rows 2000000 --partitions 8
    .venv/bin/python bench/run.py --smoke --variants ""   # tiny; what tests/test_bench_smoke.py runs

Runs on: the driver; Spark is ``local[2]`` (``--cores``). See bench/README.md
for what is measured and how to read the output (a table on stdout,
``results.json`` and ``results.md`` in ``--out``).

Order: for each model, an untimed correctness pass (every path scores a sample
of row ids; spark_scoring's paths run with ``diagnostics=True`` there, which
also counts model loads on the cold cache), then ``--repeats`` rounds of
A B C D E (+ variants), so the paths share the machine's noise. Each Spark run
writes to the ``noop`` sink. Then the partition-scaling check: score() and the
direct scan on the same rows in ``--scale`` times more files, for peak worker
memory.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _paths as P  # noqa: E402
import _report  # noqa: E402
import _setup as S  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=8, help="Parquet files = Spark input partitions")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="mlp,hgb", help="comma list of mlp, hgb")
    ap.add_argument("--paths", default=",".join(P.PATHS), help=f"comma list of {', '.join(P.PATHS)}")
    ap.add_argument("--variants", default="score:crbs=16384,score:prefetch=on,direct:prefetch=on",
                    help="extra A/B paths, comma list of base:key=value[;key=value] with keys prefetch "
                         "(on/off), lineage (on/off), batch_size, crbs "
                         "(spark.sql.parquet.columnarReaderBatchSize), colin (on/off: "
                         "spark.sql.execution.arrow.pythonUDF.columnarInput.enabled); '' for none")
    ap.add_argument("--batch-size", type=int, default=None, help="model batch size for every path")
    ap.add_argument("--input", choices=("delta", "parquet"), default="delta", help="what Spark paths read")
    ap.add_argument("--scale", type=int, default=10, help="partition-scaling factor (0: skip the check)")
    ap.add_argument("--scale-models", default="mlp", help="models for the partition-scaling check")
    ap.add_argument("--sample", type=int, default=2000, help="rows compared across paths")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--no-freeze-workers", dest="freeze_workers", action="store_false",
                    help="do not gc.freeze() the shared Python workers after the untimed pass")
    ap.add_argument("--work", default=str(HERE / "out" / "work"), help="data + MLflow registry (reused)")
    ap.add_argument("--out", default=None, help="results folder (default bench/out/run-<time>)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat: a correctness run")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.partitions, args.repeats, args.sample = 20_000, 4, 1, 500
    args.models = [m for m in args.models.split(",") if m]
    args.paths = [p for p in args.paths.split(",") if p]
    bad = [p for p in args.paths if p not in P.PATHS] + [m for m in args.models if m not in S.MODELS]
    if bad:
        ap.error(f"unknown path(s) / model(s) {bad}")
    args.variants = [_parse_variant(v) for v in args.variants.split(",") if v.strip()]
    return args


def _parse_variant(text: str) -> tuple[str, str, dict]:
    base, _, rest = text.strip().partition(":")
    if base not in ("score", "direct", "spark_udf", "predict_batch_udf"):
        raise SystemExit(f"--variants {text!r}: base must be a Spark path")
    opts = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        if key not in ("prefetch", "batch_size", "crbs", "lineage", "colin"):
            raise SystemExit(f"--variants {text!r}: unknown key {key!r}")
        opts[key] = {"on": True, "off": False}.get(value, value)
    return f"{base}[{rest}]", base, opts


def _session(args):
    from spark_scoring.session import get_spark

    return get_spark(
        "spark_scoring_bench",
        master=f"local[{args.cores}]",
        conf={
            "spark.sql.shuffle.partitions": str(args.cores),
            "spark.default.parallelism": str(args.cores),
            "spark.driver.memory": "2g",
        },
    )


def _builder(ctx: P.Ctx, base: str, opts: dict, **extra):
    kwargs = dict(extra)
    overrides = {}
    if "prefetch" in opts:
        overrides["prefetch"] = bool(opts["prefetch"])
    if overrides:
        if base not in ("score", "direct"):
            raise SystemExit("prefetch variants exist for score and direct only")
        kwargs["overrides"] = overrides
    if "lineage" in opts:
        if base not in ("score", "direct"):
            raise SystemExit("lineage variants exist for score and direct only")
        kwargs["lineage"] = bool(opts["lineage"])
    if "batch_size" in opts:
        ctx = P.Ctx(**{**ctx.__dict__, "batch_size": int(opts["batch_size"])})
    return P.BUILDERS[base](ctx, **kwargs)


def _known_loads(rows, known: dict) -> tuple[int, int]:
    """(model loads in this run, workers that ran tasks) from diagnostics rows (pid, model_loads)."""
    peak: dict[int, int] = {}
    for pid, loads in rows:
        peak[pid] = max(loads, peak.get(pid, 0))
    new = sum(max(0, n - known.get(pid, 0)) for pid, n in peak.items())
    known.update(peak)
    return new, len(peak)


def correctness_pass(ctx, names, specs, known_loads, sample_every: int) -> dict:
    """Untimed: every path scores the rows with ``id % sample_every == 0``; compare by id."""
    import pyspark.sql.functions as F

    ids = [i for i in range(0, ctx.ds.rows, sample_every)]
    matrix, ref_ids = S.reference_matrix(ctx.ds, ids)
    reference = dict(zip(ref_ids.tolist(), P.limit_predict(ctx, matrix).tolist()))
    out = {}
    df = ctx.read()
    for name in names:
        t0 = time.perf_counter()
        info: dict = {}
        if name == "limit":
            got = reference
        else:
            base, opts = specs[name]
            is_ours = base in ("score", "direct") and not opts
            build = _builder(ctx, base, opts, **({"diagnostics": True} if is_ours else {}))
            log_lines = _lines(ctx.load_log)
            if base == "direct":
                scored = build().where(F.col("id") % sample_every == 0)  # nothing to push down: full scan
            else:
                scored = build(df.where(F.col("id") % sample_every == 0))
            cols = ["id", "prediction"] + (["scoring_diagnostics.pid", "scoring_diagnostics.model_loads"]
                                            if is_ours else [])
            rows = scored.select(*cols).collect()
            got = {r[0]: r[1] for r in rows}
            if is_ours:
                info["model_loads"], info["workers"] = _known_loads([(r[2], r[3]) for r in rows], known_loads)
            if base == "predict_batch_udf":
                info["model_loads"] = _lines(ctx.load_log) - log_lines
        diffs = [abs(got[i] - v) for i, v in reference.items() if i in got and got[i] is not None]
        out[name] = {
            "compared": len(diffs),
            "expected": len(reference),
            "max_abs_diff": max(diffs, default=float("nan")),
            "seconds": time.perf_counter() - t0,
            **info,
        }
        print(f"  check {name:28s} rows {len(diffs)}/{len(reference)}  max|diff| "
              f"{out[name]['max_abs_diff']:.2e}  {info or ''}", flush=True)
    return out


def _freeze_workers(spark, cores: int) -> None:
    """Ask each Python worker to ``gc.collect(); gc.freeze()``.

    The benchmark's paths share the workers, and whatever one path imports
    (mlflow's pyfunc stack for spark_udf, pandas UDF machinery...) is then
    traversed by the full ``gc.collect()`` PySpark's worker runs after *every*
    task, for every path (~0.2 CPU-s per task with mlflow, torch and sklearn
    loaded). Freezing after the untimed pass leaves each path paying for what it
    allocates itself, as it would in a job that runs only that path.
    """

    def freeze(batches):
        import gc
        import os as _os

        import pyarrow as _pa

        for _b in batches:
            pass
        gc.collect()
        gc.freeze()
        yield _pa.RecordBatch.from_pydict({"pid": [_os.getpid()], "frozen": [gc.get_freeze_count()]})

    seen = {}
    for _ in range(2):  # idle workers are handed out in turn; two rounds reach both
        for row in spark.range(cores, numPartitions=cores).mapInArrow(freeze, "pid long, frozen long").collect():
            seen[row.pid] = row.frozen
    print(f"  froze the gc state of Python workers {seen}", flush=True)


def _lines(path: str) -> int:
    try:
        with open(path) as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def timed_rounds(entries, specs, repeats: int, tag: str) -> tuple[dict[str, list[dict]], dict]:
    """``repeats`` rounds over ``entries`` [(label, ctx, path name)], in order, interleaved.

    Returns ({label: [one dict per run]}, {label: seconds to build the DataFrame}).
    """
    from spark_scoring.session import runtime_conf

    runs: dict[str, list[dict]] = {label: [] for label, _c, _n in entries}
    builds: dict[str, float] = {}
    outputs, limit_fns = {}, {}
    for label, ctx, name in entries:
        t0 = time.perf_counter()
        if name == "limit":
            limit_fns[label] = P.make_limit_fn(ctx)
        else:
            base, opts = specs[name]
            with runtime_conf(ctx.spark, ctx.extra.get("conf", {})):
                outputs[label] = _builder(ctx, base, opts)(ctx.read())
        builds[label] = time.perf_counter() - t0
    spark = entries[0][1].spark
    for r in range(repeats):
        for label, ctx, name in entries:
            gc.collect()
            load = os.getloadavg()[0]
            if name == "limit":
                before = P.cpu_snapshot(spark)["self"]
                t0 = time.perf_counter()
                rows, meta = limit_fns[label]()
                wall = time.perf_counter() - t0
                cpu = P.cpu_snapshot(spark)["self"] - before
                rec = {"wall_s": wall, "cpu_s": cpu, "cpu_jvm_s": 0.0, "rows": rows, **meta, "peak_worker_mb": None}
            else:
                base, opts = specs[name]
                group = f"bench-{tag}-{label}-{r}"
                log_lines = _lines(ctx.load_log)
                with runtime_conf(spark, {**ctx.extra.get("conf", {}), **_variant_confs(base, opts)}), \
                        P.PeakSampler(spark) as sampler:
                    wall, cpu, cpu_jvm = P.time_spark(spark, outputs[label], group)
                rec = {"wall_s": wall, "cpu_s": cpu, "cpu_jvm_s": cpu_jvm, "rows": ctx.ds.rows,
                       "tasks": P.spark_tasks(spark, group),
                       "peak_worker_mb": sampler.max_mb, "growth_worker_mb": sampler.growth_mb,
                       "workers_seen": len(sampler.pids)}
                if base == "predict_batch_udf":
                    rec["model_loads"] = _lines(ctx.load_log) - log_lines
                if base == "spark_udf":
                    rec["model_loads"] = rec["tasks"]  # local mode: one load per task (mlflow source)
            rec["loadavg"] = load
            runs[label].append(rec)
            print(f"  [{tag} r{r}] {label:24s} {rec['wall_s']:7.2f}s wall {rec['cpu_s']:6.2f}s cpu "
                  f"({rec['cpu_jvm_s']:5.2f} JVM) "
                  f"{ctx.ds.rows / rec['wall_s'] / 1e6:6.3f} M rows/s  peak "
                  f"{rec.get('peak_worker_mb') or 0:6.0f} MB  load {load:.1f}", flush=True)
    return runs, builds


def _variant_confs(base: str, opts: dict) -> dict:
    """Session confs a path or variant sets for its own runs (and restores after).

    ``score`` runs with the Arrow batch size ``run_job`` sets by default
    (``engine.arrow_batch_rows``; none: Spark's); every other path keeps Spark's defaults.
    """
    from spark_scoring.config import EngineConfig
    from spark_scoring.session import ARROW_BATCH_CONFS

    conf = {}
    rows = EngineConfig().arrow_batch_rows
    if base == "score" and rows is not None:
        conf.update(dict.fromkeys(ARROW_BATCH_CONFS, str(rows)))
    if "crbs" in opts:
        conf["spark.sql.parquet.columnarReaderBatchSize"] = str(opts["crbs"])
    if "colin" in opts:
        conf["spark.sql.execution.arrow.pythonUDF.columnarInput.enabled"] = "true" if opts["colin"] else "false"
    return conf


def main(argv=None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out or HERE / "out" / f"run-{stamp}")
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    t_start = time.perf_counter()
    spark = _session(args)
    from pyspark import cloudpickle

    cloudpickle.register_pickle_by_value(P)  # bench closures run in workers that cannot import _paths

    ds = S.make_dataset(spark, work / "data", args.rows, args.partitions)
    uris = S.setup_models(work / "mlflow")
    from spark_scoring.model.registry import load_model

    specs = {p: (p, {}) for p in args.paths if p != "limit"}
    for name, base, opts in args.variants:
        if base in args.paths:
            specs[name] = (base, opts)
    names = [p for p in args.paths] + [n for n, b, _o in args.variants if b in args.paths]
    result = {
        "command": " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": stamp,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "versions": _versions(),
        "config": {"rows": args.rows, "partitions": args.partitions, "repeats": args.repeats,
                   "features": len(S.FEATURES), "input": args.input, "master": f"local[{args.cores}]",
                   "batch_size": args.batch_size, "scale": args.scale,
                   "columnarReaderBatchSize": spark.conf.get("spark.sql.parquet.columnarReaderBatchSize"),
                   "maxRecordsPerBatch": spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")},
        "models": {},
    }
    known_loads: dict = {}
    sample_every = max(1, args.rows // max(1, args.sample))
    for kind in args.models:
        print(f"== model {kind} ({uris[kind]}), {args.rows:,} rows x {len(S.FEATURES)}, "
              f"{args.partitions} files, {args.input}", flush=True)
        model = load_model(uris[kind])
        ctx = P.Ctx(spark, ds, kind, uris[kind], model, S.FEATURES, batch_size=args.batch_size,
                    input_format=args.input, load_log=str(out_dir / f"pbu_loads_{kind}.txt"))
        checks = correctness_pass(ctx, names, specs, known_loads, sample_every)
        if args.freeze_workers:
            _freeze_workers(spark, args.cores)
        runs, builds = timed_rounds([(n, ctx, n) for n in names], specs, args.repeats, kind)
        result["models"][kind] = {"uri": uris[kind], "checks": checks, "runs": runs, "build_s": builds}

    if args.scale and {"score", "direct"} & set(args.paths):
        ds_big = S.make_dataset(spark, work / "data", args.rows, args.partitions * args.scale)
        scale_paths = [p for p in ("score", "direct") if p in args.paths]
        for kind in [m for m in args.scale_models.split(",") if m in args.models]:
            model = load_model(uris[kind])
            entries = []
            for label, data in (("x1", ds), (f"x{args.scale}", ds_big)):
                # one file per task, for every path: tasks grow with files (Spark would pack small files)
                biggest = max(os.path.getsize(f) for f in data.parquet_files())
                conf = {"spark.sql.files.maxPartitionBytes": str(int(biggest * 1.05) + 1)}
                ctx = P.Ctx(spark, data, kind, uris[kind], model, S.FEATURES, batch_size=args.batch_size,
                            input_format=args.input, extra={"conf": conf})
                entries += [(f"{p}@{label}", ctx, p) for p in scale_paths]
            print(f"== partition scaling {kind}: {ds.files} vs {ds_big.files} files", flush=True)
            runs, _b = timed_rounds(entries, specs, max(1, args.repeats), f"{kind}-scale")
            result["models"][kind]["scaling"] = {"files": [ds.files, ds_big.files], "factor": args.scale,
                                                 "runs": runs}

    result["machine"]["loadavg_end"] = os.getloadavg()
    result["seconds_total"] = time.perf_counter() - t_start
    summary = _report.summarize(result)
    result["summary"] = summary
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    md = _report.markdown(result)
    (out_dir / "results.md").write_text(md)
    print(md)
    print(f"results: {out_dir}/results.json, {out_dir}/results.md")
    spark.stop()
    return 0


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("pyspark", "delta-spark", "mlflow", "torch", "scikit-learn", "pyarrow", "numpy", "pandas"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


if __name__ == "__main__":
    sys.exit(main())
