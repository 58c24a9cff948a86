"""The five scoring paths the benchmark runs side by side.

Runs on: the driver of ``bench/run.py``; the functions named ``*_worker`` /
the closures built here run in Spark's Python workers (pickled by value, so
this module need not be importable there).

Every Spark path returns a DataFrame of ``id``, ``prediction`` (plus lineage
columns for spark_scoring); the timed action is
``df.write.format("noop").mode("overwrite").save()``.

a ``limit``        pyarrow reads the Parquet files, numpy + the model, 2 threads, no Spark
b ``spark_udf``    ``mlflow.pyfunc.spark_udf`` (env_manager="local")
c ``predict_batch_udf``  ``pyspark.ml.functions.predict_batch_udf``, native model, struct of 32 columns
d ``score``        ``spark_scoring.score()``, the default engine path
e ``direct``       ``spark_scoring.direct_scan.score_table_direct`` (pyarrow reads the files
                   inside the Python tasks)
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

PATHS = ("limit", "spark_udf", "predict_batch_udf", "score", "direct")
LABELS = {
    "limit": "a in-process limit",
    "spark_udf": "b mlflow spark_udf",
    "predict_batch_udf": "c predict_batch_udf",
    "score": "d spark_scoring.score",
    "direct": "e direct Arrow scan",
}


@dataclass
class Ctx:
    """What every path needs: the session, the data, the model."""

    spark: Any
    ds: Any  # _setup.Dataset
    kind: str  # "mlp" | "hgb"
    uri: str
    model: Any  # spark_scoring ScoringModel (downloaded once)
    features: tuple[str, ...]
    batch_size: int | None = None  # None: each tool's default / the engine default
    input_format: str = "delta"
    load_log: str = ""  # predict_batch_udf's make_predict_fn appends "pid\n" per load
    extra: dict = field(default_factory=dict)

    def read(self):
        if self.input_format == "delta":
            return self.spark.read.format("delta").load(self.ds.delta)
        return self.spark.read.parquet(self.ds.parquet)


# ---------------------------------------------------------------------------
# a: the in-process limit
# ---------------------------------------------------------------------------

def make_limit_fn(ctx: Ctx) -> Callable[[], tuple[int, dict]]:
    """A callable scoring every Parquet file in this process with 2 threads (1 core each)."""
    import pyarrow.parquet as pq
    from threadpoolctl import threadpool_limits

    from spark_scoring.executor.loading import load_native

    native = load_native(ctx.model.flavor, ctx.model.local_path, "cpu")
    bs = ctx.batch_size or 16384
    if ctx.kind == "mlp":
        import torch

        dtype = np.float32

        def predict(m):
            with torch.inference_mode():
                return native(torch.from_numpy(m)).numpy()[:, 0]
    else:
        dtype = np.float64
        predict = native.predict
    feats = list(ctx.features)

    def one_file(path: str) -> int:
        n = 0
        for b in pq.ParquetFile(path).iter_batches(batch_size=bs, columns=feats, use_threads=False):
            m = np.empty((b.num_rows, len(feats)), dtype=dtype)
            for j, col in enumerate(b.columns):
                m[:, j] = col.to_numpy()
            n += len(predict(m))
        return n

    def run() -> tuple[int, dict]:
        files = ctx.ds.parquet_files()
        if ctx.kind == "mlp":
            import torch

            old = torch.get_num_threads()
            torch.set_num_threads(1)  # ops run on the calling thread: 2 threads = 2 cores
        try:
            with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
                rows = sum(pool.map(one_file, files))
        finally:
            if ctx.kind == "mlp":
                torch.set_num_threads(old)
        return rows, {"tasks": len(files), "model_loads": 1}

    return run


def limit_predict(ctx: Ctx, matrix64: np.ndarray) -> np.ndarray:
    """Reference predictions for the correctness check (same cast as the engine: float32 for torch)."""
    from spark_scoring.executor.loading import load_native

    native = load_native(ctx.model.flavor, ctx.model.local_path, "cpu")
    if ctx.kind == "mlp":
        import torch

        with torch.inference_mode():
            return native(torch.from_numpy(matrix64.astype(np.float32))).numpy()[:, 0].astype(np.float64)
    return np.asarray(native.predict(matrix64), dtype=np.float64)


# ---------------------------------------------------------------------------
# b, c, d, e: Spark paths (each returns a builder: input DataFrame -> output DataFrame)
# ---------------------------------------------------------------------------

def build_spark_udf(ctx: Ctx):
    import mlflow.pyfunc
    import pyspark.sql.functions as F

    udf = mlflow.pyfunc.spark_udf(ctx.spark, ctx.uri, result_type="double", env_manager="local")
    cast = "float" if ctx.kind == "mlp" else "double"  # MLflow refuses double -> float32 inputs

    def build(df):
        return df.select("id", udf(*[F.col(c).cast(cast) for c in ctx.features]).alias("prediction"))

    return build


def build_predict_batch_udf(ctx: Ctx):
    import pyspark.sql.functions as F
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import DoubleType

    local_path, kind, log = ctx.model.local_path, ctx.kind, ctx.load_log

    def make_predict_fn():
        if log:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        if kind == "mlp":
            import mlflow.pytorch
            import torch

            torch.set_num_threads(1)  # one core per task, as a careful user would
            net = mlflow.pytorch.load_model(local_path, map_location="cpu").eval()

            def predict(x):
                m = np.ascontiguousarray(x, dtype=np.float32)
                with torch.inference_mode():
                    return net(torch.from_numpy(m)).numpy()[:, 0].astype(np.float64)
        else:
            import mlflow.sklearn

            est = mlflow.sklearn.load_model(local_path)

            def predict(x):
                return est.predict(np.ascontiguousarray(x, dtype=np.float64)).astype(np.float64)

        return predict

    cast = "float" if kind == "mlp" else "double"
    udf = predict_batch_udf(make_predict_fn, return_type=DoubleType(), batch_size=ctx.batch_size or 8192)

    def build(df):  # a struct of scalar columns reaches predict() as one (rows, 32) matrix
        cols = F.struct(*[F.col(c).cast(cast) for c in ctx.features])
        return df.select("id", udf(cols).alias("prediction"))

    return build


def build_score(ctx: Ctx, overrides: dict | None = None, **kwargs):
    """d: ``score()``; ``overrides`` replace fields of the engine's private task spec
    (``prefetch``) for an A/B against the engine's defaults."""
    from spark_scoring import score

    def build(df):
        if overrides:
            out = _with_spec(ctx, df, overrides, kwargs)
        else:
            out = score(df.select("id", *ctx.features), ctx.model, batch_size=ctx.batch_size, **kwargs)
        return out.drop(*ctx.features)

    return build


