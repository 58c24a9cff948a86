"""spark-submit entry point: the same code as ``spark-scoring run``.

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 \
        jobs/score_table.py --config conf/nightly_example.yaml [--partition 2026-11-27] [--set k=v]

Exits with the command's code (0 done, 2 invalid config or input, 1 a failure
while running). A SparkSession this script created is stopped before it exits,
so a cluster's executors shut down with the application instead of being
relaunched while the driver JVM goes down; a session that was already there
(a platform's own) is left alone.
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
