#!/usr/bin/env python
"""Image tagging side by side: the same JPEGs and the same pyfunc model through the
in-process limit, mlflow's spark_udf, spark_scoring.score(), Ray Data and Daft, in ONE run.

    .venv/bin/python bench/media.py                      # 4,000 images, 8 files, 2 rounds (long on 2 cores)
    .venv/bin/python bench/media.py --smoke              # tiny; what tests/test_bench_media_smoke.py runs

Runs on: the driver; Spark is ``local[--cores]``, Ray gets ``--cores`` CPUs, Daft's
native runner ``--cores`` threads. See bench/README.md ("bench/media.py") for
what is measured and how to read the output (a table on stdout, ``results.json``
and ``results.md`` in ``--out``).

Order: data and models (cached under ``--work``), one untimed warm-up round of
every path, then ``--repeats`` interleaved rounds (A B C ..., A B C ...);
medians. Every run writes every image's ``id``, ``label``, ``score`` as Parquet
to a fresh folder, and is checked against the ``limit`` path on every id.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

import _media_engines as E  # noqa: E402
import _media_setup as S  # noqa: E402

PATHS = ("limit", "limit[overlap]", "spark_udf", "score[plain]", "score[overlapped]", "ray", "daft")
SPARK_PATHS = ("spark_udf", "score[plain]", "score[overlapped]")
WHAT = {
    "limit": "pyarrow + the model's preprocess/predict_batch in this process, torch at --cores threads",
    "limit[overlap]": "the same, a --cores-thread pool decoding the next batches during the forward pass",
    "spark_udf": "mlflow.pyfunc.spark_udf(media_plain, result_type='label long, score double', env_manager='local')",
    "score[plain]": "ss.score(df, ss.load_model(media_plain), output_col='pred', lineage=False, batch_size=--batch)",
    "score[overlapped]": "the same with media_overlapped (preprocess + predict_batch)",
    "ray": "ray.init; read_parquet -> map_batches(actor class, concurrency=2, num_cpus=0.5) -> write_parquet; shutdown",
    "daft": "daft.read_parquet -> @daft.cls batch method (max_concurrency=2, processes) -> write_parquet",
}
VARIANT_KEYS = {"batch_size": SPARK_PATHS[1:], "arrow": SPARK_PATHS, "threads": ("ray", "daft")}
VARIANT_BASES = SPARK_PATHS + ("ray", "daft")
SCORE_TOL = 1e-4


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=None, help="JPEG crops (default 4000; --smoke 64)")
    ap.add_argument("--files", type=int, default=None,
                    help="Parquet files, the Delta table holds the same files (default 8; --smoke 2)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds, after one untimed warm-up round (default 2; --smoke 1)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false", default=None,
                    help="skip the untimed warm-up round (--smoke skips it)")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}")
    ap.add_argument("--variants", default="",
                    help="extra paths, comma list of base:key=value[;key=value], base one of "
                         f"{', '.join(VARIANT_BASES)}; keys: batch_size (score: rows per model call, or "
                         "'default' for spark_scoring's own default), arrow (Spark paths: rows per Arrow "
                         "batch, maxRecordsPerBatch and columnarReaderBatchSize for that path's runs, or "
                         "'default' for Spark's defaults, 10000 and 4096), threads (ray, daft: the model's "
                         "load_context sets torch.set_num_threads(N); their processes end with each run, "
                         "Spark's reused workers would carry it into other paths: use --torch-threads)")
    ap.add_argument("--batch", type=int, default=None,
                    help="rows per model call on every path (Spark: the Arrow batch size, both confs); "
                         "default 64, --smoke 16")
    ap.add_argument("--arch", choices=("resnet18", "cnn3"), default="resnet18",
                    help="resnet18 (torchvision, random weights) or cnn3 (the issue's small 3-layer CNN)")
    ap.add_argument("--size", type=int, default=224, help="model input: size x size pixels")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="every path loads models whose load_context calls torch.set_num_threads(N) "
                         "(local model folders, model_config); default: leave torch's default")
    ap.add_argument("--profile", action="store_true",
                    help="after the rounds, one more run of each Spark path under Spark's UDF profiler "
                         "(cProfile in the Python workers); top functions in profile_<path>.txt")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", default=str(HERE / "out" / "work"), help="data + MLflow registry (reused)")
    ap.add_argument("--out", default=None, help="results folder (default bench/out/media-<time>)")
    ap.add_argument("--smoke", action="store_true",
                    help="small defaults (64 images, 2 files, batch 16, 1 round, no warm-up): a correctness "
                         "run; flags given explicitly still apply")
    args = ap.parse_args(argv)
    defaults = dict(images=64, files=2, repeats=1, batch=16, warmup=False) if args.smoke else \
        dict(images=4000, files=8, repeats=2, batch=64, warmup=True)
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.paths = [p for p in args.paths.split(",") if p]
    bad = [p for p in args.paths if p not in PATHS]
    if bad:
        ap.error(f"unknown path(s) {bad}; expected {list(PATHS)}")
    args.variants = [_parse_variant(ap, v) for v in args.variants.split(",") if v.strip()]
    return args


def _parse_variant(ap, text: str) -> tuple[str, str, dict]:
    base, _, rest = text.strip().partition(":")
    if base not in VARIANT_BASES:
        ap.error(f"--variants {text!r}: base must be one of {VARIANT_BASES}")
    opts = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        if key not in VARIANT_KEYS:
            ap.error(f"--variants {text!r}: unknown key {key!r}; expected {sorted(VARIANT_KEYS)}")
        if base not in VARIANT_KEYS[key]:
            hint = (" (spark_udf has no batch size: one model call per Arrow batch; use arrow=N)"
                    if key == "batch_size" and base == "spark_udf" else "")
            ap.error(f"--variants {text!r}: {key} applies to {list(VARIANT_KEYS[key])} only{hint}")
        if value == "default" and key == "threads":
            ap.error(f"--variants {text!r}: threads=N needs a number")
        opts[key] = None if value == "default" else int(value)
    label = base + "{" + ",".join(f"{k}={'default' if v is None else v}" for k, v in opts.items()) + "}"
    return label, base, opts


def _session(args):
    import spark_scoring as ss

    arrow = str(args.batch)
    return ss.get_spark(
        "bench_media",
        master=f"local[{args.cores}]",
        conf={
            "spark.sql.shuffle.partitions": str(args.cores),
            "spark.default.parallelism": str(args.cores),
            "spark.driver.memory": "2g",
            "spark.sql.execution.arrow.maxRecordsPerBatch": arrow,
            "spark.sql.parquet.columnarReaderBatchSize": arrow,
        },
    )


def build_path(ctx: E.Ctx, base: str, opts: dict) -> E.Path_:
    if base == "limit":
        return E.LimitPath(ctx, overlap=False)
    if base == "limit[overlap]":
        return E.LimitPath(ctx, overlap=True)
    arrow = opts.get("arrow", "session")  # None: Spark's defaults
    if base == "spark_udf":
        return E.SparkPath(ctx, "spark_udf", "media_plain", arrow_rows=arrow)
    if base in ("score[plain]", "score[overlapped]"):
        name = "media_plain" if base == "score[plain]" else "media_overlapped"
        bs = opts.get("batch_size", "batch")  # None: spark_scoring's default
        return E.SparkPath(ctx, "score", name, batch_size=bs, arrow_rows=arrow)
    if base == "ray":
        return E.RayPath(ctx, threads=opts.get("threads"))
    if base == "daft":
        return E.DaftPath(ctx, threads=opts.get("threads"))
    raise ValueError(base)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_")


def compare(got, ref) -> dict:
    ids, labels, scores = got
    rids, rlabels, rscores = ref
    same_ids = len(ids) == len(rids) and bool((ids == rids).all())
    if not same_ids:
        common = sorted(set(ids.tolist()) & set(rids.tolist()))
        return {"rows": int(len(ids)), "expected": int(len(rids)), "compared": len(common), "ids_match": False,
                "label_mismatches": None, "max_score_diff": None, "ok": False}
    diff = float(abs(scores - rscores).max()) if len(ids) else float("nan")
    mism = int((labels != rlabels).sum())
    return {"rows": int(len(ids)), "expected": int(len(rids)), "compared": int(len(ids)), "ids_match": True,
            "label_mismatches": mism, "max_score_diff": diff, "ok": mism == 0 and diff <= SCORE_TOL,
            "distinct_labels": int(len(set(rlabels.tolist())))}


def run_once(ctx: E.Ctx, label: str, path: E.Path_, runs_dir: Path, tag: str) -> tuple[dict, str]:
    gc.collect()
    load = os.getloadavg()[0]
    out_dir = E.fresh_dir(str(runs_dir / _safe(label)))
    before = E.cpu_snapshot()
    w0 = time.time()
    t0 = time.perf_counter()
    if isinstance(path, E.SparkPath):
        info = path.run(out_dir, group=f"media-{_safe(label)}-{tag}")
    else:
        info = path.run(out_dir)
    wall = time.perf_counter() - t0
    w1 = time.time()
    after = info.pop("cpu_after", None) or E.cpu_snapshot()
    rec = {"wall_s": wall, "cpu_s": E.cpu_delta(before, after), "loadavg": load, **info,
           "trace": E.trace_summary(ctx.trace, w0, w1) if ctx.trace else {}}
    return rec, out_dir


def timed_rounds(ctx, entries, runs_dir: Path, repeats: int, warmup: bool, ref_holder: dict) -> dict:
    """``entries`` [(label, base, opts)]: build each once, then warm-up + ``repeats`` rounds, interleaved."""
    built, builds = {}, {}
    for label, base, opts in entries:
        t0 = time.perf_counter()
        built[label] = build_path(ctx, base, opts)
        builds[label] = time.perf_counter() - t0
    runs = {label: [] for label, _b, _o in entries}
    warm = {}
    rounds = ([-1] if warmup else []) + list(range(repeats))
    for r in rounds:
        tag = "warmup" if r < 0 else f"r{r}"
        for label, _base, _opts in entries:
            rec, out_dir = run_once(ctx, label, built[label], runs_dir, tag)
            got = E.read_output(out_dir)
            if "ref" not in ref_holder and label == "limit":
                ref_holder["ref"] = got
            rec["check"] = compare(got, ref_holder["ref"])
            shutil.rmtree(out_dir, ignore_errors=True)
            (warm.setdefault(label, []) if r < 0 else runs[label]).append(rec)
            t = rec["trace"]
            print(f"  [{tag}] {label:34s} {rec['wall_s']:7.2f}s wall {rec['cpu_s']:7.2f}s cpu "
                  f"{ctx.data.images / rec['wall_s']:7.1f} img/s  calls {t.get('calls')} "
                  f"rows/call {t.get('rows_per_call')} threads {t.get('threads')} "
                  f"pre {t.get('pre_s', 0):.1f}s fwd {t.get('fwd_s', 0):.1f}s  "
                  f"{'ok' if rec['check']['ok'] else 'MISMATCH ' + json.dumps(rec['check'])}  "
                  f"load {rec['loadavg']:.1f}", flush=True)
    for p in built.values():
        p.close()
    return {"runs": runs, "warmup": warm, "build_s": builds}


def profile_spark(ctx, entries, runs_dir: Path, out_dir: Path) -> dict:
    """One more run of each Spark path with ``spark.sql.pyspark.udf.profiler=perf``; top functions."""
    import io
    import pstats

    spark = ctx.spark
    out = {}
    for label, base, opts in entries:
        if base not in SPARK_PATHS:
            continue
        path = build_path(ctx, base, opts)
        spark.conf.set("spark.sql.pyspark.udf.profiler", "perf")
        try:
            rec, run_out = run_once(ctx, label, path, runs_dir, "profile")
        finally:
            spark.conf.unset("spark.sql.pyspark.udf.profiler")
        shutil.rmtree(run_out, ignore_errors=True)
        dump = out_dir / "profiles" / _safe(label)
        if dump.exists():
            shutil.rmtree(dump)
        spark.profile.dump(str(dump), type="perf")
        spark.profile.clear(type="perf")
        files = sorted(dump.glob("*.pstats"))
        text = io.StringIO()
        if files:
            stats = pstats.Stats(*[str(f) for f in files], stream=text)
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
        (out_dir / f"profile_{_safe(label)}.txt").write_text(
            f"{label}: {rec['wall_s']:.2f}s wall under the profiler, trace {json.dumps(rec['trace'])}\n"
            + text.getvalue())
        out[label] = {"wall_s": rec["wall_s"], "trace": rec["trace"], "pstats": [str(f) for f in files]}
        print(f"  [profile] {label}: {len(files)} profile(s) -> {out_dir / ('profile_' + _safe(label) + '.txt')}",
              flush=True)
    return out


# ---------------------------------------------------------------------------
# Summary and report
# ---------------------------------------------------------------------------

def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ratio(a, b):
    return a / b if a and b else None


def summarize(result: dict) -> dict:
    images = result["config"]["images"]
    paths = {}
    for label, runs in result["runs"].items():
        wall, cpu = _med(r["wall_s"] for r in runs), _med(r["cpu_s"] for r in runs)
        tr = [r.get("trace") or {} for r in runs]
        checks = [r["check"] for r in runs + result["warmup"].get(label, [])]
        p = {
            "wall_s": wall,
            "cpu_s": cpu,
            "images_per_s": images / wall if wall else None,
            "images_per_cpu_s": images / cpu if cpu else None,
            "tasks": _med(r.get("tasks") for r in runs),
            "calls": _med(t.get("calls") for t in tr),
            "rows_per_call": _med(t.get("rows_per_call") for t in tr),
            "max_rows_per_call": max((t.get("max_rows_per_call") or 0 for t in tr), default=None),
            "threads": sorted({th for t in tr for th in t.get("threads", [])}),
            "pre_s": _med(t.get("pre_s") for t in tr),
            "fwd_s": _med(t.get("fwd_s") for t in tr),
            "agrees": bool(checks) and all(c["ok"] for c in checks),
            "max_score_diff": max((c["max_score_diff"] or 0.0 for c in checks), default=None),
            "label_mismatches": max((c["label_mismatches"] or 0 for c in checks), default=None),
            "ran": bool(runs) and all(r["check"]["rows"] == images for r in runs),
        }
        if runs and "startup_s" in runs[0]:
            p["startup_s"] = _med(r["startup_s"] for r in runs)
            p["shutdown_s"] = _med(r["shutdown_s"] for r in runs)
            p["run_only_s"] = _med(r["run_only_s"] for r in runs)
            p["images_per_s_no_startup"] = images / p["run_only_s"] if p["run_only_s"] else None
        paths[label] = p
    ref = paths.get("spark_udf")
    for p in paths.values():
        p["x_spark_udf"] = _ratio(p["images_per_s"], ref and ref["images_per_s"])
        p["cpu_x_spark_udf"] = _ratio(p["images_per_cpu_s"], ref and ref["images_per_cpu_s"])
        if "images_per_s_no_startup" in p:
            p["x_spark_udf_no_startup"] = _ratio(p["images_per_s_no_startup"], ref and ref["images_per_s"])
    return paths


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def markdown(result: dict) -> str:
    c = result["config"]
    s = result["summary"]
    lines = [
        "# Media benchmark: JPEG tagging side by side",
        "",
        f"`{result['command']}`",
        "",
        f"{c['images']:,} JPEG crops ({c['bytes'] / 1e6:.1f} MB) in {c['files']} Parquet files (+ a Delta table "
        f"over the same files), {c['arch']} at {c['size']}x{c['size']} (random weights), "
        f"{c['master']}, {c['batch']} rows per model call and per Arrow batch "
        f"(maxRecordsPerBatch={c['maxRecordsPerBatch']}, columnarReaderBatchSize={c['columnarReaderBatchSize']}), "
        f"torch threads {c['torch_threads'] or 'engine default'}; "
        f"{'1 untimed warm-up round + ' if c['warmup'] else ''}{c['repeats']} timed round(s), medians. "
        f"Load average {result['machine']['loadavg_start'][0]:.1f} at the start, "
        f"{result['machine']['loadavg_end'][0]:.1f} at the end ({result['machine']['cores']} cores).",
        "",
        "| path | img/s | x spark_udf | wall s | CPU s | img/CPU-s | cpu x spark_udf | tasks | model calls "
        "| rows/call (max) | torch threads | decode s | forward s | agrees |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for label, p in s.items():
        agrees = ("yes" if p["agrees"] else "**NO**") + f" ({_f(p['max_score_diff'], '{:.0e}')})"
        lines.append(
            f"| {label} | {_f(p['images_per_s'], '{:.1f}')} | {_f(p['x_spark_udf'])} | {_f(p['wall_s'])} "
            f"| {_f(p['cpu_s'])} | {_f(p['images_per_cpu_s'], '{:.1f}')} | {_f(p['cpu_x_spark_udf'])} "
            f"| {_f(p['tasks'], '{:.0f}')} | {_f(p['calls'], '{:.0f}')} "
            f"| {_f(p['rows_per_call'], '{:.0f}')} ({p['max_rows_per_call'] or '-'}) "
            f"| {','.join(map(str, p['threads'])) or '-'} | {_f(p['pre_s'], '{:.1f}')} | {_f(p['fwd_s'], '{:.1f}')} "
            f"| {agrees} |")
        if "images_per_s_no_startup" in p:
            lines.append(
                f"| {label}, start/stop excluded | {_f(p['images_per_s_no_startup'], '{:.1f}')} "
                f"| {_f(p['x_spark_udf_no_startup'])} | {_f(p['run_only_s'])} | | | | | | | | | | "
                f"ray.init {_f(p['startup_s'])}s, shutdown {_f(p['shutdown_s'])}s |")
    lines += [""]
    if not c["warmup"]:
        lines.append("- **No warm-up round**: each path's first run carries its cold start (Spark's Python "
                     "workers start and import torch and mlflow in the first Spark path's run); a correctness "
                     "run, not a measurement.")
    lines += [
        "- `img/s`, `x spark_udf`: wall clock of a whole run (read, score, write Parquet), medians; "
        "`CPU s`: this process and every process under it (JVM, Python workers, Ray, Daft) from /proc.",
        "- `model calls`, `rows/call`, `torch threads`, `decode s`, `forward s`: from the model's own trace "
        "(one line per call, `$BENCH_MEDIA_TRACE`); seconds are summed over all workers.",
        "- `agrees`: every id present once, labels equal to the `limit` path's and scores within "
        f"{SCORE_TOL:g} (the largest difference seen in brackets), in every run including the warm-up.",
        "",
        "| path | what runs |",
        "|---|---|",
    ]
    for label in s:
        base = label.split("{")[0]
        variant = f" (variant {label[len(base):]})" if label != base else ""
        lines.append(f"| {label} | {WHAT.get(base, '')}{variant} |")
    return "\n".join(lines) + "\n"


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("pyspark", "delta-spark", "mlflow", "torch", "torchvision", "ray", "daft", "pyarrow", "pillow"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = Path(args.out or HERE / "out" / f"media-{stamp}").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work).resolve()
    t_start = time.perf_counter()
    # Ray actors, Daft processes and Spark workers inherit these (set before any engine starts)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(HERE), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    trace = out_dir / "trace.jsonl"
    trace.unlink(missing_ok=True)
    os.environ["BENCH_MEDIA_TRACE"] = str(trace)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    phases = {}
    t0 = time.perf_counter()
    spark = _session(args)
    phases["spark_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = S.make_images(spark, work / "media", args.images, args.files)
    phases["data_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = S.setup_models(work / "media", args.arch, args.size, args.torch_threads)
    phases["models_s"] = time.perf_counter() - t0
    ctx = E.Ctx(data=data, models=models, batch=args.batch, cores=args.cores, spark=spark, trace=str(trace))
    entries = [(p, p, {}) for p in args.paths]
    entries += [(label, base, opts) for label, base, opts in args.variants]
    result = {
        "command": " ".join([".venv/bin/python", "bench/media.py", *(argv if argv is not None else sys.argv[1:])]),
        "started": stamp,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "versions": _versions(),
        "config": {"images": data.images, "files": data.files, "bytes": data.bytes_total, "repeats": args.repeats,
                   "warmup": args.warmup, "batch": args.batch, "arch": args.arch, "size": args.size,
                   "torch_threads": args.torch_threads, "master": f"local[{args.cores}]", "cores": args.cores,
                   "maxRecordsPerBatch": spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch"),
                   "columnarReaderBatchSize": spark.conf.get("spark.sql.parquet.columnarReaderBatchSize"),
                   "models": models.uris, "paths": [e[0] for e in entries]},
        "setup_s": phases,
    }
    print(f"== {data.images:,} images ({data.bytes_total / 1e6:.1f} MB) in {data.files} files, {args.arch} "
          f"{args.size}px, batch {args.batch}, {result['config']['master']}; setup "
          + ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in phases.items()), flush=True)
    runs_dir = work / "media" / "runs"
    ref_holder: dict = {}
    if "limit" not in args.paths:  # the reference: an untimed in-process run
        rec, ref_out = run_once(ctx, "reference", E.LimitPath(ctx, overlap=False), runs_dir, "ref")
        ref_holder["ref"] = E.read_output(ref_out)
        print(f"  [reference] limit {rec['wall_s']:.2f}s", flush=True)
    elif entries[0][0] != "limit":
        entries = sorted(entries, key=lambda e: e[0] != "limit")  # the reference runs first
    rounds = timed_rounds(ctx, entries, runs_dir, args.repeats, args.warmup, ref_holder)
    result.update(rounds)
    if args.profile:
        result["profile"] = profile_spark(ctx, entries, runs_dir, out_dir)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["seconds_total"] = time.perf_counter() - t_start
    result["summary"] = summarize(result)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=str))
    md = markdown(result)
    (out_dir / "results.md").write_text(md)
    print(md)
    print(f"results: {out_dir}/results.json, {out_dir}/results.md ({result['seconds_total']:.0f}s in all)")
    spark.stop()
    return 0 if all(p["agrees"] and p["ran"] for p in result["summary"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
