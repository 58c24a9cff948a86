#!/usr/bin/env python
"""A backfill of many partitions: one spark_udf overwrite against run_job, in ONE process run.

    .venv/bin/python bench/backfill.py                      # 30 partitions x 20,000 rows x 16 features
    .venv/bin/python bench/backfill.py --smoke --dv --breakdown   # tiny; what the smoke test runs

Runs on: the driver; Spark is ``local[2]`` (``--cores``). The issue this measures:
"a backfill of many partitions costs about one write". The input is a Delta
table partitioned by ``ds`` (``--partitions`` consecutive dates, ``--rows`` rows
each, ``id`` + ``--features`` float64 columns), written once under ``--work``
and reused; the model is a scikit-learn Ridge in a sqlite MLflow registry
under ``--work`` (``models:/bench_backfill_ridge_f<N>@champion``). Each run
writes a FRESH output table; the paths are interleaved per repeat (A B C, A B
C, ...) so they share the machine's noise, and medians are reported:

- ``stacks``: the Databricks MLOps Stacks batch job's shape: ``mlflow.pyfunc.spark_udf``
  over the whole table, ``model_id`` and ``timestamp`` columns, ONE
  ``mode("overwrite")`` Delta write of the whole output.
- ``job[tracked]``: ``spark_scoring.run_job`` with its defaults (MLflow tracking and
  drift on, into the same sqlite MLflow), every partition, ``overwrite_partitions``,
  ``bad_rows: fail``: per group of partitions a count and bad-row check (skipped where the
  input's Delta statistics prove the features clean: the scoring pass counts), the scoring,
  one idempotent commit, the reconciliation, the audit rows, the score summaries, PSI and plot.
- ``job[untracked]``: the same job with ``tracking`` and ``drift`` off.
- ``job[untracked,dv]`` (``--dv``): ``job[untracked]`` on a copy of the input with
  deletion vectors (``delta.enableDeletionVectors``, then a DELETE of 1% of the
  rows of every third partition); compared on rows/s with the clean table.

Reported per path: wall seconds (median), the ratio to ``stacks``, seconds per
partition and the overhead per partition over ``stacks``, rows written, and the
``engine_path`` the job's commits recorded. Checked (untimed, after each run):
every path wrote every row, every partition of a job is ``scored``, and the job
paths' predictions equal ``stacks``' (joined on ``id``, max abs diff <= 1e-9).

``--breakdown`` runs ONE tracked job over 3 partitions with the Spark UI on
(an ephemeral port) and cProfile on, then lists every Spark job of that run
(description, duration, the partition it belongs to) from the UI's REST API, the
driver round trips (MLflow client calls, ``spark.sql`` statements such as Delta
history reads, Spark actions) and the top spark_scoring / mlflow / delta functions
by cumulative driver time: where a small partition's seconds go. The UI is on for
the whole process when the flag is given (the paths' figures then include it).

Output: the table on stdout, ``results.json`` and ``results.md`` in ``--out``
(default ``bench/out/backfill-<time>``). See bench/README.md.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import cProfile
import datetime as dt
import functools
import importlib
import inspect
import json
import os
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))  # the checkout, where spark_scoring is not installed

PATHS = ("stacks", "job[tracked]", "job[untracked]")
DV_PATH = "job[untracked,dv]"
MODEL_NAME = "bench_backfill_ridge_f{features}"
FIRST_DAY = dt.date(2026, 1, 1)
MAX_ABS_DIFF = 1e-9
DV_TARGET = 0.90  # deletion vectors: rows/s within 10% of the clean table
GAP_S = 0.2  # breakdown: driver time between calls shown as its own line from this long
PROFILE_ROWS = {"spark_scoring": 25, "mlflow": 10, "delta": 5}  # shown in results.md (json: 40 each)


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--partitions", type=int, default=30, help="input partitions (consecutive ds dates)")
    ap.add_argument("--rows", type=int, default=20_000, help="rows per partition")
    ap.add_argument("--features", type=int, default=16, help="float64 feature columns")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved rounds; medians reported")
    ap.add_argument("--paths", default=",".join(PATHS),
                    help=f"comma list of {', '.join(PATHS)} ('' for none, e.g. with --breakdown)")
    ap.add_argument("--cores", type=int, default=2, help="local[N]")
    ap.add_argument("--work", default=str(HERE / "out" / "backfill-work"), help="data + MLflow registry (reused)")
    ap.add_argument("--out", default=None, help="results folder (default bench/out/backfill-<time>)")
    ap.add_argument("--smoke", action="store_true", help="tiny: 4 partitions x 500 rows, 1 repeat")
    ap.add_argument("--dv", action="store_true", help=f"also {DV_PATH}: the input with deletion vectors")
    ap.add_argument("--breakdown", action="store_true",
                    help="also one tracked job over 3 partitions with the Spark UI and cProfile: "
                         "every Spark job and driver round trip")
    args = ap.parse_args(argv)
    if args.smoke:
        args.partitions, args.rows, args.repeats = 4, 500, 1
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    bad = [p for p in args.paths if p not in PATHS]
    if bad:
        ap.error(f"unknown path(s) {bad}; choose from {', '.join(PATHS)}")
    if args.dv and "job[untracked]" not in args.paths:
        args.paths.append("job[untracked]")  # the DV table is compared with the clean one
    if min(args.partitions, args.rows, args.features, args.repeats, args.cores) < 1:
        ap.error("--partitions, --rows, --features, --repeats and --cores must be >= 1")
    return args


def _quiet_reporter():
    """spark_scoring's Reporter(quiet=True) (the module is moving: try both homes; None: run_job's default)."""
    for module in ("spark_scoring.ops.progress", "spark_scoring.progress"):
        try:
            return importlib.import_module(module).Reporter(quiet=True)
        except (ImportError, AttributeError):
            continue
    return None


# ---------------------------------------------------------------------------
# Inputs: the model in a sqlite MLflow registry, the partitioned Delta table
# ---------------------------------------------------------------------------

def setup_registry(root: Path, features: int) -> str:
    """Point this process at ``<root>/mlflow.db`` (before Spark starts, so the workers
    inherit it) and register the Ridge model once; return ``models:/<name>@champion``."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # the tracked job logs into the default experiment: keep its artifacts under the work folder
    for experiment in ("spark_scoring", "bench_backfill"):
        if client.get_experiment_by_name(experiment) is None:
            client.create_experiment(experiment, artifact_location=(root / "artifacts" / experiment).as_uri())
    name = MODEL_NAME.format(features=features)
    try:
        client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        version = _register_ridge(name, features)
        client.set_registered_model_alias(name, "champion", version)
    return f"models:/{name}@champion"


