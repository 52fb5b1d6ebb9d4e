# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Controllable generation with exact scores
#
# Guidance, inpainting, SDEdit and inversion in `score_sde.control` are wrappers of a score
# function (or of the fixed-grid solvers), so they compose with every sampler. On a labelled
# Gaussian mixture (class k is component k) every ingredient is exact:
#
# - `mixture.conditional_score_fn(sde)` is the class-conditional score `s(x, t, y)`, with the
#   null label `y = -1` giving the unconditional score;
# - `mixture.component_log_probs(x, sde, t)` are the logits of the exact noise-conditional
#   classifier p_t(y | x).
#
# So the effect of each control is the method's own, not a model's error.

# %%
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from score_sde import analytic, control, sampling
from score_sde import sde as sde_lib

sde = sde_lib.VPSDE()
weights = np.array([0.5, 0.3, 0.2])
mixture = analytic.GaussianMixture.isotropic(weights, [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.5]], 0.4)
score_fn = mixture.score_fn(sde)
conditional = mixture.conditional_score_fn(sde)
logits_fn = lambda x, t: mixture.component_log_probs(x, sde, t)
n, rng = 1000, jax.random.key(0)
sample = lambda fn: sampling.sample(rng, sde, fn, (n, 2), method="dpm_solver", n_steps=20)[0]

# %% [markdown]
# ## Classifier-free and classifier guidance
#
# Ask for the lightest class (20% of the mass). Classifier-free guidance mixes
# `s(x, t, null) + scale (s(x, t, y) - s(x, t, null))`: scale 0 is the unconditional sampler,
# 1 the conditional one, larger scales sharpen toward y. Classifier guidance adds
# `scale * grad log p_t(y | x)`; with an exact classifier, scale 1 is the exact conditional.

# %%
y = jnp.full((n,), 2)
runs = {
    "unconditional": sample(score_fn),
    "CFG scale 1": sample(control.classifier_free_guidance(conditional, y, -1, 1.0)),
    "CFG scale 3": sample(control.classifier_free_guidance(conditional, y, -1, 3.0)),
    "classifier guidance 0.5": sample(control.classifier_guidance(score_fn, logits_fn, y, 0.5)),
    "classifier guidance 1": sample(control.classifier_guidance(score_fn, logits_fn, y, 1.0)),
}
share = {name: float(mixture.mode_weights(x)[2]) for name, x in runs.items()}
fig, axes = plt.subplots(1, len(runs), figsize=(18, 4), sharex=True, sharey=True)
for ax, (name, x) in zip(axes, runs.items(), strict=True):
    ax.scatter(x[:, 0], x[:, 1], s=1)
    ax.set_title(f"{name}\nclass 2: {share[name]:.2f}")
    ax.set_aspect("equal")
plt.tight_layout()
print(share)

# %%
assert abs(share["unconditional"] - 0.2) < 0.05
assert share["CFG scale 1"] > 0.98 and share["classifier guidance 1"] > 0.98
assert share["unconditional"] < share["classifier guidance 0.5"] < share["classifier guidance 1"]
# With exact scores both guidances at scale 1 are the same conditional sampler.
np.testing.assert_allclose(runs["CFG scale 1"], runs["classifier guidance 1"], atol=1e-3)

# %% [markdown]
# ## Inpainting
#
# Keep the first coordinate of each point, -2, and complete the second (Song et al. 2021,
# App. I: the known region is re-noised from the data at every step). Given x1 = -2, the
# exact conditional of x2 is class 0's, N(0, 0.4²): the other modes are 4 and 10 standard
# deviations away in x1. The replacement method is itself an approximation (the noised known
# coordinate carries noisy class information), so its spread comes out somewhat wider;
# `tests/test_control.py` measures this on Gaussians where the conditional is known.

# %%
data = jnp.stack([jnp.full((n,), -2.0), jnp.zeros(n)], axis=1)  # the second column is unknown
mask = jnp.array([1.0, 0.0])
inpaint = control.inpainting_score(score_fn, sde, data, mask, jax.random.key(5))
x, _ = sampling.sample(rng, sde, inpaint, (n, 2), method="ddim", n_steps=100, eta=1.0)
kept = float(jnp.abs(x[:, 0] + 2).max())
mean, std = float(x[:, 1].mean()), float(x[:, 1].std())
sigma_end = float(sde.marginal_std(sde.sampling_eps))
print(f"kept column: max |x1 + 2| = {kept:.4f} (sigma at the last time: {sigma_end:.4f})")
print(f"completed column: mean {mean:+.3f}, std {std:.3f} (exact conditional: 0 and 0.4)")
plt.hist(np.asarray(x[:, 1]), bins=50, density=True, label="inpainted x2")
grid = np.linspace(-2, 2, 200)
plt.plot(grid, np.exp(-(grid**2) / 0.32) / np.sqrt(0.32 * np.pi), label="N(0, 0.4²)")
plt.legend()
assert kept < 5 * sigma_end
assert float(mixture.mode_weights(x)[0]) > 0.99  # every completion is on class 0's mode

# %% [markdown]
# ## SDEdit and inversion
#
# SDEdit noises an input to `t0` and solves back. A small `t0` keeps the input close and moves
# it onto the nearby mode; `t0 = T` forgets it (the output is a sample of the mixture).
# Inversion runs the probability-flow ODE from data to the latent and back; its round-trip
# error falls as the number of steps grows.

# %%
stroke = jnp.tile(jnp.array([[1.2, 0.4]]), (n, 1))  # off class 1's mode at (2, 1)
shares, moved = {}, {}
for t0 in (0.05, 0.3, 1.0):
    x, _ = control.sdedit(jax.random.key(6), sde, score_fn, stroke, t0=t0, n_steps=50, eta=1.0)
    moved[t0] = float(jnp.linalg.norm(x - stroke, axis=1).mean())
    shares[t0] = np.asarray(mixture.mode_weights(x))
    print(f"t0 = {t0}: mean distance from the input {moved[t0]:.3f}, classes {shares[t0].round(2)}")
assert shares[0.05][1] > 0.95 and moved[0.05] < moved[0.3] < moved[1.0]
np.testing.assert_allclose(shares[1.0], weights, atol=0.05)  # the input is forgotten

x0 = mixture.sample(jax.random.key(7), 256)
errors = {}
for n_steps in (5, 10, 20, 40):
    recon, nfe = control.reconstruct(sde, score_fn, x0, solver="dpm_solver", n_steps=n_steps)
    errors[n_steps] = float(jnp.abs(recon - x0).max())
    print(
        f"inversion, {n_steps:2d} steps each way (nfe {int(nfe)}): max error {errors[n_steps]:.2e}"
    )
assert errors[40] < errors[5] / 10
