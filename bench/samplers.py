"""Every sampler of ``sampling.METHODS`` on Gaussian-mixture targets with exact scores: quality
by number of score evaluations (NFE), wall time, compile time, and diffusers' schedulers on the
same targets in the same run (when torch and diffusers import).

Targets (bench/targets.py), under VPSDE() (beta 0.1..20, the chain of diffusers' DDPM betas):
the 2-D mixture of 3 modes and the 16-D mixture of 4 of bench/diffusers_baseline.py, a sharp
2-D 3x3 grid (mode std 1/30 of the spacing) and a 64-D mixture of 4 modes with rotated
covariances of condition number 100. Quality, each over its noise floor (the mean over
independent exact sets of the same size against the same reference, so exact samplers land at
~1): sliced W2 to exact samples, the within-mode sliced W2 (after subtracting each sample's
nearest mode mean), and the total variation of the sampled mode weights (hard assignment).

Each method's settings are picked per NFE budget (``fixed_budget``): the step count whose NFE
is nearest the budget (the fewer on a tie); the tables show the NFE each run really used. Rows
"unipc fit_grid" and "unipc fit_schedule" (``FITTED``, at 5, 8 and 10 NFE) sample along a grid
fitted to the target's own score first (``sampling.fit_grid`` / ``fit_schedule``; the fit's
time is printed): a fit per model, not a default.

    python bench/samplers.py [--quick]     (or: python -m bench.samplers)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import jax
import numpy as np
from jax.tree_util import Partial

from score_sde import analytic, sampling
from score_sde import sde as sde_lib
from score_sde.sampling import dpm_solver


def sibling(name: str):
    """bench/<name>.py as a module, however this script runs (as a file, with -m, imported)."""
    path = Path(__file__).with_name(f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


targets_lib = sibling("targets")
SDE = sde_lib.VPSDE()
BUDGETS = (5, 8, 10, 15, 20, 50, 100)
Target = targets_lib.Target


def _denoised(n: int) -> int:
    """1 for the denoising step that ddim, dpm_solver and unipc take after more than
    ``sampling.FEW_STEPS`` steps (at their default ``denoise=None``), else 0."""
    return int(n > sampling.FEW_STEPS)


def _singlestep(order: int):
    return lambda n: int(dpm_solver.step_orders(n, order, "singlestep", True).sum()) + _denoised(n)


def _odd(n: int) -> int:
    return 2 * n - 1


def _ode(n: int) -> int:
    return n + _denoised(n)


def _next(n: int) -> int:
    return n + 1


# (label, method, options, NFE at n_steps = n). sample() ends a grid that stops at eps with a
# denoising step (one NFE): always for pc, euler_maruyama and ancestral, whose n points take
# n - 1 steps; for ddim, dpm_solver and unipc after more than 15 steps (``_ode``); heun's grid
# ends at the data, without it.
LADDER = [
    ("euler_maruyama", "euler_maruyama", {}, int),
    ("ancestral", "ancestral", {}, int),
    ("pc rd+ald r=.16", "pc", dict(corrector="ald"), _odd),  # predictor + corrector per step
    ("pc rd+langevin r=.16", "pc", dict(corrector="langevin"), _odd),
    ("ddim", "ddim", {}, _ode),  # on the logSNR grid, its default
    ("ddim, uniform t", "ddim", dict(time_grid="uniform"), _ode),
    ("dpm++ 2M", "dpm_solver", {}, _ode),  # on the optimized grid under VPSDE, its default
    ("dpm++ 2M logsnr", "dpm_solver", dict(time_grid="logsnr"), _ode),
    ("dpm++ 2M denoise", "dpm_solver", dict(denoise=True), _next),  # the denoising step always
    ("dpm++ 3M", "dpm_solver", dict(order=3), _ode),
    ("dpm++ 2S", "dpm_solver", dict(stepping="singlestep"), _singlestep(2)),
    ("dpm++ 3S", "dpm_solver", dict(order=3, stepping="singlestep"), _singlestep(3)),
    ("heun", "heun", {}, _odd),  # logSNR grid, then a last Euler step to t = 0
    ("heun, edm rho=7", "heun", dict(time_grid="edm"), _odd),
    ("heun, uniform t", "heun", dict(time_grid="uniform"), _odd),
    ("unipc-2 bh2", "unipc", dict(order=2), _ode),  # data prediction, unipc's default grid
    # (its own table up to 10 steps, dpm_solver's beyond); up to 10 steps its default order
    ("unipc-3 bh2", "unipc", dict(order=3), _ode),  # unipc's default order beyond 10 steps
    ("unipc-3 bh2 logsnr", "unipc", dict(order=3, time_grid="logsnr"), _ode),
    ("unipc-3 bh2 denoise", "unipc", dict(order=3, denoise=True), _next),
    (
        "unipc-3 bh2 noise logsnr",
        "unipc",
        dict(order=3, prediction="noise", time_grid="logsnr"),
        _ode,
    ),
]
DEFAULTS = [  # the cases (run on 2d-sharp at 19, 49 and 99 NFE)
    ("pc (defaults: ald)", "pc", {}, _odd),
    ("pc langevin", "pc", dict(corrector="langevin"), _odd),
    ("dpm_solver (defaults)", "dpm_solver", {}, _ode),
    ("dpm_solver denoise=False", "dpm_solver", dict(denoise=False), int),
    ("dpm_solver eps=1e-3", "dpm_solver", dict(eps=1e-3), _ode),
    ("dpm_solver eps=1e-3 denoise=False", "dpm_solver", dict(eps=1e-3, denoise=False), int),
]


def steps_for(budget: int, nfe) -> int:
    """The n_steps >= 2 whose ``nfe(n_steps)`` is nearest ``budget``, the fewer on a tie."""
    return min(range(2, budget + 2), key=lambda n: (abs(nfe(n) - budget), nfe(n)))


def fixed_budget(budget: int, ladder=LADDER) -> list[tuple[str, str, dict]]:
    """(label, method, options) with NFE as close to ``budget`` as each method allows."""
    return [
        (label, method, dict(options, n_steps=steps_for(budget, nfe)))
        for label, method, options, nfe in ladder
    ]


ADAPTIVE = [  # (label, method, options): report the NFE they reach
    *[(f"ode tol={tol:g}", "ode", dict(rtol=tol, atol=tol)) for tol in (1e-2, 1e-3, 1e-4)],
    ("dpm adaptive (paper tol)", "dpm_solver_adaptive", {}),
    ("dpm adaptive tol=1e-2", "dpm_solver_adaptive", dict(rtol=1e-2, atol=1e-2)),
    ("dpm adaptive tol=1e-3", "dpm_solver_adaptive", dict(rtol=1e-3, atol=1e-3)),
]


def _fit_grid(*args, **kwargs) -> tuple[jax.Array, None]:
    """``sampling.fit_grid`` in ``fit_schedule``'s shape: (ts, no shifts)."""
    return sampling.fit_grid(*args, **kwargs), None


