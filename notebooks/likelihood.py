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
# # Likelihoods through the probability-flow ODE
#
# `likelihood.log_likelihood(rng, sde, score_fn, x, divergence=...)` integrates the
# probability-flow ODE from x at t = eps to T together with the divergence of its drift, and
# returns log p_eps(x) in nats (Song et al. 2021, App. D.2). This notebook:
#
# 1. checks it with the exact score of a Gaussian mixture against the exact log-density, with
#    the exact divergence and with Hutchinson's estimator, whose bias and variance it measures;
# 2. trains a small model on the same mixture and compares its log-density with the truth;
# 3. reports bits/dim of a digits model, and what the offset in bits/dim means;
# 4. shows the tolerance trap: a loose ODE solve from a tiny start time gives nonsense.
#
# `QUICK` (set by the test suite through `SCORE_SDE_QUICK=1`) shrinks everything so that CI
# runs the notebook in about two minutes; the defaults are the real settings (about 15 minutes
# on a 2-core CPU, most of it training the digits model).

# %%
import os
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from score_sde import analytic, likelihood
from score_sde import sde as sde_lib
from score_sde.datasets import synthetic
from score_sde.jobs.evaluator import load_model
from score_sde.jobs.main import run_job
from score_sde.jobs.workdir import Workdir

# The experiment configs live in the repository's `configs/` folder, not in the installed
# package: put the repository root (above this notebook's folder) on the path.
ROOT = next(p for p in (Path.cwd(), *Path.cwd().parents) if (p / "configs" / "digits.py").exists())
sys.path.insert(0, str(ROOT))
from configs import digits, digits_tiny  # noqa: E402
from configs.toy import ring8_vp  # noqa: E402

QUICK = os.environ.get("SCORE_SDE_QUICK") == "1"
N_POINTS = 32 if QUICK else 128  # test points of the Hutchinson study
N_PROBES = 64 if QUICK else 256  # Hutchinson probes per point
TOY_ITERS = 1500 if QUICK else 5000  # training steps of the 2-D model
TOY_WIDTH = 64 if QUICK else 256  # its MLP's width
# A run this short needs a short warm-up and EMA (the config's are 500 steps and 0.999).
TOY_QUICK = {"optim.warmup": 100, "optim.lr": 2e-3, "model.ema_rate": 0.99} if QUICK else {}
GRID = 32 if QUICK else 80  # heat-map resolution (GRID² likelihoods)
# The digits model: configs/digits.py as is (1,500 steps, 5 to 10 minutes on 2 cores), or,
# when QUICK, configs/digits_tiny.py (a one-level U-Net of 8 channels, 100 steps: its XLA compile
# is what costs). Outside QUICK, the workdir of the README's command is read instead of
# training, if present.
DIGITS_WORKDIR = "runs/digits"  # under the repository root
N_IMAGES = 16 if QUICK else 64  # test images scored

# %%
sde = sde_lib.VPSDE()
mixture = synthetic.MIXTURES["ring8"]()  # 8 modes of std 0.1 on the circle of radius 2
score_fn = mixture.score_fn(sde)
EPS = 1e-5  # the start time of the likelihood (Song et al.'s, for every SDE)

# %% [markdown]
# ## Exact divergence against the exact log-density
#
# With the exact score, the only error of `log_likelihood` is the ODE solver's (rtol = atol =
# 1e-5 by default). The answer is log p_eps(x) for the diffused mixture at eps, which
# `mixture.log_prob(x, sde, eps)` gives in closed form.

# %%
x = mixture.sample(jax.random.key(0), N_POINTS)
truth = np.asarray(mixture.log_prob(x, sde, jnp.full((N_POINTS,), EPS)))
exact, nfe = likelihood.log_likelihood(jax.random.key(1), sde, score_fn, x, divergence="exact")
exact = np.asarray(exact)
error = np.abs(exact - truth).max()
print(f"exact divergence: nfe {int(nfe)}, max |logp - truth| = {error:.2e} nats")
print(f"(the log-densities themselves range over [{truth.min():.2f}, {truth.max():.2f}])")
assert error < 0.01

