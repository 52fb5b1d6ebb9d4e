# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The SDE zoo: VP, sub-VP and VE on a 2-D mixture
#
# The three SDEs of Song et al. (2021) are linear, so each has a Gaussian transition
# x_t = alpha(t) x0 + sigma(t) z, and a Gaussian mixture stays a Gaussian mixture at every t:
# `score_sde.analytic.GaussianMixture` gives its exact density and score under any of them.
# On the 5 x 5 grid of tight Gaussians (`synthetic.MIXTURES["grid25"]`, std 0.05: hard enough
# that few-step samplers visibly miss) this notebook:
#
# 1. draws the exact forward marginals p_t of each SDE at a few times;
# 2. runs the reverse SDE and the probability-flow ODE back from the prior and plots the paths;
# 3. measures sample quality against the number of score evaluations (NFE) for every sampler,
#    with the exact score, so that the error is the sampler's own.
#
# `QUICK` (set by the test suite through `SCORE_SDE_QUICK=1`) shrinks the sample sizes and
# the NFE sweep so that CI runs the notebook in about a minute; the defaults are the real
# settings (a few minutes on a 2-core CPU).

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from score_sde import metrics, sampling
from score_sde import sde as sde_lib
from score_sde.datasets import synthetic

QUICK = os.environ.get("SCORE_SDE_QUICK") == "1"
N_SAMPLES = 4000 if QUICK else 10_000  # samples per quality measurement
NFES = (10, 20) if QUICK else (5, 10, 20, 50, 100, 200)  # each (method, NFE) compiles anew
RTOLS = (1e-3,) if QUICK else (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)  # the adaptive ODE's
N_PATHS = 48  # particles drawn in the trajectory plots

# %%
mixture = synthetic.MIXTURES["grid25"]()  # 25 modes of std 0.05 on {-2, ..., 2}²
# VE's sigma_max: the configs' toy value (configs/default_toy_configs.py), about the diameter
# of the data, instead of CIFAR-10's 50.
sdes = {
    "VP": sde_lib.VPSDE(),
    "sub-VP": sde_lib.SubVPSDE(),
    "VE": sde_lib.VESDE(sigma_min=0.01, sigma_max=6.0),
}
for name, sde in sdes.items():
    t = jnp.array([0.0, 0.5, 1.0])
    print(
        f"{name:7s} alpha(t) at t = 0, 0.5, 1: {np.round(np.asarray(sde.alpha(t)), 4)}, "
        f"sigma(t): {np.round(np.asarray(sde.marginal_std(t)), 4)}, prior std {sde.prior_std()}"
    )

# %% [markdown]
# ## Forward marginals
#
# p_t(x) = sum_k w_k N(x; alpha(t) mu_k, (alpha(t)² 0.05² + sigma(t)²) I), evaluated on a grid by
# `mixture.log_prob(x, sde, t)`. VP shrinks the data toward 0 while the noise grows, keeping
# the variance near 1; sub-VP does the same with less noise at every t (its sigma is VP's
# squared), so its modes stay sharp for longer; VE keeps the data where it is and adds noise of
# std up to sigma_max = 6, far wider than the data.

# %%
TIMES = (0.0, 0.05, 0.2, 0.5, 1.0)
lim = 3.0
ticks = np.linspace(-lim, lim, 241)  # spacing 0.025, half a mode's std
grid_points = jnp.asarray(np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2))
cell = (ticks[1] - ticks[0]) ** 2


def log_density(sde, t):
    """log p_t on the grid: [241, 241]."""
    ts = jnp.full((grid_points.shape[0],), t)
    return np.asarray(mixture.log_prob(grid_points, sde, ts)).reshape(ticks.size, ticks.size)


