"""Training throughput of the train step: steps/s, examples/s, compile time, and achieved FLOP/s
(XLA's cost analysis of one step / measured time) as a fraction of this machine's dense-matmul
peak, measured in the same run.

Two models: DDPM++ of the CIFAR-10 config (vp/cifar10_ddpmpp_continuous.py) at reduced width on
32x32 RGB inputs (sklearn digits upsampled: the offline stand-in with CIFAR-10's shape), and the
toy MLP (toy/ring8_vp.py). Data loading is excluded: the same batches are fed again.

    python -m bench.train [--steps 20] [--nf 32] [--batch 32] [--scan]

With ``--diffusers``, instead: Ho et al.'s DDPM CIFAR-10 network (vp/cifar10_ddpm.py, 35.7M
parameters) against diffusers' ``UNet2DModel`` at the same architecture in PyTorch
(bench/torch_train.py: eps-MSE loss, backward, clipping, Adam, EMA, float32, eager), same
batch of the same images, torch's threads set to the CPUs XLA uses, in one run: steps/s of
both, their ratio, and each one's FLOP/s as a fraction of its own framework's 2048³ float32
matmul peak. ``--compile`` wraps the diffusers model in ``torch.compile``. Needs torch and
diffusers (``pip install 'score-sde[fid]' diffusers``).

    python -m bench.train --diffusers --steps 10 --batch 16 [--compile]
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import sharding
from score_sde.jobs import train
from score_sde.jobs.validation import from_config_dict
from score_sde.models import count_params


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    """Best FLOP/s of an n x n float32 matmul (2 n³ FLOPs) over ``repeats`` runs."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)
    matmul(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _config(path: str, **overrides):
    cfg = importlib.import_module("configs." + path.replace("/", ".")).get_config()
    for key, value in overrides.items():
        section, field = key.split("__")
        setattr(getattr(cfg, section), field, value)
    return from_config_dict(cfg)


def _flops(step: train.TrainStep, state, batches) -> float:
    cost = step.single.lower(state, batches, 0).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def bench(name: str, cfg, steps: int, scan: bool | None, peak: float, mesh=None) -> dict:
    """Time ``steps`` optimiser steps (after a first, compiling chunk) of ``cfg`` on ``mesh``
    (default: every device)."""
    trainer = train.Trainer(cfg, mesh=mesh)
    step_fn = train.make_train_step(
        trainer.exp.loss_builder(train=True), trainer.optimizer, cfg.model.ema_rate,
        trainer.mesh, trainer.exp.prepare_batch, scan=scan,
    )  # fmt: skip
    k = cfg.training.n_jitted_steps
    it = trainer.exp.data_iterator("train")
    batches = sharding.put_batches([next(it) for _ in range(k)], trainer.mesh)
    state = trainer.initial_state()
    start = time.perf_counter()
    state, metrics = step_fn(state, batches)
    jax.block_until_ready(metrics)
    first = time.perf_counter() - start
    flops = _flops(step_fn, state, batches)
    chunks = max(1, steps // k)
    start = time.perf_counter()
    for _ in range(chunks):
        state, metrics = step_fn(state, batches)
    jax.block_until_ready(metrics)
    per_step = (time.perf_counter() - start) / (chunks * k)
    batch = cfg.training.batch_size
    return dict(
        x=batches["x"][0],
        model=name,
        params=count_params(trainer.exp.params),
        batch=batch,
        scan=step_fn.scanned is not None,
        compile_s=first - k * per_step,
        steps_per_s=1 / per_step,
        examples_per_s=batch / per_step,
        gflop_per_step=flops / 1e9,
        gflop_per_s=flops / per_step / 1e9,
        peak_fraction=flops / per_step / peak,
    )


HEADER = ("model", "params", "batch", "scan", "compile s", "steps/s", "examples/s",
          "GFLOP/step", "GFLOP/s", "% of peak")  # fmt: skip


def _row(r: dict) -> None:
    cells = [r["model"], f"{r['params']:,}", r["batch"], "yes" if r["scan"] else "no",
             f"{r['compile_s']:.1f}", f"{r['steps_per_s']:.2f}", f"{r['examples_per_s']:.0f}",
             f"{r['gflop_per_step']:.2f}", f"{r['gflop_per_s']:.1f}",
             f"{100 * r['peak_fraction']:.0f}%"]  # fmt: skip
    print("| " + " | ".join(map(str, cells)) + " |", flush=True)


def cpu_threads() -> int:
    """CPUs this process may run on: the size of XLA:CPU's thread pool."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def compare_diffusers(steps: int, batch: int, peak: float, compile: bool = False) -> None:
    """Our DDPM CIFAR-10 train step against diffusers' UNet2DModel's in PyTorch."""
    try:
        import torch

        from bench import torch_train
    except ImportError as err:
        raise SystemExit(
            f"--diffusers needs torch and diffusers ({err}): pip install 'score-sde[fid]' diffusers"
        ) from err
    threads = cpu_threads()
    torch.set_num_threads(threads)
    torch_peak = torch_train.matmul_peak()
    print(
        f"threads: XLA {threads} (CPUs of this process), torch {torch.get_num_threads()}; "
        f"torch {torch.__version__} float32 matmul peak {torch_peak / 1e9:.1f} GFLOP/s (2048³)"
    )
    cfg = _config(
        "vp/cifar10_ddpm",
        data__dataset="digits", data__image_size=32, data__num_channels=3,
        training__batch_size=batch, training__n_jitted_steps=1,
    )  # fmt: skip
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    ours = bench("ours: DDPM (JAX)", cfg, steps, None, peak)
    _row(ours)
    # The same images: NHWC in [0, 1] -> NCHW in [-1, 1] (data.centered).
    x0 = torch.from_numpy(np.array(ours["x"], np.float32)).permute(0, 3, 1, 2).contiguous() * 2 - 1
    theirs = torch_train.bench(x0, steps, torch_peak, compile=compile)
    name = "diffusers UNet2DModel (torch" + (" compile)" if compile else " eager)")
    theirs |= dict(model=name, batch=batch, scan=False)
    _row(theirs)
    diff = ours["params"] - theirs["params"]
    same = "identical" if diff == 0 else f"ours {diff:+,}, {100 * diff / theirs['params']:+.2f}%"
    print(f"parameters: ours {ours['params']:,}, diffusers {theirs['params']:,} ({same})")
    ratio = ours["steps_per_s"] / theirs["steps_per_s"]
    print(
        f"steps/s ours / diffusers: {ratio:.2f}x (goal: at least 1.5x); % of peak: ours of "
        f"JAX's {peak / 1e9:.1f} GFLOP/s (XLA's FLOP count, all ops), diffusers of torch's "
        f"{torch_peak / 1e9:.1f} GFLOP/s (FlopCounterMode: matmul, conv, attention only)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimiser steps per model")
    parser.add_argument("--nf", type=int, default=32, help="DDPM++ base width (paper: 128)")
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="global batch (default: 32 for DDPM++, 16 with --diffusers)",
    )
    parser.add_argument(
        "--diffusers",
        action="store_true",
        help="DDPM CIFAR-10 against diffusers' UNet2DModel in PyTorch (bench/torch_train.py)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="with --diffusers: torch.compile their model"
    )  # fmt: skip
    parser.add_argument(
        "--scan", action="store_true",
        help="also time the lax.scan step (the default off CPU; on CPU, slow for convolutions)",
    )  # fmt: skip
    args = parser.parse_args()

    peak = matmul_peak()
    print(f"{jax.devices()[0].device_kind}: {jax.device_count()} device(s), dense float32 "
          f"matmul peak {peak / 1e9:.1f} GFLOP/s (2048³)")  # fmt: skip
    if args.diffusers:
        compare_diffusers(args.steps, args.batch or 16, peak, compile=args.compile)
        return
    ddpmpp = _config(
        "vp/cifar10_ddpmpp_continuous",
        data__dataset="digits", data__image_size=32, data__num_channels=3,
        model__nf=args.nf, training__batch_size=args.batch or 32,
    )  # fmt: skip
    mlp = _config("toy/ring8_vp")
    name = f"DDPM++ nf={args.nf}"
    runs = [(name, ddpmpp, None), ("toy MLP", mlp, None)]
    if args.scan:
        runs += [(name, ddpmpp, True), ("toy MLP", mlp, True)]
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for name, cfg, scan in runs:
        _row(bench(name, cfg, args.steps, scan, peak))


if __name__ == "__main__":
    main()
