"""EDM's stochastic Heun sampler (Karras et al. 2022, Algorithm 2), for every SDE here.

EDM writes x = s(t) x^ with x^ = x0 + sigma(t) n (Eq. 4), so the probability-flow ODE in x^ is
dx^/dsigma = (x^ - D(x^; sigma)) / sigma. Our SDEs give s(t) = alpha(t) and sigma(t) =
sigma_marginal(t)/alpha(t) = exp(-lambda(t)) (EDM Table 1: VP is s = 1/sqrt(e^(½ β_d t² + β_min t)),
sigma = sqrt(e^(½ β_d t² + β_min t) - 1); VE is s = 1). The denoiser D is the x0-prediction of
``score_fn`` at x = s(t) x^ and t = sigma^-1(sigma). The algorithm then runs on EDM's own
choice sigma(t) = t, s(t) = 1, symbol for symbol, on the grid ``grid`` gives (the logSNR one
by default; ``time_grid="edm"`` is the rho-grid of Eq. 5).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from score_sde import parameterization as param
from score_sde import rng as rng_lib
from score_sde.sampling import grids
from score_sde.sde import SDE

Array = jax.Array


def denoise(sde: SDE, score_fn, x_hat: Array, t: Array) -> Array:
    """D(x^; sigma(t)): the x0-prediction at x = alpha(t) x^, for a scalar time t."""
    x = sde.alpha(t) * x_hat
    score = score_fn(x, jnp.full((x_hat.shape[0],), t, x_hat.dtype))
    return param.from_score(sde, score, x, t, "x0")


def grid(
    sde: SDE, *, n_steps: int = 18, rho: float = 7.0, time_grid: str = "logsnr", eps=None
) -> Array:
    """``n_steps`` times on ``time_grid`` from T to ``eps`` (default sde.end_time), then t_N = 0:
    the data. The logSNR grid by default, measured at 20 NFE (``python bench/defaults.py``,
    docs/benchmarks.md): within modes 3.4x the noise floor against 6.5x for EDM's rho = 7 grid
    (Eq. 5, ``time_grid="edm"``), geometric means over 4 targets."""
    if not (isinstance(n_steps, int) and n_steps >= 2):
        raise ValueError(f"n_steps={n_steps!r}: EDM's Heun sampler needs n_steps >= 2.")
    return jnp.append(grids.time_grid(sde, n_steps - 1, time_grid, t_end=eps, rho=rho), 0.0)


def integrate(
    rng,
    sde,
    score_fn,
    x,
    ts,
    *,
    S_churn=0.0,
    S_tmin=0.0,
    S_tmax=math.inf,
    S_noise=1.0,
    save_at=(),
):
    """EDM Algorithm 2 from x at ts[0] through sigma_i = sigma(t_i); a last time t = 0 is
    sigma = 0, the data, reached by an Euler step. S_churn = 0 is the deterministic Heun
    solver of the probability-flow ODE.

    Returns (x, nfe, trajectory); nfe = 2 (steps), less 1 when the grid ends at t = 0.
    Step i draws its churn noise as ``rng.normal(fold_in(rng, i), x.shape)``.
    """
    if S_churn < 0 or S_noise < 0:
        raise ValueError(f"S_churn={S_churn}, S_noise={S_noise}: both must be >= 0.")
    sigmas = jnp.where(ts > 0, grids.sigma_tilde(sde, ts), 0.0)
    n = ts.shape[0] - 1
    gamma_max = min(S_churn / n, math.sqrt(2) - 1)

    def step(x_cur, i, last=False):
        t_cur, t_next, s_cur, s_next = ts[i], ts[i + 1], sigmas[i], sigmas[i + 1]
        if S_churn > 0:  # Increase noise temporarily (without churn, x_hat = x_cur).
            gamma = jnp.where((S_tmin <= s_cur) & (s_cur <= S_tmax), gamma_max, 0.0)
            s_hat = s_cur + gamma * s_cur
            t_hat = jnp.where(gamma > 0, grids.t_from_sigma_tilde(sde, s_hat), t_cur)
            eps = S_noise * rng_lib.normal(jax.random.fold_in(rng, i), x_cur.shape, x_cur.dtype)
            x_hat = x_cur + jnp.sqrt(s_hat**2 - s_cur**2) * eps
        else:
            s_hat, t_hat, x_hat = s_cur, t_cur, x_cur
        # Euler step.
        d_cur = (x_hat - denoise(sde, score_fn, x_hat, t_hat)) / s_hat
        x_next = x_hat + (s_next - s_hat) * d_cur

        def correct():  # Apply 2nd-order correction.
            d_prime = (x_next - denoise(sde, score_fn, x_next, t_next)) / s_next
            return x_hat + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_prime)

        # Only the last step can end at sigma = 0, where the correction does not apply.
        x_next = jax.lax.cond(s_next != 0, correct, lambda: x_next) if last else correct()
        return x_next, (t_hat, t_next, sde.alpha(t_hat) * x_hat, sde.alpha(t_next) * x_next)

    traj = grids.trajectory_init(save_at, x)
    x_hat, traj = grids.scan(step, x / sde.alpha(ts[0]), jnp.arange(n - 1), save_at, traj)
    last = functools.partial(step, last=True)
    x_hat, traj = grids.scan(last, x_hat, jnp.arange(n - 1, n), save_at, traj)
    return sde.alpha(ts[-1]) * x_hat, 2 * n - (sigmas[-1] == 0).astype(int), traj
