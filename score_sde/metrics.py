"""Sample-quality distances for low-dimensional data: sliced Wasserstein and energy distance."""

import jax
import jax.numpy as jnp


def sliced_wasserstein(rng: jax.Array, x: jax.Array, y: jax.Array, n_projections: int = 256):
    """Sliced 2-Wasserstein distance between samples x: [n, D] and y: [m, D].

    Projects on random unit directions and compares the 1-D quantile functions at
    min(n, m) levels; returns sqrt(mean over directions of W2²).
    """
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    dirs = jax.random.normal(rng, (x.shape[1], n_projections))
    dirs = dirs / jnp.linalg.norm(dirs, axis=0, keepdims=True)
    n = min(x.shape[0], y.shape[0])
    q = (jnp.arange(n) + 0.5) / n
    qx = jnp.quantile(x @ dirs, q, axis=0)
    qy = jnp.quantile(y @ dirs, q, axis=0)
    return jnp.sqrt(jnp.mean((qx - qy) ** 2))


def _mean_dist(a, b):
    d2 = jnp.sum(a**2, 1)[:, None] + jnp.sum(b**2, 1)[None, :] - 2 * a @ b.T
    return jnp.mean(jnp.sqrt(jnp.maximum(d2, 0.0)))


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (V-statistic)."""
    x, y = x.reshape(x.shape[0], -1), y.reshape(y.shape[0], -1)
    return 2 * _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y)