# (budget, label, fit): unipc at its defaults along a grid fitted to each target's model, on
# FIT_DRAWS prior draws of key 0 (the scored ones are keys 1..seeds): a fit per model, not a
# default. fit_schedule (the evaluations shifted too) below 8 NFE, where the shifts gain.
FITTED = [
    (5, "unipc fit_schedule", sampling.fit_schedule),
    (8, "unipc fit_grid", _fit_grid),
    (10, "unipc fit_grid", _fit_grid),
]
FIT_DRAWS = 1024
DEFAULTS_NFE = (19, 49, 99)
FULL = dict(
    budgets=BUDGETS, targets=("2d", "16d", "2d-sharp", "64d-aniso"), samples=2000, seeds=5,
    adaptive=ADAPTIVE, defaults=DEFAULTS_NFE, dims=(2, 16), fit_iters=150,
)  # fmt: skip
QUICK = dict(
    budgets=(5, 10), targets=("2d-sharp",), samples=500, seeds=1, adaptive=ADAPTIVE[::3],
    defaults=DEFAULTS_NFE[:1], dims=(2,), fit_iters=30,
)  # fmt: skip


@dataclasses.dataclass
class Row:
    target: str
    source: str  # "ours" or "diffusers"
    label: str
    nfe: int
    sw_ratio: float
    within: float  # within-mode sliced W2 / its floor
    mode_tv: float
    ms: float  # wall time of one batch


def evaluate(target: Target, sample, seeds: int, label: str) -> Row:
    """``sample(key) -> (x, nfe)`` compiled once (key 0), then run with ``seeds`` keys: mean
    quality, median time."""
    _, nfe = jax.block_until_ready(sample(jax.random.PRNGKey(0)))  # compiles
    scores, seconds = [], []
    for seed in range(1, seeds + 1):
        start = time.perf_counter()
        x, _ = jax.block_until_ready(sample(jax.random.PRNGKey(seed)))
        seconds.append(time.perf_counter() - start)
        scores.append(target.score(x))
    ratio, within, tv = np.mean(scores, axis=0)
    ms = 1e3 * statistics.median(seconds)
    return Row(target.name, "ours", label, int(nfe), ratio, within, tv, ms)


