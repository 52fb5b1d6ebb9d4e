"""Baseline: diffusers' PyTorch schedulers on the same Gaussian-mixture targets as our samplers.

The model is the exact eps of a ``score_sde.analytic.GaussianMixture`` under the discrete DDPM
chain (betas linspace(1e-4, 0.02, 1000), the chain of ``VPSDE().discrete_betas()``), written in
torch. Schedulers that query fractional timesteps (Euler, Heun) get alphabar at t by the same
log-sigma interpolation diffusers uses to produce t, so the model stays exact at their sigmas.

Needs the ``bench`` extra (torch, diffusers). ``run(...)`` returns samples, NFE and wall time
per model evaluation so bench/samplers.py can compare in one run; ``python -m
bench.diffusers_baseline`` prints a quick table (2-D and 16-D mixtures, 10 and 20 steps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

N_TRAIN = 1000
CHAIN = dict(num_train_timesteps=N_TRAIN, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
SCHEDULERS = {
    "ddim": lambda: DDIMScheduler(**CHAIN, clip_sample=False, set_alpha_to_one=True),
    "dpm_solver++2m": lambda: DPMSolverMultistepScheduler(
        **CHAIN, algorithm_type="dpmsolver++", solver_order=2
    ),
    "euler": lambda: EulerDiscreteScheduler(**CHAIN),
    "heun": lambda: HeunDiscreteScheduler(**CHAIN),
    "unipc": lambda: UniPCMultistepScheduler(**CHAIN),
}


class MixtureEps:
    """Exact eps(x_t, t) of sum_k w_k N(mu_k, S_k) under the DDPM chain, counting calls."""

    def __init__(self, mixture, dtype=torch.float32):
        self.log_w = torch.log(torch.as_tensor(np.array(mixture.weights), dtype=dtype))
        self.means = torch.as_tensor(np.array(mixture.means), dtype=dtype)
        self.covs = torch.as_tensor(np.array(mixture.covs), dtype=dtype)
        betas = torch.linspace(1e-4, 0.02, N_TRAIN, dtype=torch.float64)
        alphabar = torch.cumprod(1 - betas, 0)
        self.log_sigmas = 0.5 * torch.log((1 - alphabar) / alphabar)  # EDM sigma of step k
        self.calls = 0

    def alphabar(self, t: torch.Tensor) -> torch.Tensor:
        """alphabar at a (possibly fractional) timestep, interpolating log sigma linearly."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, N_TRAIN - 1)
        lo = t.floor().long().clamp(max=N_TRAIN - 2)
        frac = t - lo
        log_sigma = (1 - frac) * self.log_sigmas[lo] + frac * self.log_sigmas[lo + 1]
        return 1 / (1 + torch.exp(2 * log_sigma))

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        self.calls += 1
        abar = self.alphabar(t).to(x.dtype)
        alpha, sigma = abar.sqrt(), (1 - abar).sqrt()
        eye = torch.eye(x.shape[-1], dtype=x.dtype)
        cov = alpha**2 * self.covs + sigma**2 * eye  # [K, D, D]
        chol = torch.linalg.cholesky(cov)
        diff = x[None] - alpha * self.means[:, None]  # [K, B, D]
        sol = torch.cholesky_solve(diff.transpose(1, 2), chol)  # [K, D, B]: cov^-1 diff
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_p = self.log_w[:, None] - 0.5 * ((diff * sol.transpose(1, 2)).sum(-1) + logdet[:, None])
        resp = torch.softmax(log_p, dim=0)  # [K, B]
        score = -(resp[..., None] * sol.transpose(1, 2)).sum(0)
        return -sigma * score


def run(name: str, mixture, n_samples: int, num_steps: int, seed: int = 0) -> dict:
    """Sample with diffusers' scheduler ``name``; returns samples, nfe, seconds and seconds per
    model evaluation (the loop only: scheduler + model)."""
    scheduler = SCHEDULERS[name]()
    model = MixtureEps(mixture)
    scheduler.set_timesteps(num_steps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n_samples, mixture.means.shape[1]), generator=gen) * scheduler.init_noise_sigma
    start = time.perf_counter()
    for t in scheduler.timesteps:
        eps = model(scheduler.scale_model_input(x, t), t)
        x = scheduler.step(eps, t, x).prev_sample
    seconds = time.perf_counter() - start
    return dict(
        samples=x.numpy(),
        nfe=model.calls,
        seconds=seconds,
        seconds_per_step=seconds / max(model.calls, 1),
    )


def targets():
    """The 2-D and 16-D mixtures of the quick table (from bench/targets.py)."""
    try:
        from bench.targets import mixtures
    except ImportError:  # run as a file: python bench/diffusers_baseline.py
        from targets import mixtures

    return {name: mix for name, mix in mixtures().items() if name in ("2d", "16d")}


def main(argv=None):
    import jax

    from score_sde import metrics

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    args = parser.parse_args(argv)
    key = jax.random.PRNGKey(0)
    print(
        f"{'target':6} {'scheduler':15} {'steps':>5} {'nfe':>4} {'ms/eval':>8} "
        f"{'SW2':>7} {'floor':>7}"
    )
    for tname, mix in targets().items():
        exact = mix.sample(jax.random.PRNGKey(1), args.samples)
        floor = metrics.sliced_wasserstein(
            key, mix.sample(jax.random.PRNGKey(2), args.samples), exact
        )
        for name in SCHEDULERS:
            for steps in args.steps:
                out = run(name, mix, args.samples, steps)
                sw = metrics.sliced_wasserstein(key, out["samples"], exact)
                print(
                    f"{tname:6} {name:15} {steps:5d} {out['nfe']:4d} "
                    f"{1e3 * out['seconds_per_step']:8.3f} {float(sw):7.4f} {float(floor):7.4f}"
                )


if __name__ == "__main__":
    main()
