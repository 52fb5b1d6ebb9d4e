"""What the last score evaluation of a fixed NFE budget is best spent on, for the fixed-step ODE
solvers (ddim, dpm_solver, unipc at their defaults; unipc as UniPC-3, as measured): the
denoising step E[x_0 | x_eps] after NFE - 1 steps (``denoise=True``), or one more step, NFE
steps without it (``denoise=False``). Under the default SDE of each family, on
bench/targets.py's four mixtures, at 5, 10, 15 and 20 NFE; 2000 samples, seeds 1-3 after a
compiling call, scored as bench/samplers.py scores (sliced W2 and within-mode sliced W2 over
their noise floors). Printed: a line per run, then the geometric means over the targets.
``sampling.FEW_STEPS`` (the default ``denoise=None`` takes the denoising step only after more
than 15 steps) is chosen on this table.

    python bench/final_step.py [--families vp ve] [--budgets 5 10] [--methods ddim ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import grid_families  # noqa: E402

METHODS = ("ddim", "dpm_solver", "unipc")
# unipc as measured: UniPC-3, its default at every step count then (now beyond 10 steps only)
OPTIONS = {"unipc": dict(order=3)}
VARIANTS = {  # at a budget of b evaluations
    "denoise": lambda b: dict(n_steps=b - 1, denoise=True),
    "step": lambda b: dict(n_steps=b, denoise=False),
}


def main(argv=None) -> None:
    parser = grid_families.study_parser(__doc__.splitlines()[0], [5, 10, 15, 20])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = parser.parse_args(argv)
    configs = {method: (method, OPTIONS.get(method, {})) for method in args.methods}
    grid_families.print_means(grid_families.study(args, configs, VARIANTS), VARIANTS)


if __name__ == "__main__":
    main()
