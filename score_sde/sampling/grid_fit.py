"""A time grid fitted to one model: the step locations and the end time of an n-step ODE solver,
chosen by gradient descent through the solver so that its samples land where the model's own
probability flow takes the same prior draws (per model, as Align Your Steps fits its schedules,
Sabour et al. 2024; the shipped ``"optimized"`` tables are fitted once on proxies instead).

The grid: fractions f_0 = 0 < ... < f_n = 1 of the lambda span from T to the end time eps
(``grids.fraction_grid``), f = cumsum(softmax(z)) for free logits z (z = 0 is the logsnr grid),
and log eps. The objective: the mean over prior draws of log(1 + |x_solver - x_flow|² / c²),
x_flow the flow's end point at ``sde.end_time()`` from a fine solve, c² the median squared error
on the logsnr grid. Quadratic below c and logarithmic above, it lets the typical draw count: a
mean squared error is ruled by the few draws that cross between modes and leaves narrow modes'
width off; a mean of log |.|² rewards errors that cancel on a few draws (docs/benchmarks.md,
"Grids fitted to the model"). Adam from several starts (``adam_from_starts``), the best iterate
kept.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from score_sde.sampling import grid_tables, grids
from score_sde.sde import SDE

Array = jax.Array


def to_fractions(logits: Array) -> Array:
    """Fractions 0 = f_0 < ... < f_n = 1 from n free logits."""
    return jnp.concatenate([jnp.zeros(1), jnp.cumsum(jax.nn.softmax(logits))]).at[-1].set(1.0)


def logits_of(sde: SDE, ts: Array) -> Array:
    """The logits z with ``to_fractions(z)`` the fractions of the lambda span at ``ts``."""
    lam = sde.half_log_snr(ts)
    return jnp.log(jnp.diff((lam - lam[0]) / (lam[-1] - lam[0])))  # softmax(z): the increments


def adam_from_starts(loss_and_grad: Callable, starts: list, iters: int, lr: float) -> tuple:
    """Adam on ``loss_and_grad(params) -> (value, grad)`` from each start in turn (on mixtures
    part of the error is trajectories ending in the wrong mode, piecewise constant in the grid:
    gradients alone stay in the basin they start in): (value, start index, params) of the best
    iterate seen."""
    opt = optax.adam(optax.cosine_decay_schedule(lr, iters, alpha=0.05))
    best = (math.inf, None, None)
    for i, params in enumerate(starts):
        state = opt.init(params)
        for _ in range(iters):
            value, grad = loss_and_grad(params)
            best = min(best, (float(value), i, params), key=lambda b: b[0])
            updates, state = opt.update(grad, state)
            params = optax.apply_updates(params, updates)
    return best


def grid_of(sde: SDE, params: tuple[Array, Array]) -> Array:
    """The grid from T to exp(log eps) at the fractions of the logits: params = (z, log eps)."""
    z, log_eps = params
    ends = jnp.stack([jnp.asarray(sde.T, log_eps.dtype), jnp.exp(log_eps)])
    return grids.fraction_grid(sde, to_fractions(z), ends)


def starts(sde: SDE, solver: str, n_steps: int) -> list[tuple[Array, Array]]:
    """The logsnr grid and, where the solver has a table for the SDE's family, its optimized
    one, each ending at ``sde.end_time(n_steps)`` and at a tenth of it."""
    kinds = ["logsnr"]
    if sde.grid_family in grid_tables.TABLES.get(solver, {}):
        kinds.append("optimized")
    eps = sde.end_time(n_steps)
    out = []
    for kind in kinds:
        for t_end in (eps, eps / 10):
            ts = grids.time_grid(sde, n_steps, kind, t_end=t_end, solver=solver)
            out.append((logits_of(sde, ts), jnp.log(ts[-1])))
    return out


def fit(
    sde: SDE, run: Callable, score_fn, x_T: Array, x_flow: Array, params: list, iters: int,
    lr: float,
) -> tuple[Array, float]:  # fmt: skip
    """(grid, objective) minimising the mean over draws of log(1 + |x_solver - x_flow|² / c²),
    x_solver = ``run(score_fn, x_T, ts)``, from each start in ``params``; c² is the median of
    |x_solver - x_flow|² on the first start's grid. The score (a Partial over a model's
    parameters) and the draws are arguments of the compiled loss, not constants in it."""
    axes = tuple(range(1, x_flow.ndim))

    def errors(p, score_fn, x_T, x_flow):
        return jnp.sum((run(score_fn, x_T, grid_of(sde, p)) - x_flow) ** 2, axis=axes)

    c2 = jnp.median(jax.jit(errors)(params[0], score_fn, x_T, x_flow))

    def loss(p, score_fn, x_T, x_flow):
        return jnp.mean(jnp.log1p(errors(p, score_fn, x_T, x_flow) / c2))

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    value, _, best = adam_from_starts(
        lambda p: value_and_grad(p, score_fn, x_T, x_flow), params, iters, lr
    )
    return grid_of(sde, best), value
