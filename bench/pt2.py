#!/usr/bin/env python
"""MLflow 3's default torch format (pt2, a ``torch.export`` program) against pickle, side by side.

    .venv/bin/python bench/pt2.py --rows 2000000 --partitions 8
    .venv/bin/python bench/pt2.py --smoke

The same torch MLP 32-256-256-1 (bench/_setup.py's ``bench_mlp`` weights) logged twice,
as ``serialization_format="pickle"`` and as MLflow 3's default ``pt2``, scored over the
same Delta table by spark_scoring's two paths (``score()``: the Arrow UDF; ``direct``:
the direct Arrow scan), interleaved per round (``--repeats``, medians), each run
writing to the ``noop`` sink after an untimed warm-up run that loads both models into
the workers. Reports rows/s and pt2 / pickle per path; checks both formats give the
same predictions (within 1e-6) on a sample.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

import _setup as S  # noqa: E402


def log_models(root: Path) -> dict[str, str]:
    """Register ``bench_mlp_pickle`` and ``bench_mlp_pt2`` (the same trained MLP) in ``root``'s registry."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    S.setup_models(root)  # the registry, the experiment and the data the other benches use
    client = MlflowClient()
    existing = {m.name for m in client.search_registered_models()}
    uris = {"pickle": "models:/bench_mlp_pickle/1", "pt2": "models:/bench_mlp_pt2/1"}
    if {"bench_mlp_pickle", "bench_mlp_pt2"} <= existing:
        return uris
    net = S._train_mlp()
    x = np.random.default_rng(0).standard_normal((16, S.N_FEATURES)).astype(np.float32)
    with mlflow.start_run(run_name="bench_mlp_pickle"):
        mlflow.pytorch.log_model(
            net, name="model", registered_model_name="bench_mlp_pickle", pip_requirements=["torch"],
            serialization_format="pickle",
            signature=ModelSignature(Schema([ColSpec("float", f) for f in S.FEATURES]),
                                     Schema([ColSpec("double", "prediction")])))
    with mlflow.start_run(run_name="bench_mlp_pt2"):  # MLflow 3's default: pt2, from a tensor input example
        mlflow.pytorch.log_model(net, name="model", registered_model_name="bench_mlp_pt2",
                                 pip_requirements=["torch"], input_example=x)
    return uris


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=str(HERE / "out" / "work"))
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.partitions, args.repeats = 20_000, 2, 1
    import spark_scoring as ss
    from spark_scoring.session import get_spark

    work = Path(args.work)
    uris = log_models(work)
    spark = get_spark("bench_pt2", master="local[2]")
    ds = S.make_dataset(spark, work / f"data_{args.rows}_{args.partitions}", args.rows, args.partitions)
    models = {fmt: ss.load_model(uri) for fmt, uri in uris.items()}
    assert models["pt2"].format == "pt2" and models["pickle"].format == "pickle"
    feats = list(S.FEATURES)

    def build(fmt: str, path: str):
        m = models[fmt]
        if path == "score":
            df = spark.read.format("delta").load(ds.delta).select("id", *feats)
            return ss.score(df, m, features=feats, lineage=False).select("id", "prediction")
        return ss.score_table_direct(spark, ds.delta, m, features=feats, keep_columns=["id"], lineage=False)

    runs = {(fmt, path): [] for fmt in models for path in ("score", "direct")}
    plans = {key: build(*key) for key in runs}
    sample = {fmt: {r.id: r.prediction for r in plans[(fmt, "score")].where("id % 997 = 0").collect()}
              for fmt in models}  # untimed: loads both models into the workers
    diff = max(abs(sample["pt2"][k] - sample["pickle"][k]) for k in sample["pickle"])
    for key, df in plans.items():
        df.write.format("noop").mode("overwrite").save()  # warm-up
    for _round in range(args.repeats):
        for key, df in plans.items():
            t0 = time.perf_counter()
            df.write.format("noop").mode("overwrite").save()
            runs[key].append(time.perf_counter() - t0)
    med = {key: statistics.median(v) for key, v in runs.items()}
    lines = ["| path | pickle M rows/s | pt2 M rows/s | pt2 / pickle |", "|---|---:|---:|---:|"]
    result = {"rows": args.rows, "files": args.partitions, "repeats": args.repeats, "max_abs_diff": diff,
              "seconds": {f"{f}/{p}": v for (f, p), v in runs.items()}}
    for path in ("score", "direct"):
        a, b = args.rows / med[("pickle", path)] / 1e6, args.rows / med[("pt2", path)] / 1e6
        lines.append(f"| {path} | {a:.3f} | {b:.3f} | {b / a:.2f} |")
        result[f"ratio_{path}"] = b / a
    print("\n".join(lines))
    print(f"max abs diff pt2 vs pickle: {diff:.2e}")
    out = Path(args.out) if args.out else HERE / "out" / f"pt2-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    (out / "results.md").write_text("\n".join(lines) + "\n")
    assert diff <= 1e-6, diff
    return 0


if __name__ == "__main__":
    sys.exit(main())
