"""The exact Gaussian-mixture densities and scores that every sampler test relies on, against
scipy and against autodiff."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from score_sde import analytic
from score_sde import sde as sde_lib
from score_sde.datasets import synthetic

SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(), "ve": sde_lib.VESDE()}


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def _points(mixture, n=64, seed=0):
    x = mixture.sample(jax.random.key(seed), n)
    t = jax.random.uniform(jax.random.key(seed + 1), (n,), minval=1e-3, maxval=1.0)
    return 1.5 * x, t  # spread beyond the modes


@pytest.mark.parametrize("name", ["gmm16", "ring8"])
@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_log_prob_is_the_diffused_mixture_density(name, sde_name):
    """log p_t(x) = log sum_k w_k N(x; alpha mu_k, alpha² S_k + sigma² I), by scipy."""
    mixture, sde = synthetic.MIXTURES[name](), SDES[sde_name]
    x, t = _points(mixture)
    alpha, sigma = np.asarray(sde.alpha(t)), np.asarray(sde.marginal_std(t))
    eye = np.eye(mixture.dim)
    expected = [
        np.log(
            sum(
                w * stats.multivariate_normal(a * m, a**2 * c + s**2 * eye).pdf(xi)
                for w, m, c in zip(mixture.weights, mixture.means, mixture.covs, strict=True)
            )
        )
        for xi, a, s in zip(np.asarray(x), alpha, sigma, strict=True)
    ]
    np.testing.assert_allclose(mixture.log_prob(x, sde, t), expected, rtol=1e-10)


@pytest.mark.parametrize("name", ["gmm16", "grid25"])
@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_score_is_the_gradient_of_log_prob(name, sde_name):
    mixture, sde = synthetic.MIXTURES[name](), SDES[sde_name]
    x, t = _points(mixture)
    grad = jax.grad(lambda x: mixture.log_prob(x, sde, t).sum())(x)  # examples are independent
    score = mixture.score(x, sde, t)
    chex.assert_shape(score, x.shape)
    np.testing.assert_allclose(score, grad, rtol=1e-9, atol=1e-12)
    data_grad = jax.grad(lambda x: mixture.log_prob(x).sum())(x)
    np.testing.assert_allclose(mixture.score(x), data_grad, rtol=1e-9, atol=1e-12)


def test_component_log_probs_are_the_logits_of_the_components():
    mixture, sde = synthetic.MIXTURES["gmm16"](), SDES["vp"]
    x, t = _points(mixture)
    logits = mixture.component_log_probs(x, sde, t)
    chex.assert_shape(logits, (x.shape[0], mixture.weights.shape[0]))
    np.testing.assert_allclose(
        jax.scipy.special.logsumexp(logits, -1), mixture.log_prob(x, sde, t), rtol=1e-12
    )
    np.testing.assert_allclose(
        mixture.responsibilities(x), jax.nn.softmax(mixture.component_log_probs(x), -1)
    )


@pytest.mark.parametrize("sde_name", sorted(SDES))
def test_conditional_score_is_the_score_of_the_component(sde_name):
    """score_fn(x, t, y) is component y's score; the null label y < 0 is the mixture's."""
    mixture, sde = synthetic.MIXTURES["gmm16"](), SDES[sde_name]
    x, t = _points(mixture)
    k = mixture.weights.shape[0]
    y = jnp.arange(x.shape[0]) % (k + 1) - 1  # every class and the null label
    got = mixture.conditional_score_fn(sde)(x, t, y)
    for label in range(-1, k):
        rows = np.flatnonzero(np.asarray(y) == label)
        alone = (
            mixture
            if label < 0
            else analytic.GaussianMixture(
                jnp.ones(1), mixture.means[label : label + 1], mixture.covs[label : label + 1]
            )
        )
        np.testing.assert_allclose(
            got[rows], alone.score(x[rows], sde, t[rows]), rtol=1e-10, atol=1e-12
        )
