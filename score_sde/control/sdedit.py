"""SDEdit (Meng et al. 2022): perturb data to time t0 along the forward SDE, then solve back."""

from __future__ import annotations

import jax

from score_sde import rng as rng_lib
from score_sde import sampling
from score_sde.sampling import grids
from score_sde.sde import SDE, batch_mul

# The solvers SDEdit and inversion run, and each one's default spacing over a partial span
# (the samplers' measured defaults, e.g. dpm_solver's optimized grid, are for T -> eps).
SOLVER_GRIDS = {"ddim": "uniform", "dpm_solver": "logsnr", "heun": "edm"}


def solve_between(
    rng, sde: SDE, score_fn, x, t_start: float, t_end: float, *, solver: str, n_steps: int,
    time_grid: str | None = None, **options,
):  # fmt: skip
    """``solver`` from x at ``t_start`` to ``t_end`` (either direction) in ``n_steps`` steps on
    ``time_grid`` (default: the solver's own); returns (x, nfe)."""
    if solver not in SOLVER_GRIDS:
        raise ValueError(f"solver={solver!r} is unknown; use one of {sorted(SOLVER_GRIDS)}.")
    kind = time_grid or SOLVER_GRIDS[solver]
    ts = grids.time_grid(sde, n_steps, kind, t_start=t_start, t_end=t_end)
    return sampling.solve(rng, sde, score_fn, x, ts, method=solver, **options)


def sdedit(
    rng,
    sde: SDE,
    score_fn,
    data,
    *,
    t0: float,
    solver: str = "ddim",
    n_steps: int = 50,
    eps: float | None = None,
    **options,
):
    """x(t0) = alpha(t0) data + sigma(t0) z, then ``solver`` from t0 to eps; returns (x, nfe).

    t0 near 0 keeps the input, t0 = T forgets it. With a stochastic solver (ddim with eta = 1)
    and an exact score the output is a sample of p(x0 | x(t0)). Options go to the solver.
    """
    if not 0 < t0 <= sde.T:
        raise ValueError(f"t0={t0}: SDEdit starts inside (0, T={sde.T}].")
    noise_rng, solve_rng = jax.random.split(rng)
    t = jax.numpy.full((data.shape[0],), t0, data.dtype)
    mean, std = sde.marginal_prob(data, t)
    x = mean + batch_mul(std, rng_lib.normal(noise_rng, data.shape, data.dtype))
    eps = sde.sampling_eps if eps is None else eps
    return solve_between(
        solve_rng, sde, score_fn, x, t0, eps, solver=solver, n_steps=n_steps, **options
    )