def sampler(target: Target, n: int, method: str, options: dict, sde=SDE):
    """``key -> (samples, nfe)`` of ``method`` on ``target`` with its exact score under ``sde``."""
    score_fn = Partial(target.mixture.score_fn(sde))
    shape = (n, target.mixture.dim)
    return functools.partial(
        sampling.sample, sde=sde, score_fn=score_fn, shape=shape, method=method, **options
    )


def along(target: Target, n: int, method: str, ts: jax.Array, shifts=None, **options):
    """``key -> (samples, nfe)`` of ``method`` along the grid ``ts`` from fresh prior draws, the
    model seen through ``sampling.shifted_score`` with ``shifts``."""
    shape, score_fn = (n, target.mixture.dim), Partial(target.mixture.score_fn(SDE))
    if shifts is not None:
        score_fn = sampling.shifted_score(SDE, score_fn, ts, shifts)
    return jax.jit(
        lambda key: sampling.solve(
            key, SDE, score_fn, SDE.prior_sampling(key, shape), ts, method, **options
        )
    )


def run_fitted(target: Target, n: int, budgets, seeds: int, iters: int) -> list[Row]:
    """The ``FITTED`` rows of ``budgets``, each fit's time and end time printed."""
    rows, score_fn = [], Partial(target.mixture.score_fn(SDE))
    for budget, label, fit in (f for f in FITTED if f[0] in budgets):
        start = time.perf_counter()
        draws = (FIT_DRAWS, target.mixture.dim)
        ts, shifts = jax.block_until_ready(
            fit(jax.random.PRNGKey(0), SDE, score_fn, draws, budget, "unipc", iters=iters)
        )
        seconds, end = time.perf_counter() - start, float(ts[-1])
        print(f"{target.name}: {label} for {budget} NFE in {seconds:.0f} s, ends at {end:.2g}")
        rows.append(evaluate(target, along(target, n, "unipc", ts, shifts), seeds, label))
    return rows


def run_ours(target: Target, n: int, budgets, seeds: int, adaptive=ADAPTIVE) -> list[Row]:
    runs = [run for b in budgets for run in fixed_budget(b)] + adaptive
    return [
        evaluate(target, sampler(target, n, method, options), seeds, label)
        for label, method, options in runs
    ]


def run_diffusers(baseline, target: Target, n: int, budgets, seeds: int) -> list[Row]:
    rows = []
    for name in baseline.SCHEDULERS:
        for budget in budgets:
            steps = (budget + 1) // 2 if name == "heun" else budget  # Heun: 2 steps - 1 NFE
            outs = [baseline.run(name, target.mixture, n, steps, seed) for seed in range(seeds)]
            ratio, within, tv = np.mean([target.score(out["samples"]) for out in outs], axis=0)
            ms = 1e3 * statistics.median(out["seconds"] for out in outs)
            rows.append(Row(target.name, "diffusers", name, outs[0]["nfe"], ratio, within, tv, ms))
    return rows


def run_defaults(target: Target, n: int, seeds: int, levels=DEFAULTS_NFE) -> list[Row]:
    """``DEFAULTS`` at each NFE of ``levels``."""
    runs = [run for level in levels for run in fixed_budget(level, DEFAULTS)]
    return [
        evaluate(target, sampler(target, n, method, options), seeds, label)
        for label, method, options in runs
    ]


def compile_seconds(n: int) -> list[tuple[str, int, float]]:
    """Lower + compile time of pc and euler_maruyama at 100 and 1000 steps (2-D target)."""
    score_fn = Partial(targets_lib.mixtures()["2d"].score_fn(SDE))
    out = []
    for method in ("pc", "euler_maruyama"):
        for n_steps in (100, 1000):
            fn = jax.jit(
                lambda key, m=method, k=n_steps: sampling.sample(
                    key, SDE, score_fn, (n, 2), m, n_steps=k
                )
            )
            start = time.perf_counter()
            fn.lower(jax.random.PRNGKey(0)).compile()
            out.append((method, n_steps, time.perf_counter() - start))
    return out


PAIRS = [("ddim", "ddim"), ("dpm_solver++2m", "dpm_solver"), ("heun", "heun")]  # theirs, ours


def _median_seconds(fn, repeats: int = 9) -> tuple[float, int]:
    """(median wall seconds of ``fn()`` after a warm-up call, its nfe)."""
    _, nfe = jax.block_until_ready(fn())
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), int(nfe)


