"""Each fixed-step sampler's default options, chosen by measurement at 20 NFE.

For ddim, dpm_solver, unipc, heun, pc, euler_maruyama and ancestral, a few candidate option
sets (``CANDIDATES``, the method's current default first) each run at the step count whose NFE
is nearest 20 without going above it (bench/samplers.py's ``steps_for`` and NFE rules), on
bench/samplers.py's four Gaussian-mixture targets under VPSDE() (2d, 16d, 2d-sharp, 64d-aniso;
exact scores), 2000 samples, 3 seeds. Reported per target, mean over seeds: sliced W2 and the
within-mode sliced W2, each over its noise floor (exact samplers score ~1; bench/targets.py);
then the geometric mean of each over the targets. One table per method, sorted by the
geometric mean of within / floor, then a summary: is the current default the best candidate,
within the noise of the floors (``gm_noise``)?

    python bench/defaults.py [--quick] [--seeds 3] [--methods ddim,unipc]

``--quick``: 2d-sharp only, 500 samples, 1 seed, the first 2 candidates of each method (about
a minute). The full run's tables go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import samplers  # noqa: E402

targets_lib = samplers.targets_lib
Row, Target = samplers.Row, samplers.Target
odd_nfe, ode_nfe, singlestep_nfe = samplers._odd, samplers._ode, samplers._singlestep

BUDGET = 20
TARGETS = ("2d", "16d", "2d-sharp", "64d-aniso")
FULL = dict(targets=TARGETS, samples=2000, seeds=3, per_method=None)
QUICK = dict(targets=("2d-sharp",), samples=500, seeds=1, per_method=2)


def combinations(**axes: tuple) -> list[dict]:
    """Every combination of ``axes`` (option: values) as a dict, the first values first."""
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def variants(default: dict, *changes: dict) -> dict[str, dict]:
    """{"default": default, label: default | change, ...}: each label is where the change
    differs from ``default`` ("k=v, ..."); changes that change nothing are left out."""
    out = {"default": dict(default)}
    for change in changes:
        change = {k: v for k, v in change.items() if default.get(k) != v}
        if change:
            out[", ".join(f"{k}={v}" for k, v in change.items())] = default | change
    return out


# method: {label: options}, the current default first, spelled out along every option the
# other candidates change (tests/test_bench_defaults.py checks it against the signatures).
CANDIDATES: dict[str, dict[str, dict]] = {
    "ddim": variants(
        dict(time_grid="logsnr", eta=0.0),
        dict(time_grid="uniform"), dict(time_grid="edm"), dict(eta=1.0),
    ),
    "dpm_solver": variants(
        dict(
            order=2, stepping="multistep", time_grid=None, prediction="data",
            lower_order_final=True,
        ),
        *combinations(
            order=(2, 3), stepping=("multistep", "singlestep"), time_grid=(None, "logsnr", "edm")
        ),
        *combinations(order=(2, 3), time_grid=(None, "logsnr", "edm"), prediction=("noise",)),
        dict(order=3, lower_order_final=False),
    ),
    "unipc": variants(  # time_grid=None: dpm_solver's default grid (optimized under VPSDE);
        # order=None: UniPC-3 at 20 NFE (UniPC-2 up to 10 steps)
        dict(order=None, variant="bh2", time_grid=None, prediction="data"),
        *combinations(order=(None, 2), variant=("bh2", "bh1"), time_grid=(None, "logsnr")),
        dict(time_grid="edm"), dict(prediction="noise"),
        dict(prediction="noise", time_grid="logsnr"),
    ),
    "heun": variants(
        dict(time_grid="logsnr", rho=7.0),
        dict(time_grid="edm"), dict(time_grid="edm", rho=5.0), dict(time_grid="uniform"),
    ),
    "pc": variants(
        dict(corrector="ald", snr=0.16, n_corrector_steps=1),
        dict(snr=0.1), dict(corrector="none"),
    ),
    "euler_maruyama": variants({}),
    "ancestral": variants({}),
}  # fmt: skip


def nfe_rule(method: str, options: dict) -> Callable[[int], int]:
    """NFE of ``sampling.sample(method, n_steps=n, **options)`` as a function of n (bench/
    samplers.py's rules; tests/test_bench_defaults.py checks them against ``sample``)."""
    if method == "pc":
        moves = options.get("n_corrector_steps", 1) if options.get("corrector") != "none" else 0
        return lambda n: (n - 1) * (1 + moves) + 1  # predictor + correctors per step, denoise
    if method == "dpm_solver" and options.get("stepping") == "singlestep":
        assert options.get("lower_order_final", True), "singlestep_nfe assumes it"
        return singlestep_nfe(options.get("order", 2))
    if method in ("euler_maruyama", "ancestral"):
        return int  # n grid points: n - 1 steps, then the denoising step
    return odd_nfe if method == "heun" else ode_nfe  # heun: 2 per step, a last Euler one


def steps_at_most(budget: int, nfe: Callable[[int], int]) -> int:
    """``samplers.steps_for`` (the nearest NFE, the fewer on a tie), then fewer steps while
    that NFE is above ``budget``."""
    n_steps = samplers.steps_for(budget, nfe)
    while nfe(n_steps) > budget and n_steps > 2:
        n_steps -= 1
    return n_steps


def run_options(method: str, options: dict, budget: int = BUDGET) -> dict:
    """``options`` plus the n_steps of ``budget``."""
    return dict(options, n_steps=steps_at_most(budget, nfe_rule(method, options)))


def select(methods: list[str] | None, per_method: int | None) -> dict[str, dict[str, dict]]:
    """``CANDIDATES`` of ``methods`` (all when None), the first ``per_method`` of each."""
    unknown = sorted(set(methods or ()) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(CANDIDATES)}")
    return {
        method: dict(list(options.items())[:per_method])
        for method, options in CANDIDATES.items()
        if methods is None or method in methods
    }


def run_target(target: Target, n: int, seeds: int, candidates: dict) -> dict[tuple, Row]:
    """(method, label): the row of each candidate on ``target``."""
    out = {}
    for method, by_label in candidates.items():
        for label, options in by_label.items():
            sample = samplers.sampler(target, n, method, run_options(method, options))
            out[method, label] = samplers.evaluate(target, sample, seeds, label)
    return out


@dataclasses.dataclass
class Result:
    """One candidate over every target."""

    method: str
    label: str
    options: dict
    rows: list[Row]

    @property
    def nfe(self) -> str:
        return "/".join(str(v) for v in dict.fromkeys(r.nfe for r in self.rows))

    def gmean(self, metric: str) -> float:
        """The geometric mean of ``metric`` over the targets (nan if any is nan)."""
        return float(np.exp(np.mean(np.log([getattr(r, metric) for r in self.rows]))))


def sort_key(result: Result) -> tuple[bool, float]:
    within = result.gmean("within")
    return math.isnan(within), within


def gm_noise(built: list[Target], seeds: int, sd: str) -> float:
    """The noise of a log-ratio of two candidates' geometric means: 2 standard errors of a
    difference of two means over ``seeds`` (as bench/samplers.py's goals), each target's
    spread ``sd`` (floor_sd or within_sd) taken as relative, its value at the floor."""
    spread = math.sqrt(sum(getattr(t, sd) ** 2 for t in built)) / len(built)
    return 2 * math.sqrt(2 / seeds) * spread


def verdict(default: Result, best: Result, noise: float) -> str:
    """Is ``default`` the best candidate by within / floor, within ``noise`` (log scale)?"""
    if best is default:
        return "yes (best)"
    gap = math.log(default.gmean("within") / best.gmean("within"))
    if math.isnan(gap):
        return "NO (default nan)"
    return f"yes (within noise: {gap:.3f} <= {noise:.3f})" if gap <= noise else "NO"


def fmt(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "(no options)"


def print_targets(built: list[Target], seeds: int) -> None:
    se = math.sqrt(seeds)
    print(f"\n### Noise: an exact sampler's scores, mean over {seeds} seed(s)\n")
    print("| target | SW / floor | within / floor |")
    print("|---|---:|---:|")
    for t in built:
        print(f"| {t.name} | 1.00 +- {t.floor_sd / se:.2f} | 1.00 +- {t.within_sd / se:.2f} |")


def print_method(method: str, results: list[Result], built: list[Target], seeds: int) -> None:
    """One method's candidates, sorted by the geometric mean of within / floor."""
    print(f"\n### {method}: {BUDGET} NFE budget, mean over {seeds} seed(s), sorted by gm within\n")
    heads = [f"{t.name} {m}" for t in built for m in ("SW", "within")]
    print("| candidate | NFE | " + " | ".join(heads) + " | gm SW | gm within |")
    print("|---|---:|" + "---:|" * (len(heads) + 2))
    for r in sorted(results, key=sort_key):
        label = f"default ({fmt(r.options)})" if r.label == "default" and r.options else r.label
        cells = [f"{v:.2f}" for row in r.rows for v in (row.sw_ratio, row.within)]
        cells += [f"{r.gmean('sw_ratio'):.2f}", f"{r.gmean('within'):.2f}"]
        print(f"| {label} | {r.nfe} | " + " | ".join(cells) + " |")


def print_summary(by_method: dict[str, list[Result]], built: list[Target], seeds: int) -> None:
    noise = gm_noise(built, seeds, "within_sd")
    print(
        f"\n### Summary: the current default against the best candidate by gm within / floor"
        f" ({BUDGET} NFE; noise {noise:.3f} in log gm within, see gm_noise)\n"
    )
    print(
        "| method | current default | best measured | default gm SW | default gm within "
        "| best gm SW | best gm within | default is best (within noise) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    for method, results in by_method.items():
        default, best = results[0], min(results, key=sort_key)
        cells = [method, fmt(default.options), best.label]
        for r in (default, best):
            cells += [f"{r.gmean('sw_ratio'):.2f}", f"{r.gmean('within'):.2f}"]
        print("| " + " | ".join(cells + [verdict(default, best, noise)]) + " |")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: see QUICK")
    parser.add_argument("--seeds", type=int, default=None, help="seeds (default 3, quick 1)")
    parser.add_argument("--samples", type=int, default=None, help="batch (default 2000)")
    parser.add_argument(
        "--methods", type=lambda s: s.split(","), default=None, help="comma-separated subset"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    setting = QUICK if args.quick else FULL
    n, seeds = args.samples or setting["samples"], args.seeds or setting["seeds"]
    candidates = select(args.methods, setting["per_method"])
    count = sum(map(len, candidates.values()))
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {n}, {seeds} seed(s)")
    print(f"{count} candidates at <= {BUDGET} NFE on {', '.join(setting['targets'])}")
    rows: dict[tuple, list[Row]] = {}
    built = []
    for name in setting["targets"]:
        start = time.perf_counter()
        built.append(Target.build(name, targets_lib.mixtures()[name], n))
        for key, row in run_target(built[-1], n, seeds, candidates).items():
            rows.setdefault(key, []).append(row)
        jax.clear_caches()  # bench/samplers.py: many compiled samplers crashed LLVM (mmaps)
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    if any(math.isnan(r.sw_ratio) for rs in rows.values() for r in rs):
        print("\nnan: a sampler returned non-finite samples.")
    by_method = {
        method: [Result(method, label, opts, rows[method, label]) for label, opts in c.items()]
        for method, c in candidates.items()
    }
    print_targets(built, seeds)
    for method, results in by_method.items():
        print_method(method, results, built, seeds)
    print_summary(by_method, built, seeds)


if __name__ == "__main__":
    main()
