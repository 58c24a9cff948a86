"""The paths of ``bench/media.py``: one whole run over every image, output written as Parquet.

Runs on: the driver. What runs elsewhere: the pyfunc models (``_media_model``)
in Spark's Python workers, and :class:`RayScorer` / the Daft class in Ray
actors / Daft UDF processes (they import this module: ``bench/`` is put on
``PYTHONPATH`` before any engine starts).

Each path is built once (untimed: Spark's DataFrames, spark_udf's model
download, the limit's model load), then :meth:`Path.run` writes every image's
``id``, ``label``, ``score`` as Parquet to a fresh folder and returns what it
measured. Ray starts (``ray.init``) and stops inside each run, as a user's job
would; the time without start and stop is kept too.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

OUT_TYPE = "label long, score double"
ARROW_CONFS = ("spark.sql.execution.arrow.maxRecordsPerBatch", "spark.sql.parquet.columnarReaderBatchSize")


@dataclass
class Ctx:
    """What every path needs."""

    data: Any  # _media_setup.ImageSet
    models: Any  # _media_setup.Models
    batch: int  # rows per model call (limit, Ray, Daft, score) = Spark's Arrow batch
    cores: int
    spark: Any = None
    trace: str = ""  # $BENCH_MEDIA_TRACE
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------
# CPU seconds of this process and everything under it (JVM, Python workers, Ray, Daft)
# ---------------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def _proc_cpu(pid: int) -> float:
    """utime + stime of ``pid`` and of its children it has reaped."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in f[11:15]) / _TICK