def _register_ridge(name: str, features: int) -> str:
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.standard_normal((5_000, features))
    y = x @ rng.standard_normal(features) + 0.1 * rng.standard_normal(5_000)
    model = Ridge(alpha=1.0).fit(pd.DataFrame(x, columns=feature_names(features)), y)
    signature = ModelSignature(Schema([ColSpec("double", c) for c in feature_names(features)]),
                               Schema([ColSpec("double", "prediction")]))
    mlflow.set_experiment("bench_backfill")
    with mlflow.start_run(run_name=name):
        info = mlflow.sklearn.log_model(model, name="model", signature=signature,
                                        serialization_format="cloudpickle", registered_model_name=name,
                                        pip_requirements=["scikit-learn"])
    return str(info.registered_model_version)


def feature_names(features: int) -> list[str]:
    return [f"f{i:02d}" for i in range(features)]


@dataclass(frozen=True)
class Inputs:
    """The input tables: ``clean`` (one Parquet file per partition) and, with ``--dv``, ``dv``
    (the same files, hard-linked, with deletion vectors over 1% of the rows of some partitions)."""

    partitions: tuple[str, ...]
    rows: int  # per partition
    features: tuple[str, ...]
    clean: str
    dv: str | None = None
    dv_deleted: dict = field(default_factory=dict)  # {partition: rows deleted}

    @property
    def total_rows(self) -> int:
        return len(self.partitions) * self.rows

    @property
    def dv_rows(self) -> int:
        return self.total_rows - sum(self.dv_deleted.values())


def make_inputs(spark, root: Path, partitions: int, rows: int, features: int, *, dv: bool,
                seed: int = 42) -> Inputs:
    """Write (or reuse, when the sizes match) the clean table, and the DV table when asked."""
    root = root / f"p{partitions}_r{rows}_f{features}_seed{seed}"
    days = tuple((FIRST_DAY + dt.timedelta(days=i)).isoformat() for i in range(partitions))
    inputs = Inputs(days, rows, tuple(feature_names(features)), str(root / "clean"))
    if not (root / "READY.json").exists():
        _write_clean(spark, root, inputs, seed)
    if not dv:
        return inputs
    marker = root / "DV_READY.json"
    if not marker.exists():
        _write_dv(spark, root, inputs)
    deleted = json.loads(marker.read_text())["deleted"]
    return Inputs(days, rows, inputs.features, inputs.clean, str(root / "dv"), deleted)


def _part_file(ds: str) -> str:
    return f"ds={ds}/part-00000.parquet"


