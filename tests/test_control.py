"""Controllable generation against exact answers: labelled Gaussian mixtures with exact scores
and classifiers, Gaussian targets with known conditionals, SDEdit's closed-form posterior and
inversion round trips."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, sampling
from score_sde import sde as sde_lib
from score_sde.control import (
    classifier_free_guidance,
    classifier_guidance,
    colorization_score,
    inpainting_score,
    reconstruct,
    sdedit,
    with_label,
)
from score_sde.control.inpainting import COLOR_BASIS

WEIGHTS = np.array([0.5, 0.3, 0.2])


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def labelled():
    """Class k is component k of a mixture; returns (mixture, components)."""
    mix = analytic.GaussianMixture.isotropic(WEIGHTS, [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.5]], 0.4)
    comps = [
        analytic.GaussianMixture(jnp.ones(1), mix.means[k : k + 1], mix.covs[k : k + 1])
        for k in range(3)
    ]
    return mix, comps


def conditional_score(sde):
    """Exact score_fn(x, t, y) of p_t(x | y); y = -1 is the null label (the mixture)."""
    return labelled()[0].conditional_score_fn(sde)


def classifier_logits(sde):
    """Exact noise-conditional classifier: log w_k + log p_t(x | k)."""
    return lambda x, t: labelled()[0].component_log_probs(x, sde, t)


# --- guidance -------------------------------------------------------------------------------
def test_classifier_free_guidance_scale_0_and_1_are_the_unguided_samplers():
    sde, rng, n = sde_lib.VPSDE(), jax.random.PRNGKey(0), 500
    cond = conditional_score(sde)
    y = jnp.full((n,), 2)
    mix, _ = labelled()
    run = lambda fn: sampling.sample(rng, sde, fn, (n, 2), method="ddim", n_steps=15, eta=1.0)[0]
    unconditional = run(mix.score_fn(sde))
    conditional = run(with_label(cond, y))
    np.testing.assert_allclose(
        run(classifier_free_guidance(cond, y, -1, 0.0)), unconditional, rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(
        run(classifier_free_guidance(cond, y, -1, 1.0)), conditional, rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(mix.mode_weights(unconditional), WEIGHTS, atol=0.06)
    assert mix.mode_weights(conditional)[2] > 0.98


def test_classifier_guidance_moves_mass_to_the_requested_class():
    sde, rng, n = sde_lib.VPSDE(), jax.random.PRNGKey(1), 1000
    mix, comps = labelled()
    score, logits = mix.score_fn(sde), classifier_logits(sde)
    y = jnp.full((n,), 2)  # the lightest class, 20% of the mass
    weights, samples = {}, {}
    for scale in (0.0, 0.5, 1.0):
        guided = classifier_guidance(score, logits, y, scale)
        x, _ = sampling.sample(rng, sde, guided, (n, 2), method="dpm_solver", n_steps=15)
        weights[scale], samples[scale] = np.asarray(mix.mode_weights(x)), x
    np.testing.assert_allclose(weights[0.0], WEIGHTS, atol=0.05)
    assert weights[0.0][2] < weights[0.5][2] < weights[1.0][2]
    assert weights[1.0][2] > 0.98
    # Scale 1 with an exact classifier is the exact conditional score, so the conditional sampler.
    x, _ = sampling.sample(
        rng, sde, comps[2].score_fn(sde), (n, 2), method="dpm_solver", n_steps=15
    )
    np.testing.assert_allclose(samples[1.0], x, rtol=1e-8, atol=1e-8)


# --- inpainting and colorization ------------------------------------------------------------
def full_cov_gaussian(dim, seed=0):
    rs = np.random.RandomState(seed)
    a = rs.randn(dim, dim)
    cov = a @ a.T / dim + 0.1 * np.eye(dim)
    mean = rs.randn(dim)
    return (
        mean,
        cov,
        analytic.GaussianMixture(jnp.ones(1), jnp.asarray(mean)[None], jnp.asarray(cov)[None]),
    )


def test_inpainting_renoises_the_known_region_from_the_data():
    """The unknown part of the score sees alpha d + sigma z, never the sampler's own x_known;
    the known part is the exact score of p_t(x_known | d) = N(alpha d, sigma²)."""
    sde, (_, _, target) = sde_lib.VPSDE(), full_cov_gaussian(4)
    mask = jnp.array([1.0, 1.0, 0.0, 0.0])
    data = jnp.tile(jnp.array([1.5, -1.0, 0.0, 0.0]), (6, 1))
    score = jax.jit(inpainting_score(target.score_fn(sde), sde, data, mask, jax.random.PRNGKey(7)))
    x = jax.random.normal(jax.random.PRNGKey(8), (6, 4))
    t = jnp.full((6,), 0.4)
    moved = x.at[:, :2].add(5.0)
    s_x, s_moved = score(x, t), score(moved, t)
    np.testing.assert_allclose(s_x[:, 2:], s_moved[:, 2:], rtol=1e-12)
    a, sig = sde.alpha(t)[:, None], sde.marginal_std(t)[:, None]
    np.testing.assert_allclose(s_x[:, :2], -(x[:, :2] - a * data[:, :2]) / sig**2, rtol=1e-12)
    assert not np.allclose(score(x, t + 0.1)[:, 2:], s_x[:, 2:])  # fresh noise at each time


def conditional(mean, cov, known, value):
    k, u = np.flatnonzero(known), np.flatnonzero(1 - known)
    gain = cov[np.ix_(u, k)] @ np.linalg.inv(cov[np.ix_(k, k)])
    return mean[u] + gain @ (value - mean[k]), cov[np.ix_(u, u)] - gain @ cov[np.ix_(k, u)]


def test_inpainting_keeps_the_data_and_completes_from_the_conditional():
    sde, n = sde_lib.VPSDE(), 4000
    mean, cov, _ = full_cov_gaussian(4)
    known, value = np.array([1.0, 1.0, 0.0, 0.0]), np.array([1.5, -1.0])
    data = jnp.tile(jnp.array([1.5, -1.0, 0.0, 0.0]), (n, 1))

    def inpaint(cov, method, **options):
        target = analytic.GaussianMixture(
            jnp.ones(1), jnp.asarray(mean)[None], jnp.asarray(cov)[None]
        )
        score = inpainting_score(target.score_fn(sde), sde, data, known, jax.random.PRNGKey(5))
        return np.asarray(
            sampling.sample(jax.random.PRNGKey(6), sde, score, (n, 4), method=method, **options)[0]
        )

    # Known region: EDM's last step lands on sigma = 0 exactly; DDIM stops at sigma(eps).
    correlated = inpaint(cov, "ddim", n_steps=400, eta=1.0)
    sigma_eps = float(sde.marginal_std(jnp.asarray(sde.sampling_eps)))
    assert np.abs(correlated[:, :2] - value).max() < 5 * sigma_eps
    np.testing.assert_allclose(inpaint(cov, "heun", n_steps=12)[:, :2], data[:, :2], atol=1e-9)

    # Unknown region independent of the known one: the completion is its exact marginal.
    block = cov.copy()
    block[:2, 2:] = block[2:, :2] = 0.0
    x = inpaint(block, "ddim", n_steps=400, eta=1.0)
    np.testing.assert_allclose(x[:, 2:].mean(0), mean[2:], atol=0.05)
    np.testing.assert_allclose(np.cov(x[:, 2:].T), block[2:, 2:], atol=0.05)

    # Correlated: App. I replaces grad log p_t(x_u | d) by the score at a re-noised d, exact
    # only as t -> 0, so the completion is biased. With exact scores it closes 3/4 of the gap
    # from the prior mean and keeps the conditional covariance within 0.06.
    want_mean, want_cov = conditional(mean, cov, known, value)
    x = correlated
    gap_closed = 1 - np.abs(x[:, 2:].mean(0) - want_mean) / np.abs(mean[2:] - want_mean)
    assert np.all(gap_closed > 0.6), gap_closed
    np.testing.assert_allclose(np.cov(x[:, 2:].T), want_cov, atol=0.06)


def test_colorization_keeps_the_grey_level():
    sde, n = sde_lib.VPSDE(), 512
    mean, cov, target = full_cov_gaussian(12, seed=1)  # 2x2 RGB images, correlated channels
    image_score = lambda x, t: target.score(x.reshape(n, 12), sde, t).reshape(x.shape)
    truth = target.sample(jax.random.PRNGKey(2), n).reshape(n, 2, 2, 3)
    gray = jnp.mean(truth, axis=-1, keepdims=True)
    score = colorization_score(image_score, sde, gray, jax.random.PRNGKey(3))
    x, _ = sampling.sample(
        jax.random.PRNGKey(4), sde, score, (n, 2, 2, 3), method="heun", n_steps=12
    )
    chex.assert_shape(x, (n, 2, 2, 3))
    np.testing.assert_allclose(jnp.mean(x, -1, keepdims=True), gray, atol=1e-9)
    chroma = (x @ COLOR_BASIS)[..., 1:]
    true_chroma = (truth @ COLOR_BASIS)[..., 1:]
    assert float(jnp.std(chroma)) > 0.5 * float(jnp.std(true_chroma))  # colours, not grey


def test_colour_basis_is_orthogonal_with_grey_first():
    np.testing.assert_allclose(COLOR_BASIS.T @ COLOR_BASIS, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(COLOR_BASIS[:, 0], np.ones(3) / np.sqrt(3))


# --- SDEdit and inversion -------------------------------------------------------------------
def test_sdedit_samples_the_posterior_given_the_perturbed_input():
    """With x(t0) = alpha x_in + sigma z and an exact reverse SDE, the output is a sample of
    p(x0 | x(t0)): for a Gaussian target, mean m + K alpha (x_in - m) and covariance
    S - alpha K S + sigma² K K^T, with K = alpha S (alpha² S + sigma² I)^-1."""
    sde, n, t0 = sde_lib.VPSDE(), 4000, 0.4
    mean, cov, target = full_cov_gaussian(3, seed=2)
    x_in = np.array([3.0, 2.0, -2.0])
    x, nfe = sdedit(
        jax.random.PRNGKey(0),
        sde,
        target.score_fn(sde),
        jnp.tile(jnp.asarray(x_in), (n, 1)),
        t0=t0,
        n_steps=400,
        eta=1.0,
    )
    assert nfe == 400
    a, s = float(sde.alpha(jnp.asarray(t0))), float(sde.marginal_std(jnp.asarray(t0)))
    gain = a * cov @ np.linalg.inv(a**2 * cov + s**2 * np.eye(3))
    want_mean = mean + gain @ (a * x_in - a * mean)
    want_cov = cov - a * gain @ cov + s**2 * gain @ gain.T
    np.testing.assert_allclose(np.mean(x, 0), want_mean, atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(x).T), want_cov, atol=0.1)
    # A small t0 keeps the input.
    x, _ = sdedit(
        jax.random.PRNGKey(0),
        sde,
        target.score_fn(sde),
        jnp.asarray(x_in)[None],
        t0=0.01,
        solver="dpm_solver",
        n_steps=5,
    )
    np.testing.assert_allclose(x[0], x_in, atol=0.15)


@pytest.mark.parametrize("solver", ["ddim", "dpm_solver", "heun"])
def test_inversion_round_trip_error_shrinks_with_nfe(solver):
    sde = sde_lib.VPSDE()
    _, _, target = full_cov_gaussian(3, seed=3)
    x0 = target.sample(jax.random.PRNGKey(0), 16)
    errors = []
    for n_steps in (10, 40):
        recon, nfe = reconstruct(sde, target.score_fn(sde), x0, solver=solver, n_steps=n_steps)
        assert nfe == n_steps * {"ddim": 2, "dpm_solver": 2, "heun": 4}[solver]
        errors.append(float(jnp.max(jnp.abs(recon - x0))))
    # Measured: ddim 0.97 -> 0.27 (first order), dpm_solver 0.066 -> 1.5e-4, heun 0.13 -> 2.2e-3.
    assert errors[0] > 3 * errors[1], errors
    assert errors[1] < {"ddim": 0.4, "dpm_solver": 1e-3, "heun": 5e-3}[solver], errors


def test_inversion_refuses_stochastic_solvers():
    sde = sde_lib.VPSDE()
    with pytest.raises(ValueError, match="deterministic"):
        reconstruct(sde, lambda x, t: -x, jnp.zeros((2, 2)), solver="ddim", eta=1.0)


# --- wrappers under per-example solves --------------------------------------------------------
def test_wrappers_bind_each_example_its_own_row_in_per_example_solves():
    """The adaptive ODE sampler and the likelihood solve each example on its own (a batch of
    one): a label bound for the batch (conditional, classifier-free or classifier guidance)
    must still reach its own example. Each example equals a run of its class alone."""
    from score_sde import likelihood

    sde, n = sde_lib.VPSDE(), 6
    y = jnp.array([0, 1, 2, 1, 0, 2])
    cond, (_, comps) = conditional_score(sde), labelled()
    rng, ode = jax.random.PRNGKey(7), dict(method="ode", rtol=1e-7, atol=1e-7)
    for score in (with_label(cond, y), classifier_free_guidance(cond, y, -1, 1.0)):
        x, _ = sampling.sample(rng, sde, score, (n, 2), **ode)
        for k in range(3):
            alone, _ = sampling.sample(rng, sde, comps[k].score_fn(sde), (n, 2), **ode)
            np.testing.assert_allclose(x[y == k], alone[y == k], rtol=1e-6, atol=1e-6)
    guided = classifier_guidance(labelled()[0].score_fn(sde), classifier_logits(sde), y, 1.0)
    x, _ = sampling.sample(rng, sde, guided, (n, 2), **ode)
    alone = sampling.sample(rng, sde, comps[2].score_fn(sde), (n, 2), **ode)[0]
    np.testing.assert_allclose(x[y == 2], alone[y == 2], rtol=1e-4, atol=1e-4)

    points = jnp.array([[-2.0, 0.1], [2.1, 1.0], [0.4, -2.4], [1.9, 0.8], [-1.8, 0.2], [0.6, -2.6]])
    labelled_score = with_label(cond, y)
    logp, _ = likelihood.log_likelihood(rng, sde, labelled_score, points, "exact", eps=1e-3)
    for k in range(3):  # the same solve as class k alone (a wrong label: tens of nats off)
        alone, _ = likelihood.log_likelihood(
            rng, sde, comps[k].score_fn(sde), points, "exact", eps=1e-3
        )
        np.testing.assert_allclose(logp[y == k], alone[y == k], rtol=1e-9)
        np.testing.assert_allclose(
            alone[y == k], comps[k].log_prob(points, sde, 1e-3)[y == k], atol=0.02
        )
