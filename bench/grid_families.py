"""The default time grid of dpm_solver and unipc per SDE family: ``time_grid="optimized"``
against ``"logsnr"`` under the default SDE of each family that has a table
(``grid_tables.TABLES``), on bench/targets.py's four mixtures, none of which any table was
fitted on. DPM-Solver++(2M), (3M) and UniPC-3 with data and noise prediction, at 5, 10 and 20
NFE (n_steps = NFE - 1, plus the denoising step: ``denoise=True``, as when the table was
measured, before ``sampling.FEW_STEPS``); 2000 samples, seeds 1-3 after a compiling
call, scored as bench/samplers.py scores (sliced W2 and within-mode sliced W2 over their noise
floors). Printed: a line per run, then the geometric means over the targets.

    python bench/grid_families.py [--families vp ve] [--budgets 5 10 20] [--targets 2d ...]
"""

from __future__ import annotations

import argparse
import collections
import math
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import samplers as bench  # noqa: E402

from score_sde import sde as sde_lib  # noqa: E402

FAMILIES = {
    sde.grid_family: sde
    for sde in (
        sde_lib.VPSDE(), sde_lib.VPSDE(schedule="cosine"), sde_lib.SubVPSDE(), sde_lib.VESDE()
    )
}  # fmt: skip
CONFIGS = {  # label: (method, options)
    "dpm++ 2M": ("dpm_solver", {}),
    "dpm++ 3M": ("dpm_solver", dict(order=3)),
    "unipc-3 noise": ("unipc", dict(order=3, prediction="noise")),
    "unipc-3 data": ("unipc", dict(order=3, prediction="data")),
}
GRIDS = ("logsnr", "optimized")
SAMPLES, SEEDS = 2000, 3


def compare(
    family: str, target_names, budgets, configs: dict, variants: dict, make=bench.sampler
) -> list[tuple]:
    """(family, target, NFE, label, {variant: (SW / floor, within / floor)}) per run of each
    ``configs`` label -> (method, options) with each ``variants`` name -> (budget -> options),
    sampled by ``make(target, samples, method, options, sde)``."""
    rows = []
    for name in target_names:
        target = bench.Target.build(name, bench.targets_lib.mixtures()[name], SAMPLES)
        for budget in budgets:
            for label, (method, options) in configs.items():
                scores = {}
                for variant, extra in variants.items():
                    run_options = dict(options, **extra(budget))
                    sample = make(target, SAMPLES, method, run_options, FAMILIES[family])
                    r = bench.evaluate(target, sample, SEEDS, label)
                    assert r.nfe == budget, (label, run_options, r.nfe)
                    scores[variant] = (r.sw_ratio, r.within)
                rows.append((family, name, budget, label, scores))
                cells = " | ".join(
                    f"{k}: SW {a:.2f}, within {w:.2f}" for k, (a, w) in scores.items()
                )
                print(f"{family} {name} NFE {budget} {label}: {cells}", flush=True)
        jax.clear_caches()
    return rows


def geometric_means(rows: list[tuple]) -> dict[tuple, tuple[list, dict]]:
    """(family, label, NFE) -> (its runs' (target, scores), {(variant, 0 SW / 1 within): gm})."""
    groups = collections.defaultdict(list)
    for family, name, budget, label, scores in rows:
        groups[(family, label, budget)].append((name, scores))
    out = {}
    for key, runs in groups.items():
        variants = runs[0][1]
        gm = {
            (v, i): math.exp(np.mean([math.log(s[v][i]) for _, s in runs]))
            for v in variants for i in (0, 1)
        }  # fmt: skip
        out[key] = runs, gm
    return out


def print_means(rows: list[tuple], variants: dict) -> None:
    """A table of the geometric means over the targets: SW, then within, of each variant."""
    names = list(variants)
    cols = [f"gm {m} {v}" for m in ("SW", "within") for v in names]
    print("\n| family | method | NFE | " + " | ".join(cols) + " |")
    print("|---|---|---:|" + "---:|" * len(cols))
    for (family, label, budget), (_, gm) in geometric_means(rows).items():
        cells = [gm[v, i] for i in (0, 1) for v in names]
        print(f"| {family} | {label} | {budget} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


VARIANTS = {  # the n_steps of a budget b, then the denoising step (as when the table was measured)
    kind: lambda b, k=kind: dict(n_steps=b - 1, time_grid=k, denoise=True) for kind in GRIDS
}


def summary(rows: list[tuple]) -> None:
    """Geometric means over the targets, and the targets where "optimized" is >10% worse."""
    print(
        "\n| family | solver | NFE | gm SW logsnr | gm SW optimized | gm within logsnr |"
        " gm within optimized | optimized within >1.1x worse on |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for (family, label, budget), (runs, gm) in geometric_means(rows).items():
        worse = [
            f"{name} {s['optimized'][1] / s['logsnr'][1]:.2f}x"
            for name, s in runs if s["optimized"][1] > 1.1 * s["logsnr"][1]
        ]  # fmt: skip
        cells = [gm["logsnr", 0], gm["optimized", 0], gm["logsnr", 1], gm["optimized", 1]]
        print(
            f"| {family} | {label} | {budget} | "
            + " | ".join(f"{c:.2f}" for c in cells)
            + f" | {', '.join(worse) or '-'} |"
        )


def study_parser(description: str, budgets: list[int]) -> argparse.ArgumentParser:
    """--families, --budgets and --targets, the options of every study run through ``study``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--budgets", nargs="+", type=int, default=budgets)
    names = list(bench.FULL["targets"])
    parser.add_argument("--targets", nargs="+", default=names, choices=names)
    return parser


def study(args, configs: dict, variants: dict, make=bench.sampler) -> list[tuple]:
    """``compare`` over the families, targets and budgets of ``args``, with a heading line."""
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {SAMPLES}, {SEEDS} seeds")
    return [
        row
        for f in args.families
        for row in compare(f, args.targets, args.budgets, configs, variants, make)
    ]


def main(argv=None) -> None:
    args = study_parser(__doc__.splitlines()[0], [5, 10, 20]).parse_args(argv)
    summary(study(args, CONFIGS, VARIANTS))


if __name__ == "__main__":
    main()
