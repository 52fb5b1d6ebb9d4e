"""Data scaling and uniform dequantization.

Data come out of the pipeline in [0, 1] (images: k/255 for 8-bit levels k). Models see either
[0, 1] (``centered=False``) or [-1, 1] (``centered=True``).

Uniform dequantization turns the 256 levels into a continuous density: y = (255 x + u)/256 with
u ~ U[0, 1)^D, so level k fills [k/256, (k+1)/256). A density on y in [0, 1)^D then gives
bits/dim of the discrete data as -log2 p(y)/D + 8 (each level has width 1/256 = 2^-8), or
+7 after centring to [-1, 1] (width 2^-7). Without dequantization, a continuous model can put
unbounded density on the discrete levels, and bits/dim can go negative.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from score_sde import rng as rng_lib


def get_data_scaler(centered: bool) -> Callable[[jax.Array], jax.Array]:
    """[0, 1] -> [-1, 1] when ``centered``, else the identity."""
    return (lambda x: 2 * x - 1) if centered else (lambda x: x)


def get_data_inverse_scaler(centered: bool) -> Callable[[jax.Array], jax.Array]:
    """The inverse of ``get_data_scaler(centered)``: [-1, 1] -> [0, 1] when ``centered``."""
    return (lambda x: (x + 1) / 2) if centered else (lambda x: x)


def dequantize(rng: jax.Array, x: jax.Array) -> jax.Array:
    """Uniform dequantization of [0, 1] data with 256 levels: (255 x + u)/256, u ~ U[0, 1).

    u is drawn example by example: example i depends only on (rng, i) and x[i].
    """
    return (255 * x + rng_lib.uniform_noise(rng, x.shape, x.dtype)) / 256
