"""Per-Python-worker cache of loaded models, keyed by the pinned model version.

Runs on: executors (and the driver in tests).

Why a module: a Python worker imports this module once, so the dictionary
below lives as long as the worker process does (``spark.python.worker.reuse``
is on by default) and is shared by every task and every UDF that worker runs.
The key is the model's content fingerprint (pinned version + MLmodel digest)
plus the device, never a UDF instance: thirty UDFs built for thirty partitions
from the same model version load it once per worker. (A cache defined in a
driver script would be pickled into each task and rebuilt every time.)

``stats()`` exposes load and hit counters; tests read them from executors.
After a load, ``gc.freeze()`` moves the model's objects out of the garbage
collector's way: PySpark's worker runs a full collection after every task.
"""
from __future__ import annotations

import gc
import os
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable

__all__ = ["get_or_load", "stats", "clear", "MAX_MODELS"]

#: How many loaded models one worker keeps (champion + challenger + spare).
MAX_MODELS = 4

_models: "OrderedDict[Hashable, Any]" = OrderedDict()
_lock = threading.Lock()
_counters = {"loads": 0, "hits": 0, "evictions": 0}


def get_or_load(key: Hashable, loader: Callable[[], Any]) -> Any:
    """Return the cached object for ``key``, calling ``loader()`` at most once per key."""
    with _lock:
        if key in _models:
            _counters["hits"] += 1
            _models.move_to_end(key)
            return _models[key]
        value = loader()
        _models[key] = value
        _counters["loads"] += 1
        while len(_models) > MAX_MODELS:
            _models.popitem(last=False)
            _counters["evictions"] += 1
        gc.collect()
        gc.freeze()
        return value


def stats() -> dict:
    """Counters for this worker process: loads, hits, evictions, cached keys, pid."""
    with _lock:
        return {**_counters, "cached": len(_models), "pid": os.getpid()}


def clear() -> None:
    """Drop every cached model and reset the counters (tests)."""
    with _lock:
        _models.clear()
        for k in _counters:
            _counters[k] = 0
        gc.unfreeze()
