"""The train step data-parallel over 1, 2, 4 and 8 devices, same global batch: steps/s and the
ratio to one device, measured in the same run. Without accelerators the devices are emulated on
the host's CPU cores (``--xla_force_host_platform_device_count=8``, set here): there the table
shows the cost of splitting a batch (collectives, smaller per-device work), not a speed-up.

    python -m bench.train_devices [--steps 20] [--nf 16] [--batch 32]
"""

from __future__ import annotations

import os
import sys

if "jax" not in sys.modules:  # the flag must be set before JAX starts
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    )

import argparse  # noqa: E402

import jax  # noqa: E402

from bench.train import _config, bench, matmul_peak  # noqa: E402
from score_sde import sharding  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per run")
    parser.add_argument("--nf", type=int, default=16, help="DDPM++ base width (paper: 128)")
    parser.add_argument("--batch", type=int, default=32, help="global batch (a multiple of 8)")
    args = parser.parse_args()
    peak = matmul_peak()
    print(f"{jax.devices()[0].device_kind}: {jax.device_count()} device(s) on "
          f"{os.cpu_count()} core(s)")  # fmt: skip
    models = {
        f"DDPM++ nf={args.nf}": _config(
            "vp/cifar10_ddpmpp_continuous", data__dataset="digits", data__image_size=32,
            data__num_channels=3, model__nf=args.nf, training__batch_size=args.batch,
        ),
        "toy MLP": _config("toy/ring8_vp", training__batch_size=args.batch),
    }  # fmt: skip
    print("| model | devices | batch per device | steps/s | vs 1 device |")
    print("|---|---|---|---|---|")
    for name, cfg in models.items():
        one = None
        for n in (1, 2, 4, 8):
            mesh = sharding.make_mesh(jax.devices()[:n])
            r = bench(name, cfg, args.steps, None, peak, mesh=mesh)
            one = one or r["steps_per_s"]
            print(f"| {name} | {n} | {args.batch // n} | {r['steps_per_s']:.2f} | "
                  f"{r['steps_per_s'] / one:.2f}x |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
