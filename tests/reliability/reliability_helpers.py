"""Process and table helpers for the reliability suite (tests/reliability).

Runs on: the pytest process. Everything a test starts (Spark drivers, a
standalone master and workers, a Spark Connect server) is started here in its
own process group and registered, so a finalizer can kill the whole group
(JVM, Python workers, executors) even when the test fails or times out.
Servers bind to 127.0.0.1 only.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DRIVERS = HERE / "drivers"
PYTHON = sys.executable
DELTA_PACKAGE = "io.delta:delta-spark_4.2_2.13:4.4.0"
#: Columns that differ between two runs by design; left out of row comparisons.
RUN_COLUMNS = ("scored_at", "scoring_run_id", "quarantined_at")

PARTITIONS = tuple(f"p{i:02d}" for i in range(12))
ROWS = 20  # per partition; three of them unscoreable (null, NaN, infinite)
BAD_PER_PARTITION = 3
MODEL = "models:/demo_churn@champion"
PRED = "churn_probability"

_started: list[subprocess.Popen] = []  # killed after each test
_servers: list[subprocess.Popen] = []  # killed by their fixture, else at session end


def job_config(inp: str, out: str, *, model: str = MODEL, **sections) -> dict:
    """A job dict over ``inp``: quarantine next to the output, no MLflow run, no drift."""
    cfg = {
        "model": model,
        "input": {"table": inp, "partition_by": "ds"},
        "output": {"table": out, "mode": "overwrite_partitions", "prediction_column": PRED},
        "bad_rows": "quarantine",
        "quarantine_table": out + "_quarantine",
        "tracking": {"enabled": False},
        "drift": {"enabled": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def spark_home() -> str:
    import pyspark

    return os.path.dirname(pyspark.__file__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(registry=None, **extra: str) -> dict:
    """The environment for a child driver / server: this venv, this repo, loopback only."""
    env = dict(os.environ)
    for var in ("SPARK_REMOTE", "PYSPARK_GATEWAY_PORT", "PYSPARK_GATEWAY_SECRET", "SPARK_HOME",
                "PYSPARK_SUBMIT_ARGS"):
        env.pop(var, None)
    env.update(
        PYSPARK_PYTHON=PYTHON,
        PYSPARK_DRIVER_PYTHON=PYTHON,
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOCAL_HOSTNAME="localhost",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        SPARK_SCORING_LOG_LEVEL="ERROR",
        PYTHONUNBUFFERED="1",
    )
    if registry is not None:
        env["MLFLOW_TRACKING_URI"] = registry.tracking_uri
        env["MLFLOW_REGISTRY_URI"] = registry.tracking_uri
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(cmd: Sequence[str], *, env: dict, log: Path, cwd: str | Path | None = None,
          server: bool = False) -> subprocess.Popen:
    """Start ``cmd`` in a new process group, stdout+stderr to ``log``; registered for
    cleanup after the test (``server=True``: by its fixture, else at session end)."""
    log = Path(log)
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "ab")
    proc = subprocess.Popen(
        list(map(str, cmd)), env=env, cwd=str(cwd or ROOT), stdout=fh, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True,
    )
    fh.close()
    proc.log_path = log  # type: ignore[attr-defined]
    (_servers if server else _started).append(proc)
    return proc


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, wait_s: float = 30) -> None:
    """Signal the process group of ``proc`` (the driver, its JVM, workers); reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=wait_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=wait_s)
    # Children re-parented to init may outlive the leader: the group id stays.
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def stop_all(servers: bool = False) -> None:
    """Kill the process groups started for the current test (``servers``: all of them)."""
    for group in (_started, _servers) if servers else (_started,):
        while group:
            kill_group(group.pop(), signal.SIGKILL, wait_s=10)


def stop(proc: subprocess.Popen) -> None:
    """Kill one process group now and forget it."""
    kill_group(proc, signal.SIGKILL, wait_s=10)
    for group in (_started, _servers):
        if proc in group:
            group.remove(proc)


