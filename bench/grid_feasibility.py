"""How far a time grid alone can take a fixed-step ODE solver at a small budget on the bench
targets: for each, the grid's step locations and its end time fitted on that target itself, an
upper bound for any grid the library could ship, beside the same fit on
bench/optimize_grid.py's proxies (a grid that could be shipped, fitted once and scored on every
target), the logsnr grid and the method's defaults. The study behind "How far a grid alone goes
at 5 and 10 NFE" in docs/benchmarks.md.

Fitted, as in bench/optimize_grid.py: fractions of the lambda span (f = cumsum(softmax(z))) and
here also log eps, the end time, by Adam through the solver (150 iterations from each of the
logsnr and optimized grids at eps 1e-3 and 1e-4, the best iterate kept), on 1024 prior draws
(key 0) whose exact probability-flow end points come from a 500-step DPM-Solver-3 to t = 1e-5.
Objectives, the first two on the residuals r(x) = x minus its nearest mode mean, the others on
e = |x_solver - x_exact|² per draw (no mode means: what a model offers):
- ``pathwise``: mean |r(x_solver) - r(x_exact)|² over the draws;
- ``within``: sliced W2 between r(x_solver) and r(x_exact), the bench's within-mode measure;
- ``geometric``: the geometric mean of e; ``trimmed``: the mean of e's smallest 90%;
- ``cauchy``: exp of the mean of log(1 + e / c²), c² the median of e on the logsnr grid (the
  objective of ``sampling.fit_grid``, score_sde/sampling/grid_fit.py).
``--fit-on model`` calls ``sampling.fit_grid`` itself (its own draws, its flow to
``sde.end_time()``; ``--fit-seed``, ``--fit-draws``, ``--fit-iters`` and ``--order`` set its
key, draws, iterations and the method's order, that row only; ``--shifts`` fits with
``sampling.fit_schedule`` instead, the grid and the model's logSNR shifts, and samples through
``sampling.shifted_score``).
On the proxies (4 mixtures in 3-D, mode std 1/30 to 1 of their spacing), the mean over them of
the objective over the logsnr grid's.

Scored as bench/samplers.py scores (2000 samples, seeds 1-5 after a compiling call, over the
target's noise floors), with the solver's samples at the grid's end time (no denoising step);
also exact samples carried to t = eps (alpha(eps) x_0 + sigma(eps) noise), the error of the end
time alone.

    python bench/grid_feasibility.py [--targets 2d-sharp ...] [--budget 10]
        [--method dpm_solver] [--objectives pathwise within] [--fit-on target proxies]
        [--fit-seed 0] [--fit-draws 1024] [--fit-iters 150] [--order N] [--shifts]
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import optimize_grid  # noqa: E402
import samplers as bench  # noqa: E402

from score_sde import metrics, sampling  # noqa: E402
from score_sde.sampling import grid_fit, grids  # noqa: E402

jax.config.update("jax_enable_x64", False)  # optimize_grid fits in float64; the bench runs in 32
SDE = bench.SDE
DRAWS, ITERS, LR, REFERENCE_END = 1024, 150, 0.05, 1e-5
SAMPLES, SEEDS = bench.FULL["samples"], bench.FULL["seeds"]
STARTS = (("logsnr", 1e-3), ("logsnr", 1e-4), ("optimized", 1e-3), ("optimized", 1e-4))
LOOPS = {m: optimize_grid.SOLVERS[m] for m in ("dpm_solver", "unipc")}  # at default options


def grid_of(params: tuple[jax.Array, jax.Array]) -> jax.Array:
    return grid_fit.grid_of(SDE, params)


def params_of(ts: jax.Array) -> tuple[jax.Array, jax.Array]:
    return grid_fit.params_of(SDE, ts)


def problem(mixture, key: int):
    """(mixture, prior draws, their exact end points at REFERENCE_END)."""
    x_T = SDE.prior_sampling(jax.random.PRNGKey(key), (DRAWS, mixture.dim))
    ts = grids.time_grid(SDE, optimize_grid.N_REFERENCE, "logsnr", t_end=REFERENCE_END)
    exact = jax.jit(lambda x: optimize_grid._dpm_solver_3s(SDE, mixture.score_fn(SDE), x, ts))
    return mixture, x_T, exact(x_T)


def objective(kind: str, method: str, problems, ts: jax.Array) -> jax.Array:
    """[K]: the objective ``kind`` of ``method`` along ``ts`` on each problem."""
    out = []
    for mixture, x_T, exact in problems:
        score = mixture.score_fn(SDE)
        x = LOOPS[method](SDE, score, x_T, ts)
        r, r_exact = (bench.targets_lib.nearest_mode_residual(mixture.means, y) for y in (x, exact))
        e = jnp.sum((x - exact) ** 2, -1)  # per draw
        if kind == "pathwise":
            out.append(jnp.mean((r - r_exact) ** 2))
        elif kind == "within":
            out.append(metrics.sliced_wasserstein(jax.random.PRNGKey(7), r, r_exact, 64) ** 2)
        elif kind == "geometric":
            out.append(jnp.exp(jnp.mean(jnp.log(e + 1e-20))))
        elif kind == "trimmed":
            out.append(jnp.mean(jnp.sort(e)[: int(0.9 * e.shape[0])]))
        else:  # cauchy: grid_fit's objective, c² the median of e on the logsnr grid
            logsnr = grids.time_grid(SDE, ts.shape[0] - 1, "logsnr")
            c2 = jnp.median(jnp.sum((LOOPS[method](SDE, score, x_T, logsnr) - exact) ** 2, -1))
            out.append(jnp.exp(jnp.mean(jnp.log1p(e / jax.lax.stop_gradient(c2)))))
    return jnp.stack(out)


def fit(kind: str, method: str, problems, budget: int) -> tuple[jax.Array, float]:
    """The grid (and end time) minimising the log of the mean objective over logsnr's."""
    base = objective(kind, method, problems, grids.time_grid(SDE, budget, "logsnr"))
    loss = jax.jit(jax.value_and_grad(
        lambda p: jnp.log(jnp.mean(objective(kind, method, problems, grid_of(p)) / base))
    ))  # fmt: skip
    starts = [
        params_of(grids.time_grid(SDE, budget, start, t_end=eps, solver="dpm_solver"))
        for start, eps in STARTS
    ]
    value, _, params = grid_fit.adam_from_starts(loss, starts, ITERS, LR)
    return grid_of(params), math.exp(value)


