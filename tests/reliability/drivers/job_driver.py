"""``spark-scoring run`` in a child process, with optional fault injection.

Run by the reliability tests (never by users). Arguments are the CLI's
(``--config job.yaml [--partition V] [--set k=v]``). Environment:

- ``SPARK_SCORING_MASTER``: the local master (e.g. ``local[2]``, ``local[2,2]``);
- ``REL_KILL_AFTER_COMMIT=<partition>``: SIGKILL this driver right after that
  partition's Delta commit, before its audit row (an injected run observer);
- ``REL_TASK_FAULT=raise|exit|raise_always|exit_always``: set the test-only local
  property ``spark_scoring.executor.faults.FAULT_PROPERTY`` for the job's Spark tasks.

Exits with the CLI's code (0 done, 2 nothing written, 1 failed while running).
"""
from __future__ import annotations

import os
import sys


def main() -> int:
    from spark_scoring.cli import build_parser
    from spark_scoring.errors import ScoringError
    from spark_scoring.run import Observer, run_job

    observers = []
    target = os.environ.get("REL_KILL_AFTER_COMMIT")
    if target:
        class KillAfterCommit(Observer):
            def after_commit(self, ctx, unit):
                if unit.text == target:
                    print(f"REL_HOOK kill -9 after the commit of {unit.text}, before its audit row", flush=True)
                    os.kill(os.getpid(), 9)

        observers.append(KillAfterCommit())
    fault = os.environ.get("REL_TASK_FAULT")
    if fault:
        from spark_scoring.executor.faults import FAULT_PROPERTY
        from spark_scoring.session import get_spark

        get_spark().sparkContext.setLocalProperty(FAULT_PROPERTY, fault)
    args = build_parser().parse_args(["run", *sys.argv[1:]])
    try:
        run_job(args.config_opt or args.config_path, overrides=args.set, partitions=args.partition,
                observers=observers)
    except ScoringError as exc:  # the CLI's exit codes
        print(f"spark-scoring: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
