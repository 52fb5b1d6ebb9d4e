"""One place to convert a network's output to a score and back.

With x_t = alpha x0 + sigma eps, the parameterisations relate by
score = -eps / sigma, x0 = (x_t + sigma² score) / alpha (Tweedie's formula) and
v = alpha eps - sigma x0 (Salimans & Ho 2022, Sec. 4; for any alpha, sigma here, so
eps = (alpha v + sigma x_t) / (alpha² + sigma²)). "edm" is EDM's preconditioned denoiser
D = c_skip x^ + c_out F(c_in x^; sigma) (Karras et al. 2022, Eq. 7, Table 1) around a network F:
``network_output`` applies it, and D is an x0 prediction.
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde.sde import SDE

PARAMETERIZATIONS = ("score", "eps", "x0", "v", "edm")


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
    "v": (
        lambda v, x, a, s: -(a * v + s * x) / (s * (a**2 + s**2)),
        lambda score, x, a, s: -(s / a) * (x + (a**2 + s**2) * score),
    ),
}
_FORMULAS["edm"] = _FORMULAS["x0"]  # the preconditioned output D is an x0 prediction


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
    """The ``kind`` prediction (score, eps, x0 or v; "edm": D, the x0) implied by ``score``."""
    return _convert(1, sde, score, x, t, kind)


def edm_scalings(sigma: jax.Array, sigma_data: float) -> tuple[jax.Array, ...]:
    """(c_skip, c_out, c_in) of EDM's preconditioning at noise level sigma (Karras et al. 2022,
    Table 1)."""
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / jnp.sqrt(total), 1 / jnp.sqrt(total)


def network_output(
    sde: SDE, kind: str, network: Callable, x: jax.Array, t: jax.Array, *, sigma_data: float = 0.5
) -> jax.Array:
    """What ``to_score(..., kind)`` converts, from ``network(x_in, sigma_in)``: the network at
    (x, sigma(t)); for "edm" the denoiser D(x^; σ) = c_skip x^ + c_out F(c_in x^; σ) (Karras et
    al. 2022, Eq. 7) with x^ = x / alpha(t) and σ = sigma(t) / alpha(t), EDM's x and sigma."""
    _check(kind)
    std = sde.marginal_std(t)
    if kind != "edm":
        return network(x, std)
    per_example = lambda c: c.reshape(c.shape + (1,) * (x.ndim - c.ndim))
    sigma = std / sde.alpha(t)
    x_hat = x / per_example(sde.alpha(t))
    c_skip, c_out, c_in = (per_example(c) for c in edm_scalings(sigma, sigma_data))
    return c_skip * x_hat + c_out * network(c_in * x_hat, sigma)


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