def _write_clean(spark, root: Path, inputs: Inputs, seed: int) -> None:
    """pyarrow writes one file per partition (``id`` + features), then ``CONVERT TO DELTA``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    if root.exists():
        shutil.rmtree(root)
    clean = Path(inputs.clean)
    width = len(inputs.features)
    for p, ds in enumerate(inputs.partitions):
        x = np.random.default_rng([seed, p]).standard_normal((inputs.rows, width))
        cols = [pa.array(np.arange(p * inputs.rows, (p + 1) * inputs.rows, dtype=np.int64))]
        cols += [pa.array(np.ascontiguousarray(x[:, j])) for j in range(width)]
        target = clean / _part_file(ds)
        target.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_arrays(cols, ["id", *inputs.features]), str(target), compression="snappy")
    spark.sql(f"CONVERT TO DELTA parquet.`{clean}` PARTITIONED BY (ds STRING)")
    (root / "READY.json").write_text(json.dumps({"partitions": len(inputs.partitions), "rows": inputs.rows,
                                                 "features": width, "seed": seed}))


def dv_partitions(partitions) -> list[str]:
    """The partitions that get deletes: every third one (the first included)."""
    return list(partitions)[::3]


def _write_dv(spark, root: Path, inputs: Inputs) -> None:
    """Hard-link the clean files into ``dv``, convert, enable deletion vectors, DELETE ~1% of rows
    (``id % 100 == 7``) in every third partition; fail unless the DELETE wrote deletion vectors."""
    dv = root / "dv"
    if dv.exists():
        shutil.rmtree(dv)
    for ds in inputs.partitions:
        (dv / _part_file(ds)).parent.mkdir(parents=True)
        os.link(Path(inputs.clean) / _part_file(ds), dv / _part_file(ds))
    table = f"delta.`{dv}`"
    spark.sql(f"CONVERT TO DELTA parquet.`{dv}` PARTITIONED BY (ds STRING)")
    spark.sql(f"ALTER TABLE {table} SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    chosen = dv_partitions(inputs.partitions)
    listed = ", ".join(f"'{d}'" for d in chosen)
    spark.sql(f"DELETE FROM {table} WHERE ds IN ({listed}) AND id % 100 = 7")
    metrics = spark.sql(f"DESCRIBE HISTORY {table} LIMIT 1").head()["operationMetrics"]
    if int(metrics.get("numDeletionVectorsAdded", 0)) == 0:
        raise SystemExit(f"--dv: the DELETE wrote no deletion vectors ({metrics})")
    counts = spark.read.format("delta").load(str(dv)).groupBy("ds").count().collect()
    deleted = {r["ds"]: inputs.rows - r["count"] for r in counts if r["count"] != inputs.rows}
    (root / "DV_READY.json").write_text(json.dumps({"deleted": deleted, "metrics": metrics}))


# ---------------------------------------------------------------------------
# The paths
# ---------------------------------------------------------------------------

def run_stacks(spark, src: str, out: str, uri: str, features) -> None:
    """MLOps Stacks' batch job: spark_udf over the whole table (the model is fetched and
    loaded inside the timing, as each run of that job does), then ONE overwrite."""
    import mlflow.pyfunc
    import pyspark.sql.functions as F

    udf = mlflow.pyfunc.spark_udf(spark, uri, result_type="double", env_manager="local")
    df = spark.read.format("delta").load(src)
    scored = df.withColumn("prediction", udf(*[F.col(c) for c in features]))
    scored = scored.withColumn("model_id", F.lit(uri)).withColumn("timestamp", F.current_timestamp())
    scored.write.format("delta").mode("overwrite").save(out)


def job_config(src: str, out: str, uri: str, *, tracked: bool, partitions=None,
               partitions_per_commit: int | None = None) -> dict:
    """The backfill job: every partition (or ``partitions``), overwrite_partitions, bad_rows fail;
    tracked = spark_scoring's defaults (tracking and drift on), else both off;
    ``partitions_per_commit`` None: the default grouping."""
    cfg = {
        "model": uri,
        "input": {"table": src, "partition_by": "ds"},
        "output": {"table": out, "mode": "overwrite_partitions"},
        "bad_rows": "fail",
    }
    if partitions_per_commit is not None:
        cfg["output"]["partitions_per_commit"] = partitions_per_commit
    if partitions is not None:
        cfg["input"]["partitions"] = list(partitions)
    if not tracked:
        cfg["tracking"] = {"enabled": False}
        cfg["drift"] = {"enabled": False}
    return cfg


def run_backfill_job(spark, cfg: dict):
    import spark_scoring as ss

    return ss.run_job(cfg, spark=spark, reporter=_quiet_reporter())


def run_path(spark, name: str, inputs: Inputs, uri: str, out: str) -> dict:
    """Time one path end to end (wall clock); returns its wall seconds and, for jobs, each
    partition's status, rows and ``PartitionResult.seconds``."""
    sc = spark.sparkContext
    src = inputs.dv if name == DV_PATH else inputs.clean
    sc.setJobDescription(f"bench {name}" if name == "stacks" else None)  # jobs label their own work
    t0 = time.perf_counter()
    if name == "stacks":
        run_stacks(spark, src, out, uri, inputs.features)
        result = None
    else:
        result = run_backfill_job(spark, job_config(src, out, uri, tracked=name == "job[tracked]"))
    wall = time.perf_counter() - t0
    sc.setJobDescription(f"bench check {name}")
    run = {"wall_s": wall}
    if result is not None:
        run["partitions"] = [{"partition": p.partition, "status": p.status, "rows_scored": p.rows_scored,
                              "seconds": p.seconds} for p in result.partitions]
        run["rows_scored"] = result.rows_scored
    return run


# ---------------------------------------------------------------------------
# Checks (untimed)
# ---------------------------------------------------------------------------

def verify(spark, name: str, run: dict, inputs: Inputs, out: str) -> None:
    """Every row written; every partition of a job ``scored``; else stop the benchmark."""
    expected = inputs.dv_rows if name == DV_PATH else inputs.total_rows
    run["rows"] = spark.read.format("delta").load(out).count()
    if run["rows"] != expected:
        raise SystemExit(f"{name}: wrote {run['rows']} rows, expected {expected}")
    if "partitions" in run:
        statuses = Counter(p["status"] for p in run["partitions"])
        if statuses != Counter({"scored": len(inputs.partitions)}):
            raise SystemExit(f"{name}: partition statuses {dict(statuses)}, expected "
                             f"{len(inputs.partitions)} scored")
        if run["rows_scored"] != expected:
            raise SystemExit(f"{name}: run_job reports {run['rows_scored']} rows scored, expected {expected}")


