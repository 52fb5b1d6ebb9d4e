"""A time grid fitted to one model: the step locations and the end time of an n-step ODE solver,
chosen by gradient descent through the solver so that its samples land where the model's own
probability flow takes the same prior draws (per model, as Align Your Steps fits its schedules,
Sabour et al. 2024; the shipped ``"optimized"`` tables are fitted once on proxies instead).

The grid: fractions f_0 = 0 < ... < f_n = 1 of the lambda span from T to the end time eps
(``grids.fraction_grid``), f = cumsum(softmax(z)) for free logits z (z = 0 is the logsnr grid), and
log eps, eps no later than ``sde.end_time(n)``. The objective: the mean over prior draws of log(1 +
|x_solver - x_flow|² / c²), x_flow the flow's end point at ``sde.end_time()`` from a fine solve, c²
the median squared error on the logsnr grid. Quadratic below c and logarithmic above, it lets the
typical draw count: a mean squared error is ruled by the few draws that cross between modes and
leaves narrow modes' width off; a mean of log |.|² rewards errors that cancel on a few draws
(docs/benchmarks.md, "Grids fitted to the model"). Adam from several starts (``adam_from_starts``),
the best iterate kept.

With shifts (``fit(..., shift=True)``, ``sampling.fit_schedule``) the model is also evaluated at
other logSNRs than the steps' own: at grid point t_i it sees lambda(t_i) + d_i, its input
rescaled to that level (``shifted_score``), d fitted jointly with the grid from the best grid
(decoupled times, as LD3 fits them, Tong et al. 2025). On sharp modes a step too long for the
within-mode part of the flow narrows or widens the modes; a shift gives them back their width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import Partial

from score_sde import parameterization as param
from score_sde.sampling import grid_tables, grids
from score_sde.sde import SDE, batch_mul

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


def shifted_score(sde: SDE, score_fn, ts: Array, shifts: Array) -> Partial:
    """The score at t from the model's x0 prediction at lambda(t) + shifts[i], i the point of
    the grid ``ts`` nearest t, its input x scaled by alpha(tau) / alpha(t) to that noise level:
    a ``Partial`` for ``sampling.solve`` along ``ts``. Zero shifts give ``score_fn`` back."""
    ts, shifts = jnp.asarray(ts), jnp.asarray(shifts)
    if ts.ndim != 1 or shifts.shape != ts.shape:
        raise ValueError(
            f"shifts of shape {shifts.shape} for a grid ts of shape {ts.shape}: one shift per "
            "grid point, as fit_schedule returns them."
        )
    score_fn = score_fn if isinstance(score_fn, Partial) else Partial(score_fn)
    return Partial(_shifted, sde, score_fn, ts, shifts)


def _shifted(sde: SDE, score_fn, ts: Array, shifts: Array, x: Array, t: Array) -> Array:
    t = jnp.broadcast_to(t, x.shape[:1])
    i = jnp.argmin(jnp.abs(ts[None, :] - t[:, None]), axis=1)
    tau = sde.t_from_half_log_snr(sde.half_log_snr(t) + shifts[i])
    x_tau = batch_mul(sde.alpha(tau) / sde.alpha(t), x)
    x0 = param.from_score(sde, score_fn(x_tau, tau), x_tau, tau, "x0")
    return param.to_score(sde, x0, x, t, "x0")


def grid_of(sde: SDE, params: tuple[Array, Array]) -> Array:
    """The grid from T to exp(log eps) at the fractions of the logits: params = (z, log eps)."""
    z, log_eps = params
    ends = jnp.stack([jnp.asarray(sde.T, log_eps.dtype), jnp.exp(log_eps)])
    return grids.fraction_grid(sde, to_fractions(z), ends)


def params_of(sde: SDE, ts: Array) -> tuple[Array, Array]:
    """(z, log eps) of the grid ``ts``: ``grid_of``'s inverse."""
    return logits_of(sde, ts), jnp.log(ts[-1])


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
            out.append(params_of(sde, ts))
    return out


def fit(
    sde: SDE, run: Callable, score_fn, x_T: Array, x_flow: Array, params: list, iters: int,
    lr: float, shift: bool = False,
) -> tuple[tuple, float]:  # fmt: skip
    """(params, objective) minimising the mean over draws of log(1 + |x_solver - x_flow|² / c²),
    x_solver = ``run(score_fn, x_T, ts)``, from each start in ``params`` ((z, log eps) each; eps is
    held at or below ``sde.end_time(n)``); c² is the median of |x_solver - x_flow|² on the first
    start's grid. With ``shift``, then (z, log eps, d) from the best of those with d = 0, the model
    seen through ``shifted_score``. The score (a Partial over a model's parameters) and the draws
    are arguments of the compiled loss, not constants in it."""
    axes = tuple(range(1, x_flow.ndim))
    # A later end than the default leaves noise of std sigma(eps) on every draw, a cost the
    # per-draw objective underweights (docs/benchmarks.md, "Grids fitted to the model").
    log_eps_max = jnp.log(sde.end_time(params[0][0].size))

    def bounded(p):
        return (p[0], jnp.minimum(p[1], log_eps_max), *p[2:])

    def errors(p, score_fn, x_T, x_flow):
        p = bounded(p)
        ts = grid_of(sde, p[:2])
        if len(p) == 3:
            score_fn = shifted_score(sde, score_fn, ts, p[2])
        return jnp.sum((run(score_fn, x_T, ts) - x_flow) ** 2, axis=axes)

    c2 = jnp.median(jax.jit(errors)(params[0], score_fn, x_T, x_flow))

    def loss(p, score_fn, x_T, x_flow):
        return jnp.mean(jnp.log1p(errors(p, score_fn, x_T, x_flow) / c2))

    value_and_grad = jax.jit(jax.value_and_grad(loss))

    def step(p):
        return value_and_grad(p, score_fn, x_T, x_flow)

    value, _, best = adam_from_starts(step, params, iters, lr)
    best = bounded(best)  # above the bound log eps gets no gradient: start the shifts on it
    if shift:
        value, _, best = adam_from_starts(step, [(*best, jnp.zeros(best[0].size + 1))], iters, lr)
    return bounded(best), value