densities = {(name, t): np.exp(log_density(sde, t)) for name, sde in sdes.items() for t in TIMES}
fig, axes = plt.subplots(len(sdes), len(TIMES), figsize=(3 * len(TIMES), 3 * len(sdes)))
for (name, t), ax in zip(densities, axes.flat, strict=True):
    ax.imshow(densities[name, t], extent=(-lim, lim, -lim, lim), origin="lower", cmap="magma")
    mass = densities[name, t].sum() * cell
    ax.set_title(f"{name}, t = {t}\nmass in the box {mass:.2f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()

# %% [markdown]
# At t = 1, VP's marginal is the prior N(0, I) up to alpha(1) = 0.0066 (the means sit within
# 0.019 of 0): its log-density differs from N(0, I)'s by less than 0.01 nats anywhere in the box,
# and so does sub-VP's. VE's is N(0, 6² I) to the same accuracy, not N(0, I): most of its mass
# has left the box. Before t = 1 none of them is its prior.

# %%
log_std_normal = -np.log(2 * np.pi) - 0.5 * (grid_points**2).sum(-1).reshape(ticks.size, -1)
gap = {
    (name, t): float(np.abs(log_density(sde, t) - log_std_normal).max())
    for name, sde in sdes.items()
    for t in (0.5, 1.0)
}
print({k: round(v, 5) for k, v in gap.items()})
assert gap["VP", 1.0] < 0.01 and gap["sub-VP", 1.0] < 0.01
assert gap["VE", 1.0] > 1.0  # N(0, 36 I), not N(0, I)
assert gap["VP", 0.5] > 0.1  # not yet the prior at t = 0.5
# Every marginal is a density: the box holds all the mass until the noise spreads it out.
assert all(abs(densities[name, 0.0].sum() * cell - 1) < 1e-3 for name in sdes)

# %% [markdown]
# ## Reverse SDE and probability-flow ODE
#
# Each SDE has a reverse-time SDE (drift f - g² score, Song et al. Eq. 6) and a deterministic
# probability-flow ODE (drift f - ½ g² score, Eq. 13) with the same marginals.
# `sampling.trajectory(rng, sde, score_fn, shape, method=..., save_at=(...))` returns
# `(samples, nfe, trajectory)`, the states at the `save_at` times. The reverse SDE is
# Euler–Maruyama with 200 steps, and the ODE Euler's method on the same grid: both are
# `method="pc"` with `predictor="euler_maruyama"`, no corrector, and
# `probability_flow=False / True`. The same prior draws start both rows of a column: the SDE's
# paths are rough and wander, the ODE's are smooth and each start point has one end point.

# %%
paths = {}
for name, sde in sdes.items():
    save_at = tuple(float(t) for t in np.linspace(sde.T, sde.sampling_eps, 60))
    for kind, flow in {"reverse SDE": False, "probability-flow ODE": True}.items():
        x, nfe, trajectory = sampling.trajectory(
            jax.random.key(2), sde, mixture.score_fn(sde), (N_PATHS, 2), save_at=save_at,
            method="pc", predictor="euler_maruyama", corrector="none", probability_flow=flow,
            n_steps=200,
        )  # fmt: skip
        assert trajectory.shape == (len(save_at), N_PATHS, 2)
        paths[name, kind] = np.asarray(trajectory), np.asarray(x), int(nfe)

exact = np.asarray(mixture.sample(jax.random.key(100), N_SAMPLES))
fig, axes = plt.subplots(2, len(sdes), figsize=(5 * len(sdes), 10))
for ax, ((name, kind), (trajectory, x, nfe)) in zip(axes.T.flat, paths.items(), strict=True):
    ax.scatter(exact[:, 0], exact[:, 1], s=1, c="lightgrey")
    ax.plot(trajectory[:, :, 0], trajectory[:, :, 1], lw=0.5, alpha=0.7)
    ax.scatter(x[:, 0], x[:, 1], s=8, c="k", zorder=3)
    ax.set_title(f"{name}: {kind} ({nfe} NFE)")
    ax.set_xlim(-4, 4)
    ax.set_ylim(-4, 4)
    ax.set_aspect("equal")
plt.tight_layout()

# %% [markdown]
# The paths start at the prior's scale (std 1 for VP and sub-VP, 6 for VE) and nearly every
# end point lands on a mode: within 4 standard deviations (0.2) of a grid node.

# %%
for (name, kind), (trajectory, x, _) in paths.items():
    start_std = float(trajectory[0].std())
    on_mode = np.mean(np.linalg.norm(x - np.clip(np.round(x), -2, 2), axis=1) < 0.2)
    print(f"{name:7s} {kind:21s} start std {start_std:.2f}, ends on a mode: {on_mode:.2f}")
    assert abs(start_std - sdes[name].prior_std()) < 0.3 * sdes[name].prior_std()
    assert on_mode >= 0.9, (name, kind)

# %% [markdown]
# ## Quality against NFE
#
# Every sampler is `sampling.sample(rng, sde, score_fn, shape, method=..., **options)`,
# returning `(samples, nfe)`, on the VP SDE with the exact score. Quality is the sliced
# Wasserstein distance (`metrics.sliced_wasserstein`) to a set of exact samples, divided by the
# noise floor: the mean distance between independent exact sets of the same size, what a
# perfect sampler scores. Methods with two evaluations per step (pc with a corrector, Heun) get
# half the steps; the adaptive `ode` solver sets its own NFE from its tolerance, so it is
# swept over rtol instead. The x positions are the NFE each call reports (including the final
# denoising step).

# %%
sde = sdes["VP"]
score_fn = mixture.score_fn(sde)
sw = lambda x: float(metrics.sliced_wasserstein(jax.random.key(0), x, exact))
floor = np.mean([sw(mixture.sample(jax.random.key(101 + i), N_SAMPLES)) for i in range(5)])
print(f"noise floor (SW between exact sets of {N_SAMPLES}): {floor:.4f}")


def options(method, nfe):
    """The options of ``method`` at a budget of about ``nfe`` score evaluations."""
    return {
        "euler_maruyama": dict(method="euler_maruyama", n_steps=nfe),
        "ancestral": dict(method="ancestral", n_steps=nfe),
        "pc (rd + ald)": dict(method="pc", n_steps=max(nfe // 2, 2), corrector="ald"),
        "ddim (eta=0)": dict(method="ddim", n_steps=nfe),
        "dpm_solver++ 2M": dict(method="dpm_solver", n_steps=nfe, order=2),
        "dpm_solver++ 3M": dict(method="dpm_solver", n_steps=nfe, order=3),
        "unipc": dict(method="unipc", n_steps=nfe),
        "heun (EDM)": dict(method="heun", n_steps=max(nfe // 2, 2)),
    }[method]


METHODS = (
    "euler_maruyama",
    "ancestral",
    "pc (rd + ald)",
    "ddim (eta=0)",
    "dpm_solver++ 2M",
    *(() if QUICK else ("dpm_solver++ 3M",)),
    "unipc",
    "heun (EDM)",
)
curves = {}
for method in METHODS:
    curves[method] = []
    for budget in NFES:
        x, nfe = sampling.sample(
            jax.random.key(1), sde, score_fn, (N_SAMPLES, 2), **options(method, budget)
        )
        curves[method].append((budget, int(nfe), sw(x) / floor))
    print(f"{method:16s}", "  ".join(f"{n:3d}: {q:5.2f}" for _, n, q in curves[method]))
curves["ode (adaptive)"] = []
for rtol in RTOLS:
    x, nfe = sampling.sample(
        jax.random.key(1), sde, score_fn, (N_SAMPLES, 2), method="ode", rtol=rtol, atol=rtol
    )
    curves["ode (adaptive)"].append((rtol, int(nfe), sw(x) / floor))
print("ode (adaptive)  ", "  ".join(f"{n:3d}: {q:5.2f}" for _, n, q in curves["ode (adaptive)"]))

# %%
fig, ax = plt.subplots(figsize=(9, 6))
for method, points in curves.items():
    _, nfe, quality = zip(*points, strict=True)
    ax.plot(nfe, quality, "o-", ms=4, label=method)
ax.axhline(1.0, c="k", ls="--", lw=1, label="noise floor")
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("NFE (score evaluations)")
ax.set_ylabel("sliced Wasserstein / noise floor")
ax.set_title(f"VP SDE, grid25, exact score, {N_SAMPLES} samples")
ax.legend(fontsize=8)

# %% [markdown]
# The stochastic samplers (Euler–Maruyama, ancestral, pc) converge slowly and need a hundred
# evaluations or more, and so does first-order DDIM on modes this tight; the higher-order
# exponential integrators (DPM-Solver++, UniPC) are at the floor from about 20 evaluations
# on. Asserted: the best
# method is within 1.5x of the floor at the largest NFE, DPM-Solver++(2M) beats
# Euler–Maruyama at 20 NFE, and Euler–Maruyama improves from the smallest NFE to the largest.

# %%
quality = {
    m: {budget: q for budget, _, q in points} for m, points in curves.items() if m in METHODS
}
largest = NFES[-1]
best = min(METHODS, key=lambda m: quality[m][largest])
print(f"best at {largest} NFE: {best}, {quality[best][largest]:.2f} x the floor")
assert quality[best][largest] < 1.5
assert quality["dpm_solver++ 2M"][20] < quality["euler_maruyama"][20]
assert quality["euler_maruyama"][largest] < quality["euler_maruyama"][NFES[0]]  # it converges
