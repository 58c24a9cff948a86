# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · The nightly job: score a table, partition by partition
# MAGIC
# MAGIC The same job as `spark-scoring run --config conf/<job>.yaml` (and `jobs/score_table.py` under
# MAGIC `spark-submit`): a validated config, then one `run_job` call. It scores every input partition not
# MAGIC yet scored by this model version, one idempotent Delta commit per partition, quarantines bad rows,
# MAGIC writes an audit row per partition and records the run in MLflow (params, per-partition metrics,
# MAGIC score summaries, distribution plots, a drift report). Rerunning it does nothing new.
# MAGIC
# MAGIC Parameters: `config` (a YAML path; empty = the demo job) and `partitions` (comma-separated; empty =
# MAGIC everything not yet scored). Locally, `SPARK_SCORING_<NAME>` overrides each parameter.

# COMMAND ----------

from spark_scoring import notebook

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",
    "demo": "true",  # "true": build the embedded demo registry and table if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_rows": "2000",
    "config": "",  # a job config YAML; empty: the demo job (spark_scoring.demo.demo_config)
    "partitions": "",  # comma-separated partition values; empty: all not yet scored
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

# MAGIC %md ## A validated config
# MAGIC Every problem (unknown key, wrong type, missing value) is reported at once, before Spark does any work.

# COMMAND ----------

from spark_scoring import load_config

overrides = {}
if params["partitions"]:
    overrides["input.partitions"] = [p.strip() for p in params["partitions"].split(",") if p.strip()]
config = load_config(params["config"] or demo.demo_config(workspace, params["registry_dir"] or None), overrides)
print(config.model_dump_json(indent=2, exclude_none=True))

# COMMAND ----------

# MAGIC %md ## Run
# MAGIC Progress and the summary table are printed as it goes.

# COMMAND ----------

from spark_scoring import run_job

result = run_job(config, spark=spark)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The summary
# MAGIC One row per partition: `scored` (committed by this run), `skipped` (already scored by this model
# MAGIC version), `recovered` (committed by a run that died before its audit row). The run id is the MLflow
# MAGIC run id and the `scoring_run_id` of every row written.

# COMMAND ----------

import dataclasses

import pandas as pd

show(pd.DataFrame([dataclasses.asdict(p) for p in result.partitions]))
print(f"run {result.run_id}: rows in {result.rows_in} = scored {result.rows_scored} + quarantined "
      f"{result.rows_quarantined}; output {result.output_table}; audit {result.audit_table}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The run's report
# MAGIC The same as `spark-scoring report --run-id <id>`: the summary with score quantiles and drift per
# MAGIC partition, and an HTML page with the distribution plots, the drift table, params and metrics.

# COMMAND ----------

if config.tracking.enabled:
    from spark_scoring.ops.report import report_command

    page = report_command(result.run_id, out=str(workspace / "reports" / result.run_id))
