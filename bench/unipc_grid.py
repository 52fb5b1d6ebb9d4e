"""unipc's own optimized grid: UniPC at its defaults (order None, bh2, data prediction, the
denoising step only after more than 15 steps) on three grids, under the default SDE of each
family: the optimized table fitted for unipc (``grid_tables.TABLES["unipc"]``, by
``python bench/optimize_grid.py --solvers unipc``), the one fitted for dpm_solver (unipc's
grid until 2026-12-05) and the logsnr grid. On bench/targets.py's four mixtures, none of which
any table was fitted on, at 5, 10 and 20 NFE; 2000 samples, seeds 1-3 after a compiling call,
scored as bench/samplers.py scores (sliced W2 and within-mode sliced W2 over their noise
floors). Printed: a line per run, then the geometric means over the targets.
``grid_tables.DEFAULT_FAMILIES["unipc"]`` is chosen on this table.

    python bench/unipc_grid.py [--families vp ve] [--budgets 5 10] [--targets 2d ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
from jax.tree_util import Partial

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import grid_families  # noqa: E402

from score_sde import parameterization, sampling  # noqa: E402
from score_sde.sampling import grids  # noqa: E402

VARIANTS = {  # grid at a budget of b evaluations: (time_grid, whose table)
    "unipc's table": lambda b: dict(budget=b, time_grid="optimized", table="unipc"),
    "dpm_solver's table": lambda b: dict(budget=b, time_grid="optimized", table="dpm_solver"),
    "logsnr": lambda b: dict(budget=b, time_grid="logsnr", table=None),
}


def make(target, samples: int, method: str, options: dict, sde):
    """``key -> (x, nfe)``: ``method`` at its defaults along the grid ``options`` name, with the
    denoising step (and one step fewer) after more than ``sampling.FEW_STEPS`` steps."""
    budget, score_fn = options["budget"], Partial(target.mixture.score_fn(sde))
    denoise = budget - 1 > sampling.FEW_STEPS  # as sample's: budget - 1 steps, then the step
    ts = grids.time_grid(
        sde, budget - denoise, options["time_grid"], solver=options["table"]
    )  # the default end time of the grid's step count, as sampling.sample's

    @jax.jit
    def sample(key):
        x_T = sde.prior_sampling(key, (samples, target.mixture.dim))
        x, nfe = sampling.solve(key, sde, score_fn, x_T, ts, method)
        if denoise:
            x, nfe = parameterization.denoise_at(sde, score_fn, x, ts[-1]), nfe + 1
        return x, nfe

    return sample


def main(argv=None) -> None:
    args = grid_families.study_parser(__doc__.splitlines()[0], [5, 10, 20]).parse_args(argv)
    rows = grid_families.study(args, {"unipc": ("unipc", {})}, VARIANTS, make)
    grid_families.print_means(rows, VARIANTS)


if __name__ == "__main__":
    main()