def per_step_ratio(baseline, n: int, dim: int, steps: int = 50) -> list[tuple]:
    """Seconds per score evaluation, diffusers' loop vs ours, with a near-free model: N(0, I)
    data, whose score is -x at every t (eps = sqrt(1 - alphabar) x). Diffusers' time is its
    loop only (scheduler + model, without the prior draw); ours, the same, is the extra time
    of a call with five times the steps, (T(5s) - T(s)) / (nfe(5s) - nfe(s)) (with twice, the
    difference was within the timing noise at 2-D). Also returned: our whole call (prior draw
    and dispatch included) over its nfe, at ``steps``."""

    class GaussianEps(baseline.MixtureEps):
        def __call__(self, x, t):
            self.calls += 1
            return (1 - self.alphabar(t)).sqrt().to(x.dtype) * x

    score_fn = Partial(lambda x, t: -x)
    standard = analytic.GaussianMixture.isotropic([1.0], np.zeros((1, dim)), 1.0)
    out = []
    for theirs, method in PAIRS:
        with mock.patch.object(baseline, "MixtureEps", GaussianEps):
            their_steps = (steps + 1) // 2 if theirs == "heun" else steps
            their_s = statistics.median(
                baseline.run(theirs, standard, n, their_steps)["seconds_per_step"] for _ in range(3)
            )
        timed = []
        for n_steps in (steps, 5 * steps):
            n_steps = (n_steps + 1) // 2 if method == "heun" else n_steps
            key, shape = jax.random.PRNGKey(0), (n, dim)
            call = functools.partial(sampling.sample, key, SDE, score_fn, shape, method)
            timed.append(_median_seconds(functools.partial(call, n_steps=n_steps)))
        (t1, nfe1), (t2, nfe2) = timed
        out.append((theirs, their_s, (t2 - t1) / (nfe2 - nfe1), t1 / nfe1))
    return out


def load_baseline():
    """bench/diffusers_baseline.py as a module, or None if torch or diffusers is missing."""
    if any(importlib.util.find_spec(name) is None for name in ("torch", "diffusers")):
        return None
    return sibling("diffusers_baseline")


