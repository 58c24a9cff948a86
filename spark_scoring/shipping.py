"""Ship a downloaded model to the executors without them touching the registry.

Runs on: the driver (:func:`ship`) and executors (:meth:`ModelHandle.local_dir`).

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
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelHandle", "ship"]

_broadcasts: dict[tuple[int, str], Any] = {}
_unpacked: dict[str, str] = {}
_unpack_lock = threading.Lock()


@dataclass(frozen=True)
class ModelHandle:
    """What a task needs to get the model: small, picklable, no registry access."""

    fingerprint: str
    flavor: str
    uri: str
    predict_method: str | None
    path: str | None = None
    broadcast: Any = None

    def local_dir(self) -> str:
        """Executor: a local folder holding the artifacts (unpacked once per worker)."""
        if self.broadcast is None:
            return self.path
        with _unpack_lock:
            folder = _unpacked.get(self.fingerprint)
            if folder and os.path.isdir(folder):
                return folder
            folder = tempfile.mkdtemp(prefix=f"spark_scoring_{self.fingerprint[:8]}_")
            with zipfile.ZipFile(io.BytesIO(self.broadcast.value)) as zf:
                zf.extractall(folder)
            _unpacked[self.fingerprint] = folder
            return folder


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
        from .errors import ConfigError

        raise ConfigError(f"ship={method!r}: expected 'auto', 'broadcast' or 'path'.")
    base = dict(
        fingerprint=model.fingerprint,
        flavor=model.flavor,
        uri=model.uri,
        predict_method=model.predict_method,
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


def _cleanup() -> None:  # pragma: no cover - interpreter exit
    for folder in _unpacked.values():
        shutil.rmtree(folder, ignore_errors=True)


import atexit  # noqa: E402

atexit.register(_cleanup)
