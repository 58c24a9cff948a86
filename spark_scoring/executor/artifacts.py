"""A model's artifacts on an executor: the handle a task gets, unpacked once per worker.

Runs on: executors (:meth:`ModelHandle.local_dir`); the driver makes handles
(:func:`spark_scoring.model.shipping.ship`). No Spark import: a broadcast is
only read through its ``.value``.
"""
from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelHandle"]

_unpacked: dict[str, str] = {}
_unpack_lock = threading.Lock()


@dataclass(frozen=True)
class ModelHandle:
    """What a task needs to get the model: small, picklable, no registry access.

    ``fmt`` is the serialization format (``pt2``, ``pickle``, ``skops``, ...);
    ``pyfunc_config_keys`` the ``model_config`` keys the logged pyfunc flavor
    accepts (MLflow ignores others), so the task's device reaches models that
    declare ``device``.
    """

    fingerprint: str
    flavor: str
    uri: str
    predict_method: str | None
    fmt: str | None = None
    pyfunc_config_keys: tuple[str, ...] = ()
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


def _cleanup() -> None:  # pragma: no cover - interpreter exit
    for folder in _unpacked.values():
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_cleanup)
