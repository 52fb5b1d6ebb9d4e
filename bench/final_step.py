"""What the last score evaluation of a fixed NFE budget is best spent on, for the fixed-step ODE
solvers (ddim, dpm_solver, unipc at their defaults): the denoising step E[x_0 | x_eps] after
NFE - 1 steps (``denoise=True``), or one more step, NFE steps without it (``denoise=False``).
Under the default SDE of each family, on bench/targets.py's four mixtures, at 5, 10, 15 and 20
NFE; 2000 samples, seeds 1-3 after a compiling call, scored as bench/samplers.py scores (sliced
W2 and within-mode sliced W2 over their noise floors). Printed: a line per run, then the
geometric means over the targets. ``sampling.FEW_STEPS`` (the default ``denoise=None`` takes
the denoising step only after more than 15 steps) is chosen on this table.

    python bench/final_step.py [--families vp ve] [--budgets 5 10] [--methods ddim ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import grid_families  # noqa: E402
import samplers as bench  # noqa: E402

METHODS = ("ddim", "dpm_solver", "unipc")
VARIANTS = {  # at a budget of b evaluations
    "denoise": lambda b: dict(n_steps=b - 1, denoise=True),
    "step": lambda b: dict(n_steps=b, denoise=False),
}


def summary(rows: list[tuple]) -> None:
    """Geometric means over the targets of each variant."""
    print(
        "\n| family | method | NFE | gm SW denoise | gm SW step | gm within denoise |"
        " gm within step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for (family, method, budget), (_, gm) in grid_families.geometric_means(rows).items():
        cells = [gm[v, i] for i in (0, 1) for v in VARIANTS]
        print(f"| {family} | {method} | {budget} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    families = list(grid_families.FAMILIES)
    parser.add_argument("--families", nargs="+", default=families, choices=families)
    parser.add_argument("--budgets", nargs="+", type=int, default=[5, 10, 15, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    names = list(bench.FULL["targets"])
    parser.add_argument("--targets", nargs="+", default=names, choices=names)
    args = parser.parse_args(argv)
    samples, seeds = grid_families.SAMPLES, grid_families.SEEDS
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, batch {samples}, {seeds} seeds")
    configs = {method: (method, {}) for method in args.methods}
    rows = [
        row
        for f in args.families
        for row in grid_families.compare(f, args.targets, args.budgets, configs, VARIANTS)
    ]
    summary(rows)


if __name__ == "__main__":
    main()
