"""What the notebooks in ``notebooks/`` share: parameters, display, the embedded demo.

Runs on: the driver, inside a Databricks notebook or a local ``python notebook.py``.

Each notebook declares its parameters as ``{name: default}`` and calls
:func:`setup` with its own ``globals()``: on Databricks every parameter becomes a
text widget (``dbutils`` is a notebook global, so it is looked up there);
locally ``$SPARK_SCORING_<NAME>`` overrides the default. :func:`demo_table`
builds the embedded demo (registry and customers table) only where it is
missing and only with ``demo=true``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["setup", "demo_table", "media_tables"]


def setup(defaults: Mapping[str, str], namespace: Mapping[str, Any]) -> tuple[dict[str, str], Callable]:
    """``(params, show)`` for a notebook whose globals are ``namespace``.

    ``params``: widget values on Databricks, else ``$SPARK_SCORING_<NAME>`` or the default.
    ``show(obj)``: the notebook's ``display`` where there is one, else ``obj.show()`` / ``print``.
    """
    dbutils = namespace.get("dbutils")
    if dbutils is None:
        params = {k: os.environ.get(f"SPARK_SCORING_{k.upper()}", v) for k, v in defaults.items()}
    else:
        for key, default in defaults.items():
            dbutils.widgets.text(key, default)
        params = {k: dbutils.widgets.get(k) for k in defaults}
    display = namespace.get("display")

    def show(obj) -> None:
        if display is not None:
            display(obj)
        elif hasattr(obj, "show"):
            obj.show(truncate=False)
        else:
            print(obj)

    return params, show


def demo_table(spark, params: Mapping[str, str]) -> str:
    """The table a notebook scores: ``params["table"]`` if given, else the demo's customers table.

    With ``params["demo"] == "true"`` the demo MLflow registry (``registry_dir``,
    default ``<workspace>/mlflow``) and, when that is the table, the customers
    table (``demo_rows`` rows per partition) are built first where missing.
    """
    from . import demo

    workspace = Path(params["workspace"]).resolve()
    table = params.get("table") or str(workspace / "tables" / "customers")
    if params.get("demo") == "true":
        demo.setup_registry(params.get("registry_dir") or workspace / "mlflow")
        if not params.get("table") and not Path(table, "_delta_log").exists():
            rows = int(params.get("demo_rows") or 2000)
            demo.build_customers_table(spark, table, demo.demo_frame(rows_per_partition=rows))
    return table


def media_tables(spark, params: Mapping[str, str]) -> dict[str, str]:
    """The media demo's Delta tables ``images`` and ``texts`` under ``<workspace>/tables``.

    With ``params["demo"] == "true"`` the demo registry (with the image tagger and
    the text moderator) and the tables (``demo_images`` images per partition, a few
    corrupt ones among them) are built first where missing.
    """
    from . import demo
    from .demo_media import build_media_tables

    workspace = Path(params["workspace"]).resolve()
    tables = workspace / "tables"
    paths = {"images": str(tables / "images"), "texts": str(tables / "texts")}
    if params.get("demo") == "true":
        demo.setup_registry(params.get("registry_dir") or workspace / "mlflow")
        if not all(Path(p, "_delta_log").exists() for p in paths.values()):
            paths = build_media_tables(spark, tables, images=int(params.get("demo_images") or 60))
    return paths
