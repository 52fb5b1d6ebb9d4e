"""Fixed-grid solvers that start from a given state at a given time: the building block of
SDEdit and inversion. Each is ``solve(rng, sde, score_fn, x, ts, **options) -> (x, nfe, traj)``
along a time grid ``ts`` in either direction."""

from __future__ import annotations

import functools

import jax
from jax.tree_util import Partial

from score_sde.sampling import ddim, dpm_solver, edm, grids

SOLVERS = {
    "ddim": ddim.ddim_solve,
    "dpm_solver": dpm_solver.dpm_solver_solve,
    "heun": edm.heun_solve,
}
DEFAULT_GRIDS = {"ddim": "uniform", "dpm_solver": "logsnr", "heun": "edm"}


@functools.partial(
    jax.jit, static_argnames=("solver", "t_start", "t_end", "n_steps", "time_grid", "options")
)
def _solve(rng, sde, score_fn, x, *, solver, t_start, t_end, n_steps, time_grid, options):
    ts = grids.time_grid(sde, n_steps, time_grid, t_start=t_start, t_end=t_end)
    x, nfe, _ = SOLVERS[solver](rng, sde, score_fn, x, ts, **dict(options))
    return x, nfe


def solve(
    rng,
    sde,
    score_fn,
    x,
    *,
    t_start: float,
    t_end: float,
    solver: str = "dpm_solver",
    n_steps: int = 20,
    time_grid: str | None = None,
    **options,
):
    """Integrate x from ``t_start`` to ``t_end`` (either direction) in ``n_steps`` steps of
    ``solver`` on ``time_grid`` (default: the solver's own); returns (x, nfe)."""
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is unknown; use one of {sorted(SOLVERS)}.")
    if "save_at" in options:
        raise TypeError(
            "save_at is not available here; call the solver in "
            "score_sde.control.solvers.SOLVERS directly to record a trajectory."
        )
    score_fn = score_fn if isinstance(score_fn, Partial) else Partial(score_fn)
    return _solve(
        rng,
        sde,
        score_fn,
        x,
        solver=solver,
        t_start=float(t_start),
        t_end=float(t_end),
        n_steps=n_steps,
        time_grid=time_grid or DEFAULT_GRIDS[solver],
        options=tuple(sorted(options.items())),
    )
