"""Benchmark inputs: the synthetic table (Parquet and Delta) and the two registered models.

Runs on: the driver of ``bench/run.py`` (no Spark needed for the Parquet files
and the models; Delta conversion uses the session).

- Data: ``rows`` x (``id`` int64 + ``FEATURES`` float64), written by pyarrow as
  ``files`` Parquet files of equal size. The Delta table holds *the same files*
  (hard links, then ``CONVERT TO DELTA``), so every path reads identical bytes.
  Both are cached under the work dir and reused when the parameters match.
- Models, in a sqlite MLflow registry under ``<work>/mlflow``:
  ``bench_mlp`` (torch MLP 32-256-256-1, ``serialization_format="pickle"``,
  32 named float ColSpec inputs, one double output) and ``bench_hgb``
  (scikit-learn HistGradientBoostingRegressor, 100 iterations,
  ``serialization_format="cloudpickle"``, 32 double inputs, one double output).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

N_FEATURES = 32
FEATURES = tuple(f"f{i:02d}" for i in range(N_FEATURES))
MODELS = {"mlp": "bench_mlp", "hgb": "bench_hgb"}


@dataclass(frozen=True)
class Dataset:
    rows: int
    files: int
    parquet: str  # folder of Parquet files
    delta: str  # Delta table over the same files

    def parquet_files(self) -> list[str]:
        return sorted(str(p) for p in Path(self.parquet).glob("*.parquet"))


def _make_batch(start: int, rows: int, seed: int) -> pa.RecordBatch:
    rng = np.random.default_rng([seed, start])
    x = rng.standard_normal((rows, N_FEATURES))
    cols = [pa.array(np.arange(start, start + rows, dtype=np.int64))]
    cols += [pa.array(np.ascontiguousarray(x[:, j])) for j in range(N_FEATURES)]
    return pa.RecordBatch.from_arrays(cols, ["id", *FEATURES])


def make_dataset(spark, root: str | os.PathLike, rows: int, files: int, *, seed: int = 42,
                 row_group_rows: int = 65_536) -> Dataset:
    """Write (or reuse) ``rows`` rows in ``files`` Parquet files plus a Delta table over them."""
    root = Path(root) / f"rows{rows}_files{files}_seed{seed}"
    ds = Dataset(rows, files, str(root / "parquet"), str(root / "delta"))
    marker = root / "READY.json"
    if marker.exists():
        return ds
    if root.exists():
        shutil.rmtree(root)
    pq_dir, delta_dir = Path(ds.parquet), Path(ds.delta)
    pq_dir.mkdir(parents=True)
    delta_dir.mkdir(parents=True)
    per_file = -(-rows // files)
    chunk = 262_144
    for f in range(files):
        lo, hi = f * per_file, min(rows, (f + 1) * per_file)
        if lo >= hi:
            break
        name = f"part-{f:05d}.parquet"
        writer = None
        for start in range(lo, hi, chunk):
            batch = _make_batch(start, min(chunk, hi - start), seed)
            if writer is None:
                writer = pq.ParquetWriter(str(pq_dir / name), batch.schema, compression="snappy")
            writer.write_batch(batch, row_group_size=row_group_rows)
        writer.close()
        os.link(pq_dir / name, delta_dir / name)
    spark.sql(f"CONVERT TO DELTA parquet.`{delta_dir}`")
    marker.write_text(json.dumps({"rows": rows, "files": files, "seed": seed}))
    return ds


def reference_matrix(ds: Dataset, ids: np.ndarray) -> np.ndarray:
    """The float64 features of the rows ``ids`` (for the correctness check), read with pyarrow."""
    import pyarrow.compute as pc

    table = pq.read_table(ds.parquet, filters=pc.field("id").isin(pa.array(ids)))
    table = table.sort_by("id")
    return np.column_stack([table[c].to_numpy() for c in FEATURES]), table["id"].to_numpy()


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------

def _train_data(n: int = 20_000, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, N_FEATURES))
    y = np.sin(x[:, 0]) + x[:, 1] * x[:, 2] - 0.5 * x[:, 3] ** 2 + 0.1 * x[:, 4:].sum(axis=1)
    return x, y


def _train_mlp():
    import torch
    from torch import nn

    torch.manual_seed(0)
    x, y = _train_data()
    net = nn.Sequential(
        nn.Linear(N_FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt = torch.from_numpy(x.astype(np.float32))
    yt = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(net(xt), yt)
        loss.backward()
        opt.step()
    return net.eval()


def _train_hgb():
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingRegressor

    x, y = _train_data()
    frame = pd.DataFrame(x, columns=list(FEATURES))
    return HistGradientBoostingRegressor(max_iter=100, early_stopping=False, random_state=0).fit(frame, y)


def setup_models(root: str | os.PathLike) -> dict[str, str]:
    """Register (or reuse) the benchmark models; return {short name: ``models:/name/1``}."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema

    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    existing = {m.name for m in client.search_registered_models()}
    out = {short: f"models:/{name}/1" for short, name in MODELS.items()}
    if set(MODELS.values()) <= existing:
        return out
    if mlflow.get_experiment_by_name("bench") is None:
        mlflow.create_experiment("bench", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_experiment("bench")
    out_sig = Schema([ColSpec("double", "prediction")])
    if MODELS["mlp"] not in existing:
        import mlflow.pytorch

        with mlflow.start_run(run_name="bench_mlp"):
            mlflow.pytorch.log_model(
                _train_mlp(),
                name="model",
                signature=ModelSignature(Schema([ColSpec("float", f) for f in FEATURES]), out_sig),
                serialization_format="pickle",
                registered_model_name=MODELS["mlp"],
                pip_requirements=["torch"],
            )
    if MODELS["hgb"] not in existing:
        import mlflow.sklearn

        with mlflow.start_run(run_name="bench_hgb"):
            mlflow.sklearn.log_model(
                _train_hgb(),
                name="model",
                signature=ModelSignature(Schema([ColSpec("double", f) for f in FEATURES]), out_sig),
                serialization_format="cloudpickle",
                registered_model_name=MODELS["hgb"],
                pip_requirements=["scikit-learn"],
            )
    return out
