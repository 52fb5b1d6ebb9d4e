"""UniPC's order by step count: UniPC-3 against UniPC-2 at their other defaults (bh2, data
prediction, dpm_solver's default grid, no denoising step up to 15 steps) under the default SDE
of each family, on bench/targets.py's four mixtures, at 5, 8, 10 and 15 NFE; 2000 samples,
seeds 1-3 after a compiling call, scored as bench/samplers.py scores (sliced W2 and within-mode
sliced W2 over their noise floors). Printed: a line per run, then the geometric means over the
targets. ``unipc.SECOND_ORDER_UP_TO`` (``order=None`` is UniPC-2 up to that many steps) is
chosen on this table.

    python bench/unipc_order.py [--families vp ve] [--budgets 5 10] [--targets 2d ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # bench/'s modules import by name, as a script
import grid_families  # noqa: E402

VARIANTS = {  # at a budget of b evaluations: b steps (none is the denoising step up to 15)
    "order 3": lambda b: dict(n_steps=b, order=3),
    "order 2": lambda b: dict(n_steps=b, order=2),
}


def main(argv=None) -> None:
    args = grid_families.study_parser(__doc__.splitlines()[0], [5, 8, 10, 15]).parse_args(argv)
    configs = {"unipc": ("unipc", {})}
    grid_families.print_means(grid_families.study(args, configs, VARIANTS), VARIANTS)


if __name__ == "__main__":
    main()
