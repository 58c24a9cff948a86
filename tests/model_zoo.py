"""Models logged the way MLflow 3.17 logs them by default, for the conformance tests.

Used by the ``zoo`` fixture (tests/conftest.py). Every model is logged with
``log_model`` into the session's real sqlite registry, with the defaults a user
gets outside Databricks: torch as ``pt2`` (a ``torch.export`` program, which
needs a tensor ``input_example``), scikit-learn as ``skops``. Only
``pip_requirements`` is given (it changes no format, and spares the slow
dependency inference).

Each :class:`ZooModel` carries its URI, the pandas frame of its inputs (what
``mlflow.pyfunc.load_model(uri).predict`` is called with for the reference),
and the names of the columns it takes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ROWS = 40
FEATURES = ("a", "b", "c", "d")


@dataclass(frozen=True)
class ZooModel:
    uri: str                         # the registered version (models:/zoo_<key>/1)
    logged_uri: str                  # what log_model returned (models:/m-<id> in MLflow 3)
    run_uri: str                     # runs:/<run id>/model
    columns: tuple[str, ...]         # input columns, in the model's order
    frame: pd.DataFrame = field(repr=False)  # the inputs, as the reference predict gets them
    notes: str = ""


def features(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(ROWS, len(FEATURES))), columns=list(FEATURES))


def _torch_net(seed: int = 0, inputs: int = 4):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(inputs, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)).eval()


class TwoInputs:
    """Built lazily (torch imported inside): forward(x, y) = a(x) + b(y)."""

    @staticmethod
    def make():
        import torch

        class Two(torch.nn.Module):
            def __init__(self):
                super().__init__()
                torch.manual_seed(3)
                self.a = torch.nn.Linear(4, 1)
                self.b = torch.nn.Linear(3, 1)

            def forward(self, x, y):
                return self.a(x) + self.b(y)

        return Two().eval()


def _python_models():
    """PythonModel classes (mlflow imported lazily)."""
    import mlflow.pyfunc

    class Typed(mlflow.pyfunc.PythonModel):
        """Echoes every input's type and value as one string per row."""

        def predict(self, context, model_input, params=None):
            out = []
            for r in model_input.itertuples(index=False):
                ts = pd.Timestamp(r.ts)
                out.append("|".join([
                    f"{int(r.i)}", f"{int(r.l)}", f"{float(r.f):.4f}", f"{float(r.d):.6f}", str(r.s), str(bool(r.b)),
                    ts.isoformat(), f"tz={ts.tzinfo}", f"{len(r.bin)}:{bytes(r.bin)[:3]!r}",
                    ",".join(f"{v:.3f}" for v in r.arr), f"x={dict(r.st)['x']}",
                ]))
            return out

    class Params(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            params = params or {}
            return pd.DataFrame({"value": model_input["a"] * float(params.get("scale", 1.0)),
                                 "label": [params.get("label", "none")] * len(model_input)})

    class Config(mlflow.pyfunc.PythonModel):
        def load_context(self, context):
            self.config = dict(context.model_config or {})

        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"value": model_input["a"] + float(self.config.get("offset", 0.0)),
                                 "device": [str(self.config.get("device"))] * len(model_input)})

    class MultiOut(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return pd.DataFrame({"n": (model_input["a"] > 0).astype(np.int32),
                                 "x": model_input["a"] + model_input["b"]})

    class TensorOut(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            n = len(model_input)
            a = model_input["a"].to_numpy()
            return {"r1": [np.array([1, 2], dtype=np.int64)] * n,
                    "r4": [np.outer([1.0, 2.0], [1.0, 2.0, 3.0]) * v for v in a]}

    class NoSignature(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input.sum(axis=1) + 0.5 * len(model_input.columns)

    class TorchWrapper(mlflow.pyfunc.PythonModel):
        def __init__(self, net):
            self.net = net

        def predict(self, context, model_input, params=None):
            import torch

            with torch.no_grad():
                x = torch.tensor(model_input[list(FEATURES)].to_numpy(), dtype=torch.float32)
                return self.net(x).numpy()[:, 0]

    return Typed, Params, Config, MultiOut, TensorOut, NoSignature, TorchWrapper


def typed_frame() -> pd.DataFrame:
    """One column per type a pyfunc signature can enforce; timestamps naive, as MLflow wants them."""
    base = features(5)
    return pd.DataFrame({
        "i": np.arange(ROWS, dtype=np.int32),
        "l": np.arange(ROWS, dtype=np.int64) * 1_000_000_007,
        "f": base["a"].astype(np.float32),
        "d": base["b"],
        "s": [f"row {k}" for k in range(ROWS)],
        "b": np.arange(ROWS) % 3 == 0,
        "ts": pd.date_range("2026-11-27 08:30", periods=ROWS, freq="37min"),
        "bin": [bytes([k % 256, 1, 2]) * (k % 4 + 1) for k in range(ROWS)],
        "arr": [np.array([k, k / 2.0, -k]) for k in range(ROWS)],
        "st": [{"x": int(k * 7)} for k in range(ROWS)],
    })


def build(prefix: str = "zoo") -> dict[str, ZooModel]:
    """Log every zoo model (MLflow 3 defaults) into the current registry; returns them by key."""
    import mlflow
    import mlflow.pyfunc
    import mlflow.pytorch
    import mlflow.sklearn
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec
    from mlflow.types.schema import Array, Object, Property
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression, Ridge

    Typed, Params, Config, MultiOut, TensorOut, NoSignature, TorchWrapper = _python_models()
    x = features(0)
    x32 = x.to_numpy(dtype=np.float32)
    y = (x["a"] + 0.5 * x["b"] > 0).astype(int)
    reqs = {"torch": ["torch"], "sklearn": ["scikit-learn", "skops"], "pyfunc": ["pandas"]}
    zoo: dict[str, ZooModel] = {}
    if mlflow.get_experiment_by_name("model_zoo") is None:
        mlflow.create_experiment("model_zoo")
    mlflow.set_experiment("model_zoo")

    def log(key, flavor, frame, columns, notes="", **kwargs):
        with mlflow.start_run(run_name=key) as run:
            module = {"torch": mlflow.pytorch, "sklearn": mlflow.sklearn, "pyfunc": mlflow.pyfunc}[flavor]
            info = module.log_model(name="model", registered_model_name=f"{prefix}_{key}",
                                    pip_requirements=reqs[flavor], **kwargs)
        zoo[key] = ZooModel(f"models:/{prefix}_{key}/1", info.model_uri, f"runs:/{run.info.run_id}/model",
                            tuple(columns), frame, notes)

    net = _torch_net(0)
    log("torch_pt2", "torch", x.astype(np.float32), FEATURES, "MLflow 3 default: pt2", pytorch_model=net,
        input_example=x32[:5])
    log("torch_pickle", "torch", x.astype(np.float32), FEATURES, "nn.Module, pickle", pytorch_model=_torch_net(1),
        input_example=x32[:5], serialization_format="pickle")
    log("torch_script", "torch", x.astype(np.float32), FEATURES, "TorchScript, pickle",
        pytorch_model=torch.jit.script(_torch_net(2)), input_example=x32[:5], serialization_format="pickle")
    two_sig = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype("float32"), (-1, 4), "x"), TensorSpec(np.dtype("float32"), (-1, 3), "y")]),
        outputs=Schema([TensorSpec(np.dtype("float32"), (-1, 1))]))
    y3 = np.random.default_rng(9).normal(size=(ROWS, 3)).astype(np.float32)
    log("torch_two_inputs", "torch", pd.DataFrame({"x": list(x32), "y": list(y3)}), ("x", "y"),
        "pt2 with two tensor inputs (MLflow logs no pyfunc flavor)", pytorch_model=TwoInputs.make(),
        input_example=[x32[:5], y3[:5]], signature=two_sig)
    log("sklearn_skops", "sklearn", x, FEATURES, "MLflow 3 default: skops", sk_model=LogisticRegression().fit(x, y),
        input_example=x.head(5))
    hgb = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    log("sklearn_hgb", "sklearn", x, FEATURES, "skops with skops_trusted_types", sk_model=hgb,
        input_example=x.head(5),
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"])
    log("sklearn_cloudpickle", "sklearn", x, FEATURES, "cloudpickle", sk_model=Ridge().fit(x, x["a"] * 2 + x["c"]),
        input_example=x.head(5), serialization_format="cloudpickle")
    log("pyfunc_torch", "pyfunc", x, FEATURES, "a PythonModel wrapping torch",
        python_model=TorchWrapper(_torch_net(4)), input_example=x.head(5))
    typed = typed_frame()
    typed_sig = ModelSignature(
        inputs=Schema([ColSpec("integer", "i"), ColSpec("long", "l"), ColSpec("float", "f"), ColSpec("double", "d"),
                       ColSpec("string", "s"), ColSpec("boolean", "b"), ColSpec("datetime", "ts"),
                       ColSpec("binary", "bin"), ColSpec(Array("double"), "arr"),
                       ColSpec(Object([Property("x", "long")]), "st")]),
        outputs=Schema([ColSpec("string")]))
    log("pyfunc_types", "pyfunc", typed, tuple(typed.columns), "every column type", python_model=Typed(),
        signature=typed_sig)
    params_sig = ModelSignature(
        inputs=Schema([ColSpec("double", "a")]),
        outputs=Schema([ColSpec("double", "value"), ColSpec("string", "label")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0), ParamSpec("label", "string", "none")]))
    log("pyfunc_params", "pyfunc", x[["a"]], ("a",), "a ParamSchema", python_model=Params(), signature=params_sig)
    config_sig = ModelSignature(inputs=Schema([ColSpec("double", "a")]),
                                outputs=Schema([ColSpec("double", "value"), ColSpec("string", "device")]))
    log("pyfunc_config", "pyfunc", x[["a"]], ("a",), "model_config with a device key", python_model=Config(),
        signature=config_sig, model_config={"device": "cpu", "offset": 0.0})
    multi_sig = ModelSignature(inputs=Schema([ColSpec("double", "a"), ColSpec("double", "b")]),
                               outputs=Schema([ColSpec("integer", "n"), ColSpec("double", "x")]))
    log("pyfunc_multi_out", "pyfunc", x[["a", "b"]], ("a", "b"), "two ColSpec outputs", python_model=MultiOut(),
        signature=multi_sig)
    tensor_sig = ModelSignature(inputs=Schema([ColSpec("double", "a")]),
                                outputs=Schema([TensorSpec(np.dtype("int64"), (2,), "r1"),
                                                TensorSpec(np.dtype("float64"), (2, 3), "r4")]))
    log("pyfunc_tensor_out", "pyfunc", x[["a"]], ("a",), "TensorSpec outputs (2,) and (2, 3)",
        python_model=TensorOut(), signature=tensor_sig)
    log("pyfunc_no_signature", "pyfunc", x[["a", "b"]].set_axis(["0", "1"], axis=1), ("a", "b"), "no signature",
        python_model=NoSignature())
    return zoo