def score_grid(target, method: str, ts: jax.Array, label: str, shifts=None, **options) -> bench.Row:
    """The solver along ``ts`` from fresh prior draws (the model seen through
    ``sampling.shifted_score`` with ``shifts``), scored as the bench scores."""
    sample = bench.along(target, SAMPLES, method, ts, shifts, **options)
    return bench.evaluate(target, sample, SEEDS, label)


def score_exact(target, eps: float) -> tuple[float, float, float]:
    """Exact samples carried to t = eps: the end time's own error."""
    a, s = (float(f(jnp.asarray(eps))) for f in (SDE.alpha, SDE.marginal_std))
    scores = []
    for seed in range(1, SEEDS + 1):
        k0, k1 = jax.random.split(jax.random.PRNGKey(seed))
        x0 = target.mixture.sample(k0, SAMPLES)
        scores.append(target.score(a * x0 + s * jax.random.normal(k1, x0.shape)))
    return tuple(np.mean(scores, axis=0))


@functools.cache
def proxies() -> tuple:
    return tuple(problem(optimize_grid.mixture(r), i) for i, r in enumerate(optimize_grid.RATIOS))


@functools.cache
def proxy_fit(kind: str, method: str, budget: int) -> tuple[jax.Array, float]:
    """``fit`` on the proxies, once for every target it is scored on."""
    return fit(kind, method, proxies(), budget)


