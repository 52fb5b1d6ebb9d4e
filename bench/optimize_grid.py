"""Offline optimisation of the ``"optimized"`` time grid (score_sde/sampling/grid_tables.py), in
the spirit of Align Your Steps (Sabour et al. 2024): step locations fitted once against an error
proxy and shipped as a table, so that at run time the grid is a few jnp ops.

The grid: fractions f_0 = 0 < f_1 < ... < f_n = 1 of the lambda span, lambda_i = lambda(T) +
f_i (lambda(eps) - lambda(T)) (``grids.fraction_grid``), parameterised as f = cumsum(softmax(z))
(monotone for any free logits z; z = 0 is the logsnr grid).

Objective, per solver, SDE family (``--sde``: the family's default SDE, ``SDE.grid_family``) and
step count n: log of the mean over the proxies k of MSE_k(f) / MSE_k(logsnr), MSE_k the mean over
512 prior draws x_T (seed 0) and over dimensions of |x_solver(eps) - x_exact(eps)|², both from
the same x_T, on the library's default span T -> eps = sde.end_time(n) (VPSDE: 1e-3 up to 15
steps, 1e-4 beyond), the exact reference ending at that same eps. Dividing by the logsnr grid's
error makes every proxy count whatever its scale; the arithmetic mean (not the geometric) keeps
a large gain on one proxy from paying for a loss on another. Minimised by Adam through the
solver (jax.grad, float64), 100 iterations from each of the logsnr, edm and uniform grids,
keeping the best iterate. Reported: the ratios on 4 fresh batches of 512 draws (seeds 1-4), as
the mean over proxies and the geometric mean.

Proxy targets (exact scores under every SDE, score_sde.analytic):
- ``mix-r30``, ``mix-r10``, ``mix-r3``, ``mix-r1``: 8 equal modes at fixed random points of 3-D
  (scaled to nearest-neighbour spacing 1), mode std 1/30, 1/10, 1/3 and 1 of that spacing;
  exact flow by a 500-step DPM-Solver-3 (singlestep, logsnr grid) reference.
- ``aniso-64d``: one Gaussian in 64-D, stds log-even over [0.01, 1] (images' spectrum), mean
  N(0, 0.3²); exact flow in closed form.
Held out (reported, never optimised on): ``heldout-3x3``, 9 modes on a 3x3 grid of spacing 1.5 in
2-D, std 0.05 (the target of tests/test_optimized_grid.py).

Heun (EDM's sampler, ``--solvers heun``) is optimised on its T -> eps part: edm.grid appends
t = 0 after time_grid's n points, a last Euler step that is the same map of x(eps) for every
grid. ``dpm_solver_3m`` is DPM-Solver++(3M); ``unipc`` UniPC at its defaults (order None: 2 up
to 10 steps, 3 beyond). dpm_solver's and unipc's tables are fitted and shipped.

Measured: grid_tables' docstring (``--evaluate``: the shipped table of the family, no fit).

    python bench/optimize_grid.py [--solvers dpm_solver unipc heun dpm_solver_3m] [--budgets 5 ...]
        [--iters 100] [--sde vp] [--transfer subvp ve] [--interpolation] [--evaluate]
        [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import math
import sys
import textwrap
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from score_sde import analytic  # noqa: E402
from score_sde import sde as sde_lib  # noqa: E402
from score_sde.sampling import dpm_solver, edm, grid_tables, grids, unipc  # noqa: E402
from score_sde.sampling.grid_fit import adam_from_starts, logits_of, to_fractions  # noqa: E402

BUDGETS = (5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50)
BASELINES = ("logsnr", "edm", "uniform")
_DEFAULTS = (sde_lib.VPSDE(), sde_lib.VPSDE(schedule="cosine"), sde_lib.SubVPSDE(), sde_lib.VESDE())
SDES = {sde.grid_family: sde for sde in _DEFAULTS}  # the family's table is fitted under this SDE
N_REFERENCE = 500  # DPM-Solver-3 steps of the mixtures' reference flow
BATCH, EVAL_BATCHES = 512, 4  # prior draws per proxy and batch; evaluation batches


# solver name -> x(eps) from x_T along ts: the library's loops at their default options, which
# are differentiable in ts (tests/test_fast_samplers.py checks d x / d ts against finite
# differences).
SOLVERS = {
    "dpm_solver": lambda sde, score_fn, x, ts: dpm_solver.integrate(None, sde, score_fn, x, ts)[0],
    "dpm_solver_3m": lambda sde, score_fn, x, ts: dpm_solver.integrate(
        None, sde, score_fn, x, ts, order=3
    )[0],
    "heun": lambda sde, score_fn, x, ts: edm.integrate(None, sde, score_fn, x, ts)[0],
    "unipc": lambda sde, score_fn, x, ts: unipc.integrate(None, sde, score_fn, x, ts)[0],
}


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class Target:
    """Proxies of one shape: Gaussian mixtures stacked on a leading axis (one per name), or
    (``diag_var`` given) one Gaussian of diagonal covariance, whose flow is closed form."""

    names: tuple[str, ...]
    dim: int
    mix: analytic.GaussianMixture | None = None
    mean: np.ndarray | None = None
    diag_var: np.ndarray | None = None

    def _gaussian_score(self, sde):
        def score(x, t):  # -C_t^-1 (x - alpha m), C_t = alpha² diag_var + sigma² I
            a, s = sde.alpha(t)[:, None], sde.marginal_std(t)[:, None]
            return -(x - a * self.mean) / (a**2 * self.diag_var + s**2)

        return score

    def solve(self, sde, run, x: jax.Array, ts: jax.Array) -> jax.Array:
        """``run(sde, score_fn, x, ts)`` on each member: x [M, B, D] -> [M, B, D]."""
        if self.mix is None:
            return run(sde, self._gaussian_score(sde), x[0], ts)[None]
        return jax.vmap(lambda mix, x: run(sde, mix.score_fn(sde), x, ts))(self.mix, x)

    def exact(self, sde, x_T: jax.Array, eps: float) -> jax.Array:
        """x(eps) on the exact probability-flow path from x_T [M, B, D] at T."""
        if self.mix is not None:
            return _reference(sde, self, x_T, eps)
        T, eps = jnp.asarray(sde.T), jnp.asarray(eps)  # x_t = a_t m + sqrt(C_t/C_T)
        a_T, s_T, a, s = sde.alpha(T), sde.marginal_std(T), sde.alpha(eps), sde.marginal_std(eps)
        scale = jnp.sqrt((a**2 * self.diag_var + s**2) / (a_T**2 * self.diag_var + s_T**2))
        return a * self.mean + scale * (x_T - a_T * self.mean)


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _reference(sde, target: Target, x_T: jax.Array, eps: float) -> jax.Array:
    """The mixtures' exact flow to ``eps``: DPM-Solver-3 (singlestep) in N_REFERENCE logsnr
    steps (to the same end as the grids it judges, not to end_time(N_REFERENCE))."""
    ts = grids.time_grid(sde, N_REFERENCE, "logsnr", t_end=eps)
    return target.solve(sde, _dpm_solver_3s, x_T, ts)


def _dpm_solver_3s(sde, score_fn, x, ts):
    return dpm_solver.integrate(None, sde, score_fn, x, ts, order=3, stepping="singlestep")[0]


def stacked(names: tuple[str, ...], mixtures: list[analytic.GaussianMixture]) -> Target:
    mix = jax.tree.map(lambda *leaves: jnp.stack(leaves), *mixtures)
    return Target(names, mixtures[0].dim, mix)


def mixture(ratio: float, modes: int = 8, dim: int = 3, seed: int = 0) -> analytic.GaussianMixture:
    """``modes`` equal modes at random points, nearest neighbours 1 apart, std 1/ratio."""
    means = np.random.RandomState(seed).randn(modes, dim)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1) + np.eye(modes) * 1e9
    return analytic.GaussianMixture.isotropic(np.ones(modes), means / gaps.min(), 1.0 / ratio)


def heldout() -> analytic.GaussianMixture:
    """The held-out target: 9 modes on a 3x3 grid of spacing 1.5, std 0.05."""
    axis = 1.5 * np.arange(-1.0, 2.0)
    means = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2)
    return analytic.GaussianMixture.isotropic(np.ones(9), means, 0.05)


RATIOS = (30, 10, 3, 1)  # mode spacing / mode std of the proxy mixtures
_rs = np.random.RandomState(1)
PROXIES = (
    stacked(tuple(f"mix-r{r}" for r in RATIOS), [mixture(r) for r in RATIOS]),
    Target(("aniso-64d",), 64, mean=0.3 * _rs.randn(64), diag_var=np.geomspace(0.01, 1, 64) ** 2),
)
HELDOUT = (stacked(("heldout-3x3",), [heldout()]),)


def names(targets: tuple[Target, ...]) -> list[str]:
    return [name for tg in targets for name in tg.names]


@dataclasses.dataclass(frozen=True)
class Problem:
    """Targets with a batch of prior draws each and their exact end points at ``eps``, under
    one SDE. Only grids of n steps with sde.end_time(n) = eps can be judged on it."""

    sde: sde_lib.SDE
    targets: tuple[Target, ...]
    x_T: tuple[jax.Array, ...]
    want: tuple[jax.Array, ...]
    eps: float

    @classmethod
    def make(cls, sde, targets: tuple[Target, ...], seed: int, eps: float) -> Problem:
        keys = jax.random.split(jax.random.PRNGKey(seed), len(targets))
        x_T = tuple(
            sde.prior_sampling(k, (len(tg.names), BATCH, tg.dim))
            for k, tg in zip(keys, targets, strict=True)
        )
        want = tuple(tg.exact(sde, x, eps) for tg, x in zip(targets, x_T, strict=True))
        return cls(sde, targets, x_T, want, eps)

    def mse(self, solver: str, ts: jax.Array) -> jax.Array:
        """Per proxy MSE [K] of ``solver`` along ``ts`` (to ``eps``) against the exact flow."""
        assert float(ts[-1]) == self.eps, (float(ts[-1]), self.eps)
        return _mse(self.sde, solver, self.targets, self.x_T, self.want, ts)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _mse(sde, solver, targets, x_T, want, ts) -> jax.Array:
    errors = [
        jnp.mean((tg.solve(sde, SOLVERS[solver], x, ts) - w) ** 2, axis=(1, 2))
        for tg, x, w in zip(targets, x_T, want, strict=True)
    ]
    return jnp.concatenate(errors)


def ends(sde, n: int) -> jax.Array:
    """The span of an n-step grid: the library's default, T -> sde.end_time(n)."""
    return jnp.asarray([sde.T, sde.end_time(n)])


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _loss_and_grad(sde, solver, targets, z, x_T, want, base):
    def loss(z):  # log of the mean over proxies of MSE / MSE(logsnr)
        ts = grids.fraction_grid(sde, to_fractions(z), ends(sde, z.shape[0]))
        return jnp.log(jnp.mean(_mse(sde, solver, targets, x_T, want, ts) / base))

    return jax.value_and_grad(loss)(z)


