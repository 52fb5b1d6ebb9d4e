"""Probability-flow ODE likelihoods against closed forms, and bits per dimension.

For Gaussian data N(m, S) the probability-flow ODE is linear. With C_t = alpha_t² S + sigma_t² I,
its flow is x_t = alpha_t m + C_t^½ C_eps^-½ (x - alpha_eps m), and the Jacobian of its drift
f I + ½ g² C_t^-1 integrates to M = ½ (log C_T - log C_eps) (matrix logarithms), because
d/dt log(alpha² λ + sigma²) = 2 f + g² / (alpha² λ + sigma²). So ``log_likelihood`` must return

    log prior(x_T) + tr M = log p_eps(x) - log p_T(x_T) + log prior(x_T),

log p_eps(x) up to the prior's mismatch with p_T (0.03 nats for VP and 0.09 for VE on the data
below), and a Hutchinson probe v gives log prior(x_T) + v^T M v exactly: unbiased, with variance
2 sum_{i != j} M_ij² for Rademacher probes and 2 |M|_F² for Gaussian ones.
"""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, likelihood
from score_sde import sde as sde_lib

MEAN = np.array([0.5, -1.0, 2.0])
CHOL = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.5]])
COV = CHOL @ CHOL.T  # correlated: the Jacobian is not diagonal, so Hutchinson has variance
EPS = 1e-5
SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(), "ve": sde_lib.VESDE()}


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def gaussian():
    return analytic.GaussianMixture(jnp.ones(1), jnp.asarray(MEAN)[None], jnp.asarray(COV)[None])


def cov_function(sde, t, f):
    """f(C_t) for the symmetric C_t = alpha_t² S + sigma_t² I, and alpha_t."""
    a, s = (float(g(jnp.asarray(t))) for g in (sde.alpha, sde.marginal_std))
    lam, q = np.linalg.eigh(COV)
    return (q * f(a**2 * lam + s**2)) @ q.T, a


def gaussian_flow(sde, x):
    """(x_T, M) of the module docstring."""
    root_T, a_T = cov_function(sde, sde.T, np.sqrt)
    inv_root_eps, a_eps = cov_function(sde, EPS, lambda c: 1 / np.sqrt(c))
    x_T = a_T * MEAN + (np.asarray(x) - a_eps * MEAN) @ (root_T @ inv_root_eps).T
    m = 0.5 * (cov_function(sde, sde.T, np.log)[0] - cov_function(sde, EPS, np.log)[0])
    return x_T, m


def expected_logp(sde, x):
    """log p_eps(x) - log p_T(x_T) + log prior(x_T), from the closed-form densities."""
    x_T, _ = gaussian_flow(sde, x)
    density = gaussian()
    return (
        density.log_prob(x, sde, EPS)
        - density.log_prob(jnp.asarray(x_T), sde, sde.T)
        + sde.prior_logp(jnp.asarray(x_T))
    )


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_gives_the_closed_form_for_a_gaussian(sde_name):
    """The module docstring's value within 1e-4 nats (3e-6 measured at rtol = atol = 1e-6)."""
    sde, density = SDES[sde_name], gaussian()
    x = density.sample(jax.random.PRNGKey(0), 8)
    logp, _ = likelihood.log_likelihood(
        jax.random.PRNGKey(1), sde, density.score_fn(sde), x, "exact", rtol=1e-6, atol=1e-6
    )
    chex.assert_shape(logp, (8,))
    np.testing.assert_allclose(logp, expected_logp(sde, x), rtol=0, atol=1e-4)
    # the prior's mismatch with p_T is visible at this accuracy: the test can tell them apart
    assert np.max(np.abs(logp - density.log_prob(x, sde, EPS))) > 0.02


def centred_mixture():
    """Three modes with mean zero, so that p_T matches the prior closely: the remaining
    mismatch measured 2e-4 nats (VP, sub-VP) and up to 6e-3 (VE) at the points below."""
    weights, means = np.array([0.2, 0.5, 0.3]), np.array([[-3.0, 0.0], [2.0, 2.0], [0.0, 0.0]])
    means[2] = -(weights[:2] @ means[:2]) / weights[2]
    return analytic.GaussianMixture.isotropic(weights, means, 0.4)


