"""Load a model's artifacts into the object a runner calls, for every format MLflow 3 writes.

Runs on: executors (through the model cache) and once on the driver when
``load_model(validate=True)`` checks the artifacts. No Spark import.

Formats (:func:`model_format` reads them from the MLmodel file and the files):

- torch ``pt2``: a ``torch.export`` program (MLflow 3's default outside
  Databricks). Its module has no ``eval()``; moving it to a GPU is its own
  step (``torch.export.passes.move_to_device_pass``), done before ``module()``.
- torch ``pickle``: an ``nn.Module``, or a TorchScript module (scripted or traced).
- scikit-learn ``skops`` (MLflow 3's default), ``cloudpickle``, ``pickle``:
  ``mlflow.sklearn.load_model``, which passes the logged ``skops_trusted_types``.
- ``pyfunc``: ``mlflow.pyfunc.load_model(path, model_config=...)``.

:func:`load_error` words a failure: the flavor and format, the exception, and
the fix that applies (e.g. skops' untrusted types, a torch too old for the program).
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["load_native", "model_format", "format_name", "load_error_fix", "FORMAT_NAMES"]

#: How formats are named in messages.
FORMAT_NAMES = {
    "pt2": "pt2 (torch.export) program",
    "pickle": "pickle",
    "cloudpickle": "cloudpickle",
    "skops": "skops",
    "pyfunc": "pyfunc",
}


def model_format(flavor: str, path: str, flavor_conf: dict) -> str:
    """The serialization format of a downloaded model (driver or executor)."""
    if flavor == "pytorch":
        data = os.path.join(path, flavor_conf.get("model_data") or "data")
        return "pt2" if os.path.exists(os.path.join(data, "model.pt2")) else "pickle"
    if flavor == "sklearn":
        return str(flavor_conf.get("serialization_format") or "pickle")
    return "pyfunc"


def format_name(flavor: str, fmt: str | None) -> str:
    name = FORMAT_NAMES.get(fmt or "", fmt or flavor)
    return name if flavor == "pyfunc" else f"{flavor}, {name}"


def _load_pt2(path: str, device: str):
    import mlflow.pytorch as mp
    import torch
    from mlflow.models import Model

    conf = Model.load(os.path.join(path, "MLmodel")).flavors.get("pytorch") or {}
    file = os.path.join(path, conf.get("model_data") or "data", "model.pt2")
    allowed = getattr(mp, "_is_pickle_deserialization_allowed", lambda: True)
    check = getattr(mp, "_validate_pt2_archive_is_pickle_free", None)
    if check is not None and not allowed():
        check(file)  # MLflow's own rule when pickle deserialization is off
    program = torch.export.load(file)
    if device != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module()  # no .eval(): an exported program is already traced for inference


def load_native(flavor: str, path: str, device: str = "cpu", *, fmt: str | None = None,
                model_config: dict | None = None) -> Any:
    """Return a torch module on ``device``, a scikit-learn estimator, or an ``mlflow.pyfunc.PyFuncModel``."""
    if flavor == "pytorch":
        fmt = fmt or model_format(flavor, path, _flavor_conf(path, flavor))
        if fmt == "pt2":
            return _load_pt2(path, device)
        import mlflow.pytorch
        import torch

        module = mlflow.pytorch.load_model(path, map_location=torch.device(device))
        if hasattr(module, "eval"):
            module.eval()
        if hasattr(module, "to"):
            module = module.to(device)
        return module
    if flavor == "sklearn":
        import mlflow.sklearn

        return mlflow.sklearn.load_model(path)
    if flavor == "pyfunc":
        import mlflow.pyfunc

        return mlflow.pyfunc.load_model(path, model_config=model_config or None)
    raise ValueError(f"unknown flavor {flavor!r}; expected pytorch, sklearn or pyfunc")


def _flavor_conf(path: str, flavor: str) -> dict:
    from mlflow.models import Model

    return dict(Model.load(os.path.join(path, "MLmodel")).flavors.get(flavor) or {})


def load_error_fix(flavor: str, fmt: str | None, exc: BaseException, path: str | None = None) -> str:
    """The fix to print for a model that failed to load (driver messages)."""
    text = f"{type(exc).__name__}: {exc}"
    if "ntrusted types" in text or "UntrustedTypes" in text:
        return ("skops refuses types it was not told to trust. Log the model with "
                "mlflow.sklearn.log_model(model, name=..., skops_trusted_types=[...]) naming them "
                "(skops.io.get_untrusted_types(file=<model.skops>) lists them), or with "
                "serialization_format='cloudpickle'")
    if "MLFLOW_ALLOW_PICKLE_DESERIALIZATION" in text:
        return ("this MLflow refuses to deserialize models while MLFLOW_ALLOW_PICKLE_DESERIALIZATION is "
                "false; set it to true for models from trusted sources, or log torch models as pt2")
    if isinstance(exc, (ModuleNotFoundError, ImportError)):
        missing = getattr(exc, "name", None) or "the module named above"
        return f"install {missing} where the model is loaded (driver and executors), or log the model without it"
    if fmt == "pt2":
        import torch

        logged = _flavor_conf(path, flavor).get("pytorch_version") if path else None
        if logged == torch.__version__:
            return (f"the program file looks corrupt (it was logged with torch {logged}, the torch installed "
                    "here); re-log the model")
        return (f"a torch.export program loads with the torch it was exported with or newer (logged with "
                f"torch {logged or '?'}, installed {torch.__version__}); install that torch, or re-log the "
                "model with serialization_format='pt2' under this torch")
    return "re-log the model; the artifacts look corrupt or need packages that are not installed"
