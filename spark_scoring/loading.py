"""Load a model's artifacts into the object the predictor calls.

Runs on: executors (through the model cache) and once on the driver when
``load_model(validate=True)`` checks the artifacts. No Spark import.
"""
from __future__ import annotations

__all__ = ["load_native"]


def load_native(flavor: str, path: str, device: str = "cpu"):
    """Return a torch ``nn.Module`` (eval mode, on ``device``), a scikit-learn
    estimator, or an ``mlflow.pyfunc.PyFuncModel``, for ``flavor``."""
    if flavor == "pytorch":
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

        return mlflow.pyfunc.load_model(path)
    raise ValueError(f"unknown flavor {flavor!r}; expected pytorch, sklearn or pyfunc")
