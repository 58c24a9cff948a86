"""Resolve a model URI to one pinned model, download it once, read what it takes and returns.

Runs on: the driver only. Executors never call the registry: they get the
artifacts this module downloaded, shipped by :mod:`spark_scoring.model.shipping`.

``load_model("models:/churn@champion")`` asks the registry once which version
the alias points to *now*, and returns a :class:`ScoringModel` pinned to it
(``uri == "models:/churn/7"``). Everything after that (UDFs, jobs, lineage
columns, audit rows) uses the pinned version, so a job that runs while someone
moves the alias still scores every partition with one model. Logged models
(``models:/m-...``), run URIs and local folders are immutable and pin as they are.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, ModelResolutionError, RegistryUnavailableError
from ..executor.loading import format_name, load_error_fix, load_native, model_format
from ..executor.specs import InputSpec, OutputSpec
from .signature import input_spec_from_signature, output_spec_from_signature
from .uri import FORMS_HELP, ModelUri, parse_model_uri

__all__ = ["ScoringModel", "load_model", "validate_model", "parse_model_uri"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringModel:
    """A model pinned to one version and downloaded on the driver.

    Attributes:
        name, version: registered model name and version (``None`` for logged
            models, ``runs:/`` and local-path models).
        model_id: the MLflow 3 logged-model id, when known.
        run_id: the MLflow run that logged the model, when known.
        uri: the pinned URI (``models:/name/<version>``; the logged-model, run or path URI otherwise).
        source_uri: the URI as the user gave it (``models:/name@alias``).
        alias: the alias that was resolved, if any.
        flavor: how executors run it: ``"pytorch"`` (native torch), ``"sklearn"``
            (native scikit-learn) or ``"pyfunc"`` (any MLflow pyfunc model).
        format: the serialization format (``pt2``, ``pickle``, ``skops``, ``cloudpickle``, ``pyfunc``).
        signature: the MLflow ``ModelSignature`` or ``None``.
        inputs: what the signature says the model takes (``None`` without an input signature).
        output: what the model returns, as Arrow / Spark types.
        local_path: the downloaded artifact folder on the driver.
        fingerprint: a content key for the per-worker model cache.
        registry_uri: the registry the model was resolved in.
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
    model_id: str | None = None
    format: str | None = None
    has_pyfunc: bool = True
    pyfunc_config_keys: tuple[str, ...] = ()
    registry_uri: str | None = None

    @property
    def display_name(self) -> str:
        """``name`` for registered models, else the URI (the lineage ``model_name``)."""
        return self.name or self.uri

    @property
    def params_schema(self):
        """The signature's ``ParamSchema`` (``None`` when the model takes no params)."""
        return getattr(self.signature, "params", None) if self.signature is not None else None


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _registry_uri() -> str:
    import mlflow

    return mlflow.get_registry_uri()


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


def _unavailable(uri: str, what: str, exc: BaseException, verb: str = "resolve") -> RegistryUnavailableError:
    detail = exc.message if hasattr(exc, "message") else f"{type(exc).__name__}: {exc}"
    return RegistryUnavailableError(
        f"could not reach the MLflow {what} to {verb} {uri!r}: {detail}. Fix: check the job config's "
        "mlflow.tracking_uri / mlflow.registry_uri (or MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI) and "
        "that the server is up."
    )


def _registry_call(uri: str, fn, *args):
    """Call the registry, turning connection problems into RegistryUnavailableError."""
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args)
    except MlflowException as exc:
        if not _is_connection_failure(exc):
            raise
        raise _unavailable(uri, f"registry at {_registry_uri()!r}", exc) from exc
    except Exception as exc:  # requests / sqlalchemy connection failures
        raise _unavailable(uri, f"registry at {_registry_uri()!r}", exc) from exc


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


