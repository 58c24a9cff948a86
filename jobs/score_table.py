r"""spark-submit entry point: the same code as ``spark-scoring run``.

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 \
        jobs/score_table.py --config conf/nightly_example.yaml [--partition 2026-11-27] [--set k=v]

Nightly from cron (``%`` escaped for crontab; Airflow: ``--partition {{ ds }}``):

    0 2 * * * cd /opt/scoring && spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 jobs/score_table.py --config conf/nightly_example.yaml --partition $(date -u -d yesterday +\%F) >> /var/log/scoring.log 2>&1

Exits with the command's code, which is what a scheduler acts on:

- 0: done, or nothing to do.
- 1: failed after committing some partitions. They stay committed; rerun the same
  command to resume.
- 2: nothing was written (invalid config, input or model, or a failure before the
  first commit). Fix it and rerun.

A SparkSession this script created is stopped before it exits, so a cluster's
executors shut down with the application instead of being relaunched while the
driver JVM goes down; a session that was already there (a platform's own) is left
alone.
"""
import sys

from pyspark.sql import SparkSession

from spark_scoring.cli import main

if __name__ == "__main__":
    existed = SparkSession.getActiveSession() is not None
    try:
        code = main(["run", *sys.argv[1:]])
    finally:
        session = None if existed else SparkSession.getActiveSession()
        if session is not None:
            session.stop()
    sys.exit(code)
