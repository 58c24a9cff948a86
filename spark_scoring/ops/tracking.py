"""Every job run recorded as an MLflow run, with score summaries and drift.

Runs on: the driver. The statistics come from the scoring pass itself where
the direct scan scores (the observer names the columns to sketch:
:meth:`RunTracker.profile_columns`), else from two Spark aggregations per
committed group of partitions (see :mod:`.profiles` and :mod:`.drift`); no
rows are collected. The job calls :meth:`RunTracker.group_done` once per
commit (one MLflow ``log_batch`` and one ``log_artifacts`` for the group) and
:meth:`RunTracker.unit_done` per partition (its drift verdict).

A job run becomes one MLflow run in ``tracking.experiment``, and its id *is*
the job's run id (the ``scoring_run_id`` column and the audit table's
``run_id``), so any output row leads to its MLflow run. The run holds:

- params: model URI(s), input table and version, output table and mode, the
  engine and drift settings; the config as ``config.json``;
- tags: ``spark_scoring.model.<name>`` = version(s) for each model,
  ``spark_scoring.input_table`` / ``output_table`` / ``job_key`` / ``run_id``,
  ``spark_scoring.drift`` (``ok``, ``warn``, ``fail`` or ``not_checked``);
- metrics per partition (``step`` = the partition's index in the run, see
  ``partitions.json``): ``rows_in``, ``rows_scored``, ``rows_quarantined``,
  ``seconds``, ``rows_per_second``; for each numeric output column
  ``score/<col>/{mean,std,p01,p25,p50,p75,p99}``; ``psi/<col>`` for each score
  and feature column and ``drift/max_psi``; totals ``total_rows_*`` at the end;
- artifacts: ``plots/score_distribution_<partition>.png`` per committed group (one
  partition over its reference; a group of several partitions committed together:
  ``score_distribution_<first>_to_<last>.png``, each partition's distribution),
  ``partition_stats.json``, ``partitions.json`` and ``drift/drift_report.{json,png,html}``.

The summary of a partition is computed from the rows its commit wrote (the
scoring pass's sketches of them, or the output table read at the version of its
group's commit). Drift compares it with a reference partition of the output table:
``drift.reference: previous`` (the input partition before it, in the job's
partition order) or a given partition value. A PSI above ``drift.threshold``
is printed as a warning, or, with ``drift.on_drift: fail``, returned by
:meth:`RunTracker.unit_done` as a :class:`~spark_scoring.errors.DriftError`
that the job raises after the partition is committed and audited.

Each model version scored also gets registry tags
(``spark_scoring.last_scored_table``, ``last_run_id``, ``last_scored_partitions``,
``last_scored_at``), so the registry's model page leads to what it scored.

MLflow failures are logged, never fatal; drift with ``on_drift: fail`` is
checked even when MLflow tracking is off or unreachable.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import shutil
import tempfile
import time

from rich.text import Text

from ..errors import DriftError
from ..job.runner import Observer

__all__ = ["RunTracker"]

log = logging.getLogger(__name__)

_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /:]")


def _metric_key(*parts: str) -> str:
    return "/".join(_METRIC_NAME.sub("_", p) for p in parts)


def _file_part(text: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "all" if text is None else str(text)).strip("_") or "blank"


def _artifact_location(experiment: str) -> str | None:
    """A new experiment's artifacts next to a sqlite tracking store (not in ./mlruns of the cwd)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None  # a server decides
    from pathlib import Path

    root = Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts" / _file_part(experiment)
    return root.as_uri()


