"""The ``spark-scoring`` command (and ``spark-submit jobs/score_table.py``).

Runs on: the driver.

    spark-scoring run --config conf/job.yaml [--partition V ...] [--set key.path=value ...]
    spark-scoring demo [--workspace demo_workspace] [--rows 2000]
    spark-scoring report (--run-id ID | --last --config conf/job.yaml) [--out DIR] [--tracking-uri URI]

Exit codes: 0 done (or nothing to do); 2 invalid config or input, nothing
written; 1 a failure while running (what was committed stays committed, and
the message lists it).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["main", "entry", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-scoring",
        description="Batch inference of MLflow models on Spark, Delta in and out.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scoring job from a YAML config")
    run.add_argument("config_path", nargs="?", help="the job config (YAML)")
    run.add_argument("--config", dest="config_opt", help="the job config (YAML)")
    run.add_argument("--partition", action="append", default=None, metavar="VALUE",
                     help="score this input partition (repeatable); replaces input.partitions")
    run.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                     help="override a config value, e.g. --set engine.batch_size=4096")
    run.add_argument("--quiet", action="store_true", help="print only errors")
    run.add_argument("--tracking-uri", help="the MLflow tracking URI (before the config's mlflow.tracking_uri)")
    run.add_argument("--registry-uri", help="the MLflow registry URI (before the config's mlflow.registry_uri)")
    for sub_parser in (run,):
        sub_parser.add_argument("--verbose", action="store_true",
                                help="show Spark's and Ivy's start-up output (hidden by default)")
    demo = sub.add_parser("demo", help="build the embedded demo (registry, models, table) and score it")
    demo.add_argument("--workspace", default="demo_workspace", help="where the demo's files go")
    demo.add_argument("--rows", type=int, default=2000, help="rows per input partition")
    demo.add_argument("--verbose", action="store_true", help="show Spark's and Ivy's start-up output")
    report = sub.add_parser("report", help="print a run's summary and write its HTML report")
    which = report.add_mutually_exclusive_group(required=True)
    which.add_argument("--run-id", help="the run id (the MLflow run id = the scoring_run_id column)")
    which.add_argument("--last", action="store_true", help="the newest run of the job given by --config")
    report.add_argument("--config", help="the job config (YAML), with --last")
    report.add_argument("--out", help="the report folder (default ./scoring_report_<run id>)")
    report.add_argument("--tracking-uri", help="the MLflow tracking URI (before the config's mlflow.tracking_uri, "
                                               "then $MLFLOW_TRACKING_URI)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; returns the exit code (see the module docstring)."""
    from .errors import ConfigError, ScoringError

    args = build_parser().parse_args(argv)
    import os

    if getattr(args, "verbose", False):
        os.environ["SPARK_SCORING_VERBOSE"] = "1"  # get_spark shows Spark's and Ivy's output
    else:  # no download progress bars in a job's log
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("spark_scoring").setLevel(logging.INFO)
    try:
        if args.command == "demo":
            from .demo import run_demo

            result = run_demo(args.workspace, rows_per_partition=args.rows)
            print(f"demo done: scored {result.rows_scored} rows, quarantined {result.rows_quarantined}; "
                  f"output table {result.output_table}")
            return 0
        if args.command == "report":
            from .ops.report import report_command

            if args.last and not args.config:
                raise ConfigError("--last needs --config conf/<job>.yaml: the job whose newest run to report")
            report_command(None if args.last else args.run_id, config=args.config, out=args.out,
                           tracking_uri=args.tracking_uri)
            return 0
        config = args.config_opt or args.config_path
        if not config:
            raise ConfigError("no config given. Fix: spark-scoring run --config conf/<job>.yaml")
        from .run import run_job
        from .ops.progress import Reporter

        run_job(config, overrides=args.set, partitions=args.partition, reporter=Reporter(quiet=args.quiet),
                tracking_uri=args.tracking_uri, registry_uri=args.registry_uri)
        return 0
    except ScoringError as exc:
        print(f"spark-scoring: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("spark-scoring: interrupted; committed partitions stay committed, rerun to finish.",
              file=sys.stderr)
        return 130


def entry() -> None:
    """The ``spark-scoring`` console script: exits with :func:`main`'s code (schedulers act on it)."""
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
