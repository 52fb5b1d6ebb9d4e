"""Wall time of whole ``sampling.sample`` calls per method, for before/after comparisons of the
samplers: the median of 40 calls after compiling, batch 2000, exact 4-mode mixture scores in 2
and 16 dimensions under VPSDE().

    python bench/sample_calls.py
    cd <other checkout> && PYTHONPATH=. python <this checkout>/bench/sample_calls.py

Run the two alternately in one session and compare the ratios (docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
import time

import jax
import numpy as np

from score_sde import analytic, sampling
from score_sde import sde as sde_lib

CASES = [
    ("dpm_solver", dict(n_steps=10)),
    ("dpm_solver", dict(n_steps=20)),
    ("dpm_solver", dict(n_steps=10, order=2, stepping="singlestep")),
    ("ddim", dict(n_steps=20)),
    ("heun", dict(n_steps=10)),
    ("pc", dict(n_steps=100)),
    ("ancestral", dict(n_steps=50)),
    ("euler_maruyama", dict(n_steps=50)),
]


def main(calls: int = 40) -> None:
    sde, rng = sde_lib.VPSDE(), np.random.default_rng(0)
    for dim in (2, 16):
        mix = analytic.GaussianMixture.isotropic([0.25] * 4, rng.normal(size=(4, dim)) * 2, 0.3)
        score = mix.score_fn(sde)
        for method, opts in CASES:

            def run(key, method=method, opts=opts, score=score, dim=dim):
                x, _ = sampling.sample(key, sde, score, (2000, dim), method, **opts)
                x.block_until_ready()

            run(jax.random.PRNGKey(0))  # compile
            times = []
            for i in range(calls):
                start = time.perf_counter()
                run(jax.random.PRNGKey(i))
                times.append(time.perf_counter() - start)
            print(f"{dim}d {method} {opts}: {1e3 * statistics.median(times):.3f} ms", flush=True)


if __name__ == "__main__":
    main()
