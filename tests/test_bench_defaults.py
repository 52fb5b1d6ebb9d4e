"""bench/defaults.py: its candidates' option names, their first entry (the current defaults)
and the step count of its 20-NFE budget."""

import inspect

import jax
import pytest
from helpers import load_bench

from score_sde import sampling
from score_sde import sde as sde_lib

defaults = load_bench("defaults")
FIXED_STEP = ["ddim", "dpm_solver", "unipc", "heun", "pc", "euler_maruyama", "ancestral"]


def _keyword_defaults(method: str) -> dict:
    """The keyword defaults of ``method``'s grid and integrate functions, each option taken
    from the function ``sampling.sample`` passes it to."""
    m = sampling.METHODS[method]
    out = {}
    for fn, names in ((m.grid, m.grid_options), (m.integrate, m.options)):
        params = inspect.signature(fn).parameters
        out.update({k: params[k].default for k in names if k in params})
    return out


def test_every_fixed_step_method_has_candidates_the_default_first():
    assert list(defaults.CANDIDATES) == FIXED_STEP
    for method, candidates in defaults.CANDIDATES.items():
        assert next(iter(candidates)) == "default", method
    assert 30 <= sum(map(len, defaults.CANDIDATES.values())) <= 45


@pytest.mark.parametrize("method", FIXED_STEP)
def test_candidates_use_only_options_the_method_takes(method):
    valid = set(sampling.METHODS[method].options) | set(sampling.METHODS[method].grid_options)
    for label, options in defaults.CANDIDATES[method].items():
        assert set(options) <= valid - {"n_steps"}, (method, label)
        sampling._split(method, sde_lib.VPSDE(), defaults.run_options(method, options))


@pytest.mark.parametrize("method", FIXED_STEP)
def test_the_first_candidate_is_the_current_default(method):
    candidates = list(defaults.CANDIDATES[method].values())
    first, actual = candidates[0], _keyword_defaults(method)
    assert first == {k: actual[k] for k in first}, method
    varied = {k for options in candidates for k in options}
    assert varied <= set(first), f"{method}: the default must spell out every varied option"


@pytest.mark.parametrize("method", FIXED_STEP)
def test_the_budget_gives_the_nfe_nearest_20_not_above(method):
    sde, score_fn = sde_lib.VPSDE(), jax.tree_util.Partial(lambda x, t: -x)
    seen = {}  # NFE rules differ only by these options: one sample per rule
    for label, options in defaults.CANDIDATES[method].items():
        run = defaults.run_options(method, options)
        rule = defaults.nfe_rule(method, options)
        key = tuple(run.get(k) for k in ("n_steps", "corrector", "stepping"))
        if key not in seen:
            _, used = sampling.sample(jax.random.PRNGKey(0), sde, score_fn, (2, 2), method, **run)
            seen[key] = int(used)
        assert seen[key] == rule(run["n_steps"]) <= 20, (method, label)
        assert rule(run["n_steps"] + 1) > 20, (method, label)  # the most steps under 20
    assert max(seen.values()) >= 18, method
