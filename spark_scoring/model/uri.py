"""The grammar of every model URI MLflow hands out.

Runs on: the driver (nothing here talks to a server).

==========================================  =====================================
``models:/churn@champion``                  a registered model's alias
``models:/churn/3``, ``models:/churn/latest``  a registered version / the newest
``models:/main.ml.churn@champion``          a Unity Catalog model (``catalog.schema.model``)
``models:/m-1a2b...``                       an MLflow 3 logged model (``log_model(...).model_uri``)
``runs:/<run id>/<artifact path>``          a model logged in a run
``/path/to/model``, ``file:///...``, Path   a local folder holding an ``MLmodel`` file
==========================================  =====================================

As in MLflow 3, ``models:/<x>`` with no version or alias names a logged model
by its id, not a registered model: write ``models:/<name>@<alias>`` or
``models:/<name>/<version>`` for those.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ModelResolutionError

__all__ = ["ModelUri", "parse_model_uri", "FORMS_HELP"]

FORMS_HELP = ("models:/<name>@<alias>, models:/<name>/<version>, models:/<catalog>.<schema>.<name>@<alias>, "
              "models:/<model id> (MLflow 3 logged model), runs:/<run_id>/<path> or a local model folder")

_NAME = r"[^/@]+"
_REGISTERED = re.compile(rf"^models:/(?P<name>{_NAME})(?:@(?P<alias>[^/@]+)|/(?P<version>[^/@]+))/?$")
_LOGGED = re.compile(rf"^models:/(?P<model_id>{_NAME})/?$")
_RUN = re.compile(r"^runs:/(?P<run_id>[^/]+)/(?P<path>.+)$")


@dataclass(frozen=True)
class ModelUri:
    """One parsed model URI. ``kind``: ``registered``, ``logged``, ``run`` or ``path``."""

    text: str
    kind: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None  # a number, "latest", or what was written (refused at resolution)
    model_id: str | None = None
    run_id: str | None = None
    path: str | None = None

    @property
    def unity_catalog(self) -> bool:
        """``catalog.schema.model``: a three-part Unity Catalog name."""
        return self.kind == "registered" and self.name is not None and self.name.count(".") == 2


def parse_model_uri(uri) -> ModelUri:
    """Split ``uri`` (a string or ``os.PathLike``) into a :class:`ModelUri`, or raise :class:`ModelResolutionError`."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri.strip():
        raise ModelResolutionError(f"model URI {uri!r} is empty. Fix: give {FORMS_HELP}.")
    text = uri.strip()
    if text.startswith("models:"):
        if m := _REGISTERED.match(text):
            version = m["version"]
            if version is not None and version.lower() == "latest":
                version = "latest"  # else a number, or a mistake the registry lookup words with what exists
            return ModelUri(text, "registered", name=m["name"], alias=m["alias"], version=version)
        if m := _LOGGED.match(text):
            return ModelUri(text, "logged", model_id=m["model_id"])
        raise ModelResolutionError(f"model URI {text!r} is not of the form {FORMS_HELP}.")
    if text.startswith("runs:"):
        if m := _RUN.match(text):
            return ModelUri(text, "run", run_id=m["run_id"], path=m["path"].strip("/"))
        raise ModelResolutionError(f"model URI {text!r} is not of the form runs:/<run_id>/<artifact path>.")
    return ModelUri(text, "path", path=text)