def print_row(target: str, label: str, nfe: int, eps: float, scores) -> None:
    sw, within, tv = scores
    print(f"| {target} | {label} | {nfe} | {eps:.2g} | {sw:.2f} | {within:.2f} | {tv:.3f} |")


def run_target(name: str, args) -> None:
    """The rows of one target: exact samples at the end times, then each grid."""
    target = bench.Target.build(name, bench.targets_lib.mixtures()[name], SAMPLES)
    n, method = args.budget, args.method
    for eps in (REFERENCE_END, 1e-3, 1e-4):
        print_row(name, "exact samples at t = end time", 0, eps, score_exact(target, eps))
    grid_rows = [("logsnr", grids.time_grid(SDE, n, "logsnr"), {})]
    if "model" in args.fit_on:  # the library's fit: the model's own flow, no mode means
        score_fn = Partial(target.mixture.score_fn(SDE))
        key, shape = jax.random.PRNGKey(args.fit_seed), (args.fit_draws, target.mixture.dim)
        options = {} if args.order is None else dict(order=args.order)
        fit = sampling.fit_schedule if args.shifts else sampling.fit_grid
        start = time.perf_counter()
        out = jax.block_until_ready(
            fit(key, SDE, score_fn, shape, n, method, iters=args.fit_iters, **options)
        )
        ts, shifts = out if args.shifts else (out, None)
        label = f"fitted to the model{' with shifts' if args.shifts else ''} (seed {args.fit_seed}"
        label += f", {args.fit_draws} draws, {args.fit_iters} iters"
        label += f", order {args.order}" if options else ""
        label += f"; {time.perf_counter() - start:.0f} s)"
        grid_rows.append((label, ts, dict(options, shifts=shifts)))
    for fit_on in (f for f in args.fit_on if f != "model"):
        for kind in args.objectives:
            if fit_on == "target":
                ts, value = fit(kind, method, (problem(target.mixture, 0),), n)
            else:
                ts, value = proxy_fit(kind, method, n)
            grid_rows.append((f"fitted on {fit_on}, {kind} ({value:.3f}x logsnr's)", ts, {}))
    r = bench.evaluate(target, bench.sampler(target, SAMPLES, method, dict(n_steps=n)), SEEDS, "")
    print_row(
        name, f"{method}'s defaults", r.nfe, SDE.end_time(n), (r.sw_ratio, r.within, r.mode_tv)
    )
    for label, ts, options in grid_rows:
        r = score_grid(target, method, ts, label, **options)
        print_row(name, label, r.nfe, float(ts[-1]), (r.sw_ratio, r.within, r.mode_tv))
        if label != "logsnr":
            print(f"  lambda: {[round(float(v), 2) for v in SDE.half_log_snr(ts)]}", flush=True)
        if options.get("shifts") is not None:
            print(f"  shifts: {[round(float(v), 2) for v in options['shifts']]}", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = list(bench.FULL["targets"])
    parser.add_argument("--targets", nargs="+", default=["2d-sharp"], choices=names)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--method", default="dpm_solver", choices=sorted(LOOPS))
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=["pathwise", "within"],
        choices=["pathwise", "within", "geometric", "trimmed", "cauchy"],
    )
    parser.add_argument(
        "--fit-on", nargs="+", default=["target", "proxies"], choices=["target", "proxies", "model"]
    )
    parser.add_argument("--fit-draws", type=int, default=DRAWS, help="fit_grid's draws (model)")
    parser.add_argument("--fit-iters", type=int, default=150, help="fit_grid's iters (model)")
    parser.add_argument("--fit-seed", type=int, default=0, help="fit_grid's key (model)")
    parser.add_argument("--order", type=int, default=None, help="the method's order (model)")
    parser.add_argument("--shifts", action="store_true", help="fit_schedule (model)")
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}; {args.method}, {args.budget} steps, no denoising step")
    print("\n| target | grid | NFE | end time | SW / floor | within / floor | mode TV |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.targets:
        run_target(name, args)


if __name__ == "__main__":
    main()
