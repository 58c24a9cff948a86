"""The embedded default: a real MLflow registry with real models, and a Delta table.

Runs on: the driver (``spark-scoring demo``, the README's first command, and the
test fixtures, which build their registry with the same functions).

Everything lives under one workspace folder:

- ``<ws>/mlflow/mlflow.db``: a sqlite MLflow tracking store and model registry,
  artifacts in ``<ws>/mlflow/artifacts``;
- ``<ws>/tables/customers``: a Delta table partitioned by ``ds`` with a few bad
  rows (null, NaN, infinite features) so quarantine has something to do.

Registered models (all trained here, on synthetic data, in seconds):

====================  ===================================  ======================
name                  what                                 output
====================  ===================================  ======================
``demo_churn``        torch MLP, 8 float features;          double (probability)
                      v1 ``@champion``, v2 ``@challenger``
``demo_fraud``        scikit-learn HistGradientBoosting,    array<double>
                      ``predict_proba``, skops (MLflow 3's  (class probabilities)
                      default) with ``skops_trusted_types``
``demo_price``        scikit-learn Ridge regressor, skops   double
``demo_segments``     pyfunc returning two named outputs    struct<score, segment>
====================  ===================================  ======================
"""
from __future__ import annotations

import os
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "FEATURES",
    "RegistryInfo",
    "setup_registry",
    "demo_frame",
    "build_customers_table",
    "demo_config",
    "run_demo",
]

#: The demo's feature columns (float64 in the table; the torch model takes float32).
FEATURES: tuple[str, ...] = (
    "tenure_months",
    "monthly_spend",
    "support_calls",
    "days_since_login",
    "num_products",
    "discount_rate",
    "late_payments",
    "satisfaction",
)


@dataclass(frozen=True)
class RegistryInfo:
    """Where the demo registry lives; ``tracking_uri`` is also set in the environment."""

    root: str
    tracking_uri: str
    artifact_root: str


