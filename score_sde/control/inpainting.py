"""Inpainting and colorization with an unconditional score (Song et al. 2021, App. I).

The wrapped score makes every sampler impute: at each evaluation the known region is RE-NOISED
FROM THE DATA, y_k(t) = alpha(t) data + sigma(t) z with fresh z, and the unknown region gets the
model's score at [x_unknown; y_k(t)] (Eq. 50's approximation of grad log p_t(x_unknown | y)).
The known coordinates themselves get the exact score of p_t(x_k | data) = N(alpha data, sigma²),
-(x_k - alpha data)/sigma², so any sampler carries them to the data (up to the final noise
level, sigma(eps)); paste the data in afterwards if you want it exact.

Colorization is inpainting in an orthogonal colour basis whose first axis is the grey level
(App. I): with channels last, coordinates y = x @ COLOR_BASIS, known y_0 = sqrt(3) grey.
The z of an evaluation is keyed by (rng, example, t), so it is fresh at every step and
independent of the batch.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

from score_sde.control.guidance import as_partial
from score_sde.odeint import PerExample
from score_sde.sde import batch_mul

# Columns: grey (1,1,1)/sqrt(3), then (-2,1,1)/sqrt(6) and (0,1,-1)/sqrt(2); orthogonal.
COLOR_BASIS = np.stack(
    [
        np.ones(3) / math.sqrt(3),
        np.array([-2.0, 1, 1]) / math.sqrt(6),
        np.array([0.0, 1, -1]) / math.sqrt(2),
    ],
    axis=1,
)


def _fresh_noise(rng, index, t, like):
    """Standard normal like ``like``; example i's draw depends on (rng, index_i, t_i) only."""
    bits = jax.lax.bitcast_convert_type(t.astype(jnp.float32), jnp.int32)
    keys = jax.vmap(lambda i, b: jax.random.fold_in(jax.random.fold_in(rng, i), b))(index, bits)
    return jax.vmap(lambda k: jax.random.normal(k, like.shape[1:], like.dtype))(keys)


def _imputed(score_fn, sde, rows, rng, basis, x, t):
    data, mask, index = rows.value
    to_basis = (lambda v: v) if basis is None else (lambda v: v @ basis)
    from_basis = (lambda v: v) if basis is None else (lambda v: v @ basis.T)
    alpha, sigma = sde.alpha(t), sde.marginal_std(t)
    y = to_basis(x)
    known_mean = batch_mul(alpha, data)
    y_known = known_mean + batch_mul(sigma, _fresh_noise(rng, index, t, y))
    y_in = mask * y_known + (1 - mask) * y
    score = to_basis(score_fn(from_basis(y_in), t))
    score_known = batch_mul(-1 / sigma**2, y - known_mean)
    return from_basis(mask * score_known + (1 - mask) * score)


def inpainting_score(score_fn, sde, data, mask, rng, basis=None) -> Partial:
    """score_fn(x, t) that imputes the region where ``mask`` = 1 from ``data``.

    ``data``: [B, ...] (values outside the mask are ignored); ``mask``: 0/1, broadcastable to
    data. The known region is re-noised at every call, so use a fixed-step or SDE sampler: the
    adaptive ``ode`` method cannot converge on a random vector field. With ``basis`` (an
    orthogonal [C, C] over the last axis), data and mask are in the
    coordinates y = x @ basis.
    """
    data = jnp.asarray(data)
    mask = jnp.broadcast_to(jnp.asarray(mask, data.dtype), data.shape)
    basis = None if basis is None else jnp.asarray(basis, data.dtype)
    rows = PerExample((mask * data, mask, jnp.arange(data.shape[0])))
    return Partial(_imputed, as_partial(score_fn), sde, rows, rng, basis)


def colorization_score(score_fn, sde, gray, rng) -> Partial:
    """score_fn(x, t) that colourises ``gray``: [B, ..., 1] (the mean of the RGB channels) into
    RGB images [B, ..., 3] whose channel mean is ``gray``."""
    gray = jnp.asarray(gray)
    if gray.shape[-1] != 1:
        raise ValueError(f"gray has shape {gray.shape}: put a channel axis of size 1 last.")
    data = jnp.concatenate([math.sqrt(3) * gray, jnp.zeros_like(gray), jnp.zeros_like(gray)], -1)
    mask = jnp.zeros(data.shape[-1:], data.dtype).at[0].set(1.0)
    return inpainting_score(score_fn, sde, data, mask, rng, basis=COLOR_BASIS)
