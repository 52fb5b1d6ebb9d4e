"""Exact log-likelihoods through the probability-flow ODE (Song et al. 2021, App. D.2), in nats,
and their conversion to bits per dimension.

Along the ODE dx/dt = f̃(x, t) = f(x, t) - ½ g(t)² s(x, t), log p_t(x_t) changes by
d log p_t(x_t)/dt = -div f̃(x_t, t), so integrating x from eps up to T gives

    log p_eps(x) = log p_T(x_T) + ∫_eps^T div f̃(x_t, t) dt.

The divergence is the exact Jacobian trace (costs D Jacobian-vector products: small D only) or
Hutchinson's unbiased estimate v^T (∂f̃/∂x) v with one probe v per example, fixed over the
trajectory (Grathwohl et al. 2019), drawn from Rademacher ±1 or a standard normal.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from score_sde import checks, odeint
from score_sde import rng as rng_lib
from score_sde.sampling.ode import probability_flow_drift
from score_sde.sde import SDE

Array = jax.Array

DIVERGENCES = ("exact", "hutchinson-rademacher", "hutchinson-gaussian")
PIXEL_LEVELS = 256


def _divergence_field(drift, divergence: str):
    """(t, (x, _), (probe, score_fn)) -> (f̃, div f̃) for one example, from
    ``drift(t, x, score_fn)``; the probe is a ``PerExample`` row."""

    def field(t, y, args):
        (x, _), (probe, score_fn) = y, args
        probe = probe.value[0]
        out, jvp = jax.linearize(lambda x: drift(t, x, score_fn), x)
        if divergence == "exact":  # trace of the Jacobian, one JVP per basis vector
            basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size, *x.shape))
            div = jnp.trace(jax.vmap(jvp)(basis).reshape(x.size, x.size))
        else:
            div = jnp.sum(jvp(probe) * probe)
        return out, div

    return field


@functools.partial(jax.jit, static_argnames=("divergence", "rtol", "atol", "eps", "solver"))
def _log_likelihood(rng, sde, score_fn, x, *, divergence, rtol, atol, eps, solver):
    checks.score_output(score_fn, x)  # at trace time: once per compilation
    if divergence == "hutchinson-gaussian":
        probe = rng_lib.normal(rng, x.shape, x.dtype)
    else:  # the exact divergence ignores the probe
        probe = rng_lib.rademacher(rng, x.shape, x.dtype)
    field = _divergence_field(probability_flow_drift(sde), divergence)
    y0 = (x, jnp.zeros(x.shape[:1], x.dtype))
    args = (odeint.PerExample(probe), score_fn)
    (z, integral), nfe, _, stuck = odeint.solve_counting_stuck(
        field, y0, eps, sde.T, args=args, rtol=rtol, atol=atol, solver=solver
    )
    return sde.prior_logp(z) + integral, nfe, stuck


def log_likelihood(
    rng: Array,
    sde: SDE,
    score_fn,
    x: Array,
    divergence: str = "hutchinson-rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-5,
    solver: str = "tsit5",
    on_nonfinite: str = "warn",
) -> tuple[Array, Array]:
    """log p_eps(x) in nats for each example of x: [B, ...], and nfe.

    ``x`` is treated as a sample at time ``eps`` (1e-5 as in Song et al. for every SDE). The
    probability-flow ODE is integrated from eps to T with the divergence alongside, by the
    same adaptive solver as ``sampling.ode`` (``solver``, ``rtol``, ``atol``), each example on
    its own steps, in one jitted call. ``divergence`` is one of ``DIVERGENCES``; the Hutchinson
    probes come from ``rng``, one per example (example i depends only on (rng, i)). nfe counts
    the batched score evaluations; each one also gives its Jacobian-vector product(s).
    Returns (logp: [B], nfe).

    Checked first (``score_sde.checks``): x is float32/float64 [B, ...] data, finite when it is
    concrete (not under jit); rtol, atol > 0; 0 < eps < T; and, once per compilation, that
    ``score_fn`` returns the shape of x. An example whose score turned NaN/inf gets a NaN logp,
    reported by ``on_nonfinite`` as in ``sampling.sample``: "warn" (a ``RuntimeWarning``),
    "raise" (``checks.NonFiniteError``; under jit a ``JaxRuntimeError`` with its message) or
    "ignore".
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence={divergence!r} is unknown; use one of {DIVERGENCES}.")
    odeint.check_solver(solver)
    checks.on_nonfinite(on_nonfinite)
    x = x if hasattr(x, "dtype") else jnp.asarray(x)
    checks.data(x)
    checks.positive("rtol", rtol)
    checks.positive("atol", atol)
    checks.end_time("eps", eps, sde.T)
    if not isinstance(score_fn, Partial):
        score_fn = Partial(score_fn)
    logp, nfe, stuck = _log_likelihood(
        rng, sde, score_fn, x, divergence=divergence, rtol=rtol, atol=atol, eps=eps, solver=solver
    )
    odeint.report_stuck(stuck, rtol, atol)  # after the jitted solve: that program stays cacheable
    checks.report_nonfinite(logp, on_nonfinite, "log-likelihoods")
    return logp, nfe


def bits_per_dim(
    logp: Array,
    x_shape: tuple[int, ...],
    *,
    data_range: tuple[float, float],
    levels: int = PIXEL_LEVELS,
) -> Array:
    """Bits per dimension of 8-bit data from ``logp`` (nats, [B]) of x with batch shape
    ``x_shape`` = (B, ...), whose pixels were scaled to ``data_range``.

    bpd = -logp / (D ln 2) + log2(levels / (hi - lo)), with D = prod(x_shape[1:]).

    Why the offset: bits per dimension are quoted for pixels in their own units, 256 levels
    per dimension. A model of data scaled to [lo, hi] has a density per unit of that scale;
    rescaling to pixel units [0, 256) divides the density by (256 / (hi - lo)) per dimension,
    which adds log2(256 / (hi - lo)) bits: +8 for data in [0, 1], +7 for data in [-1, 1].
    With uniformly dequantized data (``uniform_dequantize``), this bpd bounds the model's
    codelength of the discrete 8-bit image from above (Theis et al. 2016); without
    dequantization, a density can pile up on the 256 values and give a meaningless, even
    negative, bpd.
    """
    lo, hi = data_range
    if not hi > lo:
        raise ValueError(f"data_range={data_range!r}: need (lo, hi) with hi > lo, e.g. (-1, 1).")
    if logp.shape != tuple(x_shape[:1]):
        raise ValueError(
            f"logp has shape {logp.shape} but x_shape={tuple(x_shape)}: pass the shape of the "
            "batch x (B, ...) that logp was computed for."
        )
    dims = math.prod(x_shape[1:])
    return -logp / (dims * math.log(2)) + math.log2(levels / (hi - lo))


def uniform_dequantize(
    rng: Array, x: Array, *, data_range: tuple[float, float], levels: int = PIXEL_LEVELS
) -> Array:
    """Uniform dequantization of 8-bit data scaled to ``data_range`` = (lo, hi).

    x holds lo + (hi - lo) k / (levels - 1) for integer pixels k; returns lo + (hi - lo)
    (k + u) / levels with u ~ U[0, 1) per dimension, i.e. y = (255 x + u) / 256 on [0, 1].
    Noise is drawn per example: example i depends only on (rng, i).
    """
    lo, hi = data_range
    k = jnp.round((x - lo) / (hi - lo) * (levels - 1))
    u = rng_lib.uniform(rng, x.shape, x.dtype)
    return lo + (hi - lo) * (k + u) / levels