# %% [markdown]
# ## Hutchinson's estimator
#
# The exact divergence costs D Jacobian-vector products per step; Hutchinson's costs one:
# v^T (∂f̃/∂x) v for a random probe v with E[v v^T] = I (Rademacher ±1 or standard normal),
# fixed along the trajectory. `log_likelihood` draws one probe per example, example i from
# (rng, i): to average several probes per point, repeat the batch. Averaging k probes should
# divide the variance by k; in 2-D, Rademacher probes (v_i² = 1) leave out the diagonal of
# the Jacobian's contribution and so have the smaller variance.

# %%
repeated = jnp.tile(x, (N_PROBES, 1))  # [N_PROBES * N_POINTS, 2]: probe j of point i at j*N+i
estimates = {}
for divergence in ("hutchinson-rademacher", "hutchinson-gaussian"):
    logp, nfe = likelihood.log_likelihood(
        jax.random.key(2), sde, score_fn, repeated, divergence=divergence
    )
    estimates[divergence] = np.asarray(logp).reshape(N_PROBES, N_POINTS)  # [probe, point]

ks = [k for k in (1, 2, 4, 8, 16) if N_PROBES // k >= 4]
variance, bias = {}, {}
for divergence, est in estimates.items():
    diff = est - exact  # [probe, point]: the estimator's error, point by point
    se = diff.std() / np.sqrt(diff.size)
    bias[divergence] = (diff.mean(), se)
    # the variance of the mean of k probes, from N_PROBES / k disjoint groups, over the points
    variance[divergence] = [
        diff[: N_PROBES // k * k].reshape(N_PROBES // k, k, N_POINTS).mean(1).var(0, ddof=1).mean()
        for k in ks
    ]
    print(
        f"{divergence:22s} bias {diff.mean():+.4f} ± {se:.4f} (standard error) nats; variance "
        f"of one probe {variance[divergence][0]:.4f}"
    )

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
for divergence, v in variance.items():
    axes[0].loglog(ks, v, "o-", label=divergence)
axes[0].loglog(ks, variance["hutchinson-gaussian"][0] / np.array(ks), "k--", lw=1, label="1 / k")
axes[0].set_xlabel("probes averaged (k)")
axes[0].set_ylabel("variance of the estimate (nats²)")
axes[0].legend()
order = np.argsort(exact)
axes[1].plot(truth[order], "k-", lw=2, label="exact log-density")
for divergence, est in estimates.items():
    mean, spread = est.mean(0)[order], est.std(0)[order]
    axes[1].errorbar(np.arange(N_POINTS), mean, spread, fmt=".", label=f"{divergence} ± 1 sd")
axes[1].set_xlabel("test point (sorted)")
axes[1].set_ylabel("log p (nats)")
axes[1].legend(fontsize=8)
plt.tight_layout()

# %% [markdown]
# Unbiased: the mean error over all probes and points is within 3 standard errors of 0. The
# variance falls as 1/k: the slope of log variance against log k is -1 within ±0.25.

# %%
for divergence in estimates:
    mean, se = bias[divergence]
    slope = np.polyfit(np.log(ks), np.log(variance[divergence]), 1)[0]
    print(f"{divergence:22s} bias / se = {mean / se:+.2f}, slope of the variance {slope:.2f}")
    assert abs(mean) < 3 * se
    assert abs(slope + 1) < 0.25
assert variance["hutchinson-rademacher"][0] < variance["hutchinson-gaussian"][0]

# %% [markdown]
# ## A trained model's log-density
#
# Train the MLP of `configs/toy/ring8_vp.py` on the same ring of 8 Gaussians through the
# public job API (`score_sde.jobs.main.run_job`, what `score-sde --mode train` runs), in a
# temporary workdir, then read its checkpoint back (`load_model(workdir)`: the EMA parameters,
# under the config saved with them) and take its score function.
# `model.ema_warmup` keeps a run this short from averaging in its random initialisation.


# %%
def configured(module, overrides):
    """``module.get_config()`` with ``overrides`` ({"section.field": value}) applied."""
    config = module.get_config()
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(getattr(config, section), field, value)
    return config


def train(config, workdir):
    """Train ``config`` into ``workdir``; returns (the Experiment, its score_fn)."""
    if not os.path.isdir(Workdir(workdir).checkpoints):
        assert run_job(config, workdir, mode="train", progress=not QUICK) == 0
    model = load_model(workdir)
    print(f"restored step {model.step} of {workdir}")
    return model.exp, model.score_fn()


n = TOY_ITERS
toy_config = configured(
    ring8_vp,
    {
        "training.n_iters": n,
        "training.snapshot_freq": n,
        "training.snapshot_freq_for_preemption": n,
        "training.eval_freq": n,
        "training.log_freq": 500,
        "training.snapshot_sampling": False,
        "model.width": TOY_WIDTH,
        "model.ema_warmup": True,
        **TOY_QUICK,
    },
)
toy, toy_score = train(toy_config, tempfile.mkdtemp(prefix="ring8_"))
assert toy.sde == sde  # the config's VP SDE is the one above

# %% [markdown]
# The maps compare log p_t at t = 0.05 (`eps=0.05`: the start time of the solve), the data
# blurred by the forward process to modes of std 0.2, rather than at t = 1e-5. Near t = 0 a
# model's score is only learned where the data are: its log-density inside and outside the
# ring is extrapolation (a short run puts a flat -4 nats inside the ring, where the truth is
# -100), and that, not the model's fit, would decide the comparison.

# %%
T_MAP = 0.05
lim = 3.0
ticks = np.linspace(-lim, lim, GRID)
points = jnp.asarray(np.stack(np.meshgrid(ticks, ticks), axis=-1).reshape(-1, 2), jnp.float32)
true_map = np.asarray(mixture.log_prob(points, sde, jnp.full((points.shape[0],), T_MAP)))
model_map, nfe = likelihood.log_likelihood(
    jax.random.key(3), sde, toy_score, points, divergence="exact", eps=T_MAP
)
model_map = np.asarray(model_map)
FLOOR = -10.0  # nats: the maps are compared above this, where there is mass to speak of
clip = lambda m: np.maximum(m, FLOOR).reshape(GRID, GRID)
correlation = np.corrcoef(clip(true_map).ravel(), clip(model_map).ravel())[0, 1]

fig, axes = plt.subplots(1, 2, figsize=(11, 5))
for ax, (title, m) in zip(
    axes, {"true": true_map, "trained model": model_map}.items(), strict=True
):
    image = ax.imshow(clip(m), extent=(-lim, lim, -lim, lim), origin="lower", vmin=FLOOR)
    ax.set_title(f"{title}: log p at t = {T_MAP} (nats, clipped at {FLOOR:.0f})")
    plt.colorbar(image, ax=ax, fraction=0.046)
plt.tight_layout()
print(f"nfe {int(nfe)}; correlation of the clipped log-densities on the grid: {correlation:.3f}")

# %% [markdown]
# The model puts its mass on the ring; a short run's modes are wider and lower than the true
# ones. The correlation of the clipped maps exceeds 0.6 (measured 0.73 for the `QUICK` run of
# 1,500 steps; a model of other data, or an untrained one, stays far below).

# %%
assert correlation > 0.6

# %% [markdown]
# ## Bits per dimension on the digits
#
# The digits are 8-bit images, scaled to [-1, 1] (`data.centered`) and uniformly dequantized,
# y = (255 x + u) / 256 with u ~ U[0, 1), so that a continuous density on them is meaningful.
# `likelihood.bits_per_dim` converts nats to bits per dimension and adds log2(256 / 2) = +7:
# bits/dim count the code length of a pixel in its own units, 256 levels, while the model's
# density is per unit of [-1, 1], which is 128 levels wide per unit (+8 for data in [0, 1]).
# The same images and model therefore give the same bits/dim whichever scale the density is
# written in, as checked below.

# %%
digits_workdir = ROOT / DIGITS_WORKDIR
if not QUICK and os.path.isdir(Workdir(str(digits_workdir)).checkpoints):
    digits_config = digits.get_config()  # the README's run
else:
    digits_config = (digits_tiny if QUICK else digits).get_config()
    digits_config.training.snapshot_sampling = not QUICK
    digits_workdir = tempfile.mkdtemp(prefix="digits_")
exp, digits_score = train(digits_config, str(digits_workdir))
batch = next(exp.data_iterator("test", batch_size=N_IMAGES, repeat=False))
images = likelihood.uniform_dequantize(
    jax.random.key(6), jnp.asarray(batch["x"]), data_range=(0.0, 1.0)
)
ec = exp.cfg.eval  # the eval job's tolerances and start time (see the tolerance trap below)
logp, nfe = likelihood.log_likelihood(
    jax.random.key(7), exp.sde, digits_score, exp.scaler(images), rtol=ec.rtol, atol=ec.atol,
    eps=ec.eps,
)  # fmt: skip
bpd = np.asarray(likelihood.bits_per_dim(logp, images.shape, data_range=(-1.0, 1.0)))
# The density of the same images in [0, 1] units is 2^D times larger (x in [-1, 1] is 2 y - 1).
dims = int(np.prod(images.shape[1:]))
bpd_01 = likelihood.bits_per_dim(logp + dims * np.log(2), images.shape, data_range=(0.0, 1.0))
print(f"{N_IMAGES} test images ({images.shape[1:]}), nfe {int(nfe)}: bits/dim {bpd.mean():.3f}")
print("per image:", np.round(bpd, 2))

fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, image, b in zip(axes, np.asarray(batch["x"]), bpd, strict=False):
    ax.imshow(image[..., 0], cmap="gray")
    ax.set_title(f"{b:.2f} bpd", fontsize=9)
    ax.axis("off")

# %% [markdown]
# A density uniform over the pixel cube scores exactly 8 bits/dim; docs/benchmarks.md measured
# 1.99 for the README's model (1,500 steps). The tiny model that `QUICK` trains for 100 steps
# scores about 5.3. Asserted: every value finite, the mean between 0 and 8 (better than
# uniform; a broken likelihood gives negative values or hundreds), and the offset consistent.

# %%
assert np.all(np.isfinite(bpd)) and 0 < bpd.mean() < 8
np.testing.assert_allclose(bpd_01, bpd, atol=1e-4)

# %% [markdown]
# ## The tolerance trap
#
# The density of 8-bit data is sharp at small scales, and so is a model of it. Take the ring
# again with modes of std 0.003 instead of 0.1 (exact score, exact divergence, exact answer).
# Near t = 1e-5 the marginal's modes are only about 0.003 wide (sigma(1e-5) = 0.001), so the
# probability-flow ODE is stiff there and its divergence, about D beta / (2 · 0.003²), is
# large; a solver at rtol = 1e-2 steps by errors of about 0.01 x |x| = 0.02, several mode
# widths, and integrates the divergence wrongly: the log-likelihood is off by nats. A tight
# solve, or a loose one from t = 1e-3 (where sigma = 0.01 blurs the modes), is right.

# %%
sharp = analytic.GaussianMixture.isotropic(mixture.weights, mixture.means, 0.003)
x = sharp.sample(jax.random.key(8), 64)
trap = {}
for rtol, eps in ((1e-5, 1e-5), (1e-2, 1e-5), (1e-2, 1e-3)):
    logp, nfe = likelihood.log_likelihood(
        jax.random.key(9), sde, sharp.score_fn(sde), x, divergence="exact", rtol=rtol, atol=rtol,
        eps=eps,
    )  # fmt: skip
    error = np.asarray(logp - sharp.log_prob(x, sde, jnp.full((64,), eps)))
    trap[rtol, eps] = error.mean()
    print(
        f"rtol = atol = {rtol:g}, from t = {eps:g}: nfe {int(nfe):3d}, mean error "
        f"{error.mean():+.4f} nats ({error.mean() / (2 * np.log(2)):+.3f} bits/dim), "
        f"max {np.abs(error).max():.3f}"
    )

# %% [markdown]
# The loose solve from 1e-5 overstates the log-likelihood by about 5 nats per point (3.9
# bits/dim in 2-D), while costing few evaluations; the tight one is exact to 1e-4 nats and the
# loose one from 1e-3 is off by 0.16 nats. Trained image models fall in the same trap:
# docs/benchmarks.md measured -0.40 bits/dim (impossible for dequantized data) on the digits
# model at rtol = 1e-3 from 1e-5, against 2.03 at rtol = 1e-5; hence the digits config's eval
# starts at 1e-3.

# %%
assert abs(trap[1e-5, 1e-5]) < 0.01
assert trap[1e-2, 1e-5] > 1.0
assert abs(trap[1e-2, 1e-3]) < 0.5
