"""The SDE core against the reference values of anchors.md and against its own calculus."""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import sde as sde_lib

TIMES = [1e-5, 1e-3, 0.1, 0.5, 1.0]
# anchors.md, section 1: "Values in double precision" (None where the table has no entry).
ANCHORS = {
    "vp_alpha": [0.9999994995, 0.9999450265, 0.9467217988, 0.2811828808, 0.006571586495],
    "vp_std": [0.001000497126, 0.01048541634, 0.3220525355, 0.9596542021, 0.9999784069],
    "subvp_std": [1.000994499e-6, 1.099439557e-4, 0.1037178356, 0.9209361875, 0.9999568143],
    "subvp_g2": [2.005971952e-7, 2.636311127e-5, 0.4110576091, 9.987176581, 19.99999996],
    "ve_sigma": [0.01000085176, 0.01008553568, None, 0.7071067812, 50.0],
    "ve_g": [0.04127625023, 0.04162576394, None, 2.918423066, 206.363674],
}


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def _ones(t):
    return jnp.ones((len(t), 3))


def _values(name):
    t = jnp.asarray(TIMES)
    vp, subvp, ve = sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()
    return {
        "vp_alpha": vp.marginal_prob(_ones(t), t)[0][:, 0],
        "vp_std": vp.marginal_prob(_ones(t), t)[1],
        "subvp_std": subvp.marginal_prob(_ones(t), t)[1],
        "subvp_g2": subvp.sde(_ones(t), t)[1] ** 2,
        "ve_sigma": ve.marginal_prob(_ones(t), t)[1],
        "ve_g": ve.sde(_ones(t), t)[1],
    }[name]


@pytest.mark.parametrize("name", sorted(ANCHORS))
def test_reference_values(name):
    got = np.asarray(_values(name))
    for t, want, value in zip(TIMES, ANCHORS[name], got, strict=True):
        if want is not None:
            assert value == pytest.approx(want, rel=1e-6), (name, t)


def test_prior_logp_reference():
    z = jnp.zeros((2, 3, 32, 32))
    np.testing.assert_allclose(sde_lib.VPSDE().prior_logp(z), -2822.979, atol=1e-3)
    np.testing.assert_allclose(sde_lib.VESDE().prior_logp(z), -14840.714, atol=1e-3)
    chex.assert_shape(sde_lib.SubVPSDE().prior_logp(z), (2,))


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE(sigma_max=3.0)])
def test_prior_logp_is_the_gaussian_density(sde):
    z = sde.prior_sampling(jax.random.key(0), (4, 5))
    want = jax.scipy.stats.norm.logpdf(z, scale=sde.prior_std()).sum(-1)
    np.testing.assert_allclose(sde.prior_logp(z), want, rtol=1e-12)


def test_ddpm_chain():
    vp = sde_lib.VPSDE()
    betas = np.asarray(vp.discrete_betas())
    np.testing.assert_allclose(betas[[0, -1]], [1e-4, 0.02], rtol=1e-12)
    assert math.sqrt(np.prod(1 - betas)) == pytest.approx(0.0063528, rel=1e-4)
    x = jnp.ones((1000, 2))
    t = jnp.arange(1000) / 999.0  # t_i = i / (N - 1) selects chain step i
    f, G = vp.discretize(x, t)
    np.testing.assert_allclose(G, np.sqrt(betas), rtol=1e-12)
    np.testing.assert_allclose(f[:, 0], np.sqrt(1 - betas) - 1, rtol=1e-12)


def test_short_ddpm_chain_is_clipped_and_samples_stay_finite():
    """With N <= beta_max the linear betas beta_max / N reach 1 (sqrt(1 - beta) is NaN): they
    are clipped at 0.999, as iDDPM's, and the chain's samplers stay finite."""
    from score_sde import analytic, sampling

    vp = sde_lib.VPSDE(N=10)
    betas = np.asarray(vp.discrete_betas())
    np.testing.assert_allclose(betas, np.minimum(np.linspace(0.01, 2.0, 10), 0.999), rtol=1e-12)
    gm = analytic.GaussianMixture.isotropic([1.0], [[1.0, -1.0]], 0.5)
    for method, options in [("ancestral", {}), ("pc", {"corrector": "ald"})]:
        x, _ = sampling.sample(jax.random.key(0), vp, gm.score_fn(vp), (64, 2), method, **options)
        assert np.isfinite(np.asarray(x)).all(), method


