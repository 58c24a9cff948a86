#!/usr/bin/env python
"""GPU feeding check: spark_scoring's torch runner alone (no Spark, no Java) on a ResNet-50.

    .venv/bin/python bench/gpu_check.py                          # CUDA if available
    .venv/bin/python bench/gpu_check.py --device cpu --images 32 --size 96  # the CPU smoke run

Runs on: any machine with torch; torchvision is not needed (ResNet-50 is
written out below, 25.6M parameters) and nothing is downloaded.

What runs is the engine's own feeding path: Arrow batches of uint8 images are
re-batched to ``--batch-size`` rows (``executor.predictor.rebatch``), prepared in the
predictor's background thread (``executor.predictor._prefetch``: uint8 -> float32
normalised, then :meth:`TorchRunner.to_device`, i.e. pinned memory and a
non-blocking copy on CUDA) while the previous batch runs in
:meth:`TorchRunner.run_tensor` (``inference_mode``, optional autocast, CUDA
out-of-memory back-off that halves the batch). Prints and writes (``--out``)
images/s, the batch size that ran, and GPU utilisation sampled during the run
(``torch.cuda.utilization`` when pynvml is present, else ``nvidia-smi``).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402


def resnet50(num_classes: int = 1000):
    """ResNet-50 (v1.5: stride on the 3x3 conv) in plain torch."""
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin, width, stride=1):
            super().__init__()
            cout = width * self.expansion
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.down is None else self.down(x)
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.relu(self.bn2(self.conv2(x)))
            return self.relu(self.bn3(self.conv3(x)) + idt)

    layers, cin = [], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1), *layers,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes),
    )


def synthetic_batches(images: int, size: int, per_batch: int = 64, seed: int = 0):
    """Arrow record batches of one ``FixedSizeList<uint8>`` column (an image per row), like
    Parquet row groups of decoded images."""
    rng = np.random.default_rng(seed)
    pixels = 3 * size * size
    out = []
    for start in range(0, images, per_batch):
        n = min(per_batch, images - start)
        flat = pa.array(rng.integers(0, 256, size=n * pixels, dtype=np.uint8))
        out.append(pa.RecordBatch.from_arrays([pa.FixedSizeListArray.from_arrays(flat, pixels)], ["image"]))
    return out


class GpuSampler:
    """Samples GPU utilisation (%) every ``interval`` seconds while running."""

    def __init__(self, device, interval: float = 0.25):
        self.device, self.interval, self.samples, self.source = device, interval, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _read(self):
        import torch

        try:
            self.source = "torch.cuda.utilization"
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - no pynvml
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi"
            index = self.device.index or 0
            out = subprocess.run(
                ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5,
            ).stdout.strip()
            return float(out.splitlines()[0]) if out else None
        self.source = "unavailable"
        return None

    def _loop(self):
        while not self._stop.wait(self.interval):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def run(device: str = "auto", images: int = 512, size: int = 224, batch_size: int | None = None,
        autocast: str | None = "auto", warmup: int = 1, threads: int | None = None) -> dict:
    import torch

    from spark_scoring.executor.predictor import _prefetch, rebatch
    from spark_scoring.executor.runners import TorchRunner

    if device == "auto":
        device = "cuda:0" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    if threads:
        torch.set_num_threads(threads)
    if autocast == "auto":
        autocast = "bf16" if cuda and torch.cuda.is_bf16_supported() else None
    batch_size = batch_size or (256 if cuda else 16)
    torch.manual_seed(0)
    module = resnet50().eval().to(device)
    if cuda:
        torch.backends.cudnn.benchmark = True
        module = module.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in module.parameters())
    runner = TorchRunner(module, device, autocast=autocast)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1) * 255
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1) * 255

    def prepare(cols):  # runs in the prefetch thread: decode, normalise, pin, copy
        col = cols[0]
        arr = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), 3, size, size)
        x = (arr.astype(np.float32) - mean) / std
        (t,) = runner.to_device(np.ascontiguousarray(x))
        return (t.contiguous(memory_format=torch.channels_last) if cuda else t,)

    batches = synthetic_batches(images, size)

    def score(data) -> int:
        n = 0
        for _cols, tensor in _prefetch(rebatch(data, batch_size), prepare):
            n += len(runner.run_tensor(tensor))
        if cuda:
            torch.cuda.synchronize()
        return n

    score(synthetic_batches(min(images, batch_size * max(1, warmup)), size, seed=1))  # warm-up, cudnn autotune
    with GpuSampler(torch.device(device)) if cuda else _Null() as sampler:
        t0 = time.perf_counter()
        n = score(batches)
        wall = time.perf_counter() - t0
    util = getattr(sampler, "samples", [])
    return {
        "device": device,
        "device_name": torch.cuda.get_device_name(torch.device(device)) if cuda else "cpu",
        "model": "resnet50",
        "params_m": round(params / 1e6, 2),
        "images": n,
        "image_size": size,
        "seconds": round(wall, 3),
        "images_per_s": round(n / wall, 1),
        "batch_size_requested": batch_size,
        "batch_size_used": runner.batch_size_used,
        "autocast": autocast,
        "torch_threads": torch.get_num_threads(),
        "gpu_util_mean": round(float(np.mean(util)), 1) if util else None,
        "gpu_util_max": max(util) if util else None,
        "gpu_util_source": getattr(sampler, "source", None) if cuda else "n/a (cpu)",
        "torch": torch.__version__,
    }


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--size", type=int, default=224, help="image side in pixels")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on CUDA, 16 on CPU")
    ap.add_argument("--autocast", default="auto", choices=("auto", "none", "bf16", "fp16"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    result = run(args.device, args.images, args.size, args.batch_size,
                 None if args.autocast == "none" else args.autocast, threads=args.threads)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
