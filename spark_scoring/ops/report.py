"""A job run's report: plots, a terminal summary and an HTML page (``spark-scoring report``).

Runs on: the driver (or any machine that can reach the MLflow tracking server;
no Spark needed). Plots are drawn on matplotlib ``Figure`` objects with the Agg
canvas, never through ``pyplot``, so they need no display and touch no global
state.

- :func:`distribution_figure`, :func:`drift_figure`, :func:`comparison_figure`
  draw from aggregated quantiles and PSI values (no rows needed);
  :func:`save_png` writes one.
- :func:`load_report` reads a run back from MLflow (params, tags, metrics per
  partition, ``partitions.json``, ``partition_stats.json``, the drift report)
  and downloads its plots; :func:`write_html` writes ``index.html`` next to
  them; :func:`summary_table` is the terminal view.
- :func:`find_last_run` finds the newest run of a job config (by experiment and
  output table); :func:`report_command` is the CLI.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "distribution_figure",
    "drift_figure",
    "comparison_figure",
    "save_png",
    "drift_html",
    "RunReport",
    "load_report",
    "find_last_run",
    "summary_table",
    "write_html",
    "report_command",
]


# ------------------------------------------------------------------- plots
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike) -> str:
    """Write ``fig`` as a PNG (folders created); returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _density(quantiles: Sequence[float], edges: np.ndarray) -> np.ndarray:
    """The mass per bin of ``edges`` implied by a distribution's percentiles (a piecewise-linear CDF)."""
    from .drift import PLOT_QUANTILES

    q = np.asarray(quantiles, dtype=float)
    levels = np.asarray(PLOT_QUANTILES[: len(q)], dtype=float)
    # keep the highest level at each repeated value, so the CDF is a function of x
    xs, last = np.unique(q[::-1], return_index=True)
    ys = levels[::-1][last]
    cdf = np.interp(edges, xs, ys, left=0.0, right=1.0)
    return np.diff(cdf)


def _colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def distribution_figure(title: str, series: Mapping[str, Sequence[float]], bins: int = 40):
    """Overlaid histograms of distributions given by their PLOT_QUANTILES (label -> percentiles)."""
    fig = _figure(7, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    series = {k: v for k, v in series.items() if v}
    if series:
        lo = min(min(v) for v in series.values())
        hi = max(max(v) for v in series.values())
        if hi <= lo:
            hi = lo + 1e-9 if lo == 0 else lo + abs(lo) * 1e-6
        edges = np.linspace(lo, hi, bins + 1)
        many = len(series) > 8  # a backfill's group: colours in partition order, the ends labelled
        colours = iter(_colours(len(series))) if many else None
        for i, (label, q) in enumerate(series.items()):
            mass = _density(q, edges)
            if len(set(q)) == 1:  # a constant: all mass in its bin
                mass = np.zeros(bins)
                mass[min(int(np.searchsorted(edges, q[0], side="right")) - 1, bins - 1)] = 1.0
            shown = label if not many or i in (0, len(series) - 2, len(series) - 1) else "_nolegend_"
            ax.stairs(mass, edges, label=shown, fill=False, linewidth=1.0 if many else 1.6,
                      color=next(colours) if many else None)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no numeric scores", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("score")
    ax.set_ylabel("fraction of rows")
    fig.tight_layout()
    return fig


def drift_figure(report: Mapping[str, Any]):
    """A heat map of PSI, partitions by columns, cells above the threshold outlined; None if no PSI."""
    parts = [p for p in report.get("partitions", []) if p.get("psi")]
    if not parts:
        return None
    columns: list[str] = []
    for p in parts:
        columns += [c for c in p["psi"] if c not in columns]
    grid = np.full((len(parts), len(columns)), np.nan)
    for i, p in enumerate(parts):
        for j, c in enumerate(columns):
            if c in p["psi"]:
                grid[i, j] = p["psi"][c]
    threshold = float(report.get("threshold", 0.2))
    fig = _figure(max(5, 0.8 * len(columns) + 2.5), max(2.5, 0.45 * len(parts) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    top = max(threshold * 2, float(np.nanmax(grid)))
    image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=top, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(parts)), [f"{p['partition']} vs {p['reference']}" for p in parts], fontsize=8)
    if grid.size <= 400:
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 * top else "black",
                        fontweight="bold" if v > threshold else "normal")
    fig.colorbar(image, ax=ax, label="PSI")
    ax.set_title(f"PSI against the reference ({report.get('reference')}); threshold {threshold:g}", fontsize=10)
    fig.tight_layout()
    return fig


