"""One entry point for every sampler:
``sample(rng, sde, score_fn, shape, method=..., **options) -> (samples, nfe)``.

Every method is a solver of one shape, ``solve(rng, sde, score_fn, x, ts, method=...,
**options) -> (x, nfe)``, run from x at ts[0] along the time grid ts (the adaptive ones from
ts[0] to ts[-1]); ``sample`` draws the prior and builds the method's grid once, then solves.
``trajectory`` also returns the states at chosen times; ``fit_grid`` fits a time grid and end
time to a model, for ``solve`` (``grid_fit``), and ``fit_schedule`` with them a shift of the
model's evaluations, for ``solve`` on ``shifted_score``. Each method is one ``Method`` of
``METHODS``: its loop (``integrate``), its grid, and the options each of them takes.

``sample`` and ``trajectory`` end with a denoising step (``denoise=True``): a grid that stops
at the end time eps > 0 leaves noise of std sigma(eps) (about sqrt(beta_min eps) for VP), which
inflates narrow modes, so the samples are E[x_0 | x_eps] (Tweedie), one more evaluation. Grids
that end at the data (``heun``'s, ``ddim``'s with ``discrete=True``) need none. The denoised
sample is narrower than the data by sigma(eps)² per mode, so the ODE solvers' default end time
is ``sde.end_time(n_steps)`` (VP: 1e-3 up to 15 steps, 1e-4 beyond). ``denoise=None``, the
default, is each method's choice (``Method.denoise_after``): the fixed-step ODE solvers (ddim,
dpm_solver, unipc) take the step only after more than ``FEW_STEPS`` steps, since on a grid of
up to 15 steps that evaluation does more as one more step (DPM-Solver's reference code, too,
defaults to ``denoise_to_zero=False``); the others, and every method with ``thresholding``,
always take it. ``solve`` returns x at the caller's ts[-1].

``score_fn`` may be a ``jax.tree_util.Partial`` over model parameters: new parameters then reuse
the compiled sampler. Any other callable is treated as static (a new one recompiles).

Arguments are checked before sampling (``score_sde.checks``): ``shape``, the options' values
(``eps`` in (0, T), ``rtol`` and ``atol`` > 0) and, once per compilation, that ``score_fn``
returns the shape of x. ``on_nonfinite`` ("warn", "raise" or "ignore"), an option of the front
doors ``sample``, ``trajectory`` and ``solve`` (not of any method), reports samples that came
out NaN or inf: a ``RuntimeWarning``, or ``checks.NonFiniteError`` (a ``FloatingPointError``).
Under ``jax.jit`` the report runs in a ``jax.debug.callback``, where "raise" surfaces as a
``JaxRuntimeError`` carrying the message; a program with a callback is not written to JAX's
persistent compilation cache ("ignore" adds none).

``thresholding`` (None, "static" or "dynamic") and ``threshold_percentile`` (default 0.995),
options of every method (``sample``, ``trajectory`` and ``solve``), threshold the Tweedie
estimate of x0 that the score implies at every evaluation, the final denoising step included
(Imagen's static and dynamic thresholding, for data in [-1, 1]; see ``score_sde.thresholding``):
``score_fn`` is wrapped once by ``thresholding.thresholded`` before the solver runs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import numpy as np
from jax.tree_util import Partial

from score_sde import checks, parameterization, thresholding
from score_sde.sampling import (
    ddim,
    dpm_solver,
    dpm_solver_adaptive,
    edm,
    grid_fit,
    grids,
    ode,
    pc,
    unipc,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Method:
    """``integrate(rng, sde, score_fn, x, ts, *, <options>, save_at=()) -> (x, nfe,
    trajectory)`` and ``grid(sde, *, <grid_options>) -> ts``, the grid from T that ``sample``
    uses. An option named in both lists goes to both. ``ends_at_data``: the grid needs no
    denoising step; ``denoise_after``: with ``denoise=None`` a grid of more steps gets one."""

    integrate: Callable
    grid: Callable
    grid_options: tuple[str, ...]
    options: tuple[str, ...]
    ends_at_data: Callable[[dict], bool] = lambda grid_options: False
    denoise_after: int = 0  # denoise=None denoises a grid of more steps than this


# Up to this many steps, a fixed-step ODE solver spends its last evaluation on one more step
# rather than on the denoising step: better at 5 and 10 NFE under every SDE family; at 20 a tie,
# or under VE the denoising step better (bench/final_step.py, docs/benchmarks.md).
FEW_STEPS = 15


def _discrete_chain(grid_options: dict) -> bool:
    return grid_options.get("discrete", False)


_PC_GRID = ("n_steps", "eps")
METHODS = {
    "euler_maruyama": Method(pc.euler_maruyama, pc.grid, _PC_GRID, ()),
    "pc": Method(
        pc.integrate,
        pc.grid,
        _PC_GRID,
        ("predictor", "corrector", "snr", "n_corrector_steps", "probability_flow"),
    ),
    "ancestral": Method(pc.ancestral, pc.grid, _PC_GRID, ()),
    "ode": Method(ode.integrate, ode.grid, ("eps",), ("rtol", "atol", "solver")),
    "ddim": Method(
        ddim.integrate,
        ddim.grid,
        ("n_steps", "time_grid", "eps", "discrete"),
        ("eta", "discrete"),
        ends_at_data=_discrete_chain,
        denoise_after=FEW_STEPS,
    ),
    "dpm_solver": Method(
        dpm_solver.integrate,
        dpm_solver.grid,
        ("n_steps", "time_grid", "eps"),
        ("order", "stepping", "prediction", "lower_order_final"),
        denoise_after=FEW_STEPS,
    ),
    "dpm_solver_adaptive": Method(
        dpm_solver_adaptive.integrate,
        dpm_solver_adaptive.grid,
        ("eps",),
        ("order", "rtol", "atol", "h_init", "theta", "prediction", "max_steps"),
    ),
    "unipc": Method(
        unipc.integrate,
        unipc.grid,
        ("n_steps", "time_grid", "eps"),
        ("order", "prediction", "variant", "unic", "lower_order_final"),
        denoise_after=FEW_STEPS,
    ),
    "heun": Method(
        edm.integrate,
        edm.grid,
        ("n_steps", "rho", "time_grid", "eps"),
        ("S_churn", "S_tmin", "S_tmax", "S_noise"),
        ends_at_data=lambda grid_options: True,  # EDM's grid ends at sigma = 0
    ),
}


def _method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; valid methods: {sorted(METHODS)}.")
    return METHODS[method]


THRESHOLD_OPTIONS = ("thresholding", "threshold_percentile")  # every method's, ``solve``'s too


def method_options(method: str) -> tuple[str, ...]:
    """The options ``sample`` accepts for ``method``: its grid's, its solver's, ``denoise`` and
    ``THRESHOLD_OPTIONS``."""
    m = _method(method)
    return tuple(dict.fromkeys(m.grid_options + m.options + ("denoise",) + THRESHOLD_OPTIONS))


def _static(method: str, options: dict, valid: tuple[str, ...]) -> tuple:
    """``options`` as a sorted tuple (static under jit), after checking names and hashability."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(
            f"method={method!r} has no option(s) {unknown}; its options: {list(valid)}."
        )
    for name, value in options.items():
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"option {name}={value!r} must be hashable (options are static under jit): "
                "pass a tuple instead of a list or array."
            ) from None
    return tuple(sorted(options.items()))