@pytest.mark.parametrize("sde_name", SDES)
def test_exact_divergence_gives_the_mixture_density(sde_name):
    """log p_eps of a 2-D mixture at samples and between modes, within 1e-2 nats."""
    sde, density = SDES[sde_name], centred_mixture()
    x = jnp.concatenate([density.sample(jax.random.PRNGKey(2), 6), jnp.array([[0.0, 0.0]])])
    score_fn, rng = density.score_fn(sde), jax.random.PRNGKey(1)
    logp, _ = likelihood.log_likelihood(rng, sde, score_fn, x, "exact", rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logp, density.log_prob(x, sde, EPS), rtol=0, atol=1e-2)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_the_closed_form_variance(probe):
    """512 probes (one per copy of x): mean within 4 standard errors of the exact value,
    variance within 30% of the closed form; other keys, other probes; a batch of 8 is the
    first 8 of the batch of 512."""
    sde, density = SDES["vp"], gaussian()
    x = jnp.repeat(density.sample(jax.random.PRNGKey(0), 1), 512, axis=0)
    _, m = gaussian_flow(sde, x)
    want = float(expected_logp(sde, x[:1])[0])
    want_var = 2 * np.sum(m**2) - (2 * np.sum(np.diag(m) ** 2) if probe == "rademacher" else 0)
    score_fn, divergence = density.score_fn(sde), f"hutchinson-{probe}"
    estimates = []
    for key in (1, 2):
        logp, _ = likelihood.log_likelihood(jax.random.PRNGKey(key), sde, score_fn, x, divergence)
        logp = np.asarray(logp)
        assert abs(logp.mean() - want) < 4 * logp.std() / math.sqrt(len(logp)), (logp.mean(), want)
        assert abs(logp.var() / want_var - 1) < 0.3, (logp.var(), want_var)
        estimates.append(logp)
    assert np.mean(estimates[0] == estimates[1]) < 0.5  # 3-D Rademacher: 4 distinct values
    first, _ = likelihood.log_likelihood(jax.random.PRNGKey(2), sde, score_fn, x[:8], divergence)
    np.testing.assert_allclose(first, estimates[1][:8], rtol=1e-10)


# --- bits per dimension -------------------------------------------------------------------
RANGES = [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]


@pytest.mark.parametrize("data_range", RANGES)
def test_a_uniform_density_on_the_data_cube_costs_8_bits(data_range):
    """The uniform density on [lo, hi]^D is the codelength of uniform 8-bit pixels, 8 bits,
    whatever the scale: the offset is +8 for [0, 1] (logp = 0), +7 for [-1, 1]."""
    lo, hi = data_range
    shape = (4, 3, 5, 5)
    logp = jnp.full((4,), -math.prod(shape[1:]) * math.log(hi - lo))
    bpd = likelihood.bits_per_dim(logp, shape, data_range=data_range)
    np.testing.assert_allclose(bpd, 8.0, rtol=1e-12)
    binary = likelihood.bits_per_dim(logp, shape, data_range=data_range, levels=2)
    np.testing.assert_allclose(binary, 1.0, rtol=1e-12)


@pytest.mark.parametrize("data_range", RANGES[:2])
def test_dequantized_bits_per_dim_is_the_discrete_codelength(data_range):
    """Pixels k ~ P, scaled to data_range and uniformly dequantized; the piecewise-constant
    density P(bin of y) levels / (hi - lo) per dimension has bits/dim -mean log2 P(k)."""
    lo, hi = data_range
    levels = jnp.arange(256)
    log_p = jax.nn.log_softmax(-0.5 * ((levels - 100.0) / 30.0) ** 2)  # a discrete P
    k = jax.random.categorical(jax.random.PRNGKey(0), log_p, shape=(16, 12))
    x = lo + (hi - lo) * k / 255
    y = likelihood.uniform_dequantize(jax.random.PRNGKey(1), x, data_range=data_range)
    bins = jnp.floor((y - lo) / (hi - lo) * 256).astype(int)
    np.testing.assert_array_equal(bins, k)
    logp = jnp.sum(log_p[bins] + jnp.log(256 / (hi - lo)), axis=-1)
    want = -jnp.mean(log_p[k], axis=-1) / math.log(2)
    bpd = likelihood.bits_per_dim(logp, y.shape, data_range=data_range)
    np.testing.assert_allclose(bpd, want, rtol=1e-10)