def optimise(problem: Problem, solver: str, n: int, iters: int, lr: float) -> np.ndarray:
    """Fractions for ``n`` steps minimising the objective (module docstring) by Adam from each
    baseline grid (``adam_from_starts``)."""
    p = problem
    base = p.mse(solver, grids.time_grid(p.sde, n, "logsnr"))
    value, start, z = adam_from_starts(
        lambda z: _loss_and_grad(p.sde, solver, p.targets, z, p.x_T, p.want, base),
        [logits_of(p.sde, grids.time_grid(p.sde, n, kind)) for kind in BASELINES],
        iters,
        lr,
    )
    print(f"  best from {BASELINES[start]}: training objective {math.exp(value):.3f}", flush=True)
    return np.asarray(to_fractions(z))


def ratios(problems: list[Problem], solver: str, f: np.ndarray) -> dict[str, np.ndarray]:
    """Per proxy MSE of the fraction grid f over each baseline grid's, pooled over problems
    (batches of draws) of one SDE."""
    sde, n = problems[0].sde, len(f) - 1
    ours = sum(p.mse(solver, grids.fraction_grid(sde, f, ends(sde, n))) for p in problems)
    return {
        b: np.asarray(ours / sum(p.mse(solver, grids.time_grid(sde, n, b)) for p in problems))
        for b in BASELINES
    }