def _split(method: str, sde, options: dict) -> tuple[tuple, tuple, bool | None]:
    """(grid options, solver options, denoise: None for the method's choice) of ``sample``'s
    options, the options static, after checking their values."""
    m = _method(method)
    _static(method, options, method_options(method))
    checks.options(options, sde.T)
    denoise = options.get("denoise")
    if denoise is not None and not isinstance(denoise, bool):
        raise TypeError(f"denoise={denoise!r}: use True, False or None (the method's choice).")
    if denoise is None and options.get("thresholding") is not None:
        denoise = True  # the thresholded x0 is what lies in [-1, 1]
    grid = {k: v for k, v in options.items() if k in m.grid_options}
    solver = {k: v for k, v in options.items() if k in m.options}
    return tuple(sorted(grid.items())), tuple(sorted(solver.items())), denoise


def _partial(score_fn) -> Partial:
    return score_fn if isinstance(score_fn, Partial) else Partial(score_fn)


def _threshold(sde, score_fn, options: dict) -> Partial:
    """``score_fn`` as a Partial, wrapped by ``thresholding.thresholded`` when
    ``options["thresholding"]`` is "static" or "dynamic" (after checking both options)."""
    mode = options.get("thresholding")
    percentile = options.get("threshold_percentile", thresholding.DEFAULT_PERCENTILE)
    thresholding.check(mode, percentile)
    if mode is None:
        return _partial(score_fn)
    return thresholding.thresholded(sde, score_fn, mode, percentile)


@functools.partial(jax.jit, static_argnames=("method", "options"))
def _solve(rng, sde, score_fn, x, ts, *, method, options):
    checks.score_output(score_fn, x)  # at trace time: once per compilation
    x, nfe, _ = METHODS[method].integrate(rng, sde, score_fn, x, ts, **dict(options))
    return x, nfe


