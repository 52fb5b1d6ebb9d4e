"""Per-example random numbers: example i's draws depend on (rng, i) only, never on the batch size,
so a batch of 8 reproduces the first 8 examples of a batch of 64."""

import jax
import jax.numpy as jnp


def example_keys(rng: jax.Array, batch: int) -> jax.Array:
    """One key per example, ``fold_in(rng, i)`` for i < batch."""
    return jax.vmap(lambda i: jax.random.fold_in(rng, i))(jnp.arange(batch))


def _per_example(draw, rng: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """``draw(key, shape[1:], dtype)`` for each example's key, stacked to ``shape``."""
    dtype = dtype or jnp.result_type(float)
    return jax.vmap(lambda k: draw(k, shape[1:], dtype))(example_keys(rng, shape[0]))


def normal(rng: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    """Standard normal of ``shape`` = (B, ...), drawn example by example."""
    return _per_example(jax.random.normal, rng, shape, dtype)


def uniform(rng: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    """U[0, 1) of ``shape`` = (B, ...), drawn example by example."""
    return _per_example(jax.random.uniform, rng, shape, dtype)


def rademacher(rng: jax.Array, shape: tuple[int, ...], dtype=None) -> jax.Array:
    """±1 with equal probability, drawn example by example."""
    return _per_example(jax.random.rademacher, rng, shape, dtype)


def uniform_scalars(
    rng: jax.Array, batch: int, minval: float = 0.0, maxval: float = 1.0
) -> jax.Array:
    """One U[minval, maxval) number per example (a time, a dropout draw): [batch]."""
    keys = example_keys(rng, batch)
    return jax.vmap(lambda k: jax.random.uniform(k, (), minval=minval, maxval=maxval))(keys)