def _training_data(n: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    logits = 1.5 * x[:, 0] - 1.0 * x[:, 2] + 0.8 * x[:, 3] - 0.5 * x[:, 7]
    y = (logits + rng.normal(scale=0.5, size=n) > 0).astype(np.float32)
    return x, y


def _train_torch_mlp(seed: int):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    x, y = _training_data(seed=seed)
    net = nn.Sequential(
        nn.Linear(len(FEATURES), 32), nn.ReLU(), nn.Linear(32, 1), nn.Sigmoid()
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).unsqueeze(1)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy(net(xt), yt)
        loss.backward()
        opt.step()
    return net.eval()


class _SegmentsModel:  # wrapped by a PythonModel subclass below (mlflow imported lazily)
    @staticmethod
    def predict_frame(frame: pd.DataFrame) -> pd.DataFrame:
        score = 1.0 / (1.0 + np.exp(-(frame["tenure_months"] - frame["support_calls"])))
        segment = np.where(score > 0.5, "loyal", "at_risk")
        return pd.DataFrame({"score": score.astype("float64"), "segment": segment})


def _segments_python_model():
    import mlflow.pyfunc

    class SegmentsModel(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return _SegmentsModel.predict_frame(model_input)

    return SegmentsModel()


def setup_registry(root: str | os.PathLike) -> RegistryInfo:
    """Create (or reuse) a sqlite MLflow registry under ``root`` and register the demo models.

    Sets ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI`` in ``os.environ`` so
    Spark-submitted children and notebooks see the same registry. Idempotent:
    models already registered are left as they are.
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema, TensorSpec

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    artifact_root = (root / "artifacts").as_uri()
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.environ["MLFLOW_REGISTRY_URI"] = tracking_uri
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    info = RegistryInfo(str(root), tracking_uri, artifact_root)

    existing = {m.name for m in client.search_registered_models()}
    wanted = {"demo_churn", "demo_fraud", "demo_price", "demo_segments"}
    media = {"demo_image_tagger", "demo_text_moderator"}
    if (wanted | media) <= existing:
        return info

    if mlflow.get_experiment_by_name("demo_models") is None:
        mlflow.create_experiment("demo_models", artifact_location=f"{artifact_root}/demo_models")
    mlflow.set_experiment("demo_models")

    if not wanted <= existing:
        float_inputs = Schema([ColSpec("float", f) for f in FEATURES])
        double_inputs = Schema([ColSpec("double", f) for f in FEATURES])
        x, y = _training_data()
        frame = pd.DataFrame(x.astype(np.float64), columns=list(FEATURES))

        import mlflow.pytorch
        import mlflow.sklearn

        # demo_churn: torch MLP, two versions with aliases.
        for version, (seed, alias) in enumerate([(0, "champion"), (1, "challenger")], start=1):
            with mlflow.start_run(run_name=f"demo_churn_v{version}"):
                mlflow.pytorch.log_model(
                    _train_torch_mlp(seed),
                    name="model",
                    signature=ModelSignature(
                        inputs=float_inputs, outputs=Schema([ColSpec("double", "churn_probability")])
                    ),
                    serialization_format="pickle",
                    registered_model_name="demo_churn",
                    pip_requirements=["torch"],
                )
            client.set_registered_model_alias("demo_churn", alias, str(version))

        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import Ridge

        with mlflow.start_run(run_name="demo_fraud_v1"):
            clf = HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(frame, y)
            mlflow.sklearn.log_model(
                clf,
                name="model",
                signature=ModelSignature(
                    inputs=double_inputs, outputs=Schema([TensorSpec(np.dtype("float64"), (-1, 2))])
                ),
                # MLflow 3's default format (skops) refuses HistGradientBoosting's tree nodes
                # unless they are named as trusted: this is what a user passes.
                skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
                pyfunc_predict_fn="predict_proba",
                registered_model_name="demo_fraud",
                pip_requirements=["scikit-learn", "skops"],
            )
        client.set_registered_model_alias("demo_fraud", "champion", "1")

        with mlflow.start_run(run_name="demo_price_v1"):
            target = frame["monthly_spend"] * 3.0 + frame["tenure_months"] - frame["discount_rate"]
            mlflow.sklearn.log_model(
                Ridge(alpha=1.0).fit(frame, target),
                name="model",
                signature=ModelSignature(inputs=double_inputs, outputs=Schema([ColSpec("double")])),
                registered_model_name="demo_price",  # MLflow 3's default format: skops
                pip_requirements=["scikit-learn", "skops"],
            )
        client.set_registered_model_alias("demo_price", "champion", "1")

        with mlflow.start_run(run_name="demo_segments_v1"):
            mlflow.pyfunc.log_model(
                name="model",
                python_model=_segments_python_model(),
                signature=ModelSignature(
                    inputs=Schema([ColSpec("double", "tenure_months"), ColSpec("double", "support_calls")]),
                    outputs=Schema([ColSpec("double", "score"), ColSpec("string", "segment")]),
                ),
                registered_model_name="demo_segments",
                pip_requirements=["pandas"],
            )
        client.set_registered_model_alias("demo_segments", "champion", "1")
    _register_media(client, root, existing)
    return info


def _register_media(client, root: Path, existing: set[str]) -> None:
    if {"demo_image_tagger", "demo_text_moderator"} <= existing:
        return
    from .demo_media import register_media_models

    register_media_models(client, root / "artifacts" / "media")


def demo_frame(
    partitions: tuple[str, ...] = ("2026-11-25", "2026-11-26", "2026-11-27"),
    rows_per_partition: int = 2000,
    *,
    bad_rows: bool = True,
    seed: int = 7,
) -> pd.DataFrame:
    """A pandas frame of customers: ``customer_id``, ``ds``, the float64 features.

    With ``bad_rows``, each partition gets three rows the model cannot score
    (a null, a NaN and an infinite feature) for the quarantine to catch.
    """
    rng = np.random.default_rng(seed)
    frames = []
    for p, ds in enumerate(partitions):
        feats = rng.normal(size=(rows_per_partition, len(FEATURES)))
        frame = pd.DataFrame(feats, columns=list(FEATURES))
        frame.insert(0, "customer_id", np.arange(rows_per_partition, dtype=np.int64) + p * 10_000_000)
        frame.insert(1, "ds", ds)
        if bad_rows and rows_per_partition >= 3:
            # Row 0 becomes a SQL null in build_customers_table (pandas float
            # columns cannot hold one); rows 1 and 2 carry NaN and +inf.
            frame.loc[0, FEATURES[0]] = float("nan")
            frame.loc[1, FEATURES[1]] = float("nan")
            frame.loc[2, FEATURES[2]] = float("inf")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def build_customers_table(spark, path: str, frame: pd.DataFrame | None = None, *, overwrite: bool = True) -> str:
    """Write ``frame`` (default :func:`demo_frame`) as a Delta table partitioned by ``ds``.

    The first row of each partition gets a real SQL null (pandas cannot hold
    one in a float column), the others NaN / inf, so all three bad-row kinds exist.
    """
    import pyspark.sql.functions as F

    frame = demo_frame() if frame is None else frame
    df = spark.createDataFrame(frame)
    # NaN from pandas arrives as NaN; make row 0 of each partition a true null.
    # Arrow turns pandas NaN into null on the way in, so set the bad values here:
    # row 0 a null, row 1 a real NaN (row 2's +inf survives the conversion).
    row = F.col("customer_id") % 10_000_000
    df = df.withColumns({
        FEATURES[0]: F.when(row == 0, F.lit(None).cast("double")).otherwise(F.col(FEATURES[0])),
        FEATURES[1]: F.when(row == 1, F.lit(float("nan"))).otherwise(F.col(FEATURES[1])),
    })
    path = os.path.abspath(path)
    (
        df.write.format("delta")
        .mode("overwrite" if overwrite else "errorifexists")
        .option("overwriteSchema", "true")
        .partitionBy("ds")
        .save(path)
    )
    return path


def demo_config(workspace: str | os.PathLike, registry_dir: str | os.PathLike | None = None) -> dict:
    """The demo job config (the same as ``conf/demo.yaml``, rooted at ``workspace``; the
    registry in ``registry_dir``, default ``<workspace>/mlflow``)."""
    ws = Path(workspace)
    registry = Path(registry_dir) if registry_dir else ws / "mlflow"
    return {
        "model": "models:/demo_churn@champion",
        "mlflow": {"tracking_uri": f"sqlite:///{(registry / 'mlflow.db').resolve()}"},
        "input": {"table": str(ws / "tables" / "customers"), "partition_by": "ds"},
        "output": {
            "table": str(ws / "tables" / "customer_scores"),
            "mode": "overwrite_partitions",
            "prediction_column": "churn_probability",
        },
        "bad_rows": "quarantine",
        "quarantine_table": str(ws / "tables" / "customer_scores_quarantine"),
    }


@contextmanager
def _quiet_mlflow(line: str):
    """MLflow's logging chatter (pickle warnings, "Successfully registered model ...", progress
    bars) kept off the demo's console unless ``--verbose``; shown if registering fails."""
    import io
    import logging
    import sys
    import warnings

    if os.environ.get("SPARK_SCORING_VERBOSE", "") not in ("", "0", "false"):
        yield
        return
    print(line, file=sys.stderr, flush=True)
    logger = logging.getLogger("mlflow")
    level, buffer = logger.level, io.StringIO()
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stderr(buffer):
            warnings.simplefilter("ignore", UserWarning)
            yield
    except BaseException:
        sys.stderr.write(buffer.getvalue())
        raise
    finally:
        logger.setLevel(level)


def run_demo(workspace: str | os.PathLike = "demo_workspace", *, rows_per_partition: int = 2000):
    """The README's first command: registry + models, input table, then one scoring job."""
    from .run import run_job
    from .session import get_spark

    ws = Path(workspace).resolve()
    with _quiet_mlflow(f"spark_scoring: the demo's models, registered once in {ws / 'mlflow' / 'mlflow.db'}"):
        setup_registry(ws / "mlflow")
    spark = get_spark("spark_scoring_demo")
    table = ws / "tables" / "customers"
    if not (table / "_delta_log").exists():
        build_customers_table(spark, str(table), demo_frame(rows_per_partition=rows_per_partition))
    return run_job(demo_config(ws))
