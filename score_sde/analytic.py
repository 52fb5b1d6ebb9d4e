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

    def _terms(self, x, sde, t):
        """For x: [B, ...] at time t: log w_k + log N(x; alpha mu_k, C_k) [B, K]
        and C_k^-1 (x - alpha mu_k) [B, K, D], with C_k = alpha² S_k + sigma² I. S_k = U_k
        diag(lam_k) U_k^T is diagonalised once, so each example costs O(K D²) (no per-example
        factorisation)."""
        flat = x.reshape(x.shape[0], -1)
        alpha, sigma = self._coeffs(sde, t, x.shape[0])
        lam, u = jnp.linalg.eigh(self.covs)  # [K, D], [K, D, D]
        var = alpha[:, None, None] ** 2 * lam + sigma[:, None, None] ** 2  # [B, K, D]
        diff = flat[:, None] - alpha[:, None, None] * self.means  # [B, K, D]
        proj = jnp.einsum("kde,bkd->bke", u, diff) / var  # U^T C^-1 diff
        sol = jnp.einsum("kde,bke->bkd", u, proj)
        quad = jnp.sum(proj**2 * var, axis=-1)
        log_norm = self.dim * jnp.log(2 * jnp.pi) + jnp.sum(jnp.log(var), axis=-1)
        return jnp.log(self.weights) - 0.5 * (log_norm + quad), sol

    def _coeffs(self, sde: SDE | None, t, batch):
        if sde is None:
            return jnp.ones(batch), jnp.zeros(batch)
        t = jnp.broadcast_to(jnp.asarray(t, float), (batch,))
        return sde.alpha(t), sde.marginal_std(t)

    def component_log_probs(self, x: jax.Array, sde: SDE | None = None, t=None) -> jax.Array:
        """log w_k + log N(x; alpha mu_k, alpha² S_k + sigma² I) at time t: [B, K] (the data's
        components when ``sde`` is None); the exact logits of p_t(k | x)."""
        return self._terms(x, sde, t)[0]

    def log_prob(self, x: jax.Array, sde: SDE | None = None, t=None) -> jax.Array:
        """log p_t(x): [B] for x: [B, ...] (the data density when ``sde`` is None)."""
        return logsumexp(self.component_log_probs(x, sde, t), axis=-1)

    def _scores(self, x, sde, t):
        """The mixture's score -sum_k p_t(k | x) C_k^-1 (x - alpha mu_k): [B, D], and each
        component's, -C_k^-1 (x - alpha mu_k): [B, K, D]."""
        log_probs, sol = self._terms(x, sde, t)
        return -jnp.einsum("bk,bkd->bd", jax.nn.softmax(log_probs, axis=-1), sol), -sol

    def score(self, x: jax.Array, sde: SDE | None = None, t=None) -> jax.Array:
        """grad_x log p_t(x), with the shape of x."""
        return self._scores(x, sde, t)[0].reshape(x.shape)

    def score_fn(self, sde: SDE):
        """The exact ``score_fn(x, t)`` of this mixture diffused by ``sde``."""
        return lambda x, t: self.score(x, sde, t)

    def conditional_score_fn(self, sde: SDE):
        """The exact class-conditional ``score_fn(x, t, y)``, class k being component k
        (y: int [B]); the null label y < 0 gives the mixture's score."""

        def score(x, t, y):
            mixed, each = self._scores(x, sde, t)
            own = jnp.take_along_axis(each, jnp.maximum(y, 0)[:, None, None], axis=1)[:, 0]
            return jnp.where((y < 0)[:, None], mixed, own).reshape(x.shape)

        return score

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
        return jax.nn.softmax(self.component_log_probs(x), axis=-1)

    def mode_weights(self, x: jax.Array) -> jax.Array:
        """Fraction of samples assigned to each component (hard assignment): [K]."""
        k = jnp.argmax(self.responsibilities(x), axis=-1)
        return jnp.bincount(k, length=self.weights.shape[0]) / x.shape[0]
