"""``run_job``: the entry point that wires a job run together.

Runs on: the driver. It is where the layers meet: the config is validated,
the MLflow servers chosen (:mod:`spark_scoring.servers`), the SparkSession
got, the job planned once (:mod:`spark_scoring.job.plan`), its source of units
picked, and the observers injected (progress, MLflow tracking and drift from
:mod:`spark_scoring.ops`, plus any the caller passes: alerting, a drill's fault
injection); then :func:`spark_scoring.job.runner.run` runs the one loop.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from . import servers
from .config import JobConfig, load_config
from .job.plan import make_plan
from .job.results import JobResult
from .job.runner import Observer, run
from .job.sources import source_for

__all__ = ["run_job", "JobResult", "Observer"]


def run_job(
    config: JobConfig | Mapping[str, Any] | str,
    *,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    partitions: Sequence[str] | None = None,
    spark=None,
    reporter=None,
    observers: Sequence[Observer] = (),
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> JobResult:
    """Run a scoring job (a config path, dict or :class:`JobConfig`) partition by partition, idempotently.

    ``partitions`` (the CLI's ``--partition``) replaces ``input.partitions``;
    ``tracking_uri`` / ``registry_uri`` (the CLI's flags) come before the config's
    ``mlflow`` section. ``reporter`` prints the plan, progress and summary
    (default: :class:`spark_scoring.ops.progress.Reporter` on stderr);
    ``observers`` see every unit too (see :class:`spark_scoring.job.runner.Observer`).

    Raises a :class:`~spark_scoring.errors.ScoringError` subclass: ``exit_code``
    2 when no output partition was committed (bad config, model or schema, or a
    failure before the first commit), 1 for a failure after some partitions
    were committed (the message lists them). Partitions committed before a
    failure stay committed and are recorded in the audit table.
    """
    from .ops.progress import Reporter
    from .session import get_spark

    cfg = load_config(config, overrides)
    servers.use(servers.resolve(tracking_uri, registry_uri, cfg))
    spark = spark or get_spark(conf=cfg.spark)
    reporter = reporter or Reporter()
    plan = make_plan(cfg, spark)
    source = source_for(plan, partitions)
    watching: list = []
    if cfg.tracking.enabled or cfg.drift.enabled:
        from .ops.tracking import RunTracker

        watching.append(RunTracker(cfg, reporter))
    watching += [*observers, reporter]
    return run(plan, source, watching)