def solve(
    rng, sde, score_fn, x, ts, method: str = "dpm_solver", *, on_nonfinite: str = "warn",
    **options,
):  # fmt: skip
    """Run ``method``'s solver from x at ts[0] along the grid ``ts`` (either direction; the
    adaptive methods from ts[0] to ts[-1]); returns (x, nfe). Options are the solver's own
    (``METHODS[method].options``) and ``thresholding`` / ``threshold_percentile``; the grid is
    the caller's. ``on_nonfinite``: see the module docstring."""
    checks.on_nonfinite(on_nonfinite)
    m = _method(method)
    _static(method, options, m.options + THRESHOLD_OPTIONS)
    checks.options(options, sde.T)
    score_fn = _threshold(sde, score_fn, options)
    static = tuple(sorted((k, v) for k, v in options.items() if k in m.options))
    x, nfe = _solve(rng, sde, score_fn, x, ts, method=method, options=static)
    checks.report_nonfinite(x, on_nonfinite, "results", _hint(method))
    return x, nfe


def _hint(method: str) -> str:
    """What else makes ``method`` return NaN, for ``checks.report_nonfinite``."""
    if method == "dpm_solver_adaptive":
        return " (or an example did not finish within max_steps attempts)"
    return ""


@functools.partial(
    jax.jit, static_argnames=("method", "shape", "grid", "options", "save_at", "denoise")
)
def _run(rng, sde, score_fn, *, method, shape, grid, options, save_at, denoise):
    m = METHODS[method]
    ts = m.grid(sde, **dict(grid))
    prior_key, solve_key = jax.random.split(rng)
    x = sde.prior_sampling(prior_key, shape)
    checks.score_output(score_fn, x)  # at trace time: once per compilation
    x, nfe, traj = m.integrate(solve_key, sde, score_fn, x, ts, save_at=save_at, **dict(options))
    if denoise is None:
        denoise = ts.shape[0] - 1 > m.denoise_after
    if denoise and not m.ends_at_data(dict(grid)):
        x, nfe = parameterization.denoise_at(sde, score_fn, x, ts[-1]), nfe + 1
    return x, nfe, traj


def sample(rng, sde, score_fn, shape, method: str = "pc", *, on_nonfinite: str = "warn", **options):
    """Draw ``shape[0]`` samples with ``method``; returns (samples, nfe).

    Sample i depends only on (rng, i): a batch of 8 reproduces the first 8 of a batch of 64.
    ``shape`` is (batch, *data dims), all >= 1; ``on_nonfinite`` ("warn", "raise", "ignore")
    reports samples that are NaN or inf; ``denoise`` True ends a grid that stops at eps with
    E[x_0 | x_eps], one more evaluation, and None (the default) leaves it to the method: ddim,
    dpm_solver and unipc denoise after more than ``FEW_STEPS`` steps, the others, and all with
    ``thresholding``, always (see the module docstring).

    ``thresholding`` (default None: off) thresholds the model's x0 prediction at every score
    evaluation, for every method (Imagen, Saharia et al. 2022), on data scaled to [-1, 1]:
    ``"static"`` clips it to [-1, 1]; ``"dynamic"`` clips each example to [-s, s] and divides by
    s = max(1, the ``threshold_percentile`` quantile of its |x0|) (default 0.995, in (0, 1];
    read by "dynamic" only). The samples, E[x_0 | x_eps] of the thresholded score, then lie in
    [-1, 1] up to rounding. See ``score_sde.thresholding``.
    """
    if "save_at" in options:
        raise TypeError("save_at: call sampling.trajectory for the states at those times.")
    shape = checks.batch_shape(shape)
    checks.on_nonfinite(on_nonfinite)
    grid, solver, denoise = _split(method, sde, options)
    x, nfe, _ = _run(
        rng, sde, _threshold(sde, score_fn, options), method=method, shape=shape, grid=grid,
        options=solver, save_at=(), denoise=denoise,
    )  # fmt: skip
    checks.report_nonfinite(x, on_nonfinite, "samples", _hint(method))
    return x, nfe