def cpu_snapshot() -> dict:
    """CPU seconds so far: this process, its reaped children, every live descendant
    (with what each reaped). The difference of two snapshots counts each process once."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    snap = {"self": me.ru_utime + me.ru_stime, "reaped": ch.ru_utime + ch.ru_stime}
    kids = _children()
    stack = [os.getpid()]
    while stack:
        for child in kids.get(stack.pop(), []):
            snap[child] = _proc_cpu(child)
            stack.append(child)
    return snap


def cpu_delta(before: dict, after: dict) -> float:
    return sum(max(0.0, v - before.get(k, 0.0)) for k, v in after.items())


# ---------------------------------------------------------------------------
# The model trace (see _media_model: one JSON line per model call)
# ---------------------------------------------------------------------------

def trace_summary(path: str, t_start: float, t_end: float) -> dict:
    """Model calls whose lines fall in [t_start, t_end] (wall clock): counts and seconds."""
    lines = []
    try:
        with open(path) as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if rec["t1"] >= t_start - 0.01 and rec["t0"] <= t_end + 0.01:
                    lines.append(rec)
    except OSError:
        return {}
    calls = [r for r in lines if r["rows"] > 0]
    rows = [r["rows"] for r in calls]
    return {
        "calls": len(calls),
        "rows": int(sum(rows)),
        "rows_per_call": float(np.median(rows)) if rows else None,
        "max_rows_per_call": max(rows, default=None),
        "pre_s": sum(r["pre_s"] for r in lines),
        "fwd_s": sum(r["fwd_s"] for r in lines),
        "threads": sorted({r["threads"] for r in lines}),
        "omp_num_threads": sorted({str(r.get("omp")) for r in lines}),
        "model_pids": len({r["pid"] for r in lines}),
        "models": sorted({r["model"] for r in lines}),
    }


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------

class Path_:
    """A built path: ``run(out_dir)`` scores every image into ``out_dir`` (Parquet)."""

    label = ""

    def run(self, out_dir: str) -> dict:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _frame(images):
    import pandas as pd

    return pd.DataFrame({"image": images})


class LimitPath(Path_):
    """No Spark: pyarrow reads the Parquet files, the model's own ``preprocess`` and
    ``predict_batch`` in this process, torch at ``cores`` threads. ``overlap``: a
    ``cores``-thread pool decodes the next batches while the forward pass runs."""

    def __init__(self, ctx: Ctx, overlap: bool):
        import mlflow.pyfunc

        self.ctx, self.overlap = ctx, overlap
        self.model = mlflow.pyfunc.load_model(ctx.models.local["media_overlapped"]).unwrap_python_model()

    def _batches(self):
        for path in self.ctx.data.parquet_files():
            for b in pq.ParquetFile(path).iter_batches(batch_size=self.ctx.batch, columns=["id", "image"],
                                                       use_threads=False):
                yield b.column(0).to_numpy(), b.column(1).to_pylist()

    def run(self, out_dir: str) -> dict:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(self.ctx.cores)
        ids, labels, scores = [], [], []
        m = self.model
        try:
            if not self.overlap:
                for id_, images in self._batches():
                    out = m.predict_batch(m.preprocess(_frame(images)))
                    ids.append(id_)
                    labels.append(out["label"].to_numpy())
                    scores.append(out["score"].to_numpy())
            else:
                depth = self.ctx.cores + 1  # batches decoding or decoded ahead of the forward pass
                with ThreadPoolExecutor(self.ctx.cores, thread_name_prefix="decode") as pool:
                    pending = []
                    it = self._batches()
                    for id_, images in it:
                        pending.append((id_, pool.submit(m.preprocess, _frame(images))))
                        if len(pending) >= depth:
                            break
                    while pending:
                        id_, fut = pending.pop(0)
                        nxt = next(it, None)
                        if nxt is not None:
                            pending.append((nxt[0], pool.submit(m.preprocess, _frame(nxt[1]))))
                        out = m.predict_batch(fut.result())
                        ids.append(id_)
                        labels.append(out["label"].to_numpy())
                        scores.append(out["score"].to_numpy())
        finally:
            torch.set_num_threads(old)
        os.makedirs(out_dir, exist_ok=True)
        pq.write_table(pa.table({"id": np.concatenate(ids), "label": np.concatenate(labels),
                                 "score": np.concatenate(scores)}), os.path.join(out_dir, "part-0.parquet"))
        return {"tasks": len(self.ctx.data.parquet_files())}


class SparkPath(Path_):
    """A Spark DataFrame of ``id``, ``label``, ``score`` built once; each run writes it as Parquet."""

    def __init__(self, ctx: Ctx, kind: str, model_name: str, *, batch_size: Any = "batch",
                 arrow_rows: Any = "session"):
        import pyspark.sql.functions as F

        import spark_scoring as ss

        self.ctx, self.kind = ctx, kind
        self.arrow_rows = arrow_rows
        spark = ctx.spark
        df = spark.read.format("delta").load(ctx.data.delta)
        uri = ctx.models.uris[model_name]
        if kind == "spark_udf":
            import mlflow.pyfunc

            udf = mlflow.pyfunc.spark_udf(spark, uri, result_type=OUT_TYPE, env_manager="local")
            scored = df.select("id", udf("image").alias("pred"))
        elif kind == "score":
            bs = ctx.batch if batch_size == "batch" else batch_size  # None: spark_scoring's default
            scored = ss.score(df.select("id", "image"), ss.load_model(uri), output_col="pred",
                              lineage=False, batch_size=bs)
            self.batch_size = bs
        else:
            raise ValueError(kind)
        self.df = scored.select("id", F.col("pred.label").alias("label"), F.col("pred.score").alias("score"))

    def confs(self) -> dict:
        """The Arrow batch confs of this path's runs: "session" keeps the session's (``--batch``),
        None unsets both (Spark's defaults: 10,000 and 4,096), N sets both to N."""
        if self.arrow_rows == "session":
            return {}
        value = None if self.arrow_rows is None else str(self.arrow_rows)
        return dict.fromkeys(ARROW_CONFS, value)

    def run(self, out_dir: str, group: str = "") -> dict:
        spark = self.ctx.spark
        if group:
            spark.sparkContext.setJobGroup(group, group)
        with session_conf(spark, self.confs()):
            self.df.write.mode("overwrite").parquet(out_dir)
        return {"tasks": spark_tasks(spark, group) if group else None}


@contextmanager
def session_conf(spark, conf: dict):
    """Set runtime SQL confs for the block (None: unset), then restore the earlier values."""
    before = {k: spark.conf.get(k, None) for k in conf}
    for k, v in conf.items():
        if v is None:
            spark.conf.unset(k)
        else:
            spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, v)


def spark_tasks(spark, group: str) -> int:
    """Tasks of the widest stage the job group ran (the scoring stage)."""
    tracker = spark.sparkContext.statusTracker()
    n = 0
    for job_id in tracker.getJobIdsForGroup(group):
        job = tracker.getJobInfo(job_id)
        for stage_id in (job.stageIds if job else []):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                n = max(n, stage.numTasks)
    return n


class RayScorer:
    """Ray Data actor: loads the pyfunc model once, scores each batch.

    The batches come as pyarrow tables: Ray's pandas batches hold the binary
    column as ``binary[pyarrow]``, which the signature's binary input refuses
    ("Can not safely convert binary[pyarrow] to |S0"); ``to_pandas()`` gives bytes objects.
    """

    def __init__(self, path: str):
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(path)

    def __call__(self, batch):
        out = self.model.predict(batch.select(["image"]).to_pandas())
        return pa.table({"id": batch.column("id"), "label": pa.array(out["label"].to_numpy(), pa.int64()),
                         "score": pa.array(out["score"].to_numpy(), pa.float64())})


