"""The SparkSession every entry point uses.

Runs on: the driver.

``get_spark()`` returns the active session when there is one (a Databricks
notebook, ``spark-submit``, a Spark Connect client someone already built), and
otherwise builds a local one with Delta Lake, Arrow, UTC and quiet logs, so the
same job code runs unchanged on a laptop and on a cluster.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager, nullcontext
from typing import Iterator, Mapping

from pyspark.sql import SparkSession

__all__ = ["get_spark", "set_job_description", "arrow_batch_rows", "runtime_conf", "DEFAULT_CONF", "ARROW_BATCH_CONFS"]

#: Settings for the local session. Arrow is on (all our UDFs are Arrow UDFs),
#: timestamps are UTC so ``scored_at`` means the same on every machine.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.python.worker.reuse": "true",
    # Delta: small local tables, no need for the default 50-commit checkpoint
    # interval to be reached before the log is readable quickly.
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.driver.extraJavaOptions": "-Dderby.system.home=/tmp/spark_scoring_derby",
    # plans of wide tables (features + lineage) are printed in full, without a warning per query
    "spark.sql.debug.maxToStringFields": "1000",
}


def _under_spark_submit() -> bool:
    # spark-submit starts the JVM first and hands PySpark its gateway port.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_spark(
    app_name: str = "spark_scoring",
    *,
    master: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Return the active SparkSession, else create a local one with Delta.

    - An active session (Databricks, a notebook, an earlier call) is returned
      as is; ``conf`` entries are applied to it where Spark allows runtime
      changes (static settings are left alone).
    - ``SPARK_REMOTE`` set (``sc://host:port``): a Spark Connect session.
    - Under ``spark-submit``: the submitted master and jars are used; we only add
      the Delta SQL extension settings. Pass Delta's jars with
      ``--packages io.delta:delta-spark_2.13:<version>``.
    - Otherwise a local session (``master`` or ``$SPARK_SCORING_MASTER`` or
      ``local[*]``) with Delta's jars from a local cache (:mod:`spark_scoring.jars`:
      resolved from Maven Central once, then reused) and a quiet console
      (``$SPARK_SCORING_VERBOSE=1``, the CLI's ``--verbose``, shows Spark's output).
    """
    extra = dict(conf or {})
    active = SparkSession.getActiveSession()
    if active is not None:
        _apply_runtime_conf(active, extra)
        return active

    remote = os.environ.get("SPARK_REMOTE")
    if remote:
        spark = SparkSession.builder.remote(remote).getOrCreate()
        _apply_runtime_conf(spark, extra)
        return spark

    builder = SparkSession.builder.appName(app_name)
    settings = {**DEFAULT_CONF, **extra}
    if _under_spark_submit():
        for key in ("spark.sql.extensions", "spark.sql.catalog.spark_catalog"):
            builder = builder.config(key, settings[key])
        for key, value in extra.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    else:
        from . import jars

        # Python workers must run this interpreter (a virtualenv's), not the
        # first python3 on PATH, or they will not find pyarrow, torch, mlflow.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        verbose = os.environ.get("SPARK_SCORING_VERBOSE", "") not in ("", "0", "false")
        if "spark.jars.packages" not in extra and "spark.jars" not in extra:
            # Delta's jars from the local cache (resolved by Ivy once), not an Ivy run per start
            settings["spark.jars"] = ",".join(jars.delta_jars(verbose=verbose))
        if not verbose:
            settings["spark.driver.extraJavaOptions"] = (
                f"{settings.get('spark.driver.extraJavaOptions', '')} "
                f"-Dlog4j2.configurationFile={jars.quiet_log4j()}").strip()
        builder = builder.master(master or os.environ.get("SPARK_SCORING_MASTER", "local[*]"))
        for key, value in settings.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_SCORING_LOG_LEVEL", "WARN"))
    return spark


def set_job_description(spark, text: str) -> None:
    """Label the next Spark jobs in the UI; a no-op on Spark Connect (no SparkContext there)."""
    if type(spark).__module__.startswith("pyspark.sql.connect"):
        return
    spark.sparkContext.setJobDescription(text)


#: The settings that size the Arrow batches a scalar Arrow UDF receives. Spark 4.2
#: hands the Parquet (and Delta) reader's columnar batches straight to Arrow UDFs
#: (``spark.sql.execution.arrow.pythonUDF.columnarInput.enabled``, on by default),
#: so ``columnarReaderBatchSize`` (default 4096) is the one that applies there;
#: ``maxRecordsPerBatch`` (default 10000) applies to every other input.
ARROW_BATCH_CONFS = ("spark.sql.parquet.columnarReaderBatchSize", "spark.sql.execution.arrow.maxRecordsPerBatch")

_log = logging.getLogger(__name__)


@contextmanager
def runtime_conf(spark: SparkSession, conf: Mapping[str, str]) -> Iterator[None]:
    """Driver: set runtime SQL confs for the block, then restore the earlier values.

    A setting the server refuses (some managed Spark Connect services) is logged
    and the block runs with the session's value.
    """
    before: dict[str, str | None] = {}
    for key, value in conf.items():
        try:
            previous = spark.conf.get(key, None)
            spark.conf.set(key, value)
            before[key] = previous
        except Exception as exc:  # noqa: BLE001 - keep the session's value
            _log.warning("could not set %s=%s (%s); keeping the session's value", key, value, exc)
    try:
        yield
    finally:
        for key, value in before.items():
            try:
                if value is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, value)
            except Exception as exc:  # noqa: BLE001 - restoring is best effort
                _log.warning("could not restore %s=%s (%s)", key, value, exc)


def arrow_batch_rows(spark: SparkSession, rows: int | None):
    """Driver: Spark actions run inside the ``with`` block hand Arrow UDFs batches of ``rows`` rows.

    Sets :data:`ARROW_BATCH_CONFS` on the session for the block and restores the
    earlier values after (``rows=None``: leave the session alone). The confs are
    session-wide: another thread's actions on the same session see them too,
    which changes its batch sizes, never its results.
    """
    if rows is None:
        return nullcontext()
    return runtime_conf(spark, dict.fromkeys(ARROW_BATCH_CONFS, str(int(rows))))


def _apply_runtime_conf(spark: SparkSession, conf: Mapping[str, str]) -> None:
    for key, value in conf.items():
        try:
            if spark.conf.isModifiable(key):
                spark.conf.set(key, value)
        except Exception:  # noqa: BLE001 - Connect servers may refuse isModifiable
            pass
