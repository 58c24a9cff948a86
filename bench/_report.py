"""Turn the raw runs of ``bench/run.py`` into medians, ratios, target checks and markdown.

Runs on: the driver, after the runs (no Spark).

Ratios are of medians over the repeats of one process run: ``x limit`` is
rows/s divided by the in-process limit's rows/s, ``x spark_udf`` likewise.
The ``cpu`` columns divide rows by the CPU seconds of this process, the JVM
and every Python worker (from /proc): on a machine shared with other jobs they
move less with the noise than wall-clock time does.
"""
from __future__ import annotations

import math
import statistics

TOL = 1e-6


def _med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(result: dict) -> dict:
    out = {}
    for kind, m in result["models"].items():
        paths = {}
        for name, runs in m["runs"].items():
            rows = runs[0]["rows"] if runs else 0
            wall, cpu = _med(r["wall_s"] for r in runs), _med(r["cpu_s"] for r in runs)
            cpu_jvm = _med(r.get("cpu_jvm_s") for r in runs)
            chk = m["checks"].get(name, {})
            paths[name] = {
                "rows": rows,
                "wall_s": wall,
                "cpu_s": cpu,
                "cpu_jvm_s": cpu_jvm,
                "rows_per_s": rows / wall if wall else None,
                "rows_per_cpu_s": rows / cpu if cpu else None,
                "tasks": _med(r.get("tasks") for r in runs),
                "peak_worker_mb": max((r["peak_worker_mb"] for r in runs if r.get("peak_worker_mb")), default=None),
                "growth_worker_mb": max((r["growth_worker_mb"] for r in runs if r.get("growth_worker_mb") is not None),
                                        default=None),
                "model_loads_cold": chk.get("model_loads"),
                "workers_cold": chk.get("workers"),
                "model_loads_timed": _med(r.get("model_loads") for r in runs),
                "max_abs_diff": chk.get("max_abs_diff"),
                "compared": chk.get("compared"),
                "expected": chk.get("expected"),
                "ran": bool(runs) and all(r["rows"] == rows for r in runs) and rows > 0,
            }
        for name, p in paths.items():
            for ref in ("limit", "spark_udf"):
                r = paths.get(ref)
                p[f"x_{ref}"] = _ratio(p["rows_per_s"], r and r["rows_per_s"])
                p[f"cpu_x_{ref}"] = _ratio(p["rows_per_cpu_s"], r and r["rows_per_cpu_s"])
        scaling = {}
        if "scaling" in m:
            sruns = m["scaling"]["runs"]
            factor = m["scaling"]["factor"]
            for base in ("score", "direct"):
                a, b = sruns.get(f"{base}@x1"), sruns.get(f"{base}@x{factor}")
                if a and b:
                    pa_, pb = _med(r["peak_worker_mb"] for r in a), _med(r["peak_worker_mb"] for r in b)
                    ga, gb = _med(r["growth_worker_mb"] for r in a), _med(r["growth_worker_mb"] for r in b)
                    scaling[base] = {
                        "growth_worker_mb": [ga, gb],
                        "tasks": [_med(r["tasks"] for r in a), _med(r["tasks"] for r in b)],
                        "peak_worker_mb": [pa_, pb],
                        "peak_ratio": _ratio(pb, pa_),
                        "rows_per_s": [a[0]["rows"] / _med(r["wall_s"] for r in a),
                                       b[0]["rows"] / _med(r["wall_s"] for r in b)],
                    }
        out[kind] = {"paths": paths, "scaling": scaling, "targets": _targets(kind, paths, scaling)}
    return out


def _ratio(a, b):
    return a / b if a and b else None


