"""One place to convert a network's output to a score and back.

With x_t = alpha x0 + sigma eps, the three parameterisations relate by
score = -eps / sigma and x0 = (x_t + sigma² score) / alpha (Tweedie's formula).
"""

from collections.abc import Callable

import jax

from score_sde.sde import SDE, batch_mul

PARAMETERIZATIONS = ("score", "eps", "x0")


def _check(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={kind!r}: use one of {PARAMETERIZATIONS}.")


def to_score(sde: SDE, output: jax.Array, x: jax.Array, t: jax.Array, kind: str) -> jax.Array:
    """The score implied by a model ``output`` of parameterisation ``kind`` at (x, t)."""
    _check(kind)
    if kind == "score":
        return output
    sigma = sde.marginal_std(t)
    if kind == "eps":
        return batch_mul(-1 / sigma, output)
    return batch_mul(1 / sigma**2, batch_mul(sde.alpha(t), output) - x)


def from_score(sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array, kind: str) -> jax.Array:
    """The ``kind`` prediction (score, eps or x0) implied by ``score`` at (x, t)."""
    _check(kind)
    if kind == "score":
        return score
    sigma = sde.marginal_std(t)
    if kind == "eps":
        return batch_mul(-sigma, score)
    return batch_mul(1 / sde.alpha(t), x + batch_mul(sigma**2, score))


def score_fn_from(sde: SDE, model_fn: Callable, kind: str) -> Callable:
    """Wrap ``model_fn(x, t)`` of parameterisation ``kind`` into a ``score_fn(x, t)``."""
    _check(kind)
    return lambda x, t: to_score(sde, model_fn(x, t), x, t, kind)


def tweedie_denoise(sde: SDE, score: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
    """E[x0 | x_t] = (x_t + sigma² score) / alpha: the final noise-free step."""
    return from_score(sde, score, x, t, "x0")