def report(label: str, n: int, r: dict[str, np.ndarray], labels: list[str]) -> None:
    """Mean and geometric mean of the ratios over proxies, and each proxy's vs logsnr."""
    mean = {b: float(np.mean(v)) for b, v in r.items()}
    geo = {b: float(np.exp(np.mean(np.log(v)))) for b, v in r.items()}
    each = " ".join(f"{name}={v:.3f}" for name, v in zip(labels, r["logsnr"], strict=True))
    print(
        f"  {label:>8} n={n:>2}: opt/logsnr {mean['logsnr']:.3f} (geo {geo['logsnr']:.3f}),"
        f" opt/edm {mean['edm']:.3f} (geo {geo['edm']:.3f}),"
        f" opt/uniform {mean['uniform']:.3f}; vs logsnr: {each}",
        flush=True,
    )


@functools.cache
def problems(family: str, heldout: bool, seeds: tuple[int, ...], eps: float) -> list[Problem]:
    """Batches of draws (one per seed) of the proxies or the held-out target under the family's
    SDE, judged at ``eps``; cached, as VP's two end times share them across budgets."""
    return [Problem.make(SDES[family], HELDOUT if heldout else PROXIES, s, eps) for s in seeds]


def evaluation_sets(args, n: int) -> dict[str, list[Problem]]:
    """Fresh draws (seeds other than training's 0) for n steps: the proxies, the held-out
    target, and with --transfer both under the other SDEs, each at its sde.end_time(n)."""
    seeds = tuple(range(1, 1 + EVAL_BATCHES))
    out = {}
    for family in (args.sde, *args.transfer):
        eps, prefix = SDES[family].end_time(n), "" if family == args.sde else family + "-"
        out[prefix + "proxies"] = problems(family, False, seeds, eps)
        out[prefix + "heldout"] = problems(family, True, seeds, eps)
    return out


