"""Adaptive ODE solves for the probability-flow ODE, shared by ODE sampling and likelihoods.

Each example is solved on its own (``jax.vmap`` over diffrax's ``diffeqsolve``), so its step
sizes, and so its result, depend only on that example: a batch of 8 reproduces the first 8 of
a batch of 64. The batch runs in lockstep: one batched vector-field call per stage, until the
slowest example is done.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import diffrax
import jax
import jax.numpy as jnp

from score_sde import checks

SOLVERS = {"tsit5": diffrax.Tsit5, "dopri5": diffrax.Dopri5}
"""Explicit Runge–Kutta pairs of order 5(4), 7 stages, first-same-as-last (FSAL)."""

MAX_STEPS = 4096
FIRST_STEP = 0.01  # the first step tried, as a fraction of t1 - t0; the controller adapts it.
# Attempts with a NaN/inf stage that end an example's solve: steps into a region where the field
# is NaN are rejected, and the solve would otherwise creep up to its edge until MAX_STEPS.
NONFINITE_ATTEMPTS = 16


class _CountingController(diffrax.AbstractStepSizeController):
    """A PID controller that also counts first-stage evaluations of an FSAL Runge–Kutta pair.

    An FSAL step evaluates stages 2..s; its first stage is the last stage of the previous
    accepted step, so diffrax evaluates stage 1 only on attempts before the first accepted
    step. The state carries (PID state, no step accepted yet, attempts that evaluated stage 1,
    attempts whose candidate or error estimate was NaN/inf); after ``NONFINITE_ATTEMPTS`` of
    the latter the solve ends (reported as ``dt_min_reached``).
    """

    pid: diffrax.PIDController

    def wrap(self, direction):
        return _CountingController(self.pid.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        t, state = self.pid.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return t, (state, jnp.array(True), jnp.array(0), jnp.array(0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, state):
        pid_state, before_first, first_stage, nonfinite = state
        keep, t0, t1, jump, pid_state, result = self.pid.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, pid_state
        )
        finite = _all_finite(y1_candidate) & _all_finite(y_error)
        nonfinite = nonfinite + ~finite
        stop = nonfinite >= NONFINITE_ATTEMPTS
        result = diffrax.RESULTS.where(stop, diffrax.RESULTS.dt_min_reached, result)
        state = (pid_state, before_first & ~keep, first_stage + before_first, nonfinite)
        return keep, t0, t1, jump, state, result


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


@functools.partial(jax.tree_util.register_dataclass, data_fields=["value"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class PerExample:
    """Rows bound into a function of the batch, one per example: labels, known data. ``value``
    is an array or a pytree of arrays [B, ...]. ``solve`` hands example i the batch of one
    ``value[i:i+1]``; batched code uses ``value`` as it is."""

    value: Any


def _is_rows(node) -> bool:
    return isinstance(node, PerExample)


def _as_batch_of_one(node):
    """Inside the per-example map: PerExample rows get their batch axis of 1 back."""
    return PerExample(jax.tree.map(lambda v: v[None], node.value)) if _is_rows(node) else node


def check_solver(solver: str) -> None:
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is unknown; use one of {sorted(SOLVERS)}.")


def solve(vector_field: Callable, y0, t0: float, t1: float, **options):
    """``solve_counting_stuck`` (the same arguments) whose stuck examples raise
    (``report_stuck``): (y1, nfe, trajectory)."""
    y1, nfe, trajectory, stuck = solve_counting_stuck(vector_field, y0, t0, t1, **options)
    report_stuck(stuck, options["rtol"], options["atol"])
    return y1, nfe, trajectory


def solve_counting_stuck(
    vector_field: Callable,
    y0,
    t0: float,
    t1: float,
    *,
    args=None,
    rtol: float,
    atol: float,
    solver: str = "tsit5",
    save_at: tuple = (),
):
    """Solve dy/dt = vector_field(t, y, args) from t0 to t1 for each example of a batch.

    ``vector_field`` acts on ONE example (no batch axis); ``y0`` is a pytree whose leaves have a
    leading batch axis. ``args`` is shared by all examples, except its ``PerExample`` nodes:
    example i gets ``PerExample(value[i:i+1])`` (so a score_fn with bound labels can be called
    on the example as a batch of one).

    Returns (y1, nfe, trajectory, stuck). y1 has the structure of y0; an example whose vector
    field (or state) went NaN/inf is returned as NaN, its trajectory too, for the caller to
    report (the sampler's and the likelihood's ``on_nonfinite``). ``stuck`` (int32 []) counts
    the examples that needed more than ``MAX_STEPS`` steps with finite values, for the caller
    to pass to ``report_stuck`` (``solve`` does): outside its jitted program, that program has
    no host callback and so is kept in JAX's persistent compilation cache. nfe is the exact
    number of batched vector-field evaluations: in lockstep, every iteration of the batch
    evaluates stages 2..s for all examples, and stage 1 as long as some example has not
    accepted its first step, so nfe = (s - 1) max_i steps_i + max_i first_stage_i. The
    trajectory's leaves have shape [len(save_at), B, ...] for ``save_at`` (times in [t0, t1],
    any order; empty by default): the solver's dense interpolant at each time (y1 itself at
    t1). Saving uses no vector-field evaluations and leaves the steps and nfe unchanged (y1
    too, up to rounding: the compiled program differs).
    """
    check_solver(solver)
    method = SOLVERS[solver]()
    controller = _CountingController(diffrax.PIDController(rtol=rtol, atol=atol))
    ts = jnp.asarray(save_at, jnp.result_type(float))
    order = jnp.argsort(jnp.where(t1 < t0, -ts, ts))  # diffrax saves in the solve's direction
    saveat = diffrax.SaveAt(t1=True, ts=ts[order] if save_at else None, controller_state=True)
    # Map over the PerExample nodes only; flattened first, so that no other node of args (an
    # SDE, say) is rebuilt with placeholder values.
    nodes, treedef = jax.tree.flatten(args, is_leaf=_is_rows)
    axes = [0 if _is_rows(node) else None for node in nodes]

    def one(y, nodes):
        a = jax.tree.unflatten(treedef, [_as_batch_of_one(node) for node in nodes])
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(vector_field), method, t0=t0, t1=t1, dt0=FIRST_STEP * (t1 - t0),
            y0=y, args=a, stepsize_controller=controller, saveat=saveat, max_steps=MAX_STEPS,
            throw=False,
        )  # fmt: skip
        ys, stuck = _failures(sol)
        y1 = jax.tree_util.tree_map(lambda leaf: leaf[-1], ys)
        return y1, ys, sol.stats["num_steps"], sol.controller_state[2], stuck

    y1, ys, steps, first_stage, stuck = jax.vmap(one, in_axes=(0, axes))(y0, nodes)
    stages = len(method.tableau.c) + 1
    nfe = (stages - 1) * jnp.max(steps) + jnp.max(first_stage)
    trajectory = jax.tree_util.tree_map(functools.partial(_trajectory, ts, order, t1), ys, y1)
    return y1, nfe, trajectory, jnp.sum(stuck, dtype=jnp.int32)


def _failures(sol) -> tuple:
    """(saved states, stuck) of one example's solve. A failed solve that met NaN/inf failed
    because of its field (the score): its states are NaN, for the caller to report. One that
    failed with finite values ran out of MAX_STEPS: it is stuck."""
    nonfinite = sol.controller_state[3]
    failed = sol.result != diffrax.RESULTS.successful
    ys = jax.tree.map(lambda v: jnp.where(failed & (nonfinite > 0), jnp.nan, v), sol.ys)
    return ys, failed & (nonfinite == 0)


def report_stuck(stuck, rtol: float, atol: float) -> None:
    """Raise ``RuntimeError`` when ``stuck`` (``solve_counting_stuck``'s count) is not zero: at
    once when it is concrete; under jit from a ``jax.debug.callback`` when the program runs (a
    runtime error carrying the message, like diffrax's)."""
    if checks.is_traced(stuck):
        jax.debug.callback(functools.partial(_raise_if_stuck, rtol, atol), stuck)
    else:
        _raise_if_stuck(rtol, atol, stuck)


def _raise_if_stuck(rtol, atol, count) -> None:
    if int(count):
        raise RuntimeError(
            f"odeint.solve: {int(count)} example(s) did not reach t1 in MAX_STEPS={MAX_STEPS} "
            f"steps, with finite values: the ODE is too stiff for rtol={rtol}, atol={atol}; "
            "loosen them."
        )


def _trajectory(ts, order, t1, leaf, leaf1):
    """[S, B, ...] states at the save times ``ts`` from diffrax's [B, S + 1, ...] (the times in
    ``order``, then t1) and y1 (``leaf1``)."""
    traj = jnp.moveaxis(leaf[:, :-1], 1, 0)[jnp.argsort(order)]
    return jnp.where((ts == t1).reshape((-1,) + (1,) * leaf1.ndim), leaf1, traj)
