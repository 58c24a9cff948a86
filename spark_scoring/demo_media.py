"""The embedded media demo: an image tagger, a text moderator, and Delta tables of JPEGs and texts.

Runs on: the driver (``spark-scoring demo``, ``notebooks/05_image_tagging.py``, the
tests). Nothing is downloaded: the photos are crops of scikit-learn's two bundled
sample images, the tagger is a small CNN trained here on scikit-learn's digits.

Both models are ordinary MLflow pyfunc models that declare their CPU work apart from
their forward pass, so spark_scoring overlaps them (see :mod:`spark_scoring.executor.runners`):

- ``preprocess(model_input) -> batch``: decode / resize / normalise (or tokenize), in
  the task's worker threads; a corrupt image raises here, and only its row fails;
- ``predict_batch(batch, params=None)``: the forward pass on the task's device
  (``context.model_config["device"]``, set by spark_scoring to the task's GPU or ``cpu``);
- ``predict(context, model_input, params=None)`` is the two in a row, so the model
  works unchanged with ``mlflow.pyfunc.load_model(...).predict`` and ``spark_udf``.

The image decode uses Pillow, which refuses decompression bombs
(``Image.MAX_IMAGE_PIXELS``) with an error instead of filling the worker's memory.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["IMAGE_SIZE", "sample_jpegs", "corrupt_images", "images_frame", "texts_frame",
           "register_media_models", "build_media_tables"]

IMAGE_SIZE = 64
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)


def sample_jpegs(n: int, seed: int = 0, sizes=(140, 260)) -> list[bytes]:
    """``n`` JPEG crops (``sizes`` px squares, random places) of scikit-learn's two sample photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(sizes[0], sizes[1] + 1))
        y = int(rng.integers(0, photo.shape[0] - side))
        x = int(rng.integers(0, photo.shape[1] - side))
        buf = io.BytesIO()
        Image.fromarray(photo[y:y + side, x:x + side]).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def corrupt_images() -> dict[str, bytes]:
    """Inputs a tagger must survive as one row's error each: empty, garbage, truncated, a decompression bomb."""
    from PIL import Image

    good = sample_jpegs(1, seed=99)[0]
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # 400M pixels, a few kB: Pillow refuses it
    return {"empty": b"", "garbage": bytes(range(256)) * 8, "truncated": good[: len(good) // 3],
            "bomb": bomb.getvalue()}


def _decode(data: bytes) -> np.ndarray:
    """One image as a normalised float32 CHW array (Pillow; JPEGs decoded at reduced scale)."""
    from PIL import Image

    img = Image.open(io.BytesIO(data))  # raises DecompressionBombError past 2 x MAX_IMAGE_PIXELS
    img.draft("RGB", (IMAGE_SIZE, IMAGE_SIZE))  # JPEG: DCT scaling, far cheaper than a full decode
    img = img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return (arr - _MEAN) / _STD


def _small_cnn():
    import torch
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    ).to(torch.float32)


def _train_tagger(seed: int = 0):
    """The small CNN trained briefly on scikit-learn's digits (8x8, upscaled, three channels)."""
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear").repeat(1, 3, 1, 1)
    x = (x - torch.tensor(_MEAN)) / torch.tensor(_STD)
    y = torch.tensor(digits.target)
    net = _small_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _epoch in range(2):
        for i in range(0, len(x), 128):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x[i:i + 128]), y[i:i + 128])
            loss.backward()
            opt.step()
    return net.eval()


def _python_models():
    import mlflow.pyfunc

    class ImageTagger(mlflow.pyfunc.PythonModel):
        """Tags JPEGs with one of 10 classes; ``preprocess`` decodes, ``predict_batch`` runs the CNN."""

        def load_context(self, context):
            import torch

            self.device = (context.model_config or {}).get("device") or "cpu"
            self.net = _small_cnn()
            self.net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu"))
            self.net = self.net.eval().to(self.device)

        def preprocess(self, model_input: pd.DataFrame):
            import torch

            return torch.from_numpy(np.stack([_decode(b) for b in model_input["image"]]))

        def predict_batch(self, batch, params=None) -> pd.DataFrame:
            import torch

            with torch.inference_mode():
                probs = torch.softmax(self.net(batch.to(self.device, non_blocking=True)), dim=1)
                score, label = probs.max(dim=1)
            return pd.DataFrame({"label": label.cpu().numpy().astype(np.int64),
                                 "score": score.float().cpu().numpy().astype(np.float64)})

        def predict(self, context, model_input, params=None):
            return self.predict_batch(self.preprocess(model_input), params)

    class TextModerator(mlflow.pyfunc.PythonModel):
        """Flags texts by a small weighted lexicon; ``preprocess`` tokenizes."""

        WEIGHTS = {"scam": 2.5, "free": 0.8, "winner": 1.5, "click": 1.2, "hate": 3.0, "idiot": 2.0,
                   "thanks": -1.0, "great": -0.8, "love": -0.5}

        def preprocess(self, model_input: pd.DataFrame):
            return [str(t).lower().replace("!", " ").replace(",", " ").split() for t in model_input["text"]]

        def predict_batch(self, batch, params=None) -> pd.DataFrame:
            z = np.array([sum(self.WEIGHTS.get(w, 0.0) for w in words) - 1.0 for words in batch])
            score = 1.0 / (1.0 + np.exp(-z))
            return pd.DataFrame({"label": np.where(score > 0.5, "flag", "ok"), "score": score})

        def predict(self, context, model_input, params=None):
            return self.predict_batch(self.preprocess(model_input), params)

    return ImageTagger, TextModerator