def _with_spec(ctx: Ctx, df, overrides: dict, kwargs: dict):
    """score() rebuilt with fields of the engine's task spec replaced (bench A/B of engine defaults)."""
    import pyspark.sql.functions as F
    from pyspark.sql.functions import arrow_udf
    from pyspark.sql.pandas.functions import ArrowUDFType

    from spark_scoring.engine.lineage import lineage_columns
    from spark_scoring.engine.taskinfo import current_task
    from spark_scoring.engine.udf import scoring_udf
    from spark_scoring.executor.task import score_stream

    lineage = kwargs.pop("lineage", True)
    base = scoring_udf(ctx.model, batch_size=ctx.batch_size, spark=ctx.spark, **kwargs)
    cols = list(base.columns)
    spec = base.task_spec(base.plan(cols), **overrides)

    def score_batches(batches):
        return score_stream(spec, batches, current_task())

    raw = arrow_udf(score_batches, base.return_type, ArrowUDFType.SCALAR_ITER).asNondeterministic()
    out = df.select("id", *ctx.features).withColumn("prediction", raw(*[F.col(c).cast("float" if ctx.kind == "mlp"
                                                                                            else "double")
                                                                         for c in cols]))
    if not lineage:
        return out
    return out.withColumns(lineage_columns([("prediction", ctx.model)]))


def build_direct(ctx: Ctx, overrides: dict | None = None, **kwargs):
    from spark_scoring.engine.direct_scan import plan_scan, scan_dataframe, score_table_direct
    from spark_scoring.engine.lineage import lineage_columns
    from spark_scoring.engine.udf import scoring_udf

    path = ctx.ds.delta if ctx.input_format == "delta" else ctx.ds.parquet

    def build(_df=None):
        if not overrides:
            return score_table_direct(ctx.spark, path, ctx.model, keep_columns=["id"], batch_size=ctx.batch_size,
                                      **kwargs)
        lineage = kwargs.get("lineage", True)
        udf = scoring_udf(ctx.model, batch_size=ctx.batch_size, spark=ctx.spark)
        cols = list(udf.columns)
        plan, normal = plan_scan(ctx.spark, path, columns=["id", *cols])
        out = scan_dataframe(ctx.spark, plan, normal, udf, keep=["id"], output_col="prediction", columns=cols,
                             **overrides)
        return out.withColumns(lineage_columns([("prediction", ctx.model)])) if lineage else out

    return build