def engine_paths(spark, out: str) -> dict[str, str]:
    """``{partition: engine_path}`` from the userMetadata of the job's commits (a group commit
    lists its partitions under ``partitions``)."""
    found = {}
    for row in spark.sql(f"DESCRIBE HISTORY delta.`{out}`").select("userMetadata").collect():
        meta = json.loads(row["userMetadata"]) if row["userMetadata"] else {}
        if "engine_path" in meta:
            for part in (list(meta["partitions"]) if meta.get("partitions") else [meta.get("partition")]):
                found.setdefault(part, meta["engine_path"])
    return found


def compare(spark, out: str, reference: str) -> dict:
    """Predictions of ``out`` against ``reference`` (stacks), joined on ``id``."""
    import pyspark.sql.functions as F

    a = spark.read.format("delta").load(out).select("id", F.col("prediction").alias("a"))
    b = spark.read.format("delta").load(reference).select("id", F.col("prediction").alias("b"))
    row = a.join(b, "id").agg(
        F.count("*").alias("joined"),
        F.max(F.abs(F.col("a") - F.col("b"))).alias("max_abs_diff"),
        F.sum(F.when(F.col("a").isNull() | F.col("b").isNull(), 1).otherwise(0)).alias("nulls"),
    ).head()
    return {"joined": int(row["joined"]), "nulls": int(row["nulls"] or 0),
            "max_abs_diff": None if row["max_abs_diff"] is None else float(row["max_abs_diff"])}


# ---------------------------------------------------------------------------
# The side-by-side rounds
# ---------------------------------------------------------------------------

def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def run_rounds(spark, inputs: Inputs, uri: str, scratch: Path, names: list[str], repeats: int) -> dict:
    """``repeats`` interleaved rounds of every path, each into a fresh output table; the first
    round's outputs are kept for the prediction check, later ones removed once counted."""
    runs = {n: [] for n in names}
    kept, paths_used = {}, {}
    n_parts = len(inputs.partitions)
    for r in range(repeats):
        for name in names:
            out = scratch / f"r{r}-{_slug(name)}" / "scores"
            run = run_path(spark, name, inputs, uri, str(out))
            verify(spark, name, run, inputs, str(out))
            runs[name].append(run)
            print(f"  [r{r}] {name:18s} {run['wall_s']:7.2f}s  {run['wall_s'] / n_parts:6.3f} s/partition  "
                  f"{run['rows']:,} rows", flush=True)
            if r == 0:
                kept[name] = str(out)
                if name != "stacks":
                    paths_used[name] = engine_paths(spark, str(out))
            else:
                shutil.rmtree(out.parent, ignore_errors=True)
    checks = {}
    if "stacks" in kept:
        for name, out in kept.items():
            if name != "stacks":
                checks[name] = compare(spark, out, kept["stacks"])
                expected = inputs.dv_rows if name == DV_PATH else inputs.total_rows
                c = checks[name]
                if c["joined"] != expected or c["nulls"] or c["max_abs_diff"] is None \
                        or c["max_abs_diff"] > MAX_ABS_DIFF:
                    raise SystemExit(f"{name}: predictions differ from stacks: {c} (expected {expected} "
                                     f"joined rows, max abs diff <= {MAX_ABS_DIFF})")
    return {"runs": runs, "checks": checks, "engine_path": paths_used}


def summarise(rounds: dict, inputs: Inputs) -> dict:
    """Medians and ratios per path (and the DV comparison when it ran)."""
    n = len(inputs.partitions)
    med = {name: statistics.median(r["wall_s"] for r in runs) for name, runs in rounds["runs"].items()}
    base = med.get("stacks")
    table = {}
    for name, wall in med.items():
        table[name] = {
            "wall_s": wall,
            "x_stacks": None if base is None else wall / base,
            "s_per_partition": wall / n,
            "overhead_per_partition_s": None if base is None or name == "stacks" else (wall - base) / n,
            "rows": rounds["runs"][name][0]["rows"],
            "max_abs_diff": rounds["checks"].get(name, {}).get("max_abs_diff"),
            "engine_path": dict(Counter(rounds["engine_path"].get(name, {}).values())),
        }
    out = {"median": table}
    if DV_PATH in rounds["runs"] and "job[untracked]" in rounds["runs"]:
        out["dv"] = _dv_summary(rounds["runs"]["job[untracked]"], rounds["runs"][DV_PATH], inputs)
    return out


def _rows_per_s(runs: list[dict], only=None) -> tuple[float, float]:
    """(rows/s over the job's wall, rows/s over its partitions' own seconds), medians over repeats."""
    wall, scoring = [], []
    for run in runs:
        parts = [p for p in run["partitions"] if only is None or p["partition"] in only]
        rows = sum(p["rows_scored"] for p in parts)
        wall.append(run["rows_scored"] / run["wall_s"])
        scoring.append(rows / max(sum(p["seconds"] for p in parts), 1e-9))
    return statistics.median(wall), statistics.median(scoring)