class RunTracker(Observer):
    """Driver: one MLflow run per job run, plus per-partition statistics and drift.

    A run observer (:class:`spark_scoring.job.runner.Observer`), injected by the
    entry point when tracking or drift is on; ``reporter`` prints drift warnings.
    """

    def __init__(self, cfg, reporter=None):
        self.cfg = cfg
        self.reporter = reporter
        self.run = None  # the JobPlan, from start()
        self.mlflow_run_id: str | None = None
        self.experiment_id: str | None = None
        self.step = 0
        self.records: list[dict] = []  # one per tracked partition: partition_stats.json
        self._pending: dict[str | None, dict] = {}  # this group's records, until each unit_done
        self._profiler = None  # .profiles.Profiles, made on the first group
        self._workdir = tempfile.mkdtemp(prefix="spark_scoring_tracking_")

    # -------------------------------------------------------------- observer
    def start(self, plan) -> str | None:
        """Create the MLflow run (when ``tracking.enabled``); its id becomes the job's run id."""
        self.run = plan
        if self.cfg.tracking.enabled:
            try:
                self.mlflow_run_id, self.experiment_id = self._create_run(plan)
            except Exception as exc:  # noqa: BLE001 - tracking must not kill a scoring job
                log.warning("MLflow tracking disabled for this run: %s: %s", type(exc).__name__, exc)
        return self.mlflow_run_id

    def group_done(self, ctx, done) -> None:
        """A committed group: its records (two Spark jobs), then one MLflow batch and one upload."""
        first = self.step
        self.step += len(done)
        records: dict = {}
        try:
            records = self._profiles().records(done, first, ctx.scan_profiles)
        except Exception as exc:  # noqa: BLE001 - statistics must not kill a scoring job
            shown = [res.partition for _u, res in done]
            log.warning("score summary / drift of partition(s) %s failed: %s: %s", shown, type(exc).__name__, exc)
        self._pending.update(records)
        if self.mlflow_run_id:
            try:
                self._log_group([(res, records.get(unit.text), first + i) for i, (unit, res) in enumerate(done)])
            except Exception as exc:  # noqa: BLE001
                log.warning("MLflow tracking of partition(s) %s failed: %s", [r.partition for _u, r in done], exc)

    def profile_columns(self, ctx, schema) -> list[str]:
        """The scores (and, with drift on, the features) to sketch in the scoring pass."""
        if not (self.cfg.tracking.enabled or self.cfg.drift.enabled):
            return []
        try:
            return self._profiles().scan_columns(schema)
        except Exception as exc:  # noqa: BLE001 - the committed output is profiled instead
            log.warning("score summary columns could not be chosen: %s: %s", type(exc).__name__, exc)
            return []

    def unit_done(self, ctx, unit, result) -> DriftError | None:
        """The unit's drift verdict: a warning printed, or the DriftError to stop with (``on_drift: fail``)."""
        record = self._pending.pop(unit.text, None)
        if record is not None:
            self.records.append(record)
        return self._drift_outcome(record)

    def finished(self, ctx, result, failed: bool) -> None:
        self.finish(result, failed)

    def _profiles(self):
        if self._profiler is None:
            from .profiles import Profiles

            self._profiler = Profiles(self.cfg, self.run)
        return self._profiler

    @staticmethod
    def _create_run(run) -> tuple[str, str]:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        cfg = run.cfg
        client = MlflowClient()
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            cfg.tracking.experiment, artifact_location=_artifact_location(cfg.tracking.experiment))
        tags = {
            "spark_scoring.job_key": run.job_key,
            "spark_scoring.input_table": run.input_ref.name,
            "spark_scoring.output_table": run.output_ref.name,
            "spark_scoring.audit_table": run.audit_table,
        }
        versions: dict[str, list[str]] = {}
        for p in run.models:  # champion and challenger may be two versions of one model
            versions.setdefault(p.model.display_name, []).append(str(p.model.version))
        for name, numbers in versions.items():
            tags[f"spark_scoring.model.{name}"] = ",".join(dict.fromkeys(numbers))
        mrun = client.create_run(exp_id, tags=tags)
        run_id = mrun.info.run_id
        # the job adopts this id (start() returns it): output rows, audit rows, MLflow run
        client.set_tag(run_id, "spark_scoring.run_id", run_id)
        client.set_tag(run_id, "mlflow.runName", f"score {run.output_ref.name.rsplit('/', 1)[-1]} {run_id[:8]}")
        params = {
            "models": ",".join(p.model.uri for p in run.models),
            "model_source_uris": ",".join(p.model.source_uri for p in run.models),
            "output_columns": ",".join(p.output_column for p in run.models),
            "input_table": run.input_ref.name,
            "input_version": run.input_version,
            "output_table": run.output_ref.name,
            "output_mode": cfg.output.mode,
            "bad_rows": cfg.bad_rows,
            "partition_by": cfg.input.partition_by,
            "input_mode": cfg.input.mode,
            "batch_size": cfg.engine.batch_size,
            "device": cfg.engine.device,
            "drift_enabled": cfg.drift.enabled,
            "drift_reference": cfg.drift.reference,
            "drift_threshold": cfg.drift.threshold,
            "drift_on_drift": cfg.drift.on_drift,
            "drift_bins": cfg.drift.bins,
        }
        client.log_batch(run_id, params=[Param(k, "" if v is None else str(v)[:6000]) for k, v in params.items()])
        client.log_text(run_id, json.dumps(cfg.model_dump(mode="json", by_alias=True), indent=2), "config.json")
        return run_id, exp_id

    # -------------------------------------------------------------- partition
    def _drift_outcome(self, record: dict | None) -> DriftError | None:
        if not record or not record["flagged"]:
            return None
        column = record["partition_column"]
        worst = record["flagged"][0]
        also = [f"{c} {record['psi'][c]:.3f}" for c in record["flagged"][1:6]]
        if len(record["flagged"]) > 6:
            also.append(f"{len(record['flagged']) - 6} more")
        where = f"partition {column}={record['partition']!r}"
        kind = "score" if worst in record["score_columns"] else "feature"
        text = (f"drift in {where} against reference {column}={record['reference']!r}: PSI of {kind} column "
                f"{worst!r} = {record['psi'][worst]:.3f} > threshold {record['threshold']:g}"
                + (f" (also above: {', '.join(also)})" if also else ""))
        if record["drift"] == "warn":
            if self.reporter is not None:  # data, not markup: a column named "[red]" prints as it is
                self.reporter.print(Text.assemble(("drift warning", "yellow"), ": ", text))
            log.warning("%s", text)
            return None
        version = record["output_version"]
        return DriftError(
            f"{text}. The partition is committed (output version {version}) and audited. Fix: check "
            "the input and the model; to accept the change, rerun with --set drift.on_drift=warn or a "
            "higher drift.threshold."
        )

    def _log_group(self, entries) -> None:
        """One group's metrics in one ``log_batch`` (900 at a time), its plots in one upload."""
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient()
        now = int(time.time() * 1000)
        metrics = []
        plots = os.path.join(self._workdir, "plots", f"group_{entries[0][2]}")
        for result, record, step in entries:
            rate = result.rows_scored / result.seconds if result.seconds > 0 else 0.0
            values = {
                "rows_in": result.rows_in,
                "rows_scored": result.rows_scored,
                "rows_quarantined": result.rows_quarantined,
                "seconds": result.seconds,
                "rows_per_second": rate,
            }
            if record is not None:
                for col, summary in record["summary"].items():
                    for key in ("mean", "std", "p01", "p25", "p50", "p75", "p99"):
                        if summary.get(key) is not None:
                            values[_metric_key("score", col, key)] = summary[key]
                for col, v in record["psi"].items():
                    values[_metric_key("psi", col)] = v
                if record["psi"]:
                    values["drift/max_psi"] = max(record["psi"].values())
            metrics += [Metric(k, float(v), now, step) for k, v in values.items()]
        self._plot([record for _r, record, _s in entries if record is not None and record["quantiles"]], plots)
        for i in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per batch
            client.log_batch(self.mlflow_run_id, metrics=metrics[i:i + 900])
        if os.path.isdir(plots):
            client.log_artifacts(self.mlflow_run_id, plots, "plots")

    @staticmethod
    def _plot(records: list[dict], folder: str) -> None:
        """The group's score distributions in ONE figure: a partition over its reference, or, for a
        group of several partitions, each partition's distribution (the first one's reference too)."""
        from .report import distribution_figure, save_png

        if not records:
            return
        first, last = records[0], records[-1]
        column = first["partition_column"] or "table"
        series = {}
        for record in records:
            for c, q in record["quantiles"].items():
                if q:
                    series[f"{c} ({column}={record['partition']})"] = q
        for c, q in first["reference_quantiles"].items():
            if c in first["quantiles"] and q:
                series[f"{c} (reference {first['reference']})"] = q
        if len(records) == 1:
            name, title = _file_part(first["partition"]), f"score distribution, partition {first['partition']}"
        else:
            name = f"{_file_part(first['partition'])}_to_{_file_part(last['partition'])}"
            title = f"score distributions, {len(records)} partitions {first['partition']} .. {last['partition']}"
        save_png(distribution_figure(title, series), os.path.join(folder, f"score_distribution_{name}.png"))

    # ----------------------------------------------------------------- finish
    def finish(self, job_result, failed: bool) -> None:
        """Write the run's artifacts, tag the model versions, end the MLflow run."""
        try:
            if self.mlflow_run_id:
                self._finish_mlflow(job_result, failed)
        except Exception as exc:  # noqa: BLE001
            log.warning("MLflow tracking could not finish run %s: %s", self.mlflow_run_id, exc)
        finally:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def _finish_mlflow(self, job_result, failed: bool) -> None:
        from mlflow.tracking import MlflowClient

        from .report import drift_figure, drift_html, save_png

        client, run_id = MlflowClient(), self.mlflow_run_id
        rows = [
            {k: getattr(p, k) for k in ("partition", "status", "rows_in", "rows_scored",
                                        "rows_quarantined", "seconds", "output_version", "message")}
            for p in job_result.partitions
        ]
        client.log_text(run_id, json.dumps(rows, indent=2, default=str), "partitions.json")
        client.log_text(run_id, json.dumps(self.records, indent=2, default=str), "partition_stats.json")
        for key in ("rows_in", "rows_scored", "rows_quarantined"):
            client.log_metric(run_id, f"total_{key}", float(getattr(job_result, key)))
        drift = self.drift_report()
        client.set_tag(run_id, "spark_scoring.drift", drift["status"])
        if self.cfg.drift.enabled and self.records:
            folder = os.path.join(self._workdir, "drift")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "drift_report.json"), "w", encoding="utf-8") as fh:
                json.dump(drift, fh, indent=2, default=str)
            with open(os.path.join(folder, "drift_report.html"), "w", encoding="utf-8") as fh:
                fh.write(drift_html(drift))
            figure = drift_figure(drift)
            if figure is not None:
                save_png(figure, os.path.join(folder, "drift_report.png"))
            client.log_artifacts(run_id, folder, "drift")
        self._tag_model_versions(client, job_result)
        client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def drift_report(self) -> dict:
        """The run's drift findings: settings, overall status, and per partition the PSI of each column."""
        cfg = self.cfg.drift
        parts = [
            {k: r[k] for k in ("partition", "reference", "psi", "flagged", "drift", "note", "score_columns",
                               "feature_columns")}
            for r in self.records
        ]
        states = {p["drift"] for p in parts}
        status = next((s for s in ("fail", "warn", "ok") if s in states), "not_checked")
        return {
            "run_id": self.mlflow_run_id,
            "partition_column": self.cfg.input.partition_by,
            "reference": cfg.reference,
            "threshold": cfg.threshold,
            "on_drift": cfg.on_drift,
            "bins": cfg.bins,
            "status": status if cfg.enabled else "not_checked",
            "partitions": parts,
        }

    def _tag_model_versions(self, client, job_result) -> None:
        done = [p.partition for p in job_result.partitions if p.status in ("scored", "recovered")]
        if not done:
            return
        shown = ",".join(str(p) for p in done)
        tags = {
            "spark_scoring.last_scored_table": self.run.output_ref.name,
            "spark_scoring.last_run_id": self.mlflow_run_id,
            "spark_scoring.last_experiment_id": self.experiment_id,
            "spark_scoring.last_scored_partitions": shown if len(shown) <= 4000 else shown[:3997] + "...",
            "spark_scoring.last_scored_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        for p in self.run.models:
            if not (p.model.name and p.model.version):
                continue  # runs:/ and path models have no registry version to tag
            try:
                for key, value in tags.items():
                    client.set_model_version_tag(p.model.name, str(p.model.version), key, str(value))
            except Exception as exc:  # noqa: BLE001
                log.warning("could not tag model version %s/%s: %s", p.model.name, p.model.version, exc)