def trajectory(
    rng, sde, score_fn, shape, method: str = "pc", *, save_at: tuple, on_nonfinite: str = "warn",
    **options,
):  # fmt: skip
    """``sample`` that also records the states at the times ``save_at`` (a tuple, any order,
    inside the method's grid; the data, where a grid ends at it, is t = 0); returns (samples,
    nfe, trajectory) with trajectory [len(save_at), *shape]. Recording changes neither the
    samples' steps nor nfe. ``on_nonfinite`` reports non-finite samples, as for ``sample``."""
    shape = checks.batch_shape(shape)
    checks.on_nonfinite(on_nonfinite)
    grid, solver, denoise = _split(method, sde, options)
    ts = np.asarray(METHODS[method].grid(sde, **dict(grid)))
    t_a, t_b = float(ts[0]), max(float(ts[-1]), 0.0)
    slack = 4 * np.finfo(ts.dtype).eps * max(abs(t_a), abs(t_b))
    grids.check_save_at(save_at, round(t_a, 12), round(t_b, 12), slack)
    x, nfe, traj = _run(
        rng, sde, _threshold(sde, score_fn, options), method=method, shape=shape, grid=grid,
        options=solver, save_at=tuple(float(t) for t in save_at), denoise=denoise,
    )  # fmt: skip
    checks.report_nonfinite(x, on_nonfinite, "samples", _hint(method))
    return x, nfe, traj


# The methods ``fit_grid`` fits, and the options it passes on: fixed-step ODE loops whose result
# is differentiable in their grid (ddim without eta or the discrete chain, which leave the flow).
FIT_OPTIONS = {
    "ddim": (),
    "dpm_solver": METHODS["dpm_solver"].options,
    "unipc": METHODS["unipc"].options,
}


def fit_grid(
    rng, sde, score_fn, shape, n_steps: int, method: str = "unipc", *, iters: int = 150,
    lr: float = 0.05, reference_steps: int = 500, **options,
):  # fmt: skip
    """A grid of ``n_steps`` steps (and its end time, no later than ``sde.end_time(n_steps)``)
    fitted to ``score_fn`` for ``method`` (``grid_fit``): pass it to ``solve(..., method=method,
    **options)``. ``shape`` is (draws, *data dims), the prior draws fitted on; their flow comes
    once from DPM-Solver-3 in ``reference_steps`` logsnr steps to ``sde.end_time()``. Cost: that,
    then ``iters`` gradient passes through the solver from each of 2-4 starting grids
    (``grid_fit.starts``). On sharp modes fits from other draws can land in other basins of the
    objective, some worse (docs/benchmarks.md, "Grids fitted to the model")."""
    params = _fit(rng, sde, score_fn, shape, n_steps, method, iters, lr, reference_steps,
                  options, shift=False)  # fmt: skip
    return grid_fit.grid_of(sde, params)


def fit_schedule(
    rng, sde, score_fn, shape, n_steps: int, method: str = "unipc", *, iters: int = 150,
    lr: float = 0.05, reference_steps: int = 500, **options,
):  # fmt: skip
    """``fit_grid``, then ``iters`` more passes fitting with the grid a logSNR shift per grid
    point of the model's evaluations (decoupled times, ``grid_fit``); returns (ts, shifts):
    ``solve(rng, sde, shifted_score(sde, score_fn, ts, shifts), x, ts, method, **options)``."""
    params = _fit(rng, sde, score_fn, shape, n_steps, method, iters, lr, reference_steps,
                  options, shift=True)  # fmt: skip
    return grid_fit.grid_of(sde, params[:2]), params[2]


shifted_score = grid_fit.shifted_score


def _fit(rng, sde, score_fn, shape, n_steps, method, iters, lr, reference_steps, options, shift):
    """``grid_fit.fit``'s params for ``fit_grid`` and ``fit_schedule``, after their checks."""
    if method not in FIT_OPTIONS:
        raise ValueError(
            f"method={method!r}: fit_grid and fit_schedule fit one of {sorted(FIT_OPTIONS)}."
        )
    for name, value in (
        ("n_steps", n_steps),
        ("iters", iters),
        ("reference_steps", reference_steps),
    ):
        checks.count(name, value)
    shape = checks.batch_shape(shape)
    options = dict(_static(method, options, FIT_OPTIONS[method]))
    score_fn = _partial(score_fn)
    x_T = sde.prior_sampling(rng, shape)
    fine = grids.time_grid(sde, reference_steps, "logsnr", t_end=sde.end_time())
    x_flow, _ = _solve(rng, sde, score_fn, x_T, fine, method="dpm_solver",
                       options=(("order", 3), ("stepping", "singlestep")))  # fmt: skip

    def run(score_fn, x, ts):
        return METHODS[method].integrate(rng, sde, score_fn, x, ts, **options)[0]

    starts = grid_fit.starts(sde, method, n_steps)
    return grid_fit.fit(sde, run, score_fn, x_T, x_flow, starts, iters, lr, shift)[0]
