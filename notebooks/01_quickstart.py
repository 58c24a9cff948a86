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

import os

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",  # demo files: registry, tables, plots
    "demo": "true",  # "true": build the embedded demo registry and table if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_rows": "2000",  # rows per demo partition
    "model": "models:/demo_churn@champion",
    "table": "",  # the table to score (default: the demo customers table)
    "partition": "2026-11-27",  # the ds partition to score
}
try:
    dbutils  # noqa: F821 - defined in Databricks notebooks only
except NameError:
    params = {k: os.environ.get(f"SPARK_SCORING_{k.upper()}", v) for k, v in PARAMS.items()}
else:
    for key, default in PARAMS.items():
        dbutils.widgets.text(key, default)  # noqa: F821
    params = {k: dbutils.widgets.get(k) for k in PARAMS}  # noqa: F821


def show(obj):
    """display() in Databricks / Jupyter, else a plain print."""
    try:
        display(obj)  # noqa: F821
    except NameError:
        obj.show(truncate=False) if hasattr(obj, "show") else print(obj)


# COMMAND ----------

# MAGIC %md ## The demo (skipped with `demo=false`)

# COMMAND ----------

from pathlib import Path

from spark_scoring import demo, get_spark

spark = get_spark()
workspace = Path(params["workspace"]).resolve()
table = params["table"] or str(workspace / "tables" / "customers")
if params["demo"] == "true":
    demo.setup_registry(params["registry_dir"] or workspace / "mlflow")
    if not Path(table, "_delta_log").exists():
        demo.build_customers_table(spark, table, demo.demo_frame(rows_per_partition=int(params["demo_rows"])))

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