def _targets(kind: str, paths: dict, scaling: dict) -> list[dict]:
    t = []
    d, e = paths.get("score"), paths.get("direct")
    if d and paths.get("spark_udf"):
        t.append(_t("score >= 1.25x spark_udf rows/s", d["x_spark_udf"], 1.25, f"cpu {_f(d['cpu_x_spark_udf'])}x"))
    if d and d.get("model_loads_cold") is not None:
        t.append({"target": "score: model loads per run == Python workers",
                  "value": f"{d['model_loads_cold']} loads, {d['workers_cold']} workers",
                  "met": d["model_loads_cold"] == d["workers_cold"]})
    if e and paths.get("spark_udf"):
        t.append(_t("direct >= 2x spark_udf rows/s", e["x_spark_udf"], 2.0, f"cpu {_f(e['cpu_x_spark_udf'])}x"))
    if e and paths.get("limit"):
        need = 0.75 if kind == "mlp" else 0.85
        t.append(_t(f"direct >= {need}x the in-process limit", e["x_limit"], need, f"cpu {_f(e['cpu_x_limit'])}x"))
    for base, s in scaling.items():
        # flat: the memory a run adds on top of what the worker held grows by < 10% and < 64 MB
        # (absolute peaks also carry what earlier runs of other paths left in the shared workers)
        g1, g10 = s["growth_worker_mb"]
        t.append({"target": f"{base}: peak worker memory flat as tasks grow {s['tasks'][0]:.0f} -> {s['tasks'][1]:.0f}",
                  "value": f"growth {_f(g1, 0)} -> {_f(g10, 0)} MB, peak {_f(s['peak_worker_mb'][0], 0)} -> "
                           f"{_f(s['peak_worker_mb'][1], 0)} MB",
                  "met": g1 is not None and g10 is not None and g10 <= max(g1 * 1.10, g1 + 64)})
    diffs = {n: p["max_abs_diff"] for n, p in paths.items()}
    same = all(v is not None and not math.isnan(v) and v <= TOL for v in diffs.values()) and all(
        p["compared"] == p["expected"] for p in paths.values())
    worst = max((v for v in diffs.values() if v is not None and not math.isnan(v)), default=float("nan"))
    t.append({"target": f"predictions identical (<= {TOL:g}) on every path", "value": f"max |diff| {worst:.1e}",
              "met": same})
    return t


def _t(name, value, need, note="", ok=None):
    met = ok(value) if ok else (value is not None and value >= need)
    return {"target": name, "value": f"{_f(value)}x" + (f" ({note})" if note else ""), "met": bool(met)}


def _f(v, digits=2):
    return "n/a" if v is None else f"{v:.{digits}f}"


def markdown(result: dict) -> str:
    s = result["summary"]
    cfg = result["config"]
    lines = [
        f"# Scoring benchmark: {cfg['rows']:,} rows x {cfg['features']} float64 features, "
        f"{cfg['partitions']} files, {cfg['master']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['cores']} cores, load average {result['machine']['loadavg_start'][0]:.1f} "
        f"at start, {result['machine'].get('loadavg_end', [float('nan')])[0]:.1f} at end; "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
        "",
        f"Input of the Spark paths: {cfg['input']}; columnarReaderBatchSize {cfg['columnarReaderBatchSize']}, "
        f"maxRecordsPerBatch {cfg['maxRecordsPerBatch']}; medians of {cfg['repeats']} interleaved repeats; "
        f"total {result.get('seconds_total', 0) / 60:.1f} min.",
        "",
    ]
    for kind, m in s.items():
        lines += [f"## {kind}", "",
                  "| path | M rows/s | x limit | x spark_udf | CPU s (JVM) | cpu x spark_udf | tasks | model loads "
                  "(cold / timed) | peak worker MB (growth in run) | max abs diff |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, p in m["paths"].items():
            loads = f"{_f(p['model_loads_cold'], 0) if p['model_loads_cold'] is not None else '-'} / " \
                    f"{_f(p['model_loads_timed'], 0) if p['model_loads_timed'] is not None else '-'}"
            diff = "n/a" if p["max_abs_diff"] is None else f"{p['max_abs_diff']:.1e}"
            lines.append(
                f"| {name} | {_f(p['rows_per_s'] and p['rows_per_s'] / 1e6, 3)} | {_f(p['x_limit'])} | "
                f"{_f(p['x_spark_udf'])} | {_f(p['cpu_s'])} ({_f(p['cpu_jvm_s'])}) | {_f(p['cpu_x_spark_udf'])} | "
                f"{_f(p['tasks'], 0)} | {loads} | {_f(p['peak_worker_mb'], 0)} ({_f(p['growth_worker_mb'], 0)}) | {diff} |")
        if m["scaling"]:
            lines += ["", "Partition scaling (same rows, one file per task):", "",
                      "| path | tasks | peak worker MB | growth in run MB | peak ratio | M rows/s |",
                      "|---|---|---|---|---:|---|"]
            for base, sc in m["scaling"].items():
                lines.append(f"| {base} | {_f(sc['tasks'][0], 0)} -> {_f(sc['tasks'][1], 0)} | "
                             f"{_f(sc['peak_worker_mb'][0], 0)} -> {_f(sc['peak_worker_mb'][1], 0)} | "
                             f"{_f(sc['growth_worker_mb'][0], 0)} -> {_f(sc['growth_worker_mb'][1], 0)} | "
                             f"{_f(sc['peak_ratio'])} | {sc['rows_per_s'][0] / 1e6:.3f} -> "
                             f"{sc['rows_per_s'][1] / 1e6:.3f} |")
        lines += ["", "| target | value | met |", "|---|---|---|"]
        for t in m["targets"]:
            lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)
