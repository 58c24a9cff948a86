# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · Image tagging and content moderation
# MAGIC
# MAGIC Tag a Delta table of JPEGs with an image model, and moderate a table of short texts, the two
# MAGIC headline media uses of batch inference. Both models are ordinary MLflow pyfunc models that
# MAGIC declare their CPU work (`preprocess`: decode, resize, tokenize) apart from their forward pass
# MAGIC (`predict_batch`), so spark_scoring decodes the next batches in worker threads while the current
# MAGIC batch runs, and gives the model the task's GPU (`context.model_config["device"]`).
# MAGIC
# MAGIC A few of the images are corrupt on purpose (empty, garbage, truncated, a decompression bomb) and one
# MAGIC is null: each is one row's error, caught inside its task and set aside in the quarantine table with
# MAGIC the exception that named it. The rest are scored; rows in = scored + quarantined.

# COMMAND ----------

from spark_scoring import notebook

PARAMS = {  # name: default. A widget on Databricks; locally $SPARK_SCORING_<NAME> overrides it.
    "workspace": "demo_workspace",  # demo files: registry, tables
    "demo": "true",  # "true": build the demo registry and the media tables if missing
    "registry_dir": "",  # demo MLflow registry folder (default <workspace>/mlflow)
    "demo_images": "60",  # JPEG crops per demo partition
    "image_model": "models:/demo_image_tagger@champion",
    "text_model": "models:/demo_text_moderator@champion",
}
params, show = notebook.setup(PARAMS, globals())  # widgets on Databricks, else $SPARK_SCORING_<NAME>

# COMMAND ----------

# MAGIC %md ## The demo tables (skipped with `demo=false`)

# COMMAND ----------

from spark_scoring import get_spark

spark = get_spark()
tables = notebook.media_tables(spark, params)  # with demo=true: registry and tables, where missing

# COMMAND ----------

# MAGIC %md
# MAGIC ## Tag the images: one job, corrupt files to quarantine
# MAGIC The job config is validated first; `run_job` then scores each partition once, idempotently.

# COMMAND ----------

from spark_scoring import load_config, run_job

workspace = params["workspace"]
config = load_config({
    "model": params["image_model"],
    "input": {"table": tables["images"], "partition_by": "ds"},
    "output": {"table": f"{workspace}/tables/image_tags", "prediction_column": "tag", "keys": ["image_id"]},
    "bad_rows": "quarantine",
    "quarantine_table": f"{workspace}/tables/image_tags_quarantine",
    "tracking": {"enabled": False},
    "drift": {"enabled": False},
})
result = run_job(config, spark=spark)

# COMMAND ----------

# MAGIC %md ## The tags, and what was set aside

# COMMAND ----------

tags = spark.read.format("delta").load(config.output.table)
show(tags.select("image_id", "ds", "tag.label", "tag.score", "model_name", "model_version").limit(10))
quarantined = spark.read.format("delta").load(config.quarantine_table)
show(quarantined.select("image_id", "source", "quarantine_reason").orderBy("image_id"))
print(f"images: rows in {result.rows_in} = tagged {result.rows_scored} + quarantined {result.rows_quarantined}")

# COMMAND ----------

# MAGIC %md ## Moderate the texts: `score()` on a string column

# COMMAND ----------

import spark_scoring

texts = spark.read.format("delta").load(tables["texts"])
moderated = spark_scoring.score(texts, params["text_model"], output_col="moderation")
show(moderated.select("text_id", "text", "moderation.label", "moderation.score").limit(10))
flagged = moderated.where("moderation.label = 'flag'").count()
print(f"texts: {flagged} of {texts.count()} flagged")