def register_media_models(client, artifact_dir: str | os.PathLike) -> None:
    """Register ``demo_image_tagger`` and ``demo_text_moderator`` (v1 ``@champion``) in the current registry."""
    import mlflow
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    tagger_cls, moderator_cls = _python_models()
    weights = Path(artifact_dir) / "image_tagger_weights.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(_train_tagger().state_dict(), weights)
    out = Schema([ColSpec("long", "label"), ColSpec("double", "score")])
    with mlflow.start_run(run_name="demo_image_tagger_v1"):
        mlflow.pyfunc.log_model(
            name="model", python_model=tagger_cls(), artifacts={"weights": str(weights)},
            signature=ModelSignature(inputs=Schema([ColSpec("binary", "image")]), outputs=out),
            model_config={"device": "cpu"},  # spark_scoring sets the task's device here
            registered_model_name="demo_image_tagger", pip_requirements=["torch", "pillow", "pandas"],
        )
    client.set_registered_model_alias("demo_image_tagger", "champion", "1")
    with mlflow.start_run(run_name="demo_text_moderator_v1"):
        mlflow.pyfunc.log_model(
            name="model", python_model=moderator_cls(),
            signature=ModelSignature(inputs=Schema([ColSpec("string", "text")]),
                                     outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")])),
            registered_model_name="demo_text_moderator", pip_requirements=["pandas"],
        )
    client.set_registered_model_alias("demo_text_moderator", "champion", "1")


_TEXTS = ["thanks for the great service", "click here, free winner!", "I love this product",
          "this is a scam, total scam", "see you tomorrow", "what an idiot", "great pictures, thanks",
          "free shipping on orders", "winner winner", "the meeting moved to 3pm"]


def images_frame(per_partition: int = 60, partitions=("2026-11-26", "2026-11-27"), *, corrupt: bool = True,
                 seed: int = 0) -> pd.DataFrame:
    """``image_id``, ``ds``, ``image`` (JPEG bytes), ``source``; with ``corrupt``, the
    :func:`corrupt_images` in the last partition (and one null image)."""
    rows = []
    for p, ds in enumerate(partitions):
        for k, data in enumerate(sample_jpegs(per_partition, seed=seed + p)):
            rows.append((p * 1_000_000 + k, ds, data, "crop"))
    if corrupt:
        base = (len(partitions) - 1) * 1_000_000 + per_partition
        for k, (name, data) in enumerate(corrupt_images().items()):
            rows.append((base + k, partitions[-1], data, name))
        rows.append((base + 99, partitions[-1], None, "null"))
    return pd.DataFrame(rows, columns=["image_id", "ds", "image", "source"])


def texts_frame(per_partition: int = 50, partitions=("2026-11-26", "2026-11-27"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [(p * 1_000_000 + k, ds, str(_TEXTS[int(rng.integers(len(_TEXTS)))]))
            for p, ds in enumerate(partitions) for k in range(per_partition)]
    return pd.DataFrame(rows, columns=["text_id", "ds", "text"])


def build_media_tables(spark, root: str | os.PathLike, *, images: int = 60, texts: int = 50) -> dict[str, str]:
    """Delta tables ``<root>/images`` and ``<root>/texts`` partitioned by ``ds``; returns their paths."""
    from pyspark.sql import types as T

    root = Path(root).resolve()
    paths = {"images": str(root / "images"), "texts": str(root / "texts")}
    img = images_frame(images)
    schema = T.StructType([T.StructField("image_id", T.LongType()), T.StructField("ds", T.StringType()),
                           T.StructField("image", T.BinaryType()), T.StructField("source", T.StringType())])
    rows = [(int(r.image_id), r.ds, None if r.image is None else bytes(r.image), r.source)
            for r in img.itertuples(index=False)]
    spark.createDataFrame(rows, schema).write.format("delta").mode("overwrite").partitionBy("ds") \
        .save(paths["images"])
    spark.createDataFrame(texts_frame(texts)).write.format("delta").mode("overwrite").partitionBy("ds") \
        .save(paths["texts"])
    return paths
