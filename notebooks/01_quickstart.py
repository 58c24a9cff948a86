# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Quickstart: score a DataFrame with a registered model
# MAGIC
# MAGIC Load a model **by alias** (`models:/demo_churn@champion`), score a Spark DataFrame with
# MAGIC `spark_scoring.score`, and look at the predictions and the lineage columns every row carries:
# MAGIC `model_name`, `model_version` (the pinned version the alias pointed to, never the alias) and
# MAGIC `scored_at`.
# MAGIC
# MAGIC On Databricks the parameters are widgets. Run locally (`python notebooks/01_quickstart.py`) it uses
# MAGIC the embedded demo: a local MLflow registry with real models and a small Delta table under
# MAGIC `$SPARK_SCORING_WORKSPACE` (default `demo_workspace`); any parameter can be overridden with
# MAGIC `SPARK_SCORING_<NAME>` (e.g. `SPARK_SCORING_PARTITION=2026-11-26`).

# COMMAND ----------

from spark_scoring import notebook

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",  # demo files: registry, tables, plots
    "demo": "true",  # "true": build the embedded demo registry and table if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_rows": "2000",  # rows per demo partition
    "model": "models:/demo_churn@champion",
    "table": "",  # the table to score (default: the demo customers table)
    "partition": "2026-11-27",  # the ds partition to score
}
params, show = notebook.setup(PARAMS, globals())  # widgets on Databricks, else $SPARK_SCORING_<NAME>

# COMMAND ----------

# MAGIC %md ## The demo (skipped with `demo=false`)

# COMMAND ----------

from spark_scoring import get_spark

spark = get_spark()
table = notebook.demo_table(spark, params)  # with demo=true: the demo registry and table, where missing

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score
# MAGIC `load_model` asks the registry once which version the alias points to and pins it. `score` is lazy,
# MAGIC like any transformation; rows with null/NaN/infinite features get a null prediction here
# MAGIC (`on_null="null_prediction"`), where a job would quarantine them.

# COMMAND ----------

import spark_scoring

model = spark_scoring.load_model(params["model"])
print(f"{model.source_uri} -> {model.uri} (flavor {model.flavor})")

read = spark.read.format("delta").load(table) if "/" in table else spark.table(table)
customers = read.where(read.ds == params["partition"])
scored = spark_scoring.score(customers, model, output_col="churn_probability", on_null="null_prediction")

# COMMAND ----------

# MAGIC %md ## Predictions and lineage

# COMMAND ----------

show(scored.select("customer_id", "ds", "churn_probability", "model_name", "model_version", "scored_at").limit(10))
