"""Imagen's static and dynamic thresholding (Saharia et al. 2022): the pure function on a batch,
the score wrapper against Tweedie's formula on exact mixture scores, and sampling with data far
outside [-1, 1], plain and guided, through the ``thresholding`` option of every method."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, parameterization, sampling, thresholding
from score_sde import sde as sde_lib
from score_sde.control import classifier_free_guidance

pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(), "ve": sde_lib.VESDE()}
ROUNDING = 1e-9  # float64 slack of the score -> x0 -> score round trip
# Modes at +-3, far outside the data range [-1, 1] thresholding assumes.
FAR = analytic.GaussianMixture.isotropic([0.5, 0.5], [[-3.0, 2.5], [3.0, -2.5]], 0.3)


def batch() -> jax.Array:
    """Three examples of 4 x 5: inside [-1, 1], up to 3, up to 6."""
    base = jax.random.uniform(jax.random.PRNGKey(0), (3, 4, 5), minval=-1.0, maxval=1.0)
    return base * jnp.array([0.9, 3.0, 6.0])[:, None, None]


# --- the pure function ---------------------------------------------------------------------
def test_static_is_clipping_to_the_unit_interval():
    x0 = batch()
    chex.assert_trees_all_equal(thresholding.threshold(x0, "static"), jnp.clip(x0, -1.0, 1.0))
    assert float(jnp.max(jnp.abs(x0))) > 5  # something was clipped


@pytest.mark.parametrize("p", [0.995, 0.8])
def test_dynamic_scales_each_example_by_its_own_quantile(p):
    x0 = batch()
    out = thresholding.threshold(x0, "dynamic", p)
    chex.assert_trees_all_close(out[0], x0[0], rtol=1e-15, atol=1e-15)  # in range: unchanged
    for i in (1, 2):  # large: clipped at its quantile s, which then maps to 1
        s = np.quantile(np.abs(np.asarray(x0[i])), p)
        assert 1 < s < float(jnp.max(jnp.abs(x0[i])))
        chex.assert_trees_all_close(out[i], jnp.clip(x0[i], -s, s) / s, rtol=1e-14, atol=1e-14)
        assert float(jnp.max(jnp.abs(out[i]))) == 1.0  # what lay beyond s is now +-1
        alone = thresholding.threshold(x0[i : i + 1], "dynamic", p)[0]
        chex.assert_trees_all_close(out[i], alone, rtol=1e-15, atol=1e-15)  # batch plays no part


def test_dynamic_at_percentile_1_divides_by_the_largest_magnitude_not_static():
    x0 = batch()
    out = thresholding.threshold(x0, "dynamic", 1.0)
    scale = jnp.maximum(1.0, jnp.max(jnp.abs(x0), axis=(1, 2)))[:, None, None]
    chex.assert_trees_all_close(out, x0 / scale, rtol=1e-15, atol=0)
    assert not np.allclose(out, thresholding.threshold(x0, "static"))
    chex.assert_trees_all_equal(thresholding.threshold(x0, "dynamic", 1), out)  # an int too


# --- the score wrapper ---------------------------------------------------------------------
@pytest.mark.parametrize("mode,p", [("static", 0.995), ("dynamic", 0.995), ("dynamic", 0.6)])
@pytest.mark.parametrize("sde_name", list(SDES))
def test_the_wrapped_score_has_the_thresholded_tweedie_estimate(sde_name, mode, p):
    sde, n = SDES[sde_name], 64
    t = jnp.linspace(0.02, 1.0, n)
    k0, k1 = jax.random.split(jax.random.PRNGKey(1))
    mean, std = sde.marginal_prob(FAR.sample(k0, n), t)
    x = mean + std[:, None] * jax.random.normal(k1, mean.shape)
    score_fn = FAR.score_fn(sde)
    x0 = parameterization.tweedie_denoise(sde, score_fn(x, t), x, t)
    wrapped = thresholding.thresholded(sde, score_fn, mode, p)
    got = parameterization.tweedie_denoise(sde, wrapped(x, t), x, t)
    want = thresholding.threshold(x0, mode, p)
    chex.assert_trees_all_close(got, want, rtol=1e-10, atol=1e-10)
    assert float(jnp.max(jnp.abs(got - x0))) > 0.5  # the estimates were outside [-1, 1]


# --- sampling ------------------------------------------------------------------------------
def assert_in_unit_interval(x, thresholded: bool) -> None:
    largest = float(jnp.max(jnp.abs(x)))
    assert (largest <= 1 + ROUNDING) if thresholded else largest > 2, largest


@pytest.mark.parametrize("mode", [None, "static", "dynamic"])
def test_data_prediction_samples_lie_in_the_unit_interval_only_when_thresholded(mode):
    sde = SDES["vp"]
    x, nfe = sampling.sample(
        jax.random.PRNGKey(2), sde, FAR.score_fn(sde), (256, 2), "dpm_solver", n_steps=10,
        prediction="data", thresholding=mode,
    )  # fmt: skip
    assert int(nfe) == (10 if mode is None else 11)  # thresholding takes the denoising step
    assert_in_unit_interval(x, mode is not None)


@pytest.mark.parametrize("mode", [None, "dynamic"])
def test_guided_samples_lie_in_the_unit_interval_only_when_thresholded(mode):
    sde, n = SDES["vp"], 128
    guided = classifier_free_guidance(FAR.conditional_score_fn(sde), jnp.ones(n, int), -1, 3.0)
    x, _ = sampling.sample(
        jax.random.PRNGKey(3), sde, guided, (n, 2), "ddim", n_steps=10, thresholding=mode
    )
    assert_in_unit_interval(x, mode is not None)
    assert float(jnp.mean(x[:, 0] > 0)) == 1.0  # class 1, at (3, -2.5), as guided


def test_the_option_is_the_wrapper_for_sample_trajectory_and_solve():
    sde, key, shape = SDES["subvp"], jax.random.PRNGKey(4), (32, 2)
    score_fn = FAR.score_fn(sde)
    wrapped = thresholding.thresholded(sde, score_fn, "dynamic", 0.7)
    options = dict(thresholding="dynamic", threshold_percentile=0.7)
    run = functools.partial(sampling.sample, key, sde, method="unipc", n_steps=6)
    # with thresholding the denoising step is taken at any step count (test_final_step.py)
    chex.assert_trees_all_equal(run(score_fn, shape, **options), run(wrapped, shape, denoise=True))
    traj = functools.partial(sampling.trajectory, key, sde, method="ddim", n_steps=5, denoise=True)
    chex.assert_trees_all_equal(
        traj(score_fn, shape, save_at=(0.5,), **options), traj(wrapped, shape, save_at=(0.5,))
    )
    x, ts = sde.prior_sampling(key, shape), jnp.linspace(1.0, 0.01, 6)
    solve = functools.partial(sampling.solve, key, sde, x=x, ts=ts, method="dpm_solver")
    chex.assert_trees_all_equal(solve(score_fn, **options), solve(wrapped))
    assert not np.allclose(solve(score_fn)[0], solve(wrapped)[0])
    for name in sampling.METHODS:
        assert set(sampling.THRESHOLD_OPTIONS) <= set(sampling.method_options(name)), name


# --- errors --------------------------------------------------------------------------------
def test_invalid_options_are_rejected_with_the_fix():
    sde = SDES["vp"]
    call = functools.partial(sampling.sample, jax.random.PRNGKey(0), sde, FAR.score_fn(sde))
    call = functools.partial(call, (2, 2), "dpm_solver", n_steps=3)
    for bad in ("clip", "Dynamic", True, 1):
        with pytest.raises(ValueError, match=rf"thresholding={bad!r} is unknown.*'dynamic'"):
            call(thresholding=bad)
    for bad in (0, 0.0, -0.5, 1.5, 99.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"threshold_percentile=.* outside \(0, 1\]"):
            call(thresholding="dynamic", threshold_percentile=bad)
    with pytest.raises(ValueError, match=r"threshold_percentile=2"):  # checked in every mode
        call(threshold_percentile=2)
    with pytest.raises(TypeError, match=r"threshold_percentile='0.9'.*e\.g\."):
        call(thresholding="dynamic", threshold_percentile="0.9")
    x, ts = jnp.ones((2, 2)), jnp.linspace(1.0, 0.1, 3)
    with pytest.raises(ValueError, match="thresholding='clip'"):
        sampling.solve(jax.random.PRNGKey(0), sde, FAR.score_fn(sde), x, ts, thresholding="clip")
    with pytest.raises(TypeError, match=r"no option\(s\) \['threshold'\]"):
        call(threshold="static")
    with pytest.raises(ValueError, match="mode='static' or mode='dynamic'"):
        thresholding.threshold(x, None)
    with pytest.raises(ValueError, match="threshold_percentile=0"):
        thresholding.thresholded(sde, FAR.score_fn(sde), "dynamic", 0)