def _dv_summary(clean_runs: list[dict], dv_runs: list[dict], inputs: Inputs) -> dict:
    touched = set(inputs.dv_deleted)
    clean_wall, clean_scoring = _rows_per_s(clean_runs)
    dv_wall, dv_scoring = _rows_per_s(dv_runs)
    _, clean_touched = _rows_per_s(clean_runs, touched)
    _, dv_touched = _rows_per_s(dv_runs, touched)
    return {
        "partitions_with_deletes": sorted(touched), "rows_deleted": sum(inputs.dv_deleted.values()),
        "rows_per_s": {
            "job wall": {"clean": clean_wall, "dv": dv_wall, "dv_over_clean": dv_wall / clean_wall},
            "partition scoring (sum of PartitionResult.seconds)":
                {"clean": clean_scoring, "dv": dv_scoring, "dv_over_clean": dv_scoring / clean_scoring},
            "partitions with deletes only":
                {"clean": clean_touched, "dv": dv_touched, "dv_over_clean": dv_touched / clean_touched},
        },
        "target": DV_TARGET,
        "within_target": dv_scoring / clean_scoring >= DV_TARGET,
    }


# ---------------------------------------------------------------------------
# --breakdown: every Spark job and driver round trip of one tracked job
# ---------------------------------------------------------------------------

class RoundTrips:
    """Driver calls during the breakdown job, outermost only, with wall-clock start/end
    (``time.time()``, the clock Spark's UI uses) and the line that made them: every public
    ``MlflowClient`` method (tracking store and registry round trips), ``SparkSession.sql``
    (Delta commands such as ``DESCRIBE HISTORY``), the DataFrame actions and
    ``DataFrameWriter.save``. Spark jobs keep the caller's line as their name (call site)."""

    ACTIONS = ("collect", "count", "toPandas", "first", "head", "take", "toArrow", "toLocalIterator")

    def __init__(self):
        self.events: list[dict] = []
        self._local = threading.local()
        self._patched: list[tuple[type, str, object]] = []
        self._sc = None

    def install(self, spark) -> None:
        from mlflow.tracking import MlflowClient
        from pyspark.sql.readwriter import DataFrameWriter

        self._sc = spark.sparkContext
        for name, fn in list(vars(MlflowClient).items()):
            if not name.startswith("_") and inspect.isfunction(fn):
                self._wrap(MlflowClient, name, "mlflow")
        self._wrap(type(spark), "sql", "sql")
        frame = type(spark.range(1))  # the classic DataFrame class (no job runs)
        for cls in frame.__mro__[:-1]:  # and its bases / mixins (toPandas), not object
            for name in self.ACTIONS:
                if name in vars(cls) and inspect.isfunction(vars(cls)[name]):
                    self._wrap(cls, name, "action", owner_label="DataFrame")
        self._wrap(DataFrameWriter, "save", "action", owner_label="DataFrameWriter")

    def uninstall(self) -> None:
        for owner, name, original in reversed(self._patched):
            setattr(owner, name, original)
        self._patched.clear()

    def _wrap(self, owner: type, name: str, kind: str, owner_label: str | None = None) -> None:
        if any(o is owner and n == name for o, n, _ in self._patched):
            return
        original = vars(owner)[name]
        local, events, sc = self._local, self.events, self._sc

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if getattr(local, "depth", 0):
                return original(*args, **kwargs)
            caller = sys._getframe(1)
            where = f"{'/'.join(Path(caller.f_code.co_filename).parts[-2:])}:{caller.f_lineno}"
            local.depth = 1
            start = time.time()
            try:
                with _call_site(sc, f"{name} at {where}") if kind != "mlflow" else contextlib.nullcontext():
                    return original(*args, **kwargs)
            finally:
                local.depth = 0
                label = _call_label(kind, owner_label or owner.__name__, name, args[1:], kwargs)
                events.append({"kind": kind, "what": label, "at": where, "start": start, "end": time.time()})

        setattr(owner, name, timed)
        self._patched.append((owner, name, original))


@contextlib.contextmanager
def _call_site(sc, text: str):
    """Name the Spark jobs of the block ``text`` (what PySpark's SCCallSiteSync does with the first
    frame outside pyspark, which would otherwise be the timing wrapper)."""
    from pyspark.traceback_utils import SCCallSiteSync

    if SCCallSiteSync._spark_stack_depth == 0:
        sc._jsc.setCallSite(text)
    SCCallSiteSync._spark_stack_depth += 1
    try:
        yield
    finally:
        SCCallSiteSync._spark_stack_depth -= 1
        if SCCallSiteSync._spark_stack_depth == 0:
            sc._jsc.setCallSite(None)


_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


_LONG_PATH = re.compile(r"/(?:[^\s/`'\"]+/)+([^\s/`'\"]+)")


def _short_paths(text: str) -> str:
    """Long local paths in labels and SQL shown by their last component."""
    return _LONG_PATH.sub(r"…/\1", text)


def _call_label(kind: str, owner: str, name: str, args: tuple, kwargs: dict) -> str:
    if kind == "sql":
        statement = " ".join(str(args[0] if args else kwargs.get("sqlQuery", "")).split())
        return "spark.sql " + _short_paths(statement)[:90]
    if kind == "action":
        detail = f"'{_short_paths(str(args[0] if args else kwargs.get('path', '')))}'" if name == "save" else ""
        return f"{owner}.{name}({detail})"
    if name == "log_batch":
        counts = {k: len(kwargs.get(k) or (args[i + 1] if len(args) > i + 1 else []) or [])
                  for i, k in enumerate(("metrics", "params", "tags"))}
        return "mlflow log_batch(" + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + ")"
    shown = [a for a in args if isinstance(a, str) and not _RUN_ID.match(a)][:3]
    if name in ("log_text", "log_dict"):
        shown = [str(args[2] if len(args) > 2 else kwargs.get("artifact_file", ""))]
    elif name in ("log_artifact", "log_artifacts"):
        shown = [Path(str(args[1])).name if len(args) > 1 else ""] + [str(a) for a in args[2:3]]
    return f"mlflow {name}(" + ", ".join(_short_paths(s)[:48] for s in shown) + ")"


