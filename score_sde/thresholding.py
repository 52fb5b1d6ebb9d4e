"""Static and dynamic thresholding of the model's prediction of the data (Imagen, Saharia et al.
2022, Sec. 2.3 and App. E), for data scaled to [-1, 1] (``data.centered=True``).

On x0_hat = E[x0 | x_t], the Tweedie estimate implied by the score:
- ``"static"``: x0_hat <- clip(x0_hat, -1, 1);
- ``"dynamic"``: per example s = max(1, quantile(|x0_hat|, percentile) over all its
  dimensions), x0_hat <- clip(x0_hat, -s, s) / s. An example whose p-quantile lies inside
  [-1, 1] is only clipped to [-1, 1]; one beyond is clipped at s and shrunk so s maps to 1.
  With percentile = 1 it divides by max(1, max |x0_hat|), which is not the static clip.

``thresholded(sde, score_fn, mode, percentile)`` wraps a score function: it converts the score
to x0_hat at (x, t), thresholds it, and converts back (``parameterization``), so every sampler
sees the thresholded prediction (exactly so the data-prediction solvers, DPM-Solver++ and
UniPC with ``prediction="data"``, and the final denoising step, whose output then lies in
[-1, 1] up to rounding) and it composes with guidance. ``sampling.sample(...,
thresholding=..., threshold_percentile=...)`` applies it for every method.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from score_sde import checks, parameterization
from score_sde.sde import SDE

MODES = ("static", "dynamic")
DEFAULT_PERCENTILE = 0.995  # Imagen's


def check(mode: str | None, percentile=DEFAULT_PERCENTILE) -> None:
    """``mode`` is None (off) or one of ``MODES``; ``percentile`` a number in (0, 1] (checked
    whatever the mode, so a config may always carry one; a tracer is not checked)."""
    if mode is not None and (not isinstance(mode, str) or mode not in MODES):
        raise ValueError(
            f"thresholding={mode!r} is unknown; use None (off), 'static' (clip x0 to [-1, 1]) or "
            "'dynamic' (Imagen's, with threshold_percentile)."
        )
    if checks.is_traced(percentile):
        return
    fix = "pass a float in (0, 1], e.g. threshold_percentile=0.995"
    if not checks.is_real_number(percentile):
        raise TypeError(f"threshold_percentile={percentile!r}: {fix}.")
    if not 0 < percentile <= 1:
        raise ValueError(f"threshold_percentile={percentile!r} is outside (0, 1]: {fix}.")


def _static(x0: jax.Array, percentile) -> jax.Array:
    return jnp.clip(x0, -1.0, 1.0)


def _dynamic(x0: jax.Array, percentile) -> jax.Array:
    magnitudes = jnp.abs(x0.reshape(x0.shape[0], -1))
    q = jnp.asarray(percentile, x0.dtype)  # an int 1 too
    s = jnp.maximum(jnp.quantile(magnitudes, q, axis=1), 1.0)
    s = s.reshape(s.shape + (1,) * (x0.ndim - 1))
    return jnp.clip(x0, -s, s) / s


_THRESHOLDS = {"static": _static, "dynamic": _dynamic}


def _function(mode: str, percentile):
    """The thresholding function of ``mode`` (not None), after checking both arguments."""
    if mode is None:
        raise ValueError("thresholding mode None: pass mode='static' or mode='dynamic'.")
    check(mode, percentile)
    return _THRESHOLDS[mode]


def threshold(x0: jax.Array, mode: str, percentile=DEFAULT_PERCENTILE) -> jax.Array:
    """``x0``: [B, ...] thresholded per example by ``mode`` ("static" or "dynamic", see the
    module docstring); ``percentile`` is read by "dynamic" only."""
    return _function(mode, percentile)(x0, percentile)


def _thresholded(threshold_fn, sde, score_fn, percentile, x, t):
    t = jnp.broadcast_to(t, x.shape[:1])
    x0 = parameterization.from_score(sde, score_fn(x, t), x, t, "x0")
    return parameterization.to_score(sde, threshold_fn(x0, percentile), x, t, "x0")


def thresholded(sde: SDE, score_fn, mode: str, percentile=DEFAULT_PERCENTILE) -> Partial:
    """``score_fn(x, t)`` whose Tweedie estimate of x0 is thresholded by ``mode``: a
    ``jax.tree_util.Partial`` (``sde``, ``score_fn`` and ``percentile`` are leaves, so new
    parameters or percentiles reuse a compiled sampler)."""
    threshold_fn = Partial(_function(mode, percentile))  # a static function, no leaves
    score_fn = score_fn if isinstance(score_fn, Partial) else Partial(score_fn)
    return Partial(_thresholded, threshold_fn, sde, score_fn, jnp.asarray(percentile))
