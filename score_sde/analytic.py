"""Gaussian mixtures: exact densities and scores under every SDE here.

If x0 ~ sum_k w_k N(mu_k, S_k), then under an SDE with marginal x_t = alpha(t) x0 + sigma(t) z,
x_t ~ sum_k w_k N(alpha mu_k, alpha² S_k + sigma² I). This gives exact ``score_fn``s for testing
samplers, losses and likelihoods, and exact samples for a noise floor.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from score_sde import rng as rng_lib
from score_sde.sde import SDE


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["weights", "means", "covs"], meta_fields=[]
)
@dataclasses.dataclass(frozen=True)
class GaussianMixture:
    """sum_k weights[k] N(means[k], covs[k]); means: [K, D], covs: [K, D, D]."""

    weights: jax.Array
    means: jax.Array
    covs: jax.Array

    @classmethod
    def isotropic(cls, weights, means, stds) -> GaussianMixture:
        means = jnp.asarray(means, float)
        k, d = means.shape
        stds = jnp.broadcast_to(jnp.asarray(stds, float), (k,))
        covs = stds[:, None, None] ** 2 * jnp.eye(d)
        w = jnp.asarray(weights, float)
        return cls(w / w.sum(), means, covs)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _log_probs_one(self, x, alpha, sigma):
        """log w_k + log N(x; alpha mu_k, alpha² S_k + sigma² I) for one example x: [D]."""
        cov = alpha**2 * self.covs + sigma**2 * jnp.eye(self.dim)
        chol = jnp.linalg.cholesky(cov)
        diff = x - alpha * self.means
        sol = jax.vmap(lambda c, d: jax.scipy.linalg.solve_triangular(c, d, lower=True))(chol, diff)
        logdet = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        quad = jnp.sum(sol**2, axis=-1)
        return jnp.log(self.weights) - 0.5 * (self.dim * jnp.log(2 * jnp.pi) + logdet + quad)

    def _coeffs(self, sde: SDE | None, t, batch):
        if sde is None:
            return jnp.ones(batch), jnp.zeros(batch)
        t = jnp.broadcast_to(jnp.asarray(t, float), (batch,))
        return sde.alpha(t), sde.marginal_std(t)

    def log_prob(self, x: jax.Array, sde: SDE | None = None, t=None) -> jax.Array:
        """log p_t(x): [B] for x: [B, ...] (the data density when ``sde`` is None)."""
        flat = x.reshape(x.shape[0], -1)
        alpha, sigma = self._coeffs(sde, t, x.shape[0])
        lp = jax.vmap(self._log_probs_one)(flat, alpha, sigma)
        return logsumexp(lp, axis=-1)

    def score(self, x: jax.Array, sde: SDE | None = None, t=None) -> jax.Array:
        """grad_x log p_t(x), with the shape of x."""
        flat = x.reshape(x.shape[0], -1)
        alpha, sigma = self._coeffs(sde, t, x.shape[0])

        def one(xi, a, s):
            return jax.grad(lambda y: logsumexp(self._log_probs_one(y, a, s)))(xi)

        return jax.vmap(one)(flat, alpha, sigma).reshape(x.shape)

    def score_fn(self, sde: SDE):
        """The exact ``score_fn(x, t)`` of this mixture diffused by ``sde``."""
        return lambda x, t: self.score(x, sde, t)

    def sample_labelled(self, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """n exact samples and their components: ([n, D], int [n]); sample i depends only on
        (rng, i)."""
        keys = rng_lib.example_keys(rng, n)
        chols = jnp.linalg.cholesky(self.covs)

        def one(key):
            kc, kz = jax.random.split(key)
            k = jax.random.categorical(kc, jnp.log(self.weights))
            return self.means[k] + chols[k] @ jax.random.normal(kz, (self.dim,)), k

        return jax.vmap(one)(keys)

    def sample(self, rng: jax.Array, n: int) -> jax.Array:
        """n exact samples: [n, D]; sample i depends only on (rng, i)."""
        return self.sample_labelled(rng, n)[0]

    def responsibilities(self, x: jax.Array) -> jax.Array:
        """Posterior component probabilities p(k | x): [B, K] under the data distribution."""
        flat = x.reshape(x.shape[0], -1)
        ones = jnp.ones(x.shape[0])
        lp = jax.vmap(self._log_probs_one)(flat, ones, 0 * ones)
        return jax.nn.softmax(lp, axis=-1)

    def mode_weights(self, x: jax.Array) -> jax.Array:
        """Fraction of samples assigned to each component (hard assignment): [K]."""
        k = jnp.argmax(self.responsibilities(x), axis=-1)
        return jnp.bincount(k, length=self.weights.shape[0]) / x.shape[0]
