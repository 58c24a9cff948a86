"""``spark-scoring run`` in a child process, with optional fault injection.

Run by the reliability tests (never by users). Arguments are the CLI's
(``--config job.yaml [--partition V] [--set k=v]``). Environment:

- ``SPARK_SCORING_MASTER``: the local master (e.g. ``local[2]``, ``local[2,2]``);
- ``REL_KILL_AFTER_COMMIT=<partition>``: SIGKILL this driver right after that
  partition's Delta commit, before its audit row (``spark_scoring.job._test_hook``);
- ``REL_TASK_FAULT=raise|exit|raise_always|exit_always``: set the test-only local
  property ``spark_scoring.executor.faults.FAULT_PROPERTY`` for the job's Spark tasks.

Exits with the CLI's code (0 done, 2 nothing written, 1 failed while running).
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    target = os.environ.get("REL_KILL_AFTER_COMMIT")
    if target:
        from spark_scoring import job

        def hook(stage, partition):
            if stage == "after_commit" and partition == target:
                print(f"REL_HOOK kill -9 after the commit of {partition}, before its audit row", flush=True)
                os.kill(os.getpid(), 9)

        job._test_hook = hook
    fault = os.environ.get("REL_TASK_FAULT")
    if fault:
        from spark_scoring.session import get_spark
        from spark_scoring.executor.faults import FAULT_PROPERTY as TEST_FAULT_PROPERTY

        get_spark().sparkContext.setLocalProperty(TEST_FAULT_PROPERTY, fault)
    from spark_scoring.cli import main as cli_main

    return cli_main(["run", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