def read_log(proc_or_path) -> str:
    path = getattr(proc_or_path, "log_path", proc_or_path)
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def wait_for(check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen | None = None,
             interval: float = 0.25) -> None:
    """Poll ``check`` until true; fail with the process log when it times out or the process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process exited with {proc.returncode} first\n{read_log(proc)[-6000:]}")
        time.sleep(interval)
    tail = read_log(proc)[-6000:] if proc is not None else ""
    raise AssertionError(f"{what}: not after {timeout:.0f} s\n{tail}")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(cmd: Sequence[str], *, env: dict, log: Path, timeout: float, cwd=None) -> tuple[int, str]:
    """Run ``cmd`` to completion in its own process group; (exit code, log text).

    On timeout the whole group is killed and the test fails with the log tail."""
    proc = start(cmd, env=env, log=log, cwd=cwd)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        raise AssertionError(f"{' '.join(map(str, cmd))[:300]}: still running after {timeout} s\n"
                             f"{read_log(proc)[-6000:]}")
    finally:
        kill_group(proc, wait_s=10)  # stray children (python workers) of a finished driver
        if proc in _started:
            _started.remove(proc)
    return code, read_log(proc)


def result_line(text: str, tag: str = "RESULT ") -> dict:
    """The last ``RESULT {json}`` line a driver script printed."""
    lines = [ln for ln in text.splitlines() if ln.startswith(tag)]
    assert lines, f"no {tag.strip()} line in the driver output:\n{text[-6000:]}"
    return json.loads(lines[-1][len(tag):])


# ------------------------------------------------------------------- tables
def rows(spark, path: str, *, drop: Iterable[str] = RUN_COLUMNS, fmt: str = "delta") -> list[tuple]:
    """Every row of a table (minus per-run columns) as sorted tuples, for exact comparison."""
    df = spark.read.format(fmt).load(path)
    keep = sorted(c for c in df.columns if c not in set(drop))
    scores = [i for i, c in enumerate(keep) if c == PRED]
    out = [tuple(_Score(x) if i in scores and x is not None else _comparable(x) for i, x in enumerate(r))
           for r in df.select(*keep).collect()]
    return sorted(out, key=lambda t: tuple((x is None, str(x)) for i, x in enumerate(t) if i not in scores))


class _Score(float):
    """A model output: equal within float32 rounding. The BLAS kernels a torch model runs
    on differ with the batch's length, and retries, concurrent runs and group commits
    batch the same rows differently (a few float32 ulps apart)."""

    def __eq__(self, other):
        return isinstance(other, float) and math.isclose(self, other, rel_tol=1e-5, abs_tol=1e-7)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = float.__hash__


def _comparable(value):
    """NaN never equals itself, so two reads of one quarantined NaN row would differ; use a marker."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    return value


def duplicate_keys(spark, path: str, keys: Sequence[str]) -> int:
    """How many key values occur more than once in the table."""
    import pyspark.sql.functions as F

    df = spark.read.format("delta").load(path)
    return df.groupBy(*keys).count().where(F.col("count") > 1).count()


def partition_counts(spark, path: str, column: str) -> dict:
    df = spark.read.format("delta").load(path)
    return {r[0]: int(r[1]) for r in df.groupBy(column).count().collect()}


def latest_version(spark, path: str) -> int:
    return int(spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").head()["version"])


def write_json(path: Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return path


def report(name: str, data: dict) -> None:
    """Print the observed counts (shown with -s / on failure) and, when
    ``RELIABILITY_REPORT_DIR`` is set, keep them as JSON for RELIABILITY.md."""
    print(f"RELIABILITY {name}: {json.dumps(data, sort_keys=True, default=str)}")
    out = os.environ.get("RELIABILITY_REPORT_DIR")
    if out:
        write_json(Path(out) / f"{name}.json", data)