BUILDERS = {
    "spark_udf": build_spark_udf,
    "predict_batch_udf": build_predict_batch_udf,
    "score": build_score,
    "direct": build_direct,
}


# ---------------------------------------------------------------------------
# Python worker processes: peak RSS and counts (read from /proc, no psutil)
# ---------------------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def jvm_pid(spark) -> int | None:
    gw = getattr(spark.sparkContext, "_gateway", None)
    proc = getattr(gw, "proc", None)
    return getattr(proc, "pid", None)


def python_workers(spark) -> list[int]:
    """Pids of the Python processes under the JVM (pyspark daemon forks), daemon excluded."""
    root = jvm_pid(spark)
    if root is None:
        return []
    kids = _children()
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        for child in kids.get(pid, []):
            stack.append(child)
            cmd = _cmdline(child)
            if "python" in cmd and pid != root:  # a fork of the daemon: a worker
                out.append(child)
    return out


def reset_peaks(pids) -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass


def peak_rss_mb(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        out[pid] = int(line.split()[1]) / 1024.0
        except OSError:
            pass
    return out


class PeakSampler:
    """Samples the worker pids while a run is going (workers may be forked mid-run)."""

    def __init__(self, spark, interval: float = 0.2):
        self.spark, self.interval = spark, interval
        self.pids: set[int] = set()
        self.peaks: dict[int, float] = {}
        self.baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        pids = python_workers(self.spark)
        reset_peaks(pids)
        self.baseline = peak_rss_mb(pids)  # VmHWM right after the reset == RSS now
        self.pids.update(pids)
        self._thread.start()
        return self

    def _loop(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self):
        pids = python_workers(self.spark)
        self.pids.update(pids)
        for pid, mb in peak_rss_mb(pids).items():
            self.peaks[pid] = max(mb, self.peaks.get(pid, 0.0))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False

    @property
    def max_mb(self) -> float:
        return max(self.peaks.values(), default=0.0)

    @property
    def growth_mb(self) -> float:
        """Largest rise of one worker's RSS above what it held when the run started."""
        return max((mb - self.baseline.get(pid, 0.0) for pid, mb in self.peaks.items()), default=0.0)


def spark_tasks(spark, group: str) -> int:
    """Tasks of the widest stage the jobs of job group ``group`` ran (the scoring stage;
    Delta's own small log-reading stages are left out)."""
    tracker = spark.sparkContext.statusTracker()
    n = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in (job.stageIds if job else []):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                n = max(n, stage.numTasks)
    return n


def time_spark(spark, df, group: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds in all, CPU seconds of the JVM) of writing ``df`` to the noop sink."""
    spark.sparkContext.setJobGroup(group, group)
    before = cpu_snapshot(spark)
    t0 = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    wall = time.perf_counter() - t0
    after = cpu_snapshot(spark)
    jvm = jvm_pid(spark)
    return wall, cpu_delta(before, after), after.get(jvm, 0.0) - before.get(jvm, 0.0)


_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, children: bool = False) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is state (field 3): utime, stime, cutime, cstime are fields 14-17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def cpu_snapshot(spark) -> dict:
    """CPU seconds used so far by this process, the JVM, the pyspark daemon(s) and their workers.

    Workers that exit are reaped by the daemon, so their time moves into the
    daemon's ``cutime``; summing the deltas of every pid seen counts it once.
    """
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    snap = {"self": ru.ru_utime + ru.ru_stime}
    root = jvm_pid(spark)
    if root is None:
        return snap
    snap[root] = _proc_cpu(root)
    kids = _children()
    stack = [(root, 0)]
    while stack:
        pid, depth = stack.pop()
        for child in kids.get(pid, []):
            stack.append((child, depth + 1))
            snap[child] = _proc_cpu(child, children=(depth == 0))  # the daemon reaps workers
    return snap


def cpu_delta(before: dict, after: dict) -> float:
    return sum(max(0.0, v - before.get(k, 0.0)) for k, v in after.items())
