"""Clear errors at the library's boundary (score_sde.checks): a wrong score_fn, shape, data
dtype, tolerance or end time is one ValueError/TypeError naming the argument, before any
tracing; non-finite samples and log-likelihoods are reported by ``on_nonfinite``; the adaptive
ODE solve tells a NaN score from a stiff ODE. The checks leave jit working."""

import contextlib
import functools
import math
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import checks, likelihood, odeint, sampling
from score_sde import sde as sde_lib

SDE = sde_lib.VPSDE()
KEY = jax.random.PRNGKey(0)
SHAPE = (4, 2)
FAST = {  # method -> options for a quick run
    "euler_maruyama": dict(n_steps=4),
    "pc": dict(n_steps=4),
    "ancestral": dict(n_steps=4),
    "ode": dict(rtol=1e-3, atol=1e-3),
    "ddim": dict(n_steps=4),
    "dpm_solver": dict(n_steps=4),
    "dpm_solver_adaptive": dict(max_steps=50),
    "heun": dict(n_steps=4),
}


def normal_score(x, t):
    return -x


def narrow_score(x, t):
    """One value per example where x has two: broadcasts silently without the check."""
    return -x[:, :1]


def nan_score(x, t):
    return x * jnp.nan


def nan_late_score(x, t):
    """NaN below t = 0.5 for examples with x_0 > 0: the ODE solve meets a wall of NaN."""
    return jnp.where((t < 0.5)[:, None] & (x[:, :1] > 0), jnp.nan, -x)


