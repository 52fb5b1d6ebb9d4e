"""Class-conditional sampling by wrapping a score function, so every sampler composes.

Each wrapper returns a ``jax.tree_util.Partial`` ``score_fn(x, t)``: labels and scales are
pytree leaves, so new labels or scales reuse a compiled sampler.

Conventions (y: int labels [B]):
- ``with_label``: bind y to a conditional ``score_fn(x, t, y)``.
- ``classifier_guidance``: s(x, t) + scale grad_x log p_t(y | x) (Song et al. 2021, Eq. 14,
  Dhariwal & Nichol 2021); ``logits_fn(x, t)`` is a noise-conditional classifier. scale = 1 is
  the exact conditional score when s and the classifier are exact.
- ``classifier_free_guidance``: s(x, t, null) + scale (s(x, t, y) - s(x, t, null)) (Ho &
  Salimans 2022 with w = scale - 1): scale 0 is the unconditional sampler, 1 the conditional
  one, > 1 sharpens toward y.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from score_sde.odeint import PerExample


def as_partial(fn) -> Partial:
    """``fn`` as a Partial (a pytree), so it can be an argument of another Partial or of jit."""
    return fn if isinstance(fn, Partial) else Partial(fn)


def _labelled(score_fn, y, x, t):
    return score_fn(x, t, y.value)


def with_label(score_fn, y) -> Partial:
    """score_fn(x, t, y) -> score_fn(x, t) for fixed labels y: [B]."""
    return Partial(_labelled, as_partial(score_fn), PerExample(jnp.asarray(y)))


def log_prob_grad(logits_fn, y, x, t):
    """grad_x log softmax(logits_fn(x, t))[y], per example."""

    def total(x):
        logp = jax.nn.log_softmax(logits_fn(x, t), axis=-1)
        return jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

    return jax.grad(total)(x)


def _classifier_guided(score_fn, logits_fn, y, scale, x, t):
    return score_fn(x, t) + scale * log_prob_grad(logits_fn, y.value, x, t)


def classifier_guidance(score_fn, logits_fn, y, scale=1.0) -> Partial:
    """s(x, t) + scale grad_x log p_t(y | x), with p_t(y | x) = softmax(logits_fn(x, t))."""
    return Partial(
        _classifier_guided,
        as_partial(score_fn),
        as_partial(logits_fn),
        PerExample(jnp.asarray(y)),
        jnp.asarray(scale),
    )


def _cfg(score_fn, y, null_y, scale, x, t):
    y = y.value
    both = score_fn(
        jnp.concatenate([x, x]),
        jnp.concatenate([t, t]),
        jnp.concatenate([y, jnp.broadcast_to(null_y, y.shape)]),
    )
    cond, uncond = jnp.split(both, 2)
    return uncond + scale * (cond - uncond)


def classifier_free_guidance(score_fn, y, null_y, scale) -> Partial:
    """s(x, t, null) + scale (s(x, t, y) - s(x, t, null)), one batched call of ``score_fn``.

    ``null_y`` is the label the model was trained with for "no label" (label dropout).
    """
    return Partial(
        _cfg,
        as_partial(score_fn),
        PerExample(jnp.asarray(y)),
        jnp.asarray(null_y),
        jnp.asarray(scale),
    )