def _epoch(text: str | None) -> float | None:
    """Spark UI times (``2026-12-01T19:41:51.321GMT``) as epoch seconds."""
    if not text:
        return None
    return dt.datetime.strptime(text.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def ui_jobs(spark, since: float, timeout: float = 30.0) -> list[dict]:
    """The application's Spark jobs submitted at or after ``since``, from the UI's REST API
    (``/api/v1/applications/<app id>/jobs``), once the listener has caught up."""
    sc = spark.sparkContext
    if not sc.uiWebUrl:
        raise SystemExit("--breakdown: the Spark UI is off (spark.ui.enabled is a static setting: "
                         "the session must start with it)")
    port = sc.uiWebUrl.rstrip("/").rsplit(":", 1)[1]
    urls = [f"http://localhost:{port}", sc.uiWebUrl.rstrip("/")]
    last, deadline = None, time.time() + timeout
    while True:
        raw = None
        for base in urls:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/applications/{sc.applicationId}/jobs", timeout=10) as r:
                    raw = json.loads(r.read())
                break
            except OSError:
                continue
        if raw is None:
            raise SystemExit(f"--breakdown: the Spark UI REST API answers on none of {urls}")
        jobs = [{"id": j["jobId"], "description": j.get("description") or "", "name": j.get("name") or "",
                 "status": j.get("status"), "tasks": j.get("numTasks"),
                 "start": _epoch(j.get("submissionTime")), "end": _epoch(j.get("completionTime"))}
                for j in raw]
        jobs = sorted((j for j in jobs if j["start"] is not None and j["start"] >= since - 0.002),
                      key=lambda j: (j["start"], j["id"]))
        state = (len(jobs), sum(j["end"] is not None for j in jobs))
        if (state == last and state[0] == state[1]) or time.time() > deadline:
            return jobs
        last = state
        time.sleep(0.5)


def _union(intervals) -> float:
    """Seconds covered by a set of (start, end) intervals."""
    total, edge = 0.0, None
    for start, end in sorted(intervals):
        if edge is None or start > edge:
            total += end - start
            edge = end
        elif end > edge:
            total += end - edge
            edge = end
    return total


def _windows(jobs: list[dict], parts, t0: float, t1: float) -> list[tuple[str, float, float]]:
    """(label, start, end): run setup, then each partition from its first job labelled
    ``ds=<p> (count)`` (spark_scoring's label; else its first job labelled ``ds=<p> (...)``, the
    score+write where the scoring pass counts) up to the next one; the last runs to the end."""
    starts = []
    for p in parts:
        marks = [j["start"] for j in jobs if f"={p} (count)" in j["description"]] or \
                [j["start"] for j in jobs if f"={p} (" in j["description"]]
        if marks:
            starts.append((min(marks), f"ds={p}"))
    starts.sort()
    if not starts:
        return [("whole run", t0, t1)]
    out = [("run setup", t0, starts[0][0])]
    for i, (start, label) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else t1
        out.append((label + (" + run finish" if i + 1 == len(starts) else ""), start, end))
    return out


def _window_of(t: float, windows) -> str:
    i = bisect.bisect_right([w[1] for w in windows], t) - 1
    return windows[max(i, 0)][0]


def _job_label(job: dict) -> str:
    desc = _short_paths(job["description"]) or "(no description)"
    return f"job {job['id']}: {desc} [{_short_paths(job['name'])[:60]}]"


def profile_top(prof: cProfile.Profile, top: int = 40) -> dict[str, list[dict]]:
    """The spark_scoring, mlflow and delta (delta-spark's Python API) functions with the most
    cumulative driver seconds; each file counts for the first group whose folder it is in."""
    groups = {"spark_scoring": "/spark_scoring/", "mlflow": "/mlflow/", "delta": "/delta/"}
    found = {g: [] for g in groups}
    for (filename, line, func), (_cc, ncalls, own, cum, _callers) in pstats.Stats(prof).stats.items():
        path = filename.replace("\\", "/")
        group = next((g for g, needle in groups.items() if needle in path), None)
        if group is not None:
            rel = path[path.rindex(groups[group]) + 1:]
            found[group].append({"function": f"{rel}:{line}({func})", "ncalls": ncalls, "cum_s": cum, "own_s": own})
    return {g: sorted(rows, key=lambda r: -r["cum_s"])[:top] for g, rows in found.items()}


def breakdown(spark, inputs: Inputs, uri: str, scratch: Path) -> dict:
    """One tracked job over the first 3 partitions (one commit each), under cProfile, with the round trips
    recorded; then its Spark jobs from the UI, attributed to partitions by time window."""
    parts = list(inputs.partitions[:3])
    # one commit per partition: the breakdown is of one partition's fixed costs
    cfg = job_config(inputs.clean, str(scratch / "breakdown" / "scores"), uri, tracked=True, partitions=parts,
                     partitions_per_commit=1)
    trips, prof = RoundTrips(), cProfile.Profile()
    spark.sparkContext.setJobDescription(None)  # jobs spark_scoring does not label show as such
    trips.install(spark)
    t0 = time.time()
    try:
        prof.enable()
        try:
            result = run_backfill_job(spark, cfg)
        finally:
            prof.disable()
    finally:
        t1 = time.time()
        trips.uninstall()
    if Counter(p.status for p in result.partitions) != Counter({"scored": len(parts)}):
        raise SystemExit(f"--breakdown: partitions {[(p.partition, p.status) for p in result.partitions]}")
    jobs = ui_jobs(spark, t0)
    jobs = [j for j in jobs if j["start"] <= t1]
    windows = _windows(jobs, parts, t0, t1)
    for item in jobs + trips.events:
        item["window"] = _window_of(item["start"], windows)
    per_window = []
    for label, start, end in windows:
        mine = [j for j in jobs if j["window"] == label and j["end"] is not None]
        calls = [e for e in trips.events if e["window"] == label]
        covered = _union([(j["start"], j["end"]) for j in mine] + [(e["start"], e["end"]) for e in calls])
        per_window.append({
            "window": label, "seconds": end - start, "spark_jobs": len(mine),
            "spark_job_s": _union([(j["start"], j["end"]) for j in mine]),
            "mlflow_calls": sum(e["kind"] == "mlflow" for e in calls),
            "mlflow_s": sum(e["end"] - e["start"] for e in calls if e["kind"] == "mlflow"),
            "sql_calls": sum(e["kind"] == "sql" for e in calls),
            "sql_s": sum(e["end"] - e["start"] for e in calls if e["kind"] == "sql"),
            "outside_s": max(0.0, (end - start) - covered),
        })
    labels = [w[0] for w in windows]
    focus = f"ds={parts[1]}" if len(parts) > 2 and f"ds={parts[1]}" in labels else labels[-1]
    return {
        "partitions": parts, "wall_s": t1 - t0, "run_job_seconds": result.seconds,
        "spark_ui": spark.sparkContext.uiWebUrl, "application_id": spark.sparkContext.applicationId,
        "spark_job_s": _union([(j["start"], j["end"]) for j in jobs if j["end"] is not None]),
        "jobs": jobs, "round_trips": sorted(trips.events, key=lambda e: e["start"]),
        "windows": per_window, "focus": focus,
        "focus_lines": _focus_lines(jobs, trips.events, windows, focus),
        "profile": profile_top(prof),
    }


def _focus_lines(jobs, events, windows, focus: str) -> list[dict]:
    """One line per Spark job and round trip of one partition, in time order."""
    start = next(w[1] for w in windows if w[0] == focus)
    lines = []
    calls = [e for e in events if e["window"] == focus]
    for e in calls:
        lines.append({"at": e["start"] - start, "s": e["end"] - e["start"], "kind": e["kind"],
                      "what": f"{e['what']} ← {e['at']}"})
    for j in jobs:
        if j["window"] != focus:
            continue
        inside = any(e["start"] <= j["start"] and (j["end"] or j["start"]) <= e["end"] + 0.002 for e in calls)
        lines.append({"at": j["start"] - start, "s": None if j["end"] is None else j["end"] - j["start"],
                      "kind": "spark job", "what": ("↳ " if inside else "") + _job_label(j)})
    lines.sort(key=lambda x: (x["at"], x["kind"] == "spark job"))
    end = next(w[2] for w in windows if w[0] == focus) - start
    gaps, edge = [], 0.0
    for x in lines + [{"at": end, "s": 0.0}]:
        if x["at"] - edge >= GAP_S:
            gaps.append({"at": edge, "s": x["at"] - edge, "kind": "driver",
                         "what": "no Spark job or round trip (planning, Delta snapshots, plots: see the profile)"})
        edge = max(edge, x["at"] + (x["s"] or 0.0))
    return sorted(lines + gaps, key=lambda x: (x["at"], x["kind"] == "spark job"))


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

def _f(value, fmt: str, none: str = "-") -> str:
    return none if value is None else format(value, fmt)


def render(report: dict) -> str:
    c = report["config"]
    lines = [(f"# Backfill: {c['partitions']} partitions x {c['rows']:,} rows x {c['features']} features, "
              f"local[{c['cores']}]"), "",
             (f"Command: `{report['command']}`; medians of {c['repeats']} interleaved repeat(s); load average "
              f"{report['loadavg_start'][0]:.1f} at start, {report['loadavg_end'][0]:.1f} at end; Spark UI "
              f"{'on (--breakdown)' if c['breakdown'] else 'off'}."), ""]
    summary = report.get("summary")
    if summary:
        lines += [("| path | wall s | wall / stacks | s / partition | overhead / partition s | rows written | "
                   "max abs diff to stacks | engine_path |"), "|---|---:|---:|---:|---:|---:|---:|---|"]
        for name, m in summary["median"].items():
            used = ", ".join(f"{k if len(k) <= 60 else k[:59] + '…'} x{v}" for k, v in m["engine_path"].items()) or "-"
            lines.append(f"| {name} | {m['wall_s']:.2f} | {_f(m['x_stacks'], '.2f')} | {m['s_per_partition']:.3f} | "
                         f"{_f(m['overhead_per_partition_s'], '+.3f')} | {m['rows']:,} | "
                         f"{_f(m['max_abs_diff'], '.1e')} | {used} |")
        lines += ["", ("overhead / partition = (path - stacks) / partitions; every job partition `scored`; "
                       f"predictions joined on `id` (max abs diff <= {MAX_ABS_DIFF:g})."), ""]
        dv = summary.get("dv")
        if dv:
            lines += [(f"## Deletion vectors (`--dv`): {dv['rows_deleted']:,} rows deleted in "
                       f"{len(dv['partitions_with_deletes'])} partitions"), "",
                      "| rows/s of job[untracked] | clean | with DVs | DVs / clean |", "|---|---:|---:|---:|"]
            for label, v in dv["rows_per_s"].items():
                lines.append(f"| {label} | {v['clean']:,.0f} | {v['dv']:,.0f} | {v['dv_over_clean']:.2f} |")
            lines += ["", (f"Target: partition scoring with DVs within {1 - dv['target']:.0%} of the clean table: "
                           f"**{'met' if dv['within_target'] else 'NOT met'}**."), ""]
    b = report.get("breakdown")
    if b:
        lines += _render_breakdown(b)
    return "\n".join(lines)


def _render_breakdown(b: dict) -> list[str]:
    lines = [f"## Breakdown (`--breakdown`): one tracked job over {', '.join(b['partitions'])}", "",
             (f"Wall {b['wall_s']:.2f} s under cProfile (run_job's own {b['run_job_seconds']:.2f} s); "
              f"{len(b['jobs'])} Spark jobs covering {b['spark_job_s']:.2f} s; "
              f"driver time outside Spark jobs {b['wall_s'] - b['spark_job_s']:.2f} s."), "",
             ("| window | s | Spark jobs | in Spark jobs s | MLflow calls | MLflow s | spark.sql | spark.sql s | "
              "outside jobs and round trips s |"), "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for w in b["windows"]:
        lines.append(f"| {w['window']} | {w['seconds']:.2f} | {w['spark_jobs']} | {w['spark_job_s']:.2f} | "
                     f"{w['mlflow_calls']} | {w['mlflow_s']:.2f} | {w['sql_calls']} | {w['sql_s']:.2f} | "
                     f"{w['outside_s']:.2f} |")
    lines += ["", f"### One line per Spark job and round trip: {b['focus']}", "",
              "| +s | s | kind | what |", "|---:|---:|---|---|"]
    for x in b["focus_lines"]:
        lines.append(f"| {x['at']:.3f} | {_f(x['s'], '.3f')} | {x['kind']} | {x['what'].replace('|', '/')} |")
    lines += ["", "### Every Spark job of the run", "", "| job | window | s | tasks | description | name |",
              "|---:|---|---:|---:|---|---|"]
    for j in b["jobs"]:
        dur = None if j["end"] is None else j["end"] - j["start"]
        lines.append(f"| {j['id']} | {j['window']} | {_f(dur, '.3f')} | {j['tasks']} | "
                     f"{_short_paths(j['description']) or '(none)'} | {_short_paths(j['name'])[:70]} |")
    lines += ["", "### Top driver functions (cProfile, cumulative seconds over the whole run)", ""]
    for group, rows in b["profile"].items():
        if not rows:
            continue
        lines += [f"{group}:", "", "| function | calls | cumulative s | own s |", "|---|---:|---:|---:|"]
        lines += [f"| `{r['function']}` | {r['ncalls']} | {r['cum_s']:.3f} | {r['own_s']:.3f} |"
                  for r in rows[:PROFILE_ROWS[group]]]
        lines.append("")
    return lines


# ---------------------------------------------------------------------------

def session(args):
    import spark_scoring as ss

    conf = {"spark.sql.shuffle.partitions": str(args.cores), "spark.default.parallelism": str(args.cores),
            "spark.driver.memory": "2g"}
    if args.breakdown:  # static settings: the session must start with them
        conf.update({"spark.ui.enabled": "true", "spark.ui.port": "0"})
    return ss.get_spark("spark_scoring_bench_backfill", master=f"local[{args.cores}]", conf=conf)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    out_dir = Path(args.out or HERE / "out" / f"backfill-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    uri = setup_registry(work / "mlflow", args.features)  # before Spark: the workers inherit the env
    spark = session(args)
    inputs = make_inputs(spark, work / "data", args.partitions, args.rows, args.features, dv=args.dv)
    names = list(args.paths) + ([DV_PATH] if args.dv else [])
    report = {"command": " ".join([".venv/bin/python", "bench/backfill.py", *(sys.argv[1:] if argv is None else argv)]),
              "config": {"partitions": args.partitions, "rows": args.rows, "features": args.features,
                         "repeats": args.repeats, "cores": args.cores, "paths": names, "dv": args.dv,
                         "breakdown": args.breakdown, "model": uri, "input": inputs.clean, "dv_input": inputs.dv,
                         "dv_deleted": inputs.dv_deleted},
              "loadavg_start": os.getloadavg()}
    scratch = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
    try:
        if names:
            rounds = run_rounds(spark, inputs, uri, scratch, names, args.repeats)
            report["runs"], report["checks"] = rounds["runs"], rounds["checks"]
            report["summary"] = summarise(rounds, inputs)
        if args.breakdown:
            report["breakdown"] = breakdown(spark, inputs, uri, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report["loadavg_end"] = os.getloadavg()
    text = render(report)
    print(text)
    (out_dir / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "results.md").write_text(text + "\n")
    print(f"results: {out_dir / 'results.md'}")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
