"""The Gaussian-mixture targets of bench/samplers.py and how samples are scored against them.

Targets (exact scores and samples from ``score_sde.analytic.GaussianMixture``):

- ``2d``: 3 modes of std 0.35, and ``16d``: 4 modes of std 0.5 (bench/diffusers_baseline.py's).
- ``2d-sharp``: a 3x3 grid of equal modes, spacing 1, mode std 1/30 of the spacing.
- ``64d-aniso``: 4 equal modes in 64-D, each with a full covariance of its own orientation
  (a random rotation) whose standard deviations run log-evenly over 0.05..0.5 (condition
  number 100).

Scores, each divided by its noise floor (the mean over independent exact sets of the same size
against the same reference, so that exact samplers land at ~1):

- sliced W2 to exact samples;
- within-mode sliced W2: the same after subtracting from each sample its nearest mode mean
  (Euclidean), applied to the samples and to the reference alike. It sees the shape and width
  of the modes (e.g. noise left by stopping at t = eps), not where the mass goes between them;
- the total variation between the sampled mode weights (hard assignment) and the true ones
  (not divided: the exact sets' mean is reported beside it).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import analytic, metrics

sliced_wasserstein = jax.jit(metrics.sliced_wasserstein)
N_EXACT = 10  # independent exact sets for the floors


def sharp_grid(spacing: float = 1.0, ratio: float = 30.0) -> analytic.GaussianMixture:
    """A 3x3 grid of equal modes ``spacing`` apart with std ``spacing / ratio``."""
    axis = spacing * np.arange(-1.0, 2.0)
    means = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    return analytic.GaussianMixture.isotropic(np.ones(9), means, spacing / ratio)


def anisotropic(
    dim: int = 64, modes: int = 4, std_range: tuple[float, float] = (0.05, 0.5), seed: int = 0
) -> analytic.GaussianMixture:
    """``modes`` equal modes, means N(0, I / 4) (about 5.7 apart at 64-D), each covariance
    U_k diag(stds²) U_k^T with stds log-even over ``std_range`` and U_k a random rotation."""
    rs = np.random.RandomState(seed)
    means = 0.5 * rs.randn(modes, dim)
    stds = np.geomspace(*std_range, dim)
    rotations = [np.linalg.qr(rs.randn(dim, dim))[0] for _ in range(modes)]
    covs = np.stack([u @ np.diag(stds**2) @ u.T for u in rotations])
    covs = 0.5 * (covs + covs.transpose(0, 2, 1))  # exactly symmetric
    return analytic.GaussianMixture(
        jnp.full(modes, 1.0 / modes), jnp.asarray(means), jnp.asarray(covs)
    )


def mixtures() -> dict[str, analytic.GaussianMixture]:
    two_d = analytic.GaussianMixture.isotropic(
        [0.3, 0.4, 0.3], [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], 0.35
    )
    means = 2.0 * np.random.RandomState(0).randn(4, 16) / np.sqrt(16) * 4
    sixteen = analytic.GaussianMixture.isotropic(jnp.ones(4), means, 0.5)
    return {"2d": two_d, "16d": sixteen, "2d-sharp": sharp_grid(), "64d-aniso": anisotropic()}


@jax.jit
def nearest_mode_residual(means: jax.Array, x: jax.Array) -> jax.Array:
    """x minus its nearest (Euclidean) row of ``means``: [n, D]."""
    d2 = jnp.sum((x[:, None, :] - means[None]) ** 2, axis=-1)
    return x - means[jnp.argmin(d2, axis=-1)]


@dataclasses.dataclass
class Target:
    name: str
    mixture: analytic.GaussianMixture
    reference: jax.Array
    floor: float = 1.0  # mean sliced W2 of exact sets
    within_floor: float = 1.0  # the same, within modes
    floor_sd: float = 0.0  # spread of SW / floor over exact sets: the metric's noise
    within_sd: float = 0.0
    exact_tv: float = 0.0

    @classmethod
    def build(cls, name: str, mixture: analytic.GaussianMixture, n: int) -> Target:
        draw = jax.jit(lambda key: mixture.sample(key, n))
        target = cls(name, mixture, draw(jax.random.PRNGKey(1)))
        keys = [jax.random.PRNGKey(2 + i) for i in range(N_EXACT)]
        exact = np.array([target.score(draw(key)) for key in keys])  # floors are 1 here
        target.floor, target.within_floor, target.exact_tv = exact.mean(axis=0)
        target.floor_sd = float(exact[:, 0].std() / target.floor)
        target.within_sd = float(exact[:, 1].std() / target.within_floor)
        return target

    def score(self, x) -> tuple[float, float, float]:
        """(sliced W2 / floor, within-mode sliced W2 / floor, mode-weight total variation);
        nan if x is not finite."""
        x = jnp.asarray(x, jnp.float32)
        if not bool(jnp.all(jnp.isfinite(x))):
            return math.nan, math.nan, math.nan
        key, means = jax.random.PRNGKey(0), self.mixture.means.astype(jnp.float32)
        sw = float(sliced_wasserstein(key, x, self.reference))
        within = float(
            sliced_wasserstein(
                key, nearest_mode_residual(means, x), nearest_mode_residual(means, self.reference)
            )
        )
        tv = 0.5 * float(jnp.sum(jnp.abs(self.mixture.mode_weights(x) - self.mixture.weights)))
        return sw / self.floor, within / self.within_floor, tv