def test_smld_chain():
    ve = sde_lib.VESDE(N=10)
    sigmas = np.geomspace(0.01, 50.0, 10)
    np.testing.assert_allclose(ve.discrete_sigmas(), sigmas, rtol=1e-12)
    t = jnp.arange(10) / 9.0
    f, G = ve.discretize(jnp.ones((10, 2)), t)
    prev = np.concatenate([[0.0], sigmas[:-1]])
    np.testing.assert_allclose(G, np.sqrt(sigmas**2 - prev**2), rtol=1e-12)
    assert not np.any(f)


def test_subvp_chain_is_euler_maruyama():
    sde = sde_lib.SubVPSDE(N=50)
    x, t = jnp.ones((3, 2)), jnp.array([0.1, 0.5, 0.9])
    drift, g = sde.sde(x, t)
    f, G = sde.discretize(x, t)
    np.testing.assert_allclose(f, drift / 50, rtol=1e-12)
    np.testing.assert_allclose(G, g * math.sqrt(1 / 50), rtol=1e-12)


ALL = [
    sde_lib.VPSDE(),
    sde_lib.SubVPSDE(),
    sde_lib.VESDE(),
    sde_lib.VPSDE(schedule="cosine"),
    sde_lib.SubVPSDE(schedule="cosine"),
]


@pytest.mark.parametrize(
    "sde", ALL, ids=lambda s: f"{type(s).__name__}-{getattr(s, 'schedule', '')}"
)
def test_marginals_solve_the_sde(sde):
    """For dx = f x dt + g dW: d alpha/dt = f alpha and d var/dt = 2 f var + g² (exact calculus)."""
    t = jnp.linspace(0.02, sde.T - 0.02, 17)
    alpha_dot = jax.vmap(jax.grad(lambda s: sde.alpha(s)))(t)
    var_dot = jax.vmap(jax.grad(lambda s: sde.marginal_std(s) ** 2))(t)
    f, g2 = sde.drift_coeff(t), sde.g2(t)
    np.testing.assert_allclose(alpha_dot, f * sde.alpha(t), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var_dot, 2 * f * sde.marginal_std(t) ** 2 + g2, rtol=1e-9)
    assert float(sde.marginal_std(jnp.asarray(0.0))) == 0.0 or isinstance(sde, sde_lib.VESDE)


@pytest.mark.parametrize(
    "sde", ALL, ids=lambda s: f"{type(s).__name__}-{getattr(s, 'schedule', '')}"
)
def test_half_log_snr_inverse(sde):
    t = jnp.linspace(1e-4, sde.T, 50)
    np.testing.assert_allclose(sde.t_from_half_log_snr(sde.half_log_snr(t)), t, atol=1e-10)


