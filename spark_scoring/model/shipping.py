"""Ship a downloaded model to the executors without them touching the registry.

Runs on: the driver. Executors read what it ships through
:class:`~spark_scoring.executor.artifacts.ModelHandle`.

Two ways, both keyed by the model fingerprint:

- ``broadcast`` (default on classic Spark): the driver zips the artifact folder
  once and broadcasts the bytes once per SparkContext; 30 UDFs over the same
  pinned version share one broadcast. A worker reads the bytes and unpacks them
  only on a model-cache miss, so a warm worker never touches them.
- ``path``: executors read the artifacts from a folder they can see (a shared
  file system such as DBFS / NFS for very large models, or the driver's folder
  in local mode). Set it with ``ship="path"`` or ``SPARK_SCORING_SHIP=path``;
  Spark Connect sessions (no SparkContext to broadcast from) use it too.
"""
from __future__ import annotations

import io
import os
import zipfile
from typing import Any

from ..executor.artifacts import ModelHandle

__all__ = ["ModelHandle", "ship"]

_broadcasts: dict[tuple[int, str], Any] = {}


def _zip_folder(folder: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for root, _dirs, files in os.walk(folder):
            for name in files:
                full = os.path.join(root, name)
                zf.write(full, os.path.relpath(full, folder))
    return buf.getvalue()


def _is_connect(spark) -> bool:
    return type(spark).__module__.startswith("pyspark.sql.connect")


def ship(spark, model, method: str | None = None) -> ModelHandle:
    """Driver: make ``model`` (a ScoringModel) reachable from executors; memoized per fingerprint."""
    method = method or os.environ.get("SPARK_SCORING_SHIP", "auto")
    if method not in ("auto", "broadcast", "path"):
        from ..errors import ConfigError

        raise ConfigError(f"ship={method!r}: expected 'auto', 'broadcast' or 'path'.")
    base = dict(
        fingerprint=model.fingerprint,
        flavor=model.flavor,
        uri=model.uri,
        predict_method=model.predict_method,
        fmt=model.format,
        pyfunc_config_keys=model.pyfunc_config_keys,
    )
    if method == "path" or (method == "auto" and _is_connect(spark)):
        return ModelHandle(path=model.local_path, **base)
    sc = spark.sparkContext
    key = (id(sc._jsc), model.fingerprint)
    bc = _broadcasts.get(key)
    if bc is None:
        bc = sc.broadcast(_zip_folder(model.local_path))
        _broadcasts[key] = bc
    return ModelHandle(broadcast=bc, **base)
