"""Replay a Delta table's ``_delta_log`` at one pinned version (the direct scan's file list).

Runs on: the driver. Reads the JSON commits and Parquet checkpoints with
pyarrow: the protocol, the metadata and the live ``add`` actions. Table
features it cannot honour raise :class:`Fallback` with the reason, and the
direct scan falls back to Spark's own read.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence
from urllib.parse import unquote

from ..executor.scan import filesystem as _fs

__all__ = ["Fallback", "read_delta_log", "check_delta_features", "hive_partitions", "as_dict"]

_COMMIT = re.compile(r"^(\d{20})\.json$")
_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint(?:\.(\d{10})\.(\d{10}))?\.parquet$")
_V2_CHECKPOINT = re.compile(r"^(\d{20})\.checkpoint\.[0-9a-fA-F-]{36}\.(?:json|parquet)$")
#: Reader features the direct scan honours (deletion vectors: only while no file carries one).
_READER_FEATURES_OK = {"deletionVectors", "timestampNtz", "vacuumProtocolCheck", "columnMapping"}


class Fallback(Exception):
    """Raised while planning: the direct scan cannot honour this table (the message says why)."""




def _dv_key(dv: Any) -> str:
    if not dv:
        return ""
    return f"{dv.get('storageType')}{dv.get('pathOrInlineDv')}@{dv.get('offset')}"


def as_dict(value) -> dict:
    """A map from a JSON commit (dict) or a checkpoint (list of pairs) as a dict."""
    return dict(value or {})


def read_delta_log(path: str, version: int | None) -> tuple[int, dict, dict, list[dict]]:
    """Replay ``_delta_log`` up to ``version``: (version, protocol, metadata, live add actions)."""
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    fs, root = _fs(path)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/_delta_log"))
    commits, checkpoints = {}, {}
    for info in infos:
        name = info.base_name
        if m := _COMMIT.match(name):
            commits[int(m.group(1))] = info.path
        elif m := _CHECKPOINT.match(name):
            checkpoints.setdefault(int(m.group(1)), []).append(info.path)
        elif m := _V2_CHECKPOINT.match(name):
            checkpoints.setdefault(int(m.group(1)), []).append(None)  # V2: not read here
    if not commits and not checkpoints:
        raise Fallback(f"no Delta log found under {path}/_delta_log")
    latest = max(list(commits) + list(checkpoints))
    target = latest if version is None else int(version)
    if target > latest:
        raise Fallback(f"version {target} does not exist (latest is {latest})")
    usable = [v for v, parts in checkpoints.items() if v <= target and None not in parts]
    if any(None in parts for v, parts in checkpoints.items() if v <= target) and not usable:
        raise Fallback("the log uses V2 checkpoints, which the direct scan does not read")
    start = max(usable, default=-1)
    missing = [v for v in range(start + 1, target + 1) if v not in commits]
    if missing:
        raise Fallback(f"commit files {missing[:3]} are missing from the log (cleaned up)")

    files: dict[tuple[str, str], dict] = {}
    protocol: dict = {}
    metadata: dict = {}

    def apply(action: dict) -> None:
        nonlocal protocol, metadata
        if action.get("add"):
            add = action["add"]
            files[(add["path"], _dv_key(add.get("deletionVector")))] = add
        elif action.get("remove"):
            rm = action["remove"]
            files.pop((rm["path"], _dv_key(rm.get("deletionVector"))), None)
        elif action.get("metaData"):
            metadata = action["metaData"]
        elif action.get("protocol"):
            protocol = action["protocol"]

    if start >= 0:
        for part in sorted(checkpoints[start]):
            names = pq.read_schema(part, filesystem=fs).names
            cols = [c for c in ("add", "remove", "metaData", "protocol") if c in names]
            for row in pq.read_table(part, filesystem=fs, columns=cols).to_pylist():
                apply(row)
    for v in range(start + 1, target + 1):
        with fs.open_input_stream(commits[v]) as fh:
            for line in fh.read().decode("utf-8").splitlines():
                if line.strip():
                    apply(json.loads(line))
    return target, protocol, metadata, list(files.values())


def check_delta_features(protocol: dict, metadata: dict, adds: list[dict]) -> None:
    reader = int(protocol.get("minReaderVersion", 1))
    features = set(protocol.get("readerFeatures") or ())
    conf = metadata.get("configuration") or {}
    mode = conf.get("delta.columnMapping.mode", "none")
    if mode != "none":
        raise Fallback(f"column mapping is on (delta.columnMapping.mode={mode!r}): file columns "
                        "have physical names the direct scan does not translate")
    if reader > 3:
        raise Fallback(f"reader protocol version {reader} is newer than the direct scan knows")
    unknown = sorted(features - _READER_FEATURES_OK)
    if unknown:
        raise Fallback(f"table reader feature(s) {unknown} are not supported by the direct scan")
    with_dv = sum(1 for a in adds if a.get("deletionVector"))
    if with_dv:
        raise Fallback(f"{with_dv} of {len(adds)} data files have deletion vectors (deleted rows "
                        "that are still in the Parquet files)")


def hive_partitions(file_path: str, root: str, columns: Sequence[str]) -> dict[str, str | None]:
    rel = os.path.relpath(file_path, root) if "://" not in root else file_path[len(root):].lstrip("/")
    values: dict[str, str | None] = {}
    for segment in rel.split("/")[:-1]:
        if "=" in segment:
            key, value = segment.split("=", 1)
            value = unquote(value)
            values[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else value
    missing = [c for c in columns if c not in values]
    if missing:
        raise Fallback(f"file {file_path} has no {missing} directory, so its partition values are unknown")
    return {c: values[c] for c in columns}