def comparison_figure(stats: Mapping[str, Any]):
    """Two score columns of the same rows (see :func:`spark_scoring.drift.compare_scores`):
    their distributions overlaid, and a quantile-quantile plot."""
    from .drift import PLOT_QUANTILES

    first, second = stats["columns"]
    qa, qb = stats[first]["quantiles"], stats[second]["quantiles"]
    fig = _figure(10, 3.8)
    left = fig.add_subplot(1, 2, 1)
    lo, hi = min(qa[0], qb[0]), max(qa[-1], qb[-1])
    edges = np.linspace(lo, hi if hi > lo else lo + 1e-9, 41)
    for label, q in ((first, qa), (second, qb)):
        left.stairs(_density(q, edges), edges, label=label, linewidth=1.6)
    left.legend(fontsize=8)
    left.set_title(f"distributions ({stats['rows']} rows, PSI {stats['psi']:.3f})", fontsize=10)
    left.set_xlabel("score")
    left.set_ylabel("fraction of rows")
    right = fig.add_subplot(1, 2, 2)
    right.plot(qa, qb, marker=".", linewidth=1)
    right.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=1)
    for level in (0.25, 0.5, 0.75):
        i = PLOT_QUANTILES.index(level)
        right.annotate(f"p{int(level * 100)}", (qa[i], qb[i]), fontsize=7)
    right.set_xlabel(f"{first} quantiles")
    right.set_ylabel(f"{second} quantiles")
    agree = stats.get("agreement")
    right.set_title(
        f"Q-Q; agreement at {stats['threshold']:g}: {agree:.1%}" if agree is not None else "Q-Q", fontsize=10)
    fig.tight_layout()
    return fig


