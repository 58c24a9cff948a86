# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Champion vs challenger, in one pass
# MAGIC
# MAGIC Score one partition with two model versions **in one pass**: the config's `models:` list puts each
# MAGIC model's predictions in its own column, so the input partition is read once and both models run on
# MAGIC the same rows (the output's `model_versions` map records which version wrote which column). Then
# MAGIC compare the two score distributions and how often the models agree, from aggregates computed in
# MAGIC Spark (no rows are collected), and show the plot.
# MAGIC
# MAGIC Locally, `SPARK_SCORING_<NAME>` overrides each parameter.

# COMMAND ----------

from spark_scoring import notebook

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",
    "demo": "true",  # "true": build the embedded demo registry and table if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_rows": "2000",
    "config": "",  # a job config YAML; empty: the demo job
    "champion": "models:/demo_churn@champion",
    "challenger": "models:/demo_churn@challenger",
    "partition": "2026-11-27",
    "output_table": "",  # default: <workspace>/tables/customer_scores_compare
    "threshold": "0.5",  # a score >= threshold is a positive decision, for the agreement rate
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

# MAGIC %md ## A validated config with two models

# COMMAND ----------

from spark_scoring import load_config

compare = params["output_table"] or str(workspace / "tables" / "customer_scores_compare")
config = load_config(params["config"] or demo.demo_config(workspace, params["registry_dir"] or None), {
    "models": [
        {"uri": params["champion"], "output_column": "score_champion"},
        {"uri": params["challenger"], "output_column": "score_challenger"},
    ],
    "input.partitions": [params["partition"]],
    "output.table": compare,
    "output.audit_table": None,  # default: <compare>_scoring_runs
    "quarantine_table": compare + "_quarantine",
})
for spec in config.model_specs:
    print(f"{spec.output_column}: {spec.uri}")

# COMMAND ----------

# MAGIC %md ## Score both in one pass

# COMMAND ----------

from spark_scoring import run_job

result = run_job(config, spark=spark)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Compare
# MAGIC Distributions (overlaid, and quantile against quantile), the PSI of the challenger's scores against
# MAGIC the champion's, their correlation and the share of rows where both make the same decision at
# MAGIC `threshold`.

# COMMAND ----------

from spark_scoring.ops.drift import compare_scores
from spark_scoring.ops.report import comparison_figure, save_png

read = spark.read.format("delta").load(compare) if "/" in compare else spark.table(compare)
partition_rows = read.where(read[config.input.partition_by] == params["partition"])
stats = compare_scores(partition_rows, "score_champion", "score_challenger", threshold=float(params["threshold"]))
summary = {k: stats[k] for k in ("rows", "correlation", "mean_abs_diff", "max_abs_diff", "agreement", "psi")}
summary.update({f"mean {c}": stats[c]["mean"] for c in stats["columns"]})
for key, value in summary.items():
    print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")

# COMMAND ----------

show(partition_rows.select("customer_id", "score_champion", "score_challenger", "model_versions").limit(5))

# COMMAND ----------

figure = comparison_figure(stats)
try:
    display(figure)  # noqa: F821
except NameError:
    path = save_png(figure, workspace / "plots" / f"champion_vs_challenger_{params['partition']}.png")
    print(f"plot: {path}")
