"""Resolve a model URI to one pinned model version, download it once.

Runs on: the driver only. Executors never call the registry: they get the
artifacts this module downloaded, shipped by :mod:`spark_scoring.shipping`.

``load_model("models:/churn@champion")`` asks the registry once which version
the alias points to *now*, and returns a :class:`ScoringModel` pinned to it
(``uri == "models:/churn/7"``). Everything after that (UDFs, jobs, lineage
columns, audit rows) uses the pinned version, so a job that runs while someone
moves the alias still scores every partition with one model.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError, ModelResolutionError, RegistryUnavailableError
from .signature import InputSpec, OutputSpec, input_spec_from_signature, output_spec_from_model

__all__ = ["ScoringModel", "load_model", "parse_model_uri"]

log = logging.getLogger(__name__)

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))?/?$")


@dataclass(frozen=True)
class ScoringModel:
    """A model pinned to one version and downloaded on the driver.

    Attributes:
        name, version: registered model name and version (``None`` for
            ``runs:/`` and local-path models).
        run_id: the MLflow run that logged the model, when known.
        uri: the pinned URI (``models:/name/<version>``; the run or path URI otherwise).
        source_uri: the URI as the user gave it (``models:/name@alias``).
        alias: the alias that was resolved, if any.
        flavor: how executors run it: ``"pytorch"`` (native torch), ``"sklearn"``
            (native scikit-learn) or ``"pyfunc"`` (any MLflow pyfunc model).
        signature: the MLflow ``ModelSignature`` or ``None``.
        inputs: the feature columns and types the signature asks for (``None``
            for a signature-less or tensor-input model: pass ``features=``).
        output: what the model returns, as Arrow / Spark types.
        local_path: the downloaded artifact folder on the driver.
        fingerprint: a content key for the per-worker model cache.
    """

    name: str | None
    version: str | None
    run_id: str | None
    uri: str
    source_uri: str
    alias: str | None
    flavor: str
    signature: Any
    inputs: InputSpec | None
    output: OutputSpec
    local_path: str
    fingerprint: str
    predict_method: str | None = None
    flavor_conf: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def display_name(self) -> str:
        """``name`` for registered models, else the URI."""
        return self.name or self.uri


def parse_model_uri(uri: str) -> dict:
    """Split a URI into its kind and parts, or raise :class:`ModelResolutionError`."""
    if not isinstance(uri, str) or not uri.strip():
        raise ModelResolutionError(
            f"model URI {uri!r} is empty. Fix: give models:/<name>@<alias>, "
            "models:/<name>/<version>, runs:/<run_id>/<path> or a local model folder."
        )
    if uri.startswith("models:"):
        m = _MODELS_URI.match(uri)
        if not m:
            raise ModelResolutionError(
                f"model URI {uri!r} is not of the form models:/<name>@<alias> or "
                "models:/<name>/<version>."
            )
        return {"kind": "registry", **m.groupdict()}
    if uri.startswith("runs:/"):
        return {"kind": "run", "run_id": uri[len("runs:/"):].split("/", 1)[0]}
    return {"kind": "path", "path": uri}


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) is a network failure.

    MLflow's REST client wraps ``requests`` connection errors in a plain
    ``MlflowException("API request to ... failed with exception ...")``
    (implicitly chained), which must not read as "no such model".
    """
    import requests

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                            ConnectionError, TimeoutError)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _registry_call(uri: str, fn, *args):
    """Call the registry, turning connection problems into RegistryUnavailableError."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args)
    except MlflowException as exc:
        if not _is_connection_failure(exc):
            raise
        import mlflow

        raise RegistryUnavailableError(
            f"could not reach the MLflow registry at {mlflow.get_registry_uri()!r} to resolve "
            f"{uri!r}: {exc.message if hasattr(exc, 'message') else exc}. Fix: check "
            "MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI and that the server is up."
        ) from exc
    except Exception as exc:  # requests / sqlalchemy connection failures
        import mlflow

        raise RegistryUnavailableError(
            f"could not reach the MLflow registry at {mlflow.get_registry_uri()!r} to resolve "
            f"{uri!r}: {type(exc).__name__}: {exc}. Fix: check MLFLOW_TRACKING_URI / "
            "MLFLOW_REGISTRY_URI and that the server is up."
        ) from exc


def _what_exists(client, name: str) -> str:
    try:
        versions = sorted(
            (int(v.version) for v in client.search_model_versions(f"name='{name}'")), reverse=True
        )
        aliases = client.get_registered_model(name).aliases or {}
    except Exception:  # noqa: BLE001 - best effort for the message
        return ""
    alias_text = ", ".join(f"@{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
    return f" Registered versions: {versions[:20] or 'none'}; aliases: {alias_text}."


def _resolve_registry(uri: str, parts: dict) -> tuple[str, str, str | None, str | None]:
    """Return (name, version, run_id, alias) for a models:/ URI."""
    from mlflow.exceptions import MlflowException

    client = _client()
    name, alias, version = parts["name"], parts["alias"], parts["version"]
    try:
        _registry_call(uri, client.get_registered_model, name)
    except MlflowException as exc:
        known = [m.name for m in _registry_call(uri, client.search_registered_models, None, 200)]
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Registered models: {sorted(known)[:20]}."
        raise ModelResolutionError(
            f"model URI {uri!r}: no registered model named {name!r}.{hint} "
            "Fix: register the model or correct the name."
        ) from exc
    try:
        if alias is not None:
            mv = _registry_call(uri, client.get_model_version_by_alias, name, alias)
        elif version is None or version.lower() == "latest":
            versions = _registry_call(uri, client.search_model_versions, f"name='{name}'")
            if not versions:
                raise ModelResolutionError(f"model URI {uri!r}: model {name!r} has no versions.")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            if not version.isdigit():
                raise ModelResolutionError(
                    f"model URI {uri!r}: version {version!r} is not a number. Fix: use "
                    f"models:/{name}/<number> or models:/{name}@<alias>." + _what_exists(client, name)
                )
            mv = _registry_call(uri, client.get_model_version, name, version)
    except MlflowException as exc:
        what = f"alias @{alias}" if alias is not None else f"version {version}"
        raise ModelResolutionError(
            f"model URI {uri!r}: model {name!r} has no {what}." + _what_exists(client, name)
            + " Fix: point the URI at an existing version or alias."
        ) from exc
    return name, str(mv.version), mv.run_id, alias


def _download(uri: str, dst: str) -> str:
    import mlflow.artifacts

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except RegistryUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_connection_failure(exc):
            import mlflow

            raise RegistryUnavailableError(
                f"could not reach the MLflow tracking server at {mlflow.get_tracking_uri()!r} to "
                f"download {uri!r}: {exc}. Fix: check MLFLOW_TRACKING_URI and that the server is up."
            ) from exc
        raise ModelLoadError(
            f"could not download the artifacts of {uri!r}: {type(exc).__name__}: {exc}. "
            "Fix: check the artifact store is reachable and the model files exist."
        ) from exc


def _fingerprint(uri: str, local_path: str, mlmodel) -> str:
    h = hashlib.sha256(uri.encode())
    h.update((getattr(mlmodel, "model_uuid", None) or "").encode())
    h.update((Path(local_path) / "MLmodel").read_bytes())
    return h.hexdigest()[:24]


def _choose_flavor(mlmodel) -> tuple[str, str | None]:
    flavors = mlmodel.flavors
    predict_fn = (flavors.get("python_function") or {}).get("predict_fn")
    if "pytorch" in flavors:
        return "pytorch", None
    if "sklearn" in flavors:
        return "sklearn", predict_fn or "predict"
    if "python_function" in flavors:
        return "pyfunc", None
    raise ModelLoadError(
        f"model flavors {sorted(flavors)} have no python_function flavor; spark_scoring runs "
        "pytorch, sklearn and pyfunc models. Fix: log the model with an MLflow flavor that "
        "supports pyfunc."
    )


def load_model(uri: str | ScoringModel, *, validate: bool = True, dst: str | None = None) -> ScoringModel:
    """Resolve ``uri`` to a pinned version, download its artifacts once, read its signature.

    Runs on the driver. ``validate=True`` also loads the model once here, so
    corrupt artifacts fail now, before any Spark job or write.

    Raises:
        ModelResolutionError: unknown model, version or alias (the message lists what exists).
        RegistryUnavailableError: the registry could not be reached.
        ModelLoadError: the artifacts are missing, corrupt, or of an unsupported flavor.
    """
    if isinstance(uri, ScoringModel):
        return uri
    from mlflow.models import Model

    parts = parse_model_uri(uri)
    name = version = run_id = alias = None
    if parts["kind"] == "registry":
        name, version, run_id, alias = _resolve_registry(uri, parts)
        pinned = f"models:/{name}/{version}"
    elif parts["kind"] == "run":
        run_id, pinned = parts["run_id"], uri
    else:
        path = parts["path"]
        local = path[len("file://"):] if path.startswith("file://") else path
        if "://" not in local and not Path(local, "MLmodel").exists():
            raise ModelResolutionError(
                f"model URI {uri!r}: no MLmodel file at {os.path.abspath(local)!r}. Fix: give the "
                "folder MLflow saved the model to, or a models:/ or runs:/ URI."
            )
        pinned = os.path.abspath(local) if "://" not in local else path

    local_path = _local_copy(parts["kind"], pinned, dst)
    try:
        mlmodel = Model.load(os.path.join(local_path, "MLmodel"))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {pinned!r}: its MLmodel file is missing or unreadable ({exc}). "
            "Fix: re-log the model; the artifacts look corrupt."
        ) from exc
    run_id = run_id or mlmodel.run_id
    flavor, predict_method = _choose_flavor(mlmodel)
    signature = mlmodel.signature
    scoring_model = ScoringModel(
        name=name,
        version=version,
        run_id=run_id,
        uri=pinned,
        source_uri=uri,
        alias=alias,
        flavor=flavor,
        signature=signature,
        inputs=input_spec_from_signature(signature),
        output=output_spec_from_model(signature, flavor, pinned),
        local_path=local_path,
        fingerprint=_fingerprint(pinned, local_path, mlmodel),
        predict_method=predict_method,
        flavor_conf=dict(mlmodel.flavors.get(flavor) or {}),
    )
    if validate and (pinned, local_path) not in _validated:
        from .loading import load_native

        try:
            load_native(scoring_model.flavor, local_path, "cpu")
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(
                f"model {pinned!r} (resolved from {uri!r}) could not be loaded from its artifacts: "
                f"{type(exc).__name__}: {exc}. Fix: re-log the model; the artifacts look corrupt "
                "or need packages that are not installed."
            ) from exc
        _validated.add((pinned, local_path))
    log.info("resolved %s -> %s (flavor %s)", uri, pinned, flavor)
    return scoring_model


#: Driver-process caches: a model version's artifacts never change, so one
#: download (and one validating load) per pinned URI and registry is enough,
#: however many UDFs or partitions use it.
_downloads: dict[tuple[str, str], str] = {}
_validated: set[tuple[str, str]] = set()


def _local_copy(kind: str, pinned: str, dst: str | None) -> str:
    """A local folder with the artifacts of ``pinned``: downloaded once per process."""
    if kind == "path" and "://" not in pinned:
        return pinned  # already a local folder: read it in place
    import mlflow

    key = (mlflow.get_registry_uri() if kind == "registry" else mlflow.get_tracking_uri(), pinned)
    cached = _downloads.get(key)
    if dst is None and cached and Path(cached, "MLmodel").exists():
        return cached
    local = _download(pinned, dst or tempfile.mkdtemp(prefix="spark_scoring_model_"))
    if dst is None:
        _downloads[key] = local
    return local