def _resolve_registered(parsed: ModelUri) -> tuple[str, str, str | None, str | None]:
    """(name, version, run_id, model_id) of a registered model URI, asked once."""
    from mlflow.exceptions import MlflowException

    client = _client()
    uri, name, alias, version = parsed.text, parsed.name, parsed.alias, parsed.version
    where = f"registry {_registry_uri()!r}"
    try:
        _registry_call(uri, client.get_registered_model, name)
    except MlflowException as exc:
        try:
            known = [m.name for m in _registry_call(uri, client.search_registered_models, None, 200)]
        except MlflowException:
            known = []
        import difflib

        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Registered models: {sorted(known)[:20]}."
        uc = (" Unity Catalog names are <catalog>.<schema>.<model>: set mlflow.registry_uri: databricks-uc."
              if parsed.unity_catalog and not _registry_uri().startswith("databricks-uc") else "")
        raise ModelResolutionError(
            f"model URI {uri!r}: no registered model named {name!r} in {where}.{hint}{uc} "
            "Fix: register the model, correct the name, or point mlflow.registry_uri at the registry that has it."
        ) from exc
    try:
        if alias is not None:
            mv = _registry_call(uri, client.get_model_version_by_alias, name, alias)
        elif version is None or version == "latest":
            versions = _registry_call(uri, client.search_model_versions, f"name='{name}'")
            if not versions:
                raise ModelResolutionError(f"model URI {uri!r}: model {name!r} has no versions in {where}.")
            mv = max(versions, key=lambda v: int(v.version))
        elif not version.isdigit():
            raise ModelResolutionError(
                f"model URI {uri!r}: version {version!r} is not a number. Fix: use models:/{name}/<number>, "
                f"models:/{name}/latest or models:/{name}@<alias> (registry stages are deprecated in MLflow; "
                "aliases replace them)." + _what_exists(client, name)
            )
        else:
            mv = _registry_call(uri, client.get_model_version, name, version)
    except MlflowException as exc:
        what = f"alias @{alias}" if alias is not None else f"version {version}"
        raise ModelResolutionError(
            f"model URI {uri!r}: model {name!r} has no {what} in {where}." + _what_exists(client, name)
            + " Fix: point the URI at an existing version or alias."
        ) from exc
    return name, str(mv.version), mv.run_id, getattr(mv, "model_id", None)


def _resolve_logged(parsed: ModelUri) -> tuple[str | None, str | None]:
    """(run_id, name) of an MLflow 3 logged model ``models:/<model id>``."""
    from mlflow.exceptions import MlflowException

    client = _client()
    uri = parsed.text
    try:
        logged = _registry_call(uri, client.get_logged_model, parsed.model_id)
    except MlflowException as exc:
        hint = ""
        try:
            client.get_registered_model(parsed.model_id)
            hint = (f" A registered model {parsed.model_id!r} exists: name a version or alias, e.g. "
                    f"models:/{parsed.model_id}@champion or models:/{parsed.model_id}/1.")
        except Exception:  # noqa: BLE001 - only for the hint
            pass
        raise ModelResolutionError(
            f"model URI {uri!r}: no logged model with id {parsed.model_id!r} on the tracking server "
            f"{_tracking_uri()!r} (MLflow 3 reads models:/<x> without a version or alias as a logged-model "
            f"id).{hint} Fix: use the model_uri that log_model returned, or {FORMS_HELP}."
        ) from exc
    return getattr(logged, "source_run_id", None), getattr(logged, "name", None)


def _tracking_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def _download(uri: str, dst: str) -> str:
    import mlflow.artifacts

    try:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst)
    except RegistryUnavailableError:
        raise
    except Exception as exc:  # noqa: BLE001
        if _is_connection_failure(exc):
            raise _unavailable(uri, f"tracking server at {_tracking_uri()!r}", exc, "download") from exc
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


