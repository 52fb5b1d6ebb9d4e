"""Synthetic vector data sets, generated deterministically (no download).

Each set is 110,000 points drawn from a fixed seed (point i depends only on (seed, i)), so every
run and every process sees the same data: the first 100,000 are the ``train`` split, the last
10,000 the ``test`` split. The Gaussian mixtures are ``score_sde.analytic.GaussianMixture``
objects, so their exact log-density and score are available for evaluation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import rng as rng_lib
from score_sde.analytic import GaussianMixture

SPLITS = {"train": slice(0, 100_000), "test": slice(100_000, 110_000)}
SEED = 0
_GMM16_SEED = 16


def ring8() -> GaussianMixture:
    """8 equal Gaussians (std 0.1) evenly spaced on the circle of radius 2."""
    angles = 2 * jnp.pi * jnp.arange(8) / 8
    means = 2.0 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return GaussianMixture.isotropic(jnp.ones(8), means, 0.1)


def grid25() -> GaussianMixture:
    """25 equal Gaussians (std 0.05) on the 5 x 5 grid {-2, -1, 0, 1, 2}²."""
    ticks = jnp.arange(-2.0, 3.0)
    means = jnp.stack(jnp.meshgrid(ticks, ticks, indexing="ij"), axis=-1).reshape(25, 2)
    return GaussianMixture.isotropic(jnp.ones(25), means, 0.05)


def gmm16() -> GaussianMixture:
    """4 Gaussians in 16-D with unequal weights, means ~ N(0, 2² I) and full covariances."""
    k_mean, k_cov = jax.random.split(jax.random.key(_GMM16_SEED))
    means = 2.0 * jax.random.normal(k_mean, (4, 16))
    a = jax.random.normal(k_cov, (4, 16, 16)) / 4.0
    covs = a @ jnp.swapaxes(a, 1, 2) + 0.1 * jnp.eye(16)
    weights = jnp.array([0.4, 0.3, 0.2, 0.1])
    return GaussianMixture(weights, means, covs)


def checkerboard(rng: jax.Array, n: int) -> jax.Array:
    """Uniform on the 8 "black" unit squares of a 4 x 4 board on [-2, 2)²: [n, 2].

    A point is black when floor(x) + floor(y) is even.
    """

    def one(key):
        kx, ky, kc = jax.random.split(key, 3)
        x = jax.random.uniform(kx, (), minval=-2.0, maxval=2.0)
        row = -2 + jnp.floor(x).astype(int) % 2 + 2 * jax.random.bernoulli(kc).astype(int)
        return jnp.stack([x, row + jax.random.uniform(ky, ())])

    return jax.vmap(one)(rng_lib.example_keys(rng, n))


def swiss_roll(rng: jax.Array, n: int, noise: float = 0.05) -> jax.Array:
    """Swiss roll: t (cos t, sin t) / 5 with t ~ U[1.5π, 4.5π], plus N(0, noise²): [n, 2]."""

    def one(key):
        kt, kz = jax.random.split(key)
        t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(kt, ()))
        return t * jnp.stack([jnp.cos(t), jnp.sin(t)]) / 5 + noise * jax.random.normal(kz, (2,))

    return jax.vmap(one)(rng_lib.example_keys(rng, n))


MIXTURES: dict[str, Callable[[], GaussianMixture]] = {
    "ring8": ring8,
    "grid25": grid25,
    "gmm16": gmm16,
}


def sampler(name: str) -> Callable[[jax.Array, int], tuple[jax.Array, jax.Array]]:
    """``sample(rng, n) -> (x [n, D], labels [n])`` for the synthetic set ``name``: a mixture's
    label is the component a point was drawn from; the other sets are unlabelled (-1)."""
    if name in MIXTURES:
        return lambda rng, n: MIXTURES[name]().sample_labelled(rng, n)
    draw = {"checkerboard": checkerboard, "swiss_roll": swiss_roll}[name]
    return lambda rng, n: (draw(rng, n), jnp.full(n, -1, jnp.int32))


DIMS = {"ring8": 2, "grid25": 2, "gmm16": 16, "checkerboard": 2, "swiss_roll": 2}


@functools.cache
def _compiled_sampler(name: str):
    return jax.jit(sampler(name), static_argnums=1)


@functools.cache
def generate_labelled(name: str) -> tuple[np.ndarray, np.ndarray]:
    """All 110,000 fixed points of the synthetic set ``name`` and their labels: float32 [N, D]
    and int32 [N], read-only.

    Drawn in float32 even when x64 is enabled, so the data never depend on that flag."""
    n = max(s.stop for s in SPLITS.values())
    with jax.enable_x64(False):
        x, labels = _compiled_sampler(name)(jax.random.key(SEED), n)
    x, labels = np.asarray(x, np.float32), np.asarray(labels, np.int32)
    x.flags.writeable = labels.flags.writeable = False
    return x, labels


def generate(name: str) -> np.ndarray:
    """The points of ``generate_labelled``: float32 [N, D]."""
    return generate_labelled(name)[0]


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
    """Random access to a synthetic split; points are generated on first read. Mixtures are
    labelled by component (``num_classes`` components); the other sets are unlabelled (-1)."""

    name: str
    split: str

    def __post_init__(self):
        if self.name not in DIMS:
            raise ValueError(f"unknown synthetic data set {self.name!r}; valid: {sorted(DIMS)}.")
        if self.split not in SPLITS:
            raise ValueError(
                f"split={self.split!r} is not a split of {self.name!r}; valid: {sorted(SPLITS)}."
            )

    @property
    def element_shape(self) -> tuple[int, ...]:
        return (DIMS[self.name],)

    @property
    def num_classes(self) -> int:
        return int(MIXTURES[self.name]().weights.shape[0]) if self.name in MIXTURES else 0

    def __len__(self) -> int:
        return SPLITS[self.split].stop - SPLITS[self.split].start

    def read(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, labels = generate_labelled(self.name)
        return x[SPLITS[self.split]][indices], labels[SPLITS[self.split]][indices]
