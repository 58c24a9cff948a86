"""spark-submit entry point: the same code as ``spark-scoring run``.

    spark-submit --packages io.delta:delta-spark_4.2_2.13:4.4.0 \
        jobs/score_table.py --config conf/nightly_example.yaml [--partition 2026-11-27] [--set k=v]
"""
import sys

from spark_scoring.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