def run_solver(args, solver: str) -> dict[int, tuple[float, ...]]:
    """Optimise every budget for ``solver`` (or with --evaluate, take the shipped table of the
    SDE's family); print its ratios on every evaluation set."""
    sde = SDES[args.sde]
    table = {}
    for n in args.budgets:
        start = time.perf_counter()
        if args.evaluate:  # the library's table (interpolated off its budgets)
            f = grid_tables.fractions(solver, sde.grid_family, n)
        else:
            train = problems(args.sde, False, (0,), sde.end_time(n))[0]
            f = optimise(train, solver, n, args.iters, args.lr)
        table[n] = tuple(round(float(v), 4) for v in f)
        assert np.all(np.diff(table[n]) > 0), table[n]
        print(f"{solver} n={n} ({time.perf_counter() - start:.0f} s): {table[n]}", flush=True)
        for label, probs in evaluation_sets(args, n).items():
            r = ratios(probs, solver, np.asarray(table[n]))
            report(label, n, r, names(probs[0].targets))
    return table


def check_interpolation(args, solver: str, table: dict[int, tuple[float, ...]]) -> None:
    """Each inner budget left out of the table and interpolated from its neighbours: its error
    over logsnr's, beside the optimised fractions', on the evaluation draws of the proxies."""
    seeds, sde = tuple(range(1, 1 + EVAL_BATCHES)), SDES[args.sde]
    for n in sorted(table)[1:-1]:
        probs = problems(args.sde, False, seeds, sde.end_time(n))
        f = grid_tables.interpolate({k: v for k, v in table.items() if k != n}, n)
        r_interp = ratios(probs, solver, f)["logsnr"]
        r_opt = ratios(probs, solver, np.asarray(table[n]))["logsnr"]
        mean_i, mean_o = np.mean(r_interp), np.mean(r_opt)
        print(f"  left out n={n}: interpolated/logsnr {mean_i:.3f}, fit {mean_o:.3f}", flush=True)


def literal(tables: dict[str, dict[int, tuple[float, ...]]], family: str) -> str:
    """The tables as entries of grid_tables.TABLES[solver], one budget per line (wrapped),
    headed by a provenance comment (this command and today's date)."""
    command = " ".join(["python", *sys.argv]).replace(sys.argv[0], "bench/optimize_grid.py")
    lines = []
    for solver, table in tables.items():
        lines.append(f'    "{solver}": {{  # ...other families')
        lines.append(f'        "{family}": {{  # {command} ({datetime.date.today()})')
        for n, f in sorted(table.items()):
            body = ", ".join(
                f"{v:.4f}".rstrip("0").rstrip(".") + ("" if v % 1 else ".0") for v in f
            )
            lines += textwrap.wrap(f"{n}: ({body}),", 88, initial_indent=" " * 12,
                                   subsequent_indent=" " * 16)  # fmt: skip
        lines.append("        },")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solvers", nargs="+", default=["dpm_solver"], choices=sorted(SOLVERS))
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--sde", default="vp", choices=sorted(SDES))
    parser.add_argument("--transfer", nargs="*", default=[], choices=sorted(SDES))
    parser.add_argument("--interpolation", action="store_true", help="leave-one-out check")
    parser.add_argument("--evaluate", action="store_true", help="the shipped table, no fit")
    parser.add_argument("--out", default=None, help="write the tables here as a Python literal")
    args = parser.parse_args()
    tables = {}
    for solver in args.solvers:
        tables[solver] = run_solver(args, solver)
        if args.interpolation:
            check_interpolation(args, solver, tables[solver])
    text = literal(tables, args.sde)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