def test_uniform_dequantize_fills_every_level():
    """Each of the 256 levels k of [-1, 1] goes to its own bin [k, k + 1) / 256, filled
    uniformly; example i depends only on (rng, i)."""
    lo, hi, n = -1.0, 1.0, 64
    x = jnp.broadcast_to(lo + (hi - lo) * jnp.arange(256) / 255, (n, 256))
    y = likelihood.uniform_dequantize(jax.random.PRNGKey(3), x, data_range=(lo, hi))
    u = np.asarray((y - lo) / (hi - lo) * 256 - jnp.arange(256))  # position inside the bin
    assert np.all((u >= 0) & (u < 1))
    assert np.all(u.max(axis=0) - u.min(axis=0) > 0.8)  # each bin is covered
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)
    few = likelihood.uniform_dequantize(jax.random.PRNGKey(3), x[:3], data_range=(lo, hi))
    np.testing.assert_array_equal(few, y[:3])
    others = likelihood.uniform_dequantize(
        jax.random.PRNGKey(3), x.at[1:].set(0.0), data_range=(lo, hi)
    )
    np.testing.assert_array_equal(others[0], y[0])  # other examples' values change nothing


def test_uniform_dequantize_of_unit_range_images_is_uniform_in_each_level():
    """[0, 1] images (the training pipeline's): level k fills [k, k + 1) / 256 with U[0, 1)."""
    levels = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 3))
    x = jnp.asarray(levels / 255.0, jnp.float32)
    dequantize = jax.jit(functools.partial(likelihood.uniform_dequantize, data_range=(0.0, 1.0)))
    y = np.asarray(dequantize(jax.random.key(1), x))
    chex.assert_shape(y, x.shape)
    assert y.min() >= 0 and y.max() < 1
    np.testing.assert_array_equal(np.floor(y * 256), levels)
    u = 256 * y - levels  # the uniform noise
    np.testing.assert_allclose([u.mean(), u.var()], [0.5, 1 / 12], atol=0.01)


def test_clear_errors():
    logp = jnp.zeros(4)
    with pytest.raises(ValueError, match="hi > lo"):
        likelihood.bits_per_dim(logp, (4, 3), data_range=(1.0, -1.0))
    with pytest.raises(ValueError, match=r"x_shape=\(8, 3\)"):
        likelihood.bits_per_dim(logp, (8, 3), data_range=(-1.0, 1.0))
    sde, density = SDES["vp"], gaussian()
    call = lambda **kw: likelihood.log_likelihood(
        jax.random.PRNGKey(0), sde, density.score_fn(sde), jnp.zeros((2, 3)), **kw
    )
    with pytest.raises(ValueError, match="divergence='hutchinson'.*'exact'"):
        call(divergence="hutchinson")
    with pytest.raises(ValueError, match="solver='euler'"):
        call(solver="euler")


def test_a_stiff_solve_raises_after_a_jitted_program_without_host_callbacks():
    """Too stiff for its tolerances: ``RuntimeError`` saying so, raised after the jitted solve,
    whose program holds no host callback (XLA writes no such program to the persistent compile
    cache, and each process would compile the likelihood again)."""
    sde, x, key = SDES["vp"], jnp.ones((2, 2)), jax.random.key(0)

    def stiff(x, t):
        return -1e5 * x * (1 + jnp.sin(1e3 * t))[:, None]

    with pytest.raises(RuntimeError, match=r"2 example\(s\) did not reach t1 .* too stiff"):
        likelihood.log_likelihood(key, sde, stiff, x, "exact", rtol=1e-8, atol=1e-8)
    options = dict(divergence="exact", rtol=1e-5, atol=1e-5, eps=1e-5, solver="tsit5")
    score = jax.tree_util.Partial(lambda x, t: -x)
    hlo = likelihood._log_likelihood.lower(key, sde, score, x, **options).as_text()
    assert "callback" not in hlo and "stablehlo.while" in hlo  # the solve, without a callback
