"""Inputs of ``bench/media.py``: the JPEG table (Parquet + Delta) and the two pyfunc models.

Runs on: the driver (the Delta conversion uses the Spark session).

- Data: ``images`` JPEG crops (random boxes of 140-260 px a side, both sides drawn
  independently) of the two photos ``sklearn.datasets.load_sample_images()``
  bundles (nothing is downloaded), encoded by Pillow at quality 90, with an
  ``id`` (int64) column, in ``files`` Parquet files of equal row counts written by
  pyarrow. The Delta table holds *the same files* (hard links, then
  ``CONVERT TO DELTA``), so every engine reads identical bytes. Cached under the
  work folder, keyed by the sizes and seed.
- Models, in a sqlite MLflow registry under the work folder (one registry per
  net, input size and version of ``_media_model.py``): ``media_plain`` and ``media_overlapped`` (see
  ``_media_model.py``), version 1, the same random weights (seeded). Local
  copies (``mlflow.artifacts.download_artifacts``) feed the engines that load a
  folder (the limit, Ray, Daft). ``--torch-threads N`` saves the same models
  again as local folders whose ``model_config`` holds ``torch_threads: N``.
"""
from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
MODEL_FILE = HERE / "_media_model.py"
MODELS = ("media_plain", "media_overlapped")


@dataclass(frozen=True)
class ImageSet:
    images: int
    files: int
    parquet: str  # folder of Parquet files
    delta: str  # Delta table over the same files
    bytes_total: int

    def parquet_files(self) -> list[str]:
        return sorted(str(p) for p in Path(self.parquet).glob("*.parquet"))


def _crops(n: int, seed: int, lo: int = 140, hi: int = 260, quality: int = 90):
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640 x 3 uint8
    rng = np.random.default_rng(seed)
    for _ in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = (int(v) for v in rng.integers(lo, hi + 1, size=2))
        y = int(rng.integers(0, photo.shape[0] - h + 1))
        x = int(rng.integers(0, photo.shape[1] - w + 1))
        buf = io.BytesIO()
        Image.fromarray(photo[y:y + h, x:x + w]).save(buf, format="JPEG", quality=quality)
        yield buf.getvalue()


def make_images(spark, root: str | os.PathLike, images: int, files: int, *, seed: int = 7) -> ImageSet:
    """Write (or reuse) ``images`` JPEG rows in ``files`` Parquet files plus a Delta table over them."""
    root = Path(root) / f"images{images}_files{files}_seed{seed}"
    marker = root / "READY.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return ImageSet(images, files, str(root / "parquet"), str(root / "delta"), info["bytes"])
    if root.exists():
        shutil.rmtree(root)
    pq_dir, delta_dir = root / "parquet", root / "delta"
    pq_dir.mkdir(parents=True)
    delta_dir.mkdir(parents=True)
    blobs = list(_crops(images, seed))
    per_file = -(-images // files)
    schema = pa.schema([("id", pa.int64()), ("image", pa.binary())])
    for f in range(files):
        lo, hi = f * per_file, min(images, (f + 1) * per_file)
        if lo >= hi:
            break
        table = pa.table({"id": pa.array(np.arange(lo, hi, dtype=np.int64)),
                          "image": pa.array(blobs[lo:hi], type=pa.binary())}, schema=schema)
        name = f"part-{f:05d}.parquet"
        pq.write_table(table, pq_dir / name, compression="snappy")
        os.link(pq_dir / name, delta_dir / name)
    spark.sql(f"CONVERT TO DELTA parquet.`{delta_dir}`")
    total = sum(len(b) for b in blobs)
    marker.write_text(json.dumps({"images": images, "files": files, "seed": seed, "bytes": total}))
    return ImageSet(images, files, str(pq_dir), str(delta_dir), total)


def _signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(Schema([ColSpec("binary", "image")]),
                          Schema([ColSpec("long", "label"), ColSpec("double", "score")]))


def _net_artifacts(folder: Path, arch: str, size: int) -> dict[str, str]:
    import torch

    import _media_model as MM

    folder.mkdir(parents=True, exist_ok=True)
    weights, spec = folder / "weights.pt", folder / "net.json"
    if not weights.exists():
        torch.save(MM.build_net(arch).state_dict(), weights)
        spec.write_text(json.dumps({"arch": arch, "size": size}))
    return {"weights": str(weights), "net": str(spec)}


def _python_model(name: str):
    import _media_model as MM

    return {"media_plain": MM.MediaPlain, "media_overlapped": MM.MediaOverlapped}[name]()


@dataclass(frozen=True)
class Models:
    registry: str  # the sqlite tracking / registry URI
    uris: dict  # name -> models:/name/1 (or a local folder with --torch-threads)
    local: dict  # name -> local folder holding the same model
    root: str = ""
    arch: str = ""
    size: int = 0

    def with_threads(self, name: str, threads: int) -> str:
        """A local folder of model ``name`` whose ``load_context`` sets ``torch.set_num_threads(threads)``."""
        return _threads_copy(Path(self.root), name, self.arch, self.size, threads)


def _common(root: Path, arch: str, size: int) -> dict:
    return dict(artifacts=_net_artifacts(root / "net", arch, size), code_paths=[str(MODEL_FILE)],
                signature=_signature(), pip_requirements=["torch", "torchvision", "pandas"])


def _threads_copy(root: Path, name: str, arch: str, size: int, threads: int) -> str:
    import mlflow.pyfunc

    folder = root / "local" / f"{name}_threads{threads}"
    if not (folder / "MLmodel").exists():
        if folder.exists():
            shutil.rmtree(folder)
        mlflow.pyfunc.save_model(str(folder), python_model=_python_model(name),
                                 model_config={"torch_threads": int(threads)}, **_common(root, arch, size))
    return str(folder)


def setup_models(root: str | os.PathLike, arch: str, size: int, torch_threads: int | None = None) -> Models:
    """Register (or reuse) ``media_plain`` and ``media_overlapped``; local copies of both."""
    import hashlib

    import mlflow
    from mlflow.tracking import MlflowClient

    code = hashlib.sha1(MODEL_FILE.read_bytes()).hexdigest()[:8]  # a changed model file: a new registry
    root = (Path(root) / f"mlflow_{arch}_{size}_{code}").resolve()
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["MLFLOW_REGISTRY_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    existing = {m.name for m in client.search_registered_models()}
    missing = [m for m in MODELS if m not in existing]
    if missing:
        if mlflow.get_experiment_by_name("bench_media") is None:
            mlflow.create_experiment("bench_media", artifact_location=(root / "artifacts").as_uri())
        mlflow.set_experiment("bench_media")
        for name in missing:
            with mlflow.start_run(run_name=name):
                mlflow.pyfunc.log_model(name="model", python_model=_python_model(name),
                                        registered_model_name=name, **_common(root, arch, size))
    uris = {m: f"models:/{m}/1" for m in MODELS}
    local = {}
    for name in MODELS:
        folder = root / "local" / name
        if not (folder / "MLmodel").exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.parent.mkdir(parents=True, exist_ok=True)
            got = mlflow.artifacts.download_artifacts(artifact_uri=uris[name], dst_path=str(folder))
            if not (folder / "MLmodel").exists():  # the model landed in a sub-folder
                raise RuntimeError(f"downloaded {uris[name]} to {got}, expected {folder}/MLmodel")
        local[name] = str(folder)
    if torch_threads:
        for name in MODELS:
            local[name] = uris[name] = _threads_copy(root, name, arch, size, torch_threads)
    return Models(uri, uris, local, str(root), arch, size)
