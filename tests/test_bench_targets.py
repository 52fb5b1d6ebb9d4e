"""The sampler bench's targets, scores and NFE budgets (bench/targets.py, bench/samplers.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_bench

from score_sde import sampling
from score_sde import sde as sde_lib

samplers = load_bench("samplers")
targets = samplers.targets_lib


def test_the_sharp_grid_has_modes_a_thirtieth_of_their_spacing_wide():
    mix = targets.sharp_grid()
    means = np.array(mix.means)
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
    spacing = gaps[gaps > 0].min()
    assert means.shape == (9, 2) and spacing == pytest.approx(1.0)
    np.testing.assert_allclose(mix.covs, np.broadcast_to(np.eye(2) / 900, (9, 2, 2)), rtol=1e-6)
    assert np.abs(means).max() == pytest.approx(1.0)  # O(1) data


def test_the_anisotropic_modes_have_condition_number_100_and_turn():
    mix = targets.anisotropic()
    covs = np.array(mix.covs, np.float64)
    lam = np.linalg.eigvalsh(covs)
    assert covs.shape == (4, 64, 64)
    np.testing.assert_allclose(lam.max(-1) / lam.min(-1), 100, rtol=1e-3)
    off_diagonal = covs - np.eye(64) * np.diagonal(covs, axis1=1, axis2=2)[:, None]
    assert np.abs(off_diagonal).max() > 0.01  # full covariances, not diagonal ones
    assert not np.allclose(covs[0], covs[1])  # each mode its own orientation


def test_the_residual_subtracts_the_nearest_mean():
    means = jnp.array([[0.0, 0.0], [1.0, 0.0]])
    x = jnp.array([[0.1, 0.2], [0.9, -0.1], [2.0, 0.0]])
    expected = [[0.1, 0.2], [-0.1, -0.1], [1.0, 0.0]]
    np.testing.assert_allclose(targets.nearest_mode_residual(means, x), expected, atol=1e-6)


def test_exact_samples_score_at_the_floor_and_wide_modes_above_it():
    mix = targets.sharp_grid()
    target = targets.Target.build("2d-sharp", mix, 500)
    sw, within, tv = target.score(mix.sample(jax.random.PRNGKey(100), 500))
    assert abs(sw - 1) < 0.6 and abs(within - 1) < 0.6 and tv < 0.1
    x, labels = mix.sample_labelled(jax.random.PRNGKey(100), 500)
    wide = mix.means[labels] + 1.5 * (x - mix.means[labels])  # modes 1.5x too wide
    sw_wide, within_wide, tv_wide = target.score(wide)
    assert within_wide > 3 and tv_wide == pytest.approx(tv, abs=0.02)
    assert np.isnan(target.score(jnp.full((500, 2), jnp.nan))).all()


def test_budgets_take_the_nearest_nfe_the_fewer_on_a_tie():
    odd = lambda n: 2 * n - 1  # noqa: E731
    assert samplers.steps_for(10, odd) == 5  # 9 and 11 tie: 9
    assert samplers.steps_for(5, odd) == 3
    three_s = samplers._singlestep(3)  # NFE 3, 6, 9, ... (last steps of lower order)
    assert samplers.steps_for(5, three_s) == 3 and three_s(3) == 6  # 3 and 6: 6
    assert samplers.steps_for(10, three_s) == 4 and three_s(4) == 9
    assert (three_s(15), three_s(16)) == (42, 46)  # 3 x 16 - 3, + 1 to denoise after 15 steps


@pytest.mark.parametrize("budget", [5, 8, 20])  # 20: the ODE solvers' denoising step
@pytest.mark.parametrize("ladder", ["LADDER", "DEFAULTS"])
def test_the_ladders_know_each_methods_nfe(ladder, budget):
    sde, score_fn = sde_lib.VPSDE(), jax.tree_util.Partial(lambda x, t: -x)
    entries = getattr(samplers, ladder)
    for (label, method, options), (*_, nfe) in zip(
        samplers.fixed_budget(budget, entries), entries, strict=True
    ):
        _, used = sampling.sample(jax.random.PRNGKey(0), sde, score_fn, (2, 2), method, **options)
        assert int(used) == nfe(options["n_steps"]), label
        assert abs(int(used) - budget) <= 1, label
