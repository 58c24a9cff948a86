"""The image model of ``bench/media.py``: two MLflow pyfunc models over the same net.

Runs on: wherever the model is loaded (the driver for the in-process limit,
Spark's Python workers, Ray actors, Daft UDF processes). MLflow ships this
file with each logged model (``code_paths``), so it imports nothing from the
benchmark or from spark_scoring.

- :class:`MediaPlain` (``media_plain``): ``predict`` decodes each JPEG, resizes
  it to ``size`` x ``size`` (bilinear, antialiased), normalises, stacks and runs
  the net under ``torch.inference_mode``; returns a DataFrame of ``label``
  (argmax, int64) and ``score`` (softmax max, float64).
- :class:`MediaOverlapped` (``media_overlapped``): the same model split in two,
  ``preprocess(frame) -> float32 NCHW tensor`` (the CPU part) and
  ``predict_batch(tensor) -> DataFrame`` (the forward pass), with
  ``predict = predict_batch(preprocess(x))``: an ordinary pyfunc model that an
  engine may also drive in two steps, preparing the next batches in threads
  while the current one runs. The decode releases the GIL:
  ``torchvision.io.decode_jpeg`` and torchvision's resize run in C++ without it
  (measured 2x faster than Pillow's decode + resize on these crops on CPU).

Both read ``context.model_config``: ``device`` (default ``"cpu"``; the
overlapped model moves the net there) and ``torch_threads`` (default: leave
torch's thread count alone; the benchmark's ``--torch-threads`` sets it).

Tracing: with ``$BENCH_MEDIA_TRACE`` naming a file, every model call appends one
JSON line ``{"t0", "t1", "pid", "rows", "pre_s", "fwd_s", "threads", "model", "omp"}``
(O_APPEND; the benchmark attributes lines to runs by time; ``rows`` 0 on a
``preprocess`` line). Unset: no cost.
"""
from __future__ import annotations

import json
import os
import time

import mlflow.pyfunc
import numpy as np
import pandas as pd

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
ARCHS = ("resnet18", "cnn3")


def build_net(arch: str, seed: int = 0):
    """The net, random weights, ``seed``-ed, in eval mode (the weights are then saved and reloaded)."""
    import torch

    torch.manual_seed(seed)
    if arch == "resnet18":
        import torchvision

        net = torchvision.models.resnet18(weights=None)
    elif arch == "cnn3":  # the "smaller 3-layer CNN"
        from torch import nn

        net = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 100),
        )
    else:
        raise ValueError(f"arch {arch!r}: expected one of {ARCHS}")
    return net.eval()


def _as_bytes(value) -> bytearray:
    # a writable copy: torch.frombuffer warns on read-only buffers (13 kB: negligible)
    return bytearray(value)


def decode_resize(blob, size: int):
    """One JPEG -> uint8 CHW tensor of ``size`` x ``size`` (RGB). Releases the GIL in C++."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import functional as TF

    img = decode_jpeg(torch.frombuffer(_as_bytes(blob), dtype=torch.uint8), mode=ImageReadMode.RGB)
    return TF.resize(img, [size, size], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def to_batch(images, size: int):
    """JPEG bytes (a Series / list) -> normalised float32 NCHW tensor."""
    import torch

    x = torch.stack([decode_resize(b, size) for b in images]).float().div_(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def forward(net, batch, device: str = "cpu") -> pd.DataFrame:
    """The forward pass on a prepared batch -> DataFrame(label int64, score float64)."""
    import torch

    with torch.inference_mode():
        if batch.device.type != torch.device(device).type:
            batch = batch.to(device, non_blocking=True)
        probs = torch.softmax(net(batch).float(), dim=1)
        score, label = probs.max(dim=1)
    return pd.DataFrame({
        "label": label.cpu().numpy().astype(np.int64),
        "score": score.cpu().numpy().astype(np.float64),
    })


def images_of(model_input) -> list:
    if isinstance(model_input, pd.DataFrame):
        col = model_input["image"] if "image" in model_input.columns else model_input.iloc[:, 0]
        return col.tolist()
    return list(model_input)


def _trace(model: str, t0: float, t_mid: float, t1: float, rows: int) -> None:
    path = os.environ.get("BENCH_MEDIA_TRACE")
    if not path:
        return
    import torch

    now = time.time()  # wall clock: comparable across processes (the run windows)
    line = json.dumps({"t0": now - (t1 - t0), "t1": now, "pid": os.getpid(), "rows": rows, "pre_s": t_mid - t0,
                       "fwd_s": t1 - t_mid, "threads": torch.get_num_threads(), "model": model,
                       "omp": os.environ.get("OMP_NUM_THREADS")})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class _Base(mlflow.pyfunc.PythonModel):
    name = "base"

    def load_context(self, context):
        import torch

        config = dict(getattr(context, "model_config", None) or {})
        threads = config.get("torch_threads")
        if threads:
            torch.set_num_threads(int(threads))
        with open(context.artifacts["net"]) as fh:
            spec = json.load(fh)
        self.size = int(spec["size"])
        self.device = str(config.get("device", "cpu"))
        net = build_net(spec["arch"])
        net.load_state_dict(torch.load(context.artifacts["weights"], map_location="cpu"))
        self.net = net.eval().to(self.device)


class MediaPlain(_Base):
    """``media_plain``: decode, resize, normalise, forward, all inside ``predict``."""

    name = "media_plain"

    def predict(self, context, model_input, params=None):
        t0 = time.perf_counter()
        batch = to_batch(images_of(model_input), self.size)
        t_mid = time.perf_counter()
        out = forward(self.net, batch, self.device)
        _trace(self.name, t0, t_mid, time.perf_counter(), len(out))
        return out


class MediaOverlapped(_Base):
    """``media_overlapped``: the same model as ``preprocess`` + ``predict_batch``.

    Traced as two lines per batch (``pre_s`` from ``preprocess``, ``fwd_s`` from
    ``predict_batch``), so a caller running ``preprocess`` in other threads is
    timed right too.
    """

    name = "media_overlapped"

    def preprocess(self, model_input: pd.DataFrame):
        """The CPU part: JPEG bytes -> normalised float32 NCHW tensor (on the host)."""
        t0 = time.perf_counter()
        batch = to_batch(images_of(model_input), self.size)
        t1 = time.perf_counter()
        _trace(self.name, t0, t1, t1, 0)
        return batch

    def predict_batch(self, batch, params=None) -> pd.DataFrame:
        """The forward pass on a batch ``preprocess`` prepared."""
        t0 = time.perf_counter()
        out = forward(self.net, batch, self.device)
        _trace(self.name, t0, t0, time.perf_counter(), len(out))
        return out

    def predict(self, context, model_input, params=None):
        return self.predict_batch(self.preprocess(model_input), params)