# -------------------------------------------------------------------- HTML
def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _render(template: str, **context) -> str:
    """A page from ``templates/`` (Jinja2, autoescaped: user data never becomes markup)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("spark_scoring.ops", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["cell"] = _cell
    return env.get_template(template).render(**context)


def _drift_rows(report: Mapping[str, Any]) -> tuple[list[list[Any]], list[str]]:
    rows, classes = [], []
    for p in report.get("partitions", []):
        if not p.get("psi"):
            rows.append([p["partition"], p.get("reference"), "", "", p.get("drift"), p.get("note", "")])
            classes.append("")
            continue
        for c, v in sorted(p["psi"].items(), key=lambda kv: -kv[1]):
            kind = "score" if c in p.get("score_columns", []) else "feature"
            flagged = c in p.get("flagged", [])
            rows.append([p["partition"], p.get("reference"), f"{c} ({kind})", v,
                         p["drift"] if flagged else "ok", ""])
            classes.append("drift" if flagged else "")
    return rows, classes


def drift_html(report: Mapping[str, Any]) -> str:
    """A standalone HTML page of the drift table (logged as ``drift/drift_report.html``)."""
    rows, classes = _drift_rows(report)
    return _render("drift.html.j2", title="Drift report", report=report, drift_rows=rows, drift_classes=classes)


# ----------------------------------------------------------- reading a run
@dataclass
class RunReport:
    """A job run read back from MLflow; ``folder`` holds its downloaded plots."""

    run_id: str
    experiment: str
    status: str
    start: dt.datetime | None
    end: dt.datetime | None
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[int, dict[str, float]]  # step -> metric -> value
    totals: dict[str, float]
    partitions: list[dict]
    stats: list[dict]
    drift: dict
    folder: Path
    plots: list[str] = field(default_factory=list)  # relative to folder
    drift_plot: str | None = None


def _client(tracking_uri: str | None = None):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri) if tracking_uri else MlflowClient()


def _json_artifact(client, run_id: str, path: str, folder: str, default: Any) -> Any:
    try:
        local = client.download_artifacts(run_id, path, folder)
    except Exception:  # noqa: BLE001 - a run that died early has fewer artifacts
        return default
    with open(local, encoding="utf-8") as fh:
        return json.load(fh)


def load_report(run_id: str, folder: str | os.PathLike, *, client=None) -> RunReport:
    """Read run ``run_id`` from MLflow and download its plots into ``folder``."""
    import tempfile

    from ..errors import ConfigError

    client = client or _client()
    try:
        run = client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"--run-id {run_id!r}: no such MLflow run at {_tracking_uri(client)} "
                          f"({type(exc).__name__}). Fix: check the id, or point MLFLOW_TRACKING_URI "
                          "(or --tracking-uri) at the tracking server the job used.") from None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metrics: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        if key.startswith("total_"):
            continue
        for m in client.get_metric_history(run_id, key):
            metrics.setdefault(int(m.step), {})[key] = float(m.value)
    totals = {k: v for k, v in run.data.metrics.items() if k.startswith("total_")}
    with tempfile.TemporaryDirectory() as tmp:
        partitions = _json_artifact(client, run_id, "partitions.json", tmp, [])
        stats = _json_artifact(client, run_id, "partition_stats.json", tmp, [])
        drift = _json_artifact(client, run_id, "drift/drift_report.json", tmp, {})
    plots, drift_plot = [], None
    names = {a.path for a in client.list_artifacts(run_id)}
    if "plots" in names:
        client.download_artifacts(run_id, "plots", str(folder))
        plots = sorted(f"plots/{p.name}" for p in (folder / "plots").glob("*.png"))
    if "drift" in names and any(a.path == "drift/drift_report.png" for a in client.list_artifacts(run_id, "drift")):
        (folder / "drift").mkdir(exist_ok=True)
        client.download_artifacts(run_id, "drift/drift_report.png", str(folder / "drift"))
        drift_plot = "drift/drift_report.png"
    exp = client.get_experiment(run.info.experiment_id)

    def when(ms):
        return None if not ms else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)

    return RunReport(
        run_id=run_id, experiment=exp.name if exp else run.info.experiment_id, status=run.info.status,
        start=when(run.info.start_time), end=when(run.info.end_time), params=dict(run.data.params),
        tags={k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") or k == "mlflow.runName"},
        metrics=metrics, totals=totals, partitions=partitions, stats=stats, drift=drift, folder=folder,
        plots=plots, drift_plot=drift_plot,
    )


def _tracking_uri(client) -> str:
    return getattr(client, "tracking_uri", None) or getattr(getattr(client, "_tracking_client", None),
                                                                "tracking_uri", "the tracking server")


def find_last_run(config, *, client=None) -> str:
    """The id of the newest MLflow run of the job ``config`` (path, dict or JobConfig):
    the newest run in its ``tracking.experiment`` that wrote its ``output.table``."""
    from ..config import load_config
    from ..delta.tables import TableRef
    from ..errors import ConfigError

    cfg = load_config(config)
    client = client or _client()
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    output = TableRef.parse(cfg.output.table).name
    if exp is not None:
        runs = client.search_runs(
            [exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000,
        )
        for r in runs:
            if r.data.tags.get("spark_scoring.output_table") == output:
                return r.info.run_id
    raise ConfigError(
        f"no MLflow run of this job yet: experiment {cfg.tracking.experiment!r} at {_tracking_uri(client)} "
        f"has no run writing {output!r}. Fix: run the job first, or point the config's mlflow.tracking_uri "
        "(or --tracking-uri, or MLFLOW_TRACKING_URI) at the tracking server it used."
    )


# ----------------------------------------------------------------- rendering
def _steps(report: RunReport) -> list[dict]:
    """Per tracked partition: its partitions.json row merged with its stats record."""
    tracked = [p for p in report.partitions if p.get("status") != "skipped"]
    by_step = {s["step"]: s for s in report.stats}
    out = []
    for i, p in enumerate(tracked):
        out.append({**p, "step": i, **{k: v for k, v in by_step.get(i, {}).items()
                                       if k in ("summary", "psi", "flagged", "drift", "reference", "note")}})
    return out


def summary_table(report: RunReport):
    """The rich Table printed by ``spark-scoring report``."""
    from rich.table import Table
    from rich.text import Text

    rows = _steps(report)
    skipped = [p for p in report.partitions if p.get("status") == "skipped"]
    score_cols: list[str] = []
    for r in rows:
        score_cols += [c for c in r.get("summary", {}) if c not in score_cols]
    table = Table(title=Text(f"MLflow run {report.run_id} ({report.status}): "
                             f"{report.params.get('output_table', '')}"), title_justify="left")
    for name in ("partition", "status", "rows in", "scored", "quarantined", "seconds"):
        table.add_column(name, justify="left" if name in ("partition", "status") else "right")
    for c in score_cols[:3]:
        table.add_column(f"{c} mean", justify="right")
        table.add_column(f"{c} p50", justify="right")
    table.add_column("max PSI", justify="right")
    table.add_column("drift")
    for r in rows:  # cells are Text: a partition named "[red]" prints as it is, not as markup
        cells = [str(r.get("partition")), str(r.get("status")), str(r.get("rows_in", "")),
                 str(r.get("rows_scored", "")), str(r.get("rows_quarantined", "")), f"{r.get('seconds', 0):.1f}"]
        for c in score_cols[:3]:
            s = r.get("summary", {}).get(c, {})
            cells += [_num(s.get("mean")), _num(s.get("p50"))]
        psi = r.get("psi") or {}
        worst = max(psi, key=psi.get) if psi else None
        cells.append(f"{psi[worst]:.3f} ({worst})" if worst else "")
        style = {"fail": "bold red", "warn": "yellow"}.get(r.get("drift", ""), "")
        texts = [Text(c) for c in cells] + [Text(str(r.get("drift", "")), style=style)]
        table.add_row(*texts)
    if skipped:
        table.caption = f"{len(skipped)} partition(s) skipped: already scored by this model version"
    return table


def _num(value: Any) -> str:
    return "" if value is None else f"{float(value):.4g}"


def write_html(report: RunReport) -> Path:
    """Write ``index.html`` into ``report.folder`` (plots referenced by relative path)."""
    rows = _steps(report)
    header = [
        ["status", report.status], ["experiment", report.experiment],
        ["started", report.start], ["ended", report.end],
        ["input", f"{report.params.get('input_table', '')} @ version {report.params.get('input_version', '')}"],
        ["output", f"{report.params.get('output_table', '')} ({report.params.get('output_mode', '')})"],
        ["models", report.params.get("models", "")], ["drift", report.tags.get("spark_scoring.drift", "")],
        *[[k, v] for k, v in sorted(report.totals.items())],
    ]
    partitions = [[r.get("partition"), r.get("status"), r.get("rows_in"), r.get("rows_scored"),
                   r.get("rows_quarantined"), r.get("seconds"), r.get("output_version"), r.get("message", "")]
                  for r in report.partitions]
    summary = [[r["partition"], col] + [s.get(k) for k in
                                        ("count", "mean", "std", "min", "p01", "p25", "p50", "p75", "p99", "max")]
               for r in rows for col, s in r.get("summary", {}).items()]
    keys = sorted({k for m in report.metrics.values() for k in m},
                  key=lambda k: (not k.startswith("rows") and k != "seconds", k))
    by_step = {r["step"]: r["partition"] for r in rows}
    metrics = [[step, by_step.get(step, "")] + [report.metrics[step].get(k) for k in keys]
               for step in sorted(report.metrics)]
    drift_rows, drift_classes = _drift_rows(report.drift)
    page = _render(
        "report.html.j2", title=f"spark_scoring run {report.run_id}", header=header, partitions=partitions,
        partition_classes=["failed" if r.get("status") == "failed" else "" for r in report.partitions],
        summary=summary, plots=report.plots, drift=report.drift, drift_plot=report.drift_plot,
        drift_rows=drift_rows, drift_classes=drift_classes, metric_keys=keys, metrics=metrics,
        params=sorted(report.params.items()), tags=sorted(report.tags.items()),
    )
    path = report.folder / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def report_command(
    run_id: str | None = None,
    *,
    config: str | None = None,
    out: str | None = None,
    tracking_uri: str | None = None,
    console=None,
) -> Path:
    """``spark-scoring report``: print the run's summary, write its HTML page; returns the page's path.

    Give ``run_id``, or ``config`` for the newest run of that job.
    """
    from rich.console import Console

    from .. import servers
    from ..config import load_config
    from ..errors import ConfigError

    cfg = load_config(config) if config else None
    chosen = servers.use(servers.resolve(tracking_uri, None, cfg))  # the flag, else the config's mlflow section
    client = _client(chosen.tracking_uri)
    if run_id is None:
        if cfg is None:
            raise ConfigError("give --run-id ID, or --last with --config conf/<job>.yaml")
        run_id = find_last_run(cfg, client=client)
    folder = Path(out) if out else Path.cwd() / f"scoring_report_{run_id}"
    report = load_report(run_id, folder, client=client)
    console = console or Console(width=140)
    console.print(summary_table(report))
    drift = report.drift.get("status") if report.drift else "not_checked"
    console.print("totals: " + ", ".join(f"{k[6:]} {int(v)}" for k, v in sorted(report.totals.items()))
                  + f"; drift: {drift}", highlight=False)
    path = write_html(report)
    console.print(f"report: {path}", highlight=False, soft_wrap=True)
    return path
