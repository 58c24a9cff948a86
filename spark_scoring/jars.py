"""Delta's jars for the embedded local session: resolved once, then reused; and a quiet console.

Runs on: the driver, before the local SparkSession starts (``get_spark`` outside
spark-submit, Databricks and Spark Connect).

``configure_spark_with_delta_pip`` hands Spark ``spark.jars.packages``, so every
start runs an Ivy resolution against Maven Central (seconds, and hundreds of
lines on the console). Here the first start resolves the same coordinates once,
in a child process whose output is kept out of the console (``--verbose``
shows it), into a cache folder (``$SPARK_SCORING_JARS``, default
``~/.cache/spark_scoring/jars``); every later start hands Spark the cached jar
files (``spark.jars``) and resolves nothing. It says in one line when it fetches.

:func:`quiet_log4j` is a log4j2 configuration that keeps Spark's start-up
chatter (the default-profile banner, native-library warnings) off the console:
errors only, on stderr.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["delta_coordinates", "delta_jars", "quiet_log4j", "cache_root"]

_RESOLVE = """
import sys
from pyspark.sql import SparkSession
coords, ivy = sys.argv[1], sys.argv[2]
spark = (SparkSession.builder.master("local[1]").appName("spark_scoring_fetch_jars")
         .config("spark.jars.packages", coords).config("spark.jars.ivy", ivy)
         .config("spark.ui.enabled", "false").getOrCreate())
spark.stop()
"""

_LOG4J = """\
# spark_scoring: Spark's console output, errors only (the CLI's --verbose shows everything)
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
# Spark prints "Setting default log level to WARN" when the logger of the class that starts a
# shell (PythonGatewayServer for PySpark, repl.Main for spark-shell) has no level of its own
logger.pygateway.name = org.apache.spark.api.python.PythonGatewayServer
logger.pygateway.level = error
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
"""


def cache_root() -> Path:
    return Path(os.environ.get("SPARK_SCORING_JARS") or Path.home() / ".cache" / "spark_scoring" / "jars")


def delta_coordinates() -> str:
    """The Maven coordinates ``configure_spark_with_delta_pip`` would ask Spark for (delta-spark's own rule)."""
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    return configure_spark_with_delta_pip(SparkSession.Builder())._options["spark.jars.packages"]


def _cached(manifest: Path) -> list[str] | None:
    if manifest.exists():
        jars = [j for j in manifest.read_text().splitlines() if j]
        if jars and all(Path(j).exists() for j in jars):
            return jars
    return None


def delta_jars(*, verbose: bool = False) -> list[str]:
    """The jar files of Delta's coordinates, fetched once into the cache (None of Ivy's output unless ``verbose``).

    Processes starting at once on a fresh machine (parallel test workers, two jobs) fetch once:
    the first holds a lock on the cache folder, the others wait for it and read its manifest."""
    import fcntl

    coords = delta_coordinates()
    folder = cache_root() / hashlib.sha256(coords.encode()).hexdigest()[:12]
    manifest = folder / "jars.txt"
    jars = _cached(manifest)
    if jars:
        return jars
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return _cached(manifest) or _fetch(coords, folder, manifest, verbose)


def _fetch(coords: str, folder: Path, manifest: Path, verbose: bool) -> list[str]:
    print(f"spark_scoring: fetching Delta's jars ({coords}) from Maven Central, once, into {folder}",
          file=sys.stderr, flush=True)
    ivy = folder / "ivy"
    proc = subprocess.run([sys.executable, "-c", _RESOLVE, coords, str(ivy)],
                          capture_output=not verbose, text=True, timeout=1800)
    jars = sorted(str(p) for p in (ivy / "jars").glob("*.jar"))
    if proc.returncode != 0 or not jars:
        tail = "" if verbose else (proc.stderr or proc.stdout or "")[-3000:]
        raise RuntimeError(f"could not fetch Delta's jars {coords} (exit {proc.returncode}). Fix: check that "
                           f"Maven Central is reachable (or set spark.jars yourself).\n{tail}")
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("\n".join(jars) + "\n")
    tmp.replace(manifest)  # atomic: a concurrent start sees all of it or none
    return jars


def quiet_log4j() -> str:
    """Path of the quiet log4j2 configuration (written into the cache once)."""
    path = cache_root() / "log4j2-quiet.properties"
    if not path.exists() or path.read_text() != _LOG4J:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(_LOG4J)
        tmp.replace(path)
    return str(path)
