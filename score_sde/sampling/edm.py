"""EDM's stochastic Heun sampler (Karras et al. 2022, Algorithm 2), for every SDE here.

EDM writes x = s(t) x^ with x^ = x0 + sigma(t) n (Eq. 4), so the probability-flow ODE in x^ is
dx^/dsigma = (x^ - D(x^; sigma)) / sigma. Our SDEs give s(t) = alpha(t) and sigma(t) =
sigma_marginal(t)/alpha(t) = exp(-lambda(t)) (EDM Table 1: VP is s = 1/sqrt(e^(½ β_d t² + β_min t)),
sigma = sqrt(e^(½ β_d t² + β_min t) - 1); VE is s = 1). The denoiser D is the x0-prediction of
``score_fn`` at x = s(t) x^ and t = sigma^-1(sigma). The algorithm then runs on EDM's own
choice sigma(t) = t, s(t) = 1, symbol for symbol, on the rho-grid of Eq. 5.
"""

from __future__ import annotations

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


def heun_solve(
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
    to_zero=False,
    save_at=(),
):
    """Algorithm 2 from x at ts[0] through sigma_i = sigma(ts[i]), then to sigma = 0 when
    ``to_zero`` (that last step is Euler: it returns D, the data, saved as t = 0).

    Returns (x, nfe, trajectory or None); nfe = 2 (steps) - 1 with ``to_zero``, else 2 (steps).
    Step i draws its churn noise as ``rng.normal(fold_in(rng, i), x.shape)``.
    """
    sigmas = grids.sigma_tilde(sde, ts)
    alphas = sde.alpha(ts)
    rec_t = ts
    if to_zero:
        sigmas, alphas = jnp.append(sigmas, 0.0), jnp.append(alphas, 1.0)
        ts, rec_t = jnp.append(ts, ts[-1]), jnp.append(ts, 0.0)  # ts[-1]: never evaluated
    n = sigmas.shape[0] - 1
    gamma_max = min(S_churn / n, math.sqrt(2) - 1)
    traj = grids.trajectory_init(save_at, x)

    def step(carry, i, final=False):
        x_cur, traj = carry
        t_cur, t_next = ts[i], ts[i + 1]
        s_cur, s_next = sigmas[i], sigmas[i + 1]
        if S_churn > 0:  # Increase noise temporarily.
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

        # Apply 2nd-order correction unless sigma_next = 0 (``final``: the step to zero, taken
        # outside the loop; a grid of the caller's may also end at sigma = 0).
        if not final:
            d_prime = (x_next - denoise(sde, score_fn, x_next, t_next)) / s_next
            corrected = x_hat + (s_next - s_hat) * (0.5 * d_cur + 0.5 * d_prime)
            x_next = jnp.where(s_next > 0, corrected, x_next)
        r_hat = jnp.where(t_hat == t_cur, rec_t[i], t_hat)
        traj = grids.record(
            traj, save_at, r_hat, rec_t[i + 1], sde.alpha(t_hat) * x_hat, alphas[i + 1] * x_next
        )
        return (x_next, traj), None

    carry, _ = jax.lax.scan(
        step, (x / alphas[0], traj), jnp.arange(n - to_zero), unroll=grids.UNROLL
    )
    if to_zero:
        carry, _ = step(carry, n - 1, final=True)
    x_hat, traj = carry
    return alphas[-1] * x_hat, 2 * n - int(to_zero), traj


def heun_sampler(
    rng: Array,
    sde: SDE,
    score_fn,
    shape: tuple[int, ...],
    *,
    n_steps: int = 18,
    rho: float = 7.0,
    time_grid: str = "edm",
    S_churn: float = 0.0,
    S_tmin: float = 0.0,
    S_tmax: float = math.inf,
    S_noise: float = 1.0,
    eps: float | None = None,
    save_at: tuple = (),
):
    """EDM Algorithm 2: ``n_steps`` sigmas on the rho-grid from sigma(T) to sigma(eps), then 0.

    nfe = 2 n_steps - 1. S_churn = 0 is the deterministic Heun solver of the probability-flow
    ODE; the final sample is D at sigma(eps) (saved as t = 0). ``time_grid`` ("edm", or another
    of ``grids.GRIDS``) places the sigmas: at 10 steps on the VP SDE, whose sigma(T) is 152, the
    rho-grid spends its steps at large sigma, and "uniform" in t does better on the 2-D bench.
    """
    if not (isinstance(n_steps, int) and n_steps >= 2):
        raise ValueError(f"n_steps={n_steps!r}: EDM's Heun sampler needs n_steps >= 2.")
    if S_churn < 0 or S_noise < 0:
        raise ValueError(f"S_churn={S_churn}, S_noise={S_noise}: both must be >= 0.")
    eps = sde.sampling_eps if eps is None else eps
    grids.check_save_at(save_at, sde.T, 0.0)
    prior_rng, rng = jax.random.split(rng)
    x = sde.prior_sampling(prior_rng, shape)
    ts = grids.time_grid(sde, n_steps - 1, time_grid, t_end=eps, rho=rho)
    churn = dict(S_churn=S_churn, S_tmin=S_tmin, S_tmax=S_tmax, S_noise=S_noise)
    x, nfe, traj = heun_solve(rng, sde, score_fn, x, ts, to_zero=True, save_at=save_at, **churn)
    return grids.outputs(x, nfe, traj)
