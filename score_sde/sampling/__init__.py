"""One entry point for every sampler:
``sample(rng, sde, score_fn, shape, method=..., **options) -> (samples, nfe)``.

Each method is a pure function of (rng, sde, score_fn, shape, **options), run as one jitted call.
``score_fn`` may be a ``jax.tree_util.Partial`` over model parameters: new parameters then reuse
the compiled sampler. Any other callable is treated as static (a new one recompiles).
"""

from __future__ import annotations

import functools
import inspect

import jax
from jax.tree_util import Partial

from score_sde.sampling import ddim, dpm_solver, dpm_solver_adaptive, edm, ode, pc

METHODS = {
    "euler_maruyama": pc.euler_maruyama_sampler,
    "pc": pc.pc_sampler,
    "ancestral": pc.ancestral_sampler,
    "ode": ode.ode_sampler,
    "ddim": ddim.ddim_sampler,
    "dpm_solver": dpm_solver.dpm_solver_sampler,
    "dpm_solver_adaptive": dpm_solver_adaptive.dpm_solver_adaptive_sampler,
    "heun": edm.heun_sampler,
}


def method_options(method: str) -> tuple[str, ...]:
    """The options (keyword-only arguments) that ``method`` accepts."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown; valid methods: {sorted(METHODS)}.")
    params = inspect.signature(METHODS[method]).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def _check_options(method: str, options: dict) -> None:
    valid = list(method_options(method))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"method={method!r} has no option(s) {unknown}; its options: {valid}.")


@functools.partial(jax.jit, static_argnames=("method", "shape", "options"))
def _run(rng, sde, score_fn, *, method, shape, options):
    return METHODS[method](rng, sde, score_fn, shape, **dict(options))


def sample(rng, sde, score_fn, shape, method: str = "pc", **options):
    """Draw ``shape[0]`` samples with ``method``; returns (samples, nfe), or (samples, nfe,
    trajectory) when ``save_at=(t1, t2, ...)`` asks for the states at those times.

    Sample i depends only on (rng, i): a batch of 8 reproduces the first 8 of a batch of 64.
    """
    _check_options(method, options)
    for name, value in options.items():
        try:
            hash(value)
        except TypeError:
            raise TypeError(
                f"option {name}={value!r} must be hashable (options are static under jit): "
                "pass a tuple instead of a list or array."
            ) from None
    if not isinstance(score_fn, Partial):
        score_fn = Partial(score_fn)
    options = tuple(sorted(options.items()))
    return _run(rng, sde, score_fn, method=method, shape=tuple(shape), options=options)