class RayPath(Path_):
    """``ray.init`` -> read_parquet -> map_batches(actor pool of 2, num_cpus 0.5) -> write_parquet -> shutdown.

    ``num_cpus`` below 1: on 2 cores, actors holding a whole CPU each leave none
    for Ray's read and write tasks. The pool is ``compute=ActorPoolStrategy(size=2)``,
    what ``concurrency=2`` meant before Ray 2.51 deprecated it for callable classes.
    """

    def __init__(self, ctx: Ctx, model_name: str = "media_plain", actors: int = 2, actor_cpus: float = 0.5,
                 threads: int | None = None):
        self.ctx = ctx
        self.path = ctx.models.with_threads(model_name, threads) if threads else ctx.models.local[model_name]
        self.actors, self.actor_cpus = actors, actor_cpus

    def run(self, out_dir: str) -> dict:
        import logging

        import ray

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        t0 = time.perf_counter()
        ray.init(num_cpus=self.ctx.cores, include_dashboard=False, log_to_driver=False,
                 configure_logging=True, logging_level="error",
                 object_store_memory=1 << 30)
        import ray.data

        dctx = ray.data.DataContext.get_current()
        dctx.enable_progress_bars = False
        dctx.print_on_execution_start = False
        t_init = time.perf_counter() - t0
        try:
            files = self.ctx.data.parquet_files()
            # one block per file at least (Ray would merge small files into one block: one busy actor)
            ds = ray.data.read_parquet(files, override_num_blocks=max(len(files), self.actors))
            ds = ds.map_batches(RayScorer, fn_constructor_kwargs={"path": self.path},
                                compute=ray.data.ActorPoolStrategy(size=self.actors),  # = concurrency=2
                                num_cpus=self.actor_cpus, batch_size=self.ctx.batch, batch_format="pyarrow")
            t1 = time.perf_counter()
            ds.write_parquet(out_dir)
            t_run = time.perf_counter() - t1
            cpu_before_shutdown = cpu_snapshot()  # actors are still alive: their CPU counts
        finally:
            t2 = time.perf_counter()
            ray.shutdown()
            t_stop = time.perf_counter() - t2
        return {"startup_s": t_init, "shutdown_s": t_stop, "run_only_s": t_run, "cpu_after": cpu_before_shutdown,
                "tasks": len(self.ctx.data.parquet_files())}


def make_daft_class(batch: int, concurrency: int, use_process: bool):
    import daft
    from daft import DataType

    ret = DataType.struct({"label": DataType.int64(), "score": DataType.float64()})

    @daft.cls(max_concurrency=concurrency, use_process=use_process)
    class DaftScorer:
        def __init__(self, path: str):
            import mlflow.pyfunc

            self.model = mlflow.pyfunc.load_model(path)

        @daft.method.batch(return_dtype=ret, unnest=True, batch_size=batch)
        def predict(self, images):
            import pandas as pd

            out = self.model.predict(pd.DataFrame({"image": images.to_pylist()}))
            return pa.StructArray.from_arrays(
                [pa.array(out["label"].to_numpy(), pa.int64()), pa.array(out["score"].to_numpy(), pa.float64())],
                names=["label", "score"],
            )

    return DaftScorer


_DAFT_RUNNER = threading.Lock()
_daft_ready = False


class DaftPath(Path_):
    """Daft, native runner: read_parquet -> a ``@daft.cls`` batch method (2 instances) -> write_parquet."""

    def __init__(self, ctx: Ctx, model_name: str = "media_plain", concurrency: int = 2, use_process: bool = True,
                 threads: int | None = None):
        global _daft_ready
        import daft

        with _DAFT_RUNNER:
            if not _daft_ready:
                daft.set_runner_native(num_threads=ctx.cores)
                _daft_ready = True
        self.ctx = ctx
        self.path = ctx.models.with_threads(model_name, threads) if threads else ctx.models.local[model_name]
        self.cls = make_daft_class(ctx.batch, concurrency, use_process)

    def run(self, out_dir: str) -> dict:
        import daft

        scorer = self.cls(self.path)
        df = daft.read_parquet(self.ctx.data.parquet_files())
        df = df.select(df["id"], scorer.predict(df["image"]))
        df.write_parquet(out_dir)
        return {"tasks": len(self.ctx.data.parquet_files())}


# ---------------------------------------------------------------------------
# Reading a run's output back (for the agreement check)
# ---------------------------------------------------------------------------

def read_output(out_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, labels, scores) sorted by id, from every Parquet file under ``out_dir``."""
    import pyarrow.dataset as pds

    files = sorted(
        os.path.join(root, f) for root, _d, names in os.walk(out_dir) for f in names
        if f.endswith(".parquet") and not f.startswith((".", "_"))
    )
    table = pds.dataset(files, format="parquet").to_table(columns=["id", "label", "score"])
    order = np.argsort(table["id"].to_numpy(), kind="stable")
    return (table["id"].to_numpy()[order], table["label"].to_numpy()[order].astype(np.int64),
            table["score"].to_numpy()[order].astype(np.float64))


def fresh_dir(path: str) -> str:
    if os.path.exists(path):
        shutil.rmtree(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