def load_model(uri, *, validate: bool = True, dst: str | None = None) -> ScoringModel:
    """Resolve ``uri`` to a pinned model, download its artifacts once, read its signature.

    ``uri`` is any form :mod:`spark_scoring.model.uri` parses (a string or a
    ``pathlib.Path``), or a :class:`ScoringModel` (returned as it is). Runs on
    the driver. ``validate=True`` also loads the model once here, so corrupt
    artifacts fail now, before any Spark job or write.

    Raises:
        ModelResolutionError: unknown model, version, alias or logged model (the message lists what exists).
        RegistryUnavailableError: the registry or tracking server could not be reached.
        ModelLoadError: the artifacts are missing, corrupt, or of an unsupported flavor or format.
    """
    if isinstance(uri, ScoringModel):
        return uri
    from mlflow.models import Model

    parsed = parse_model_uri(uri)
    name = version = run_id = alias = model_id = None
    if parsed.kind == "registered":
        name, version, run_id, model_id = _resolve_registered(parsed)
        alias = parsed.alias
        pinned = f"models:/{name}/{version}"
    elif parsed.kind == "logged":
        run_id, _logged_name = _resolve_logged(parsed)
        model_id, pinned = parsed.model_id, parsed.text
    elif parsed.kind == "run":
        run_id, pinned = parsed.run_id, parsed.text
    else:
        path = parsed.path
        local = path[len("file://"):] if path.startswith("file://") else path
        if "://" not in local and not Path(local, "MLmodel").exists():
            raise ModelResolutionError(
                f"model URI {parsed.text!r}: no MLmodel file at {os.path.abspath(local)!r}. Fix: give the "
                f"folder MLflow saved the model to, or {FORMS_HELP}."
            )
        pinned = os.path.abspath(local) if "://" not in local else path

    local_path = _local_copy(parsed.kind, pinned, dst)
    try:
        mlmodel = Model.load(os.path.join(local_path, "MLmodel"))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {pinned!r}: its MLmodel file is missing or unreadable ({exc}). "
            "Fix: re-log the model; the artifacts look corrupt."
        ) from exc
    run_id = run_id or mlmodel.run_id
    model_id = model_id or getattr(mlmodel, "model_id", None)
    flavor, predict_method = _choose_flavor(mlmodel)
    flavor_conf = dict(mlmodel.flavors.get(flavor) or {})
    fmt = model_format(flavor, local_path, flavor_conf)
    pyfunc_conf = mlmodel.flavors.get("python_function") or {}
    signature = mlmodel.signature
    scoring_model = ScoringModel(
        name=name,
        version=version,
        run_id=run_id,
        uri=pinned,
        source_uri=str(parsed.text),
        alias=alias,
        flavor=flavor,
        signature=signature,
        inputs=input_spec_from_signature(signature),
        output=output_spec_from_signature(signature, pinned),
        local_path=local_path,
        fingerprint=_fingerprint(pinned, local_path, mlmodel),
        predict_method=predict_method,
        flavor_conf=flavor_conf,
        model_id=model_id,
        format=fmt,
        has_pyfunc="python_function" in mlmodel.flavors,
        pyfunc_config_keys=tuple(sorted((pyfunc_conf.get("config") or pyfunc_conf.get("model_config") or {}))),
        registry_uri=_registry_uri() if parsed.kind == "registered" else None,
    )
    if validate:
        validate_model(scoring_model)
    log.info("resolved %s -> %s (%s)", parsed.text, pinned, format_name(flavor, fmt))
    return scoring_model


def validate_model(model: ScoringModel) -> None:
    """Driver: load ``model`` once on CPU, so corrupt artifacts fail before any Spark job or write."""
    key = (model.uri, model.local_path)
    if key in _validated:
        return
    try:
        load_native(model.flavor, model.local_path, "cpu", fmt=model.format)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"model {model.uri!r} (resolved from {model.source_uri!r}; {format_name(model.flavor, model.format)}) "
            f"could not be loaded from its artifacts: {type(exc).__name__}: {exc}. "
            f"Fix: {load_error_fix(model.flavor, model.format, exc, model.local_path)}."
        ) from exc
    _validated.add(key)


#: Driver-process caches: a model version's artifacts never change, so one
#: download (and one validating load) per pinned URI and registry is enough,
#: however many UDFs or partitions use it.
_downloads: dict[tuple[str, str], str] = {}
_validated: set[tuple[str, str]] = set()


def _local_copy(kind: str, pinned: str, dst: str | None) -> str:
    """A local folder with the artifacts of ``pinned``: downloaded once per process."""
    if kind == "path" and "://" not in pinned:
        return pinned  # already a local folder: read it in place
    key = (_registry_uri() if kind == "registered" else _tracking_uri(), pinned)
    cached = _downloads.get(key)
    if dst is None and cached and Path(cached, "MLmodel").exists():
        return cached
    local = _download(pinned, dst or tempfile.mkdtemp(prefix="spark_scoring_model_"))
    if dst is None:
        _downloads[key] = local
    return local