def print_table(rows: list[Row], target: Target, seeds: int, title: str = "") -> None:
    se = math.sqrt(seeds)
    print(
        f"\n### {title or target.name}: mean over {seeds} seed(s); an exact sampler scores "
        f"SW / floor 1.00 +- {target.floor_sd / se:.2f}, within / floor 1.00 +- "
        f"{target.within_sd / se:.2f} and mode TV {target.exact_tv:.3f}\n"
    )
    print("| source | method | NFE | SW / floor | within / floor | mode TV | ms / batch |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r.source != "ours", r.label, r.nfe)):
        quality = [f"{r.sw_ratio:.2f}", f"{r.within:.2f}", f"{r.mode_tv:.3f}"]
        print(
            "| " + " | ".join(map(str, [r.source, r.label, r.nfe, *quality])) + f" | {r.ms:.1f} |"
        )


def best(rows: list[Row], source: str, budget: int, metric: str = "sw_ratio") -> Row | None:
    """The row of ``source`` with NFE <= ``budget`` and the lowest ``metric``."""
    ok = [r for r in rows if r.source == source and r.nfe <= budget]
    ok = [r for r in ok if not math.isnan(getattr(r, metric))]
    return min(ok, key=lambda r: getattr(r, metric)) if ok else None


FLOOR_GOALS = {10: 1.5, 5: 3.0}  # NFE budget: how far above the floor our best may be
METRICS = [
    ("sw_ratio", "SW / floor", "floor_sd"),
    ("within", "within-mode SW / floor", "within_sd"),
]


def goal_cells(ours: Row | None, theirs: Row | None, metric: str, noise: float, budget: int):
    """(our best, diffusers' best, ours <= theirs, floor goal) for one budget. The gap
    between two means is noise when within ``noise`` (2 standard errors of a difference)."""
    shown = [f"{r.label} @{r.nfe} ({getattr(r, metric):.2f})" if r else "-" for r in (ours, theirs)]
    as_good = "-"
    if ours and theirs:
        gap = getattr(ours, metric) - getattr(theirs, metric)
        as_good = "NO" if gap > noise else "yes, better" if gap < -noise else "yes, within noise"
    goal = FLOOR_GOALS.get(budget)
    floor = "-"
    if goal and ours:
        floor = f"{'met' if getattr(ours, metric) <= goal else 'NOT met'} (goal {goal:g}x)"
    return [*shown, as_good, floor]


def print_goals(rows: list[Row], built: list[Target], budgets, seeds: int, ratios) -> None:
    """The issue's goals: our best at least as good as diffusers' best at every budget; within
    1.5x of the floor at 10 NFE and 3x at 5 NFE; per-step time 10x below diffusers' loop."""
    for metric, name, sd in METRICS:
        print(f"\n### Goals, {name}\n")
        print("| target | NFE budget | our best | diffusers' best | ours as good | floor goal |")
        print("|---|---:|---|---|---|---|")
        for target in built:
            target_rows = [r for r in rows if r.target == target.name]
            noise = 2 * getattr(target, sd) * math.sqrt(2 / seeds)
            for budget in budgets:
                ours, theirs = (best(target_rows, s, budget, metric) for s in ("ours", "diffusers"))
                cells = goal_cells(ours, theirs, metric, noise, budget)
                print(f"| {target.name} | {budget} | " + " | ".join(cells) + " |")
    timed = [their_s / our_s for *_, their_s, our_s in ratios if our_s > 0]
    if timed:  # a loop time <= 0 is timing noise (a busy machine), not a speed
        verdict = "met" if min(timed) >= 10 else "NOT met"
        print(f"\nPer-step wall time, diffusers / ours >= {min(timed):.0f}x: {verdict} (goal 10x)")
    if len(timed) < len(ratios):
        print(f"({len(ratios) - len(timed)} pair(s) timed at <= 0 ms/step, noise: left out)")


def print_speed(baseline, n: int, dims=(2, 16)) -> list[tuple]:
    """The compile-time and per-step tables; returns the per-step ratios."""
    print("\n### Compile time (lower + compile, 2-D target)\n")
    print("| method | n_steps | seconds |")
    print("|---|---:|---:|")
    for method, n_steps, seconds in compile_seconds(n):
        print(f"| {method} | {n_steps} | {seconds:.2f} |")
    if not baseline:
        return []
    print(f"\n### Seconds per score evaluation, N(0, I) data (score -x), batch {n}\n")
    print("Loop time per score evaluation (see per_step_ratio); the last column is our whole")
    print("call (prior draw, about 0.4 ms at 2000 x 16, and dispatch included) over its nfe.\n")
    print("| dim | diffusers scheduler | diffusers ms/step | ours ms/step | ratio | ours, call |")
    print("|---:|---|---:|---:|---:|---:|")
    ratios = []
    for dim in dims:
        for theirs, their_s, our_s, our_call in per_step_ratio(baseline, n, dim):
            ratios.append((dim, theirs, their_s, our_s))
            cells = f"{1e3 * their_s:.3f} | {1e3 * our_s:.4f} | {their_s / our_s:.0f}"
            print(f"| {dim} | {theirs} | {cells} | {1e3 * our_call:.4f} |")
    return ratios


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: see QUICK")
    parser.add_argument("--samples", type=int, default=None, help="batch (default 2000)")
    args = parser.parse_args(argv)
    setting = QUICK if args.quick else FULL
    n, budgets, seeds = args.samples or setting["samples"], setting["budgets"], setting["seeds"]
    covered = {method for _, method, _ in fixed_budget(10) + ADAPTIVE}
    assert covered == set(sampling.METHODS), sorted(set(sampling.METHODS) - covered)
    baseline = load_baseline()
    found = "no (torch or diffusers not importable)"
    if baseline:
        import torch

        torch.set_num_threads(1)  # on a busy 2-core CPU, 2 threads made its model 70x slower
        found = f"torch {torch.__version__}, 1 thread"
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {n}; diffusers: {found}")
    rows, built = [], []
    for name in setting["targets"]:  # each table as soon as it is done
        built.append(Target.build(name, targets_lib.mixtures()[name], n))
        target_rows = run_ours(built[-1], n, budgets, seeds, setting["adaptive"])
        target_rows += run_fitted(built[-1], n, budgets, seeds, setting["fit_iters"])
        if baseline:
            target_rows += run_diffusers(baseline, built[-1], n, budgets, seeds)
        print_table(target_rows, built[-1], seeds)
        rows += target_rows
        jax.clear_caches()  # about 400 compiled samplers in one process crashed LLVM (mmaps)
    if any(math.isnan(r.sw_ratio) for r in rows):
        print("\nnan: the sampler returned non-finite samples.")
    sharp = built[[t.name for t in built].index("2d-sharp")]
    title = "2d-sharp, pc and dpm_solver at their defaults"
    print_table(run_defaults(sharp, n, seeds, setting["defaults"]), sharp, seeds, title)
    print_goals(rows, built, budgets, seeds, print_speed(baseline, n, setting["dims"]))


if __name__ == "__main__":
    main()