def test_cosine_schedule():
    sde = sde_lib.VPSDE(schedule="cosine")
    s = 0.008
    t = jnp.asarray([0.0, 0.3, 0.9])
    abar = np.cos((t + s) / (1 + s) * np.pi / 2) ** 2 / np.cos(s / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(sde.alpha(t) ** 2, abar, rtol=1e-12)
    betas = np.asarray(sde.discrete_betas())
    k = np.arange(1001) / 1000
    ab = np.cos((k + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(betas, np.minimum(1 - ab[1:] / ab[:-1], 0.999), rtol=1e-9)
    assert betas[-1] == 0.999 and sde.T < 1.0
    assert np.isfinite(sde.g2(jnp.asarray(sde.T)))


@pytest.mark.parametrize("sde", ALL[:3], ids=lambda s: type(s).__name__)
def test_reverse(sde):
    score_fn = lambda x, t: -x  # noqa: E731
    x, t = jnp.ones((3, 4)), jnp.array([0.2, 0.5, 0.8])
    drift, g = sde.sde(x, t)
    rev = sde.reverse(score_fn)
    rdrift, rg = rev.sde(x, t)
    np.testing.assert_allclose(rdrift, drift + g[:, None] ** 2 * x)
    np.testing.assert_allclose(rg, g)
    pf_drift, pf_g = sde.reverse(score_fn, probability_flow=True).sde(x, t)
    np.testing.assert_allclose(pf_drift, drift + 0.5 * g[:, None] ** 2 * x)
    assert not np.any(pf_g)
    f, G = sde.discretize(x, t)
    rf, rG = rev.discretize(x, t)
    np.testing.assert_allclose(rf, f + G[:, None] ** 2 * x)
    assert type(rev) is sde_lib.ReverseSDE and rev.T == sde.T and rev.N == sde.N


@pytest.mark.parametrize("sde", ALL[:3], ids=lambda s: type(s).__name__)
def test_ancestral_step_with_exact_posterior(sde):
    """With x0 known (score = -(x - alpha x0)/sigma²) the generic step samples q(x_s | x_t, x0)."""
    x0, t = jnp.full((1, 2), 0.7), jnp.array([0.6])
    a, s = sde.alpha(t), sde.marginal_std(t)
    x = a[:, None] * x0 + s[:, None] * jnp.array([[0.3, -1.1]])
    score = -(x - a[:, None] * x0) / s[:, None] ** 2
    _, mean = sde_lib.SDE.ancestral_step(sde, x, t, score, jnp.zeros_like(x))
    _, own_mean = sde.ancestral_step(x, t, score, jnp.zeros_like(x))
    prev = t - sde.T / sde.N
    # Posterior mean for a Gaussian bridge: between the scaled x0 and the propagated x.
    a_s, v_s, v_t = sde.alpha(prev), sde.marginal_std(prev) ** 2, s**2
    a_ts = a / a_s
    want = (a_ts * v_s / v_t)[:, None] * x + (a_s * (v_t - a_ts**2 * v_s) / v_t)[:, None] * x0
    np.testing.assert_allclose(mean, want, rtol=1e-10)
    np.testing.assert_allclose(own_mean, want, rtol=1e-2)  # DDPM / SMLD chains agree to O(1/N)


def test_immutable_hashable_and_jit_as_static_or_pytree():
    vp = sde_lib.VPSDE()
    with pytest.raises(dataclasses.FrozenInstanceError):
        vp.beta_max = 3.0
    assert vp == sde_lib.VPSDE() and hash(vp) == hash(sde_lib.VPSDE())
    x, t = jnp.ones((2, 3)), jnp.array([0.1, 0.9])
    as_static = jax.jit(lambda x, t, s: s.marginal_prob(x, t)[1], static_argnums=2)
    traces = []

    @jax.jit
    def as_pytree(s, x, t):
        traces.append(1)
        return s.marginal_prob(x, t)[1]

    np.testing.assert_allclose(as_static(x, t, vp), vp.marginal_prob(x, t)[1])
    np.testing.assert_allclose(as_pytree(vp, x, t), vp.marginal_prob(x, t)[1])
    other = sde_lib.VPSDE(beta_min=0.2, beta_max=10.0)
    np.testing.assert_allclose(as_pytree(other, x, t), other.marginal_prob(x, t)[1])
    assert len(traces) == 1  # new float values are pytree leaves: no retrace
    assert vp.with_steps(10).N == 10 and vp.N == 1000


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: sde_lib.VPSDE(beta_min=20.0, beta_max=0.1), "beta_min"),
        (lambda: sde_lib.SubVPSDE(beta_min=-1.0), "beta_min"),
        (lambda: sde_lib.VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: sde_lib.VESDE(sigma_min=60.0), "sigma_max"),
        (lambda: sde_lib.VPSDE(N=0), "N"),
        (lambda: sde_lib.VPSDE(schedule="cos"), "schedule"),
    ],
)
def test_invalid_arguments_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_prior_sampling_is_batch_size_independent():
    ve = sde_lib.VESDE()
    small = ve.prior_sampling(jax.random.key(3), (8, 2, 2))
    big = ve.prior_sampling(jax.random.key(3), (64, 2, 2))
    np.testing.assert_array_equal(small, big[:8])
    assert abs(float(big.std()) / 50.0 - 1) < 0.15


def test_each_sde_class_has_its_own_treedef_and_round_trips():
    """VPSDE and SubVPSDE have the same fields: with jax's register_dataclass their treedefs
    compared equal (hashes differing), and a jitted call under SubVPSDE once ran VPSDE's
    program (tests/test_optimized_grid.py, about 1 run in 10). The fields still flatten as
    named leaves and come back unchanged."""
    sdes = [
        sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VPSDE(schedule="cosine"),
        sde_lib.SubVPSDE(schedule="cosine"), sde_lib.VESDE(), sde_lib.VPSDE(N=10),
    ]  # fmt: skip
    treedefs = [jax.tree_util.tree_structure(sde) for sde in sdes]
    for i, a in enumerate(treedefs):
        assert [a == b for b in treedefs] == [i == j for j in range(len(sdes))], a
    for sde in sdes:
        leaves, treedef = jax.tree_util.tree_flatten(sde)
        assert jax.tree_util.tree_unflatten(treedef, leaves) == sde
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(sdes[4])[0]]
    assert paths == [".sigma_min", ".sigma_max"]
