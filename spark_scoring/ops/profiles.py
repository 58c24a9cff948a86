"""Score summaries and drift of committed partitions: from the scoring pass, else two Spark jobs.

Runs on: the driver. :class:`Profiles` turns a committed group of partitions
(one ``output.partitions_per_commit`` commit) into one record per partition:
the score summary, the percentiles for plots, and the PSI of every score and
feature column against the partition's reference (``drift.reference``).

A group scored by the direct scan brings its statistics with it: the scan's
tasks sketched the columns :meth:`Profiles.scan_columns` named while handing the
rows to the writer (:class:`~spark_scoring.executor.profiles.ColumnSketch`), so
the records cost no Spark job (summary moments exact; percentiles and PSI bin
counts exact for up to 1,001 distinct values per task and column, else within
1/1000 of the rows). Any other group (the UDF path, a recovered commit, Spark
Connect) costs two Spark jobs over the committed output, whatever its size
(their per-row work in the Python workers, :mod:`spark_scoring.executor.profiles`):

1. :func:`~.drift.group_stats`: each partition's summary, plot percentiles and
   bin edges (grouped by partition);
2. :func:`~.drift.group_counts`: each partition's rows in its reference's bins
   (for its PSI) and in its own bins (for when it is a later partition's
   reference), exact, the edges shipped to the tasks with the job.

Profiles of partitions of this run are kept, so ``reference: previous`` reads
no partition twice; a reference outside the run (scored by an earlier run, or
a fixed ``drift.reference``) costs two more jobs, once per run. The records
are plain dicts (``partition_stats.json`` in the MLflow run); what to do about
them (print, fail, log) is :mod:`.tracking`'s.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ..job.results import partition_text
from ..session import set_job_description

__all__ = ["Profiles"]


class Profiles:
    """Driver: per-partition records of a run (see the module docstring); ``plan`` is the JobPlan."""

    def __init__(self, cfg, plan):
        self.cfg = cfg
        self.plan = plan
        self._profiles: dict[str | None, dict] = {}  # partition text -> edges, quantiles, counts
        self._input_partitions: dict[str | None, Any] | None = None
        self._scan_columns: tuple[list[str], list[str]] | None = None  # (scores, features), from scan_columns

    def scan_columns(self, schema) -> list[str]:
        """The columns to sketch in the scoring pass (scores; features too with drift on), from the
        scored rows' ``schema``; kept for the records of the units the pass sketches."""
        scores, features = self._columns(schema)
        self._scan_columns = (scores, features)
        return scores + (features if self.cfg.drift.enabled else [])

    def records(self, done: Sequence[tuple[Any, Any]], first_step: int,
                sketches: Mapping[str | None, Mapping[str, Any]] | None = None) -> dict[str | None, dict]:
        """``{partition text: record}`` for the scored (or recovered) units of one committed group.

        ``sketches``: ``{unit text: {column: ColumnSketch}}`` from the scoring pass; when every unit
        of the group has them (and :meth:`scan_columns` named the columns), no Spark job runs.
        """
        from ..delta.sql import partition_predicate
        from .drift import group_counts, group_stats, partition_stats, sketch_stats

        cfg, plan = self.cfg, self.plan
        steps = {unit.text: first_step + i for i, (unit, _res) in enumerate(done)}
        scored = [(u, r) for u, r in done if r.status in ("scored", "recovered")]
        if not scored:
            return {}
        found = {u.text: (sketches or {}).get(u.text) for u, _r in scored}
        if self._scan_columns is not None and all(v is not None for v in found.values()):
            out, (scores, features) = None, self._scan_columns
        else:  # a recovered unit, another scoring path: the committed output, one or two Spark jobs
            found = {}
            versions = [r.output_version for _u, r in scored if r.output_version is not None]
            out = plan.output_ref.read(plan.spark, max(versions) if versions else None)
            scores, features = self._columns(out.schema)
            shown = ", ".join(str(u.text) for u, _r in scored[:3]) + (" ..." if len(scored) > 3 else "")
            set_job_description(plan.spark, f"spark_scoring {plan.output_ref.name}: "
                                            f"{cfg.input.partition_by}={shown} (summary+drift)")
        profiled = scores + features if cfg.drift.enabled else []
        column, bins = cfg.input.partition_by, cfg.drift.bins
        if column is None:  # the whole table: a summary, nothing to compare with
            unit, res = scored[0]
            stats = sketch_stats(found[unit.text], scores, [], bins) if found else partition_stats(out, scores, [], bins)
            note = "the input is not partitioned: nothing to compare with" if cfg.drift.enabled else ""
            return {unit.text: self._record(res, steps[unit.text], column, scores, features, stats,
                                            None, None, {}, note)}

        groups = {u.text: partition_predicate(column, u.value) for u, _r in scored}
        stats = ({t: sketch_stats(found[t], scores, profiled, bins) for t in groups} if found
                 else group_stats(out, groups, scores, profiled, bins))
        for text, st in stats.items():
            self._profiles[text] = {"edges": st["edges"], "quantiles": st["quantiles"]}
        references = {u.text: self._reference(u.text, groups, profiled) if cfg.drift.enabled else (None, None, "")
                      for u, _r in scored}
        requests = {f"own:{t}": (t, stats[t]["edges"]) for t in groups}
        for t, (_ref, ref_edges, _note) in references.items():
            if ref_edges:
                requests[f"psi:{t}"] = (t, ref_edges)
        if not profiled:
            counts = {}
        elif found:  # the sketches' counts (exact where a sketch kept every distinct value)
            counts = {rid: {c: found[t][c].bin_counts(e) for c, e in edges.items() if c in found[t]}
                      for rid, (t, edges) in requests.items()}
        else:
            counts = group_counts(out, groups, requests, bins)
        for t in groups:
            self._profiles[t]["counts"] = counts.get(f"own:{t}", {})
        records = {}
        for unit, res in scored:
            ref, ref_edges, note = references[unit.text]
            ref_profile = None
            if ref_edges:
                own = self._profiles[ref]
                ref_profile = {"edges": ref_edges, "counts": own["counts"], "quantiles": own.get("quantiles", {})}
            records[unit.text] = self._record(res, steps[unit.text], column, scores, features, stats[unit.text],
                                              ref, ref_profile, counts.get(f"psi:{unit.text}", {}), note)
        return records

    # ------------------------------------------------------------- a record
    def _record(self, result, step, column, scores, features, stats, reference, ref_profile, counts, note):
        from .drift import psi_from_counts

        cfg = self.cfg
        psi, too_few = {}, False
        for c, got in counts.items():
            ref_counts = (ref_profile or {}).get("counts", {}).get(c)
            if not (ref_counts and sum(ref_counts) and sum(got)):
                continue
            if min(sum(ref_counts), sum(got)) < cfg.drift.min_rows:
                too_few = True
                continue
            psi[c] = psi_from_counts(ref_counts, got)
        if ref_profile is not None and not psi:
            note = note or (
                f"fewer than drift.min_rows={cfg.drift.min_rows} rows on a side; PSI not computed"
                if too_few else "no rows to compare"
            )
        flagged = sorted((c for c, v in psi.items() if v > cfg.drift.threshold), key=lambda c: -psi[c])
        status = "not_checked" if not cfg.drift.enabled else ("no_reference" if not psi else "ok")
        if flagged:
            status = "fail" if cfg.drift.on_drift == "fail" else "warn"
        return {
            "step": step,
            "partition": result.partition,
            "partition_column": column,
            "status": result.status,
            "output_version": result.output_version,
            "rows_in": result.rows_in,
            "rows_scored": result.rows_scored,
            "rows_quarantined": result.rows_quarantined,
            "seconds": result.seconds,
            "score_columns": scores,
            "feature_columns": features,
            "summary": stats["summary"],
            "quantiles": stats["quantiles"],
            "reference": reference,
            "reference_quantiles": (ref_profile or {}).get("quantiles", {}),
            "psi": psi,
            "threshold": cfg.drift.threshold,
            "flagged": flagged,
            "drift": status,
            "note": note,
        }

    def _columns(self, schema) -> tuple[list[str], list[str]]:
        """(numeric score columns, numeric feature columns) present in the output."""
        from pyspark.sql.types import NumericType, StringType, StructType

        types = {f.name: f.dataType for f in schema.fields}
        scores: list[str] = []
        for p in self.plan.models:
            t = types.get(p.output_column)
            if isinstance(t, NumericType):
                scores.append(p.output_column)
            elif isinstance(t, StructType):
                scores += [f"{p.output_column}.{f.name}" for f in t.fields
                           if isinstance(f.dataType, NumericType) and p.output_column + "." + f.name not in types]
        features: list[str] = []
        for p in self.plan.models:
            for c, target in zip(p.columns, p.spark_types):
                t = types.get(c)
                numeric = isinstance(t, NumericType) or (isinstance(t, StringType) and isinstance(target, NumericType))
                if numeric and c not in features and c not in scores:
                    features.append(c)
        return scores, features

    # ------------------------------------------------------------ reference
    def _reference(self, current, groups, columns) -> tuple[str | None, dict | None, str]:
        """(reference partition, its bin edges, a note when there is none) for partition ``current``.

        A reference in this group has its edges from this group's first job; one
        profiled earlier in the run is reused; any other is profiled now (once).
        """
        cfg = self.cfg
        column = cfg.input.partition_by
        values = self._partitions()
        if cfg.drift.reference == "previous":
            earlier = sorted(t for t in values if t is not None and current is not None and t < current)
            if not earlier:
                return None, None, f"no input partition before {column}={current!r}"
            ref = earlier[-1]
        else:
            ref = cfg.drift.reference
            if ref == current:
                return ref, None, "this partition is the reference"
        profile = self._profiles.get(ref)
        if ref not in groups and not (profile and "counts" in profile):
            profile = self._profile(ref, values.get(ref, ref), columns)
        edges = {c: e for c, e in (profile or {}).get("edges", {}).items() if c in columns}
        if not edges:
            return ref, None, f"reference {column}={ref!r} has no scored rows in {self.plan.output_ref.name}"
        return ref, edges, ""

    def _partitions(self) -> dict[str | None, Any]:
        """``{partition text: value}`` of the pinned input snapshot (from its log, else one Spark job; once a run)."""
        if self._input_partitions is None:
            from ..job.sources import input_partition_counts

            values = input_partition_counts(self.plan)
            self._input_partitions = {partition_text(v): v for v in values}
        return self._input_partitions

    def _profile(self, text: str, value: Any, columns: list[str]) -> dict | None:
        """A reference partition outside this run: its edges and counts, from the output's latest version."""
        from ..delta.sql import partition_predicate
        from .drift import PLOT_QUANTILES, column_quantiles, histograms

        spark, column = self.plan.spark, self.cfg.input.partition_by
        out = self.plan.output_ref.read(spark)
        present = [c for c in columns if c in out.columns or c.split(".", 1)[0] in out.columns]
        ref = out.where(partition_predicate(column, value))
        set_job_description(spark, f"spark_scoring {self.plan.output_ref.name}: reference {column}={text}")
        bins = self.cfg.drift.bins
        levels = sorted(set(PLOT_QUANTILES) | {k / bins for k in range(1, bins)})
        found = column_quantiles(ref, present, levels)
        if all(q is None for q in found.values()):
            return None
        wanted = [levels.index(k / bins) for k in range(1, bins)]
        edges = {c: sorted(set(q[i] for i in wanted)) for c, q in found.items() if q is not None}
        profile = {
            "edges": edges,
            "quantiles": {c: [q[levels.index(x)] for x in PLOT_QUANTILES] for c, q in found.items() if q is not None},
            "counts": histograms(ref, edges),
        }
        if not any(sum(v) for v in profile["counts"].values()):
            return None
        self._profiles[text] = profile
        return profile