@contextlib.contextmanager
def no_warnings():
    """A context in which any warning fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- score_fn of the wrong shape ------------------------------------------------------------
FRONT_DOORS = {
    "sample": lambda score: sampling.sample(KEY, SDE, score, SHAPE, "ddim", n_steps=3),
    "trajectory": lambda score: sampling.trajectory(
        KEY, SDE, score, SHAPE, "ddim", save_at=(0.5,), n_steps=3
    ),
    "solve": lambda score: sampling.solve(
        KEY, SDE, score, jnp.ones(SHAPE), jnp.asarray([1.0, 0.5]), "ddim"
    ),
    "log_likelihood": lambda score: likelihood.log_likelihood(KEY, SDE, score, jnp.ones(SHAPE)),
}


@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
def test_a_score_of_the_wrong_shape_is_named_with_both_shapes(door):
    with pytest.raises(
        ValueError, match=r"score_fn returned shape \(4, 1\) for x of shape \(4, 2\)"
    ):
        FRONT_DOORS[door](narrow_score)


def test_the_score_check_also_runs_under_jit():
    run = jax.jit(lambda key: sampling.sample(key, SDE, narrow_score, SHAPE, "ddim", n_steps=3))
    with pytest.raises(ValueError, match=r"score_fn returned shape \(4, 1\)"):
        run(KEY)


# --- shape ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape,error",
    [
        ((0, 2), ValueError),
        ((-1, 2), ValueError),
        ((), ValueError),
        ((2.0, 2), TypeError),
        ((True, 2), TypeError),
        (4, TypeError),
    ],  # fmt: skip
    ids=str,
)
@pytest.mark.parametrize("door", ["sample", "trajectory"])
def test_shape_must_be_a_tuple_of_positive_ints(shape, error, door):
    call = sampling.sample if door == "sample" else functools.partial(
        sampling.trajectory, save_at=(0.5,)
    )  # fmt: skip
    with pytest.raises(error, match=r"shape=.*: pass a non-empty tuple of positive ints"):
        call(KEY, SDE, normal_score, shape, "ddim", n_steps=3)


def test_a_list_or_numpy_ints_are_fine_as_shape():
    x, _ = sampling.sample(KEY, SDE, normal_score, [np.int64(3), 2], "ddim", n_steps=3)
    chex.assert_shape(x, (3, 2))


# --- end time and tolerances ------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.0, 2.0, math.nan])
@pytest.mark.parametrize("method", ["pc", "ode", "ddim", "dpm_solver", "heun"])
def test_sampling_eps_must_lie_inside_0_T(method, eps):
    with pytest.raises(ValueError, match=r"eps=.*: need 0 < eps < T=1.0"):
        sampling.sample(KEY, SDE, normal_score, SHAPE, method, eps=eps)


@pytest.mark.parametrize("name,value", [("rtol", 0.0), ("atol", -1e-3), ("rtol", math.inf)])
@pytest.mark.parametrize("method", ["ode", "dpm_solver_adaptive"])
def test_sampling_tolerances_must_be_positive(method, name, value):
    with pytest.raises(ValueError, match=rf"{name}={value}: need a finite value > 0"):
        sampling.sample(KEY, SDE, normal_score, SHAPE, method, **{name: value})
    ts = jnp.asarray([1.0, 1e-3])
    with pytest.raises(ValueError, match=rf"{name}={value}: need a finite value > 0"):
        sampling.solve(KEY, SDE, normal_score, jnp.ones(SHAPE), ts, method, **{name: value})


def test_a_tolerance_that_is_not_a_number_is_a_type_error():
    with pytest.raises(TypeError, match=r"rtol='1e-3': pass a positive float"):
        sampling.sample(KEY, SDE, normal_score, SHAPE, "ode", rtol="1e-3")


@pytest.mark.parametrize(
    "options,message",
    [
        (dict(rtol=0.0), "rtol=0.0"),
        (dict(atol=-1.0), "atol=-1.0"),
        (dict(eps=0.0), "eps=0.0"),
        (dict(eps=1.0), "eps=1.0"),
        (dict(eps=-1e-5), "eps=-1e-05"),
    ],  # fmt: skip
    ids=str,
)
def test_likelihood_tolerances_and_eps(options, message):
    with pytest.raises(ValueError, match=message):
        likelihood.log_likelihood(KEY, SDE, normal_score, jnp.ones(SHAPE), **options)


# --- the likelihood's data ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [jnp.int32, jnp.uint8, jnp.bool_, jnp.float16, jnp.bfloat16])
def test_likelihood_data_must_be_float32_or_float64(dtype):
    x = jnp.ones(SHAPE, dtype)
    with pytest.raises(TypeError, match=r"x has dtype \w+: pass float32 or float64 data"):
        likelihood.log_likelihood(KEY, SDE, normal_score, x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_likelihood_data_must_be_finite(bad):
    x = jnp.ones((3, 2)).at[1, 0].set(bad)
    with pytest.raises(ValueError, match=r"x has NaN or inf in 1 of 3 examples .*index 1"):
        likelihood.log_likelihood(KEY, SDE, normal_score, x)


def test_likelihood_data_of_no_examples_is_named():
    with pytest.raises(ValueError, match=r"x.shape=\(0, 2\)"):
        likelihood.log_likelihood(KEY, SDE, normal_score, jnp.ones((0, 2)))


def test_under_jit_the_value_checks_step_aside_and_the_dtype_check_stays():
    """Traced x: its values are unknown, so a NaN passes the boundary (and comes out as a NaN
    log-likelihood); its dtype is known, so int data is still refused at trace time."""
    logp = jax.jit(
        lambda x: likelihood.log_likelihood(KEY, SDE, normal_score, x, on_nonfinite="ignore")[0]
    )
    out = np.asarray(logp(jnp.ones((3, 2)).at[1, 0].set(jnp.nan)))
    assert np.isnan(out[1]) and np.isfinite(out[[0, 2]]).all()
    with pytest.raises(TypeError, match="x has dtype int32"):
        logp(jnp.ones((3, 2), jnp.int32))


# --- SDE constructors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make,field",
    [
        (lambda: sde_lib.VESDE(sigma_min=np.float32(0)), "sigma_min"),
        (lambda: sde_lib.VESDE(sigma_max=np.float64(np.inf)), "sigma_max=inf"),
        (lambda: sde_lib.VPSDE(beta_max=float("inf")), "beta_max=inf"),
        (lambda: sde_lib.VPSDE(beta_min=np.array(-1.0)), "beta_min"),
        (lambda: sde_lib.SubVPSDE(beta_min=math.nan), "beta_min=nan"),
        (lambda: sde_lib.SubVPSDE(beta_min=np.float32(30), beta_max=np.float32(20)), "beta_min"),
    ],
)
def test_sde_fields_given_as_numpy_scalars_or_infinities_are_checked(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_sdes_still_travel_through_jit_as_pytrees():
    ve = sde_lib.VESDE(sigma_min=np.float32(0.02))
    out = jax.jit(lambda s: s)(ve)
    np.testing.assert_allclose(out.sigma_min, 0.02)
    np.testing.assert_allclose(jax.jit(lambda s: s.prior_std())(ve), 50.0)


# --- on_nonfinite -------------------------------------------------------------------------------
@pytest.mark.parametrize("method", sorted(FAST))
def test_nan_scores_are_reported_by_every_method(method):
    def run(on_nonfinite):
        return sampling.sample(
            KEY, SDE, nan_score, SHAPE, method, on_nonfinite=on_nonfinite, **FAST[method]
        )

    with pytest.warns(RuntimeWarning, match=r"4 of 4 samples are not finite.*score returned NaN"):
        run("warn")
    with pytest.raises(
        checks.NonFiniteError, match=r"4 of 4 samples .*score returned NaN/inf"
    ) as err:
        run("raise")
    # The adaptive DPM-Solver also returns NaN for examples that ran out of max_steps.
    assert ("max_steps" in str(err.value)) == (method == "dpm_solver_adaptive")
    with no_warnings():
        x, _ = run("ignore")
    assert np.isnan(np.asarray(x)).all()
    assert issubclass(checks.NonFiniteError, FloatingPointError)


def test_only_the_nonfinite_samples_are_counted():
    run = functools.partial(sampling.sample, KEY, SDE, nan_late_score, (8, 2), "ddim", n_steps=6)
    x, _ = run(on_nonfinite="ignore")
    count = int((~np.isfinite(np.asarray(x)).all(axis=1)).sum())
    assert 0 < count < 8
    with pytest.warns(RuntimeWarning, match=rf"^{count} of 8 samples are not finite"):
        run()


def test_finite_samples_are_not_reported():
    with no_warnings():
        x, _ = sampling.sample(KEY, SDE, normal_score, SHAPE, "ddim", n_steps=3)
    chex.assert_tree_all_finite(x)


def test_trajectory_and_solve_report_too():
    with pytest.raises(checks.NonFiniteError, match="4 of 4 samples"):
        sampling.trajectory(
            KEY, SDE, nan_score, SHAPE, "ddim", save_at=(0.5,), n_steps=3, on_nonfinite="raise"
        )
    with pytest.warns(RuntimeWarning, match="4 of 4 results are not finite"):
        sampling.solve(KEY, SDE, nan_score, jnp.ones(SHAPE), jnp.asarray([1.0, 0.5]), "ddim")


def test_an_unknown_on_nonfinite_is_named():
    with pytest.raises(ValueError, match=r"on_nonfinite='error' is unknown.*'warn'"):
        sampling.sample(KEY, SDE, normal_score, SHAPE, "ddim", on_nonfinite="error")
    with pytest.raises(ValueError, match=r"on_nonfinite='error'"):
        likelihood.log_likelihood(KEY, SDE, normal_score, jnp.ones(SHAPE), on_nonfinite="error")


def test_on_nonfinite_is_a_front_door_option_not_a_method_option():
    for name in sampling.METHODS:
        assert "on_nonfinite" not in sampling.method_options(name)


def test_under_jit_warn_and_raise_report_from_a_callback():
    def draw(on_nonfinite):
        run = lambda key: sampling.sample(
            key, SDE, nan_score, SHAPE, "ddim", n_steps=3, on_nonfinite=on_nonfinite
        )[0]
        x = jax.jit(run)(KEY)
        jax.block_until_ready(x)
        jax.effects_barrier()
        return x

    with pytest.warns(RuntimeWarning, match="4 of 4 samples are not finite"):
        draw("warn")
    with pytest.raises(jax.errors.JaxRuntimeError, match="4 of 4 samples .*score returned NaN"):
        draw("raise")
    with no_warnings():
        draw("ignore")


def test_likelihood_reports_nan_scores():
    x = jnp.ones(SHAPE)
    with pytest.warns(RuntimeWarning, match=r"4 of 4 log-likelihoods .*score returned NaN/inf"):
        likelihood.log_likelihood(KEY, SDE, nan_score, x)
    with pytest.raises(checks.NonFiniteError, match="4 of 4 log-likelihoods"):
        likelihood.log_likelihood(KEY, SDE, nan_score, x, on_nonfinite="raise")


# --- the adaptive ODE solve: NaN score or stiff ODE ---------------------------------------------
@pytest.mark.parametrize("score", [nan_score, nan_late_score], ids=["nan", "nan_late"])
def test_the_ode_sampler_says_the_score_returned_nan_not_max_steps(score):
    """Steps into NaN are rejected; the solve ends after a few such attempts (not MAX_STEPS)
    with those examples NaN, and the report names the score."""
    with pytest.raises(checks.NonFiniteError, match="the score returned NaN/inf") as err:
        sampling.sample(KEY, SDE, score, (6, 2), "ode", on_nonfinite="raise")
    assert "max" not in str(err.value).lower()
    x, nfe = sampling.sample(KEY, SDE, score, (6, 2), "ode", on_nonfinite="ignore")
    assert int(nfe) < 7 * 100  # a few hundred steps at most, far from MAX_STEPS = 4096
    bad = ~np.isfinite(np.asarray(x)).all(axis=1)
    assert bad.any() and (bad.all() or score is nan_late_score)


def test_odeint_tells_a_nan_field_from_a_stiff_one():
    y0 = jnp.ones((2, 2))
    y1, nfe, _ = odeint.solve(lambda t, y, a: y * jnp.nan, y0, 0.0, 1.0, rtol=1e-5, atol=1e-5)
    assert np.isnan(np.asarray(y1)).all() and int(nfe) <= 7 * odeint.NONFINITE_ATTEMPTS

    def stiff(t, y, args):
        return -1e5 * y * (1 + jnp.sin(1e3 * t))

    with pytest.raises(RuntimeError, match=r"2 example\(s\) did not reach t1 .* too stiff"):
        odeint.solve(stiff, y0, 0.0, 10.0, rtol=1e-8, atol=1e-8)
