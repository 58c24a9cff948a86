"""Every job run recorded as an MLflow run.

Runs on: the driver.

A job run becomes one MLflow run in ``tracking.experiment``: the config as
params and as an artifact, the pinned model URI(s) and version(s), the input
table and version, and per partition (as metrics with ``step`` = partition
index): rows in, rows scored, rows quarantined, seconds, rows/s. Tags link the
run to each model version (``spark_scoring.model.<name>`` = version), so the
registry's model page leads to every table it scored.
"""
from __future__ import annotations

import json
import logging
from typing import Any

__all__ = ["RunTracker"]

log = logging.getLogger(__name__)


class RunTracker:
    """Driver: one MLflow run per job run. Tracking failures are logged, never fatal."""

    def __init__(self, run, mlflow_run_id: str, experiment_id: str):
        self.run = run
        self.mlflow_run_id = mlflow_run_id
        self.experiment_id = experiment_id
        self.step = 0

    @classmethod
    def start(cls, run) -> "RunTracker | None":
        import mlflow
        from mlflow.tracking import MlflowClient

        cfg = run.cfg
        try:
            client = MlflowClient()
            exp = client.get_experiment_by_name(cfg.tracking.experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(cfg.tracking.experiment)
            tags = {
                "spark_scoring.run_id": run.run_id,
                "spark_scoring.job_key": run.job_key,
                "spark_scoring.input_table": run.input_ref.name,
                "spark_scoring.output_table": run.output_ref.name,
                "mlflow.runName": f"score {run.output_ref.name.rsplit('/', 1)[-1]} {run.run_id[:8]}",
            }
            for p in run.plans:
                tags[f"spark_scoring.model.{p.model.display_name}"] = str(p.model.version)
            mrun = client.create_run(exp_id, tags=tags)
            tracker = cls(run, mrun.info.run_id, exp_id)
            params = {
                "models": ",".join(p.model.uri for p in run.plans),
                "model_source_uris": ",".join(p.model.source_uri for p in run.plans),
                "input_table": run.input_ref.name,
                "input_version": run.input_version,
                "output_table": run.output_ref.name,
                "output_mode": cfg.output.mode,
                "bad_rows": cfg.bad_rows,
                "partition_by": cfg.input.partition_by,
                "input_mode": cfg.input.mode,
                "batch_size": cfg.engine.batch_size,
                "device": cfg.engine.device,
            }
            for key, value in params.items():
                client.log_param(mrun.info.run_id, key, "" if value is None else str(value)[:6000])
            client.log_text(mrun.info.run_id, json.dumps(cfg.model_dump(mode="json"), indent=2), "config.json")
            return tracker
        except Exception as exc:  # noqa: BLE001 - tracking must not kill a scoring job
            log.warning("MLflow tracking disabled for this run: %s: %s", type(exc).__name__, exc)
            return None

    def partition(self, result, value: Any = None) -> None:
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient()
            rate = result.rows_scored / result.seconds if result.seconds > 0 else 0.0
            metrics = {
                "rows_in": result.rows_in,
                "rows_scored": result.rows_scored,
                "rows_quarantined": result.rows_quarantined,
                "seconds": result.seconds,
                "rows_per_second": rate,
            }
            for key, v in metrics.items():
                client.log_metric(self.mlflow_run_id, key, float(v), step=self.step)
            self.step += 1
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow tracking of partition %s failed: %s", result.partition, exc)

    def finish(self, job_result, failed: bool) -> None:
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient()
            rows = [
                {k: getattr(p, k) for k in ("partition", "status", "rows_in", "rows_scored",
                                            "rows_quarantined", "seconds", "output_version", "message")}
                for p in job_result.partitions
            ]
            client.log_text(self.mlflow_run_id, json.dumps(rows, indent=2, default=str), "partitions.json")
            for key in ("rows_in", "rows_scored", "rows_quarantined"):
                client.log_metric(self.mlflow_run_id, f"total_{key}", float(getattr(job_result, key)))
            client.set_terminated(self.mlflow_run_id, "FAILED" if failed else "FINISHED")
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow tracking could not finish run %s: %s", self.mlflow_run_id, exc)
