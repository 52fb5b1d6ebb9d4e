"""One place to convert a network's output to a score and back.

With x_t = alpha x0 + sigma eps, the three parameterisations relate by
score = -eps / sigma and x0 = (x_t + sigma² score) / alpha (Tweedie's formula).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.sde import SDE

PARAMETERIZATIONS = ("score", "eps", "x0")


def _check(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={kind!r}: use one of {PARAMETERIZATIONS}.")


# kind -> (to the score, from the score), with a = alpha(t) and s = sigma(t) per example.
_FORMULAS = {
    "score": (lambda out, x, a, s: out, lambda score, x, a, s: score),
    "eps": (lambda eps, x, a, s: (-1 / s) * eps, lambda score, x, a, s: -s * score),
    "x0": (
        lambda x0, x, a, s: (1 / s**2) * (a * x0 - x),
        lambda score, x, a, s: (1 / a) * (x + s**2 * score),
    ),
}


def _convert(direction: int, sde: SDE, value: jax.Array, x: jax.Array, t, kind: str):
    _check(kind)
    if kind == "score":
        return value
    per_example = lambda c: c.reshape(c.shape + (1,) * (x.ndim - c.ndim))
    a, s = per_example(sde.alpha(t)), per_example(sde.marginal_std(t))
    return _FORMULAS[kind][direction](value, x, a, s)


def to_score(sde: SDE, output: jax.Array, x: jax.Array, t: jax.Array, kind: str) -> jax.Array:
    """The score implied by a model ``output`` of parameterisation ``kind`` at (x, t)."""
    return _convert(0, sde, output, x, t, kind)


def from_score(sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array, kind: str) -> jax.Array:
    """The ``kind`` prediction (score, eps or x0) implied by ``score`` at (x, t)."""
    return _convert(1, sde, score, x, t, kind)


def score_fn_from(sde: SDE, model_fn: Callable, kind: str) -> Callable:
    """Wrap ``model_fn(x, t)`` of parameterisation ``kind`` into a ``score_fn(x, t)``."""
    _check(kind)
    return lambda x, t: to_score(sde, model_fn(x, t), x, t, kind)


def tweedie_denoise(sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
    """E[x0 | x_t] = (x_t + sigma² score) / alpha: the final noise-free step."""
    return from_score(sde, score, x, t, "x0")


def denoise_at(sde: SDE, score_fn: Callable, x: jax.Array, t: jax.Array) -> jax.Array:
    """``tweedie_denoise`` at the scalar time t, one score evaluation: the samplers' last step
    from the end time eps to the data."""
    t = jnp.full(x.shape[:1], t, x.dtype)
    return tweedie_denoise(sde, score_fn(x, t), x, t)
