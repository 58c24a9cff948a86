# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Backfill a range of partitions
# MAGIC
# MAGIC Score every input partition from `start` to `end` (inclusive) with a **pinned** model version
# MAGIC (`models:/demo_churn/1`, not an alias, so the backfill is reproducible) into a history table.
# MAGIC
# MAGIC - **Resumable**: each partition is its own idempotent Delta commit plus an audit row. If the run
# MAGIC   stops (cluster lost, notebook cancelled), run the notebook again: partitions this model version
# MAGIC   already scored are skipped, and one committed just before the stop is found through its Delta
# MAGIC   transaction id (`recovered`) instead of being scored twice.
# MAGIC - **Progress**: one line per partition as it commits (rows in, scored, quarantined, seconds).
# MAGIC
# MAGIC Set `force=true` to rescore partitions this version already scored. Locally,
# MAGIC `SPARK_SCORING_<NAME>` overrides each parameter.

# COMMAND ----------

from spark_scoring import notebook

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",
    "demo": "true",  # "true": build the embedded demo registry and table if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_rows": "2000",
    "config": "",  # a job config YAML; empty: the demo job
    "model": "models:/demo_churn/1",  # a pinned version
    "output_table": "",  # default: <workspace>/tables/customer_scores_history
    "start": "2026-11-25",
    "end": "2026-11-27",
    "force": "false",
}
params, show = notebook.setup(PARAMS, globals())  # widgets on Databricks, else $SPARK_SCORING_<NAME>

# COMMAND ----------

# MAGIC %md ## The demo (skipped with `demo=false`)

# COMMAND ----------

from pathlib import Path

from spark_scoring import demo, get_spark

spark = get_spark()
workspace = Path(params["workspace"]).resolve()
table = notebook.demo_table(spark, params)  # with demo=true: the demo registry and table, where missing

# COMMAND ----------

# MAGIC %md
# MAGIC ## The partitions in the range, and a validated config
# MAGIC Only partitions that exist in the input are planned; missing days in the range are listed.

# COMMAND ----------

import pandas as pd

from spark_scoring import load_config

base = load_config(params["config"] or demo.demo_config(workspace, params["registry_dir"] or None))
source = base.input.table
read = spark.read.format("delta").load(source) if "/" in source else spark.table(source)
present = {str(r[0]) for r in read.select(base.input.partition_by).distinct().collect()}
days = [d.strftime("%Y-%m-%d") for d in pd.date_range(params["start"], params["end"], freq="D")]
partitions = [d for d in days if d in present]
print(f"{len(partitions)} of {len(days)} days in the range have input: {partitions}")
if len(partitions) < len(days):
    print(f"no input for: {[d for d in days if d not in present]}")
if not partitions:
    raise ValueError(f"no input partitions between {params['start']} and {params['end']} in {source}")

history = params["output_table"] or str(workspace / "tables" / "customer_scores_history")
config = load_config(base, {
    "model": params["model"],
    "input.partitions": partitions,
    "output.table": history,
    "output.audit_table": None,  # default: <history>_scoring_runs
    "quarantine_table": history + "_quarantine",
    "force": params["force"] == "true",
    "drift.enabled": False,  # history is being rewritten: no drift check
})

# COMMAND ----------

# MAGIC %md ## Run (one progress line per partition)

# COMMAND ----------

import sys

from spark_scoring import run_job
from spark_scoring.ops.progress import Reporter

result = run_job(config, spark=spark, reporter=Reporter(stream=sys.stdout))

# COMMAND ----------

# MAGIC %md ## What was done (rerun the notebook: everything below says `skipped`)

# COMMAND ----------

import dataclasses

show(pd.DataFrame([dataclasses.asdict(p) for p in result.partitions]))
done = sum(p.status in ("scored", "recovered", "skipped") for p in result.partitions)
print(f"backfill {params['start']}..{params['end']}: {done}/{len(partitions)} partitions done "
      f"({sum(p.status == 'skipped' for p in result.partitions)} were already scored); run {result.run_id}")
