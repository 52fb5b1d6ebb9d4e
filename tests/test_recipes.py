"""Today's recipes against closed forms: v-prediction, EDM's preconditioning and loss, and
min-SNR-gamma weights (float64, exact scores of Gaussian data or mixtures under every SDE)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, losses, parameterization
from score_sde import sde as sde_lib

SDES = {
    "vp": sde_lib.VPSDE(),
    "vp-cosine": sde_lib.VPSDE(schedule="cosine"),
    "subvp": sde_lib.SubVPSDE(),
    "ve": sde_lib.VESDE(),
}
SIGMA_DATA = 0.5
pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def _mixture():
    return analytic.GaussianMixture.isotropic([0.3, 0.7], [[-1.0, 0.5, 0.2], [1.0, -0.5, 0.0]], 0.4)


def _point(sde, n=64):
    """(x0, eps, t, x_t): data, noise, times over (0, T] and x_t = alpha x0 + sigma eps."""
    k0, k1, k2 = jax.random.split(jax.random.key(0), 3)
    x0 = _mixture().sample(k0, n)
    eps = jax.random.normal(k1, x0.shape)
    t = jax.random.uniform(k2, (n,), minval=1e-3, maxval=sde.T)
    mean, std = sde.marginal_prob(x0, t)
    return x0, eps, t, mean + std[:, None] * eps


@pytest.mark.parametrize("name", sorted(SDES))
def test_v_prediction_recovers_the_noise_and_the_data_exactly(name):
    """v = alpha eps - sigma x0 (Salimans & Ho 2022) with x_t determines eps and x0: converting
    the true v of a pair back gives that pair's eps and x0 (not the VP-only alpha² + sigma² = 1
    shortcut: sub-VP and VE fail it)."""
    sde = SDES[name]
    x0, eps, t, x = _point(sde)
    a, s = sde.alpha(t)[:, None], sde.marginal_std(t)[:, None]
    score = parameterization.to_score(sde, a * eps - s * x0, x, t, "v")
    back = {k: parameterization.from_score(sde, score, x, t, k) for k in ("eps", "x0", "v")}
    chex.assert_trees_all_close(back, {"eps": eps, "x0": x0, "v": a * eps - s * x0}, rtol=1e-9)


@pytest.mark.parametrize("name", sorted(SDES))
def test_edm_preconditioning_round_trips_the_exact_score(name):
    """D(x^; σ) = c_skip x^ + c_out F(c_in x^; σ) (Karras et al. 2022, Eq. 7, Table 1): with F
    the target implied by the exact mixture score, network_output gives D and to_score gives back
    the score to 1e-10; the network sees c_in x^ and σ = sigma/alpha."""
    sde = SDES[name]
    _, _, t, x = _point(sde)
    score = _mixture().score(x, sde, t)
    a, s = sde.alpha(t)[:, None], sde.marginal_std(t)[:, None]
    sigma, x_hat = s / a, x / a
    c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)  # Table 1, written out again
    c_out = sigma * SIGMA_DATA / jnp.sqrt(sigma**2 + SIGMA_DATA**2)
    c_in = 1 / jnp.sqrt(sigma**2 + SIGMA_DATA**2)
    target = ((x + s**2 * score) / a - c_skip * x_hat) / c_out  # F with D = Tweedie's x0
    seen = {}

    def network(x_in, sigma_in):
        seen.update(x_in=x_in, sigma_in=sigma_in)
        return target

    d = parameterization.network_output(sde, "edm", network, x, t, sigma_data=SIGMA_DATA)
    back = parameterization.to_score(sde, d, x, t, "edm")
    np.testing.assert_allclose(back, score, rtol=1e-10, atol=1e-10)
    chex.assert_trees_all_close(seen, {"x_in": c_in * x_hat, "sigma_in": sigma[:, 0]}, rtol=1e-12)
    plain = parameterization.network_output(sde, "eps", lambda x_in, s_in: (x_in, s_in), x, t)
    chex.assert_trees_all_close(plain, (x, s[:, 0]))  # other kinds: the network at (x, sigma)


@pytest.mark.parametrize("name", sorted(SDES))
def test_edm_loss_at_the_exact_denoiser_is_one_per_dimension_at_every_noise_level(name):
    """Data N(mu, sigma_data² I): the exact D's error has variance σ² σd²/(σ² + σd²) per
    dimension, and λ(σ) = (σ² + σd²)/(σ σd)² makes the expected loss exactly 1 at every σ
    (EDM's "unit loss"). Checked over all t and separately at low and high noise."""
    sde = SDES[name]
    gm = analytic.GaussianMixture.isotropic([1.0], [[0.3] * 16], SIGMA_DATA)
    x = gm.sample(jax.random.key(1), 8192)

    def model_fn(c, x, t, y, rng):  # the exact EDM denoiser D (an x0 prediction)
        return parameterization.from_score(sde, c * gm.score(x, sde, t), x, t, "edm")

    edm = losses.EDMLoss(sigma_data=SIGMA_DATA)
    make = lambda **kw: losses.get_loss_fn(
        sde, model_fn, parameterization="edm", reduce_mean=True, per_example=True, **kw
    )
    key = jax.random.key(2)
    loss = jax.jit(lambda x: make(edm=edm)(key, 1.0, x))(x)
    t = losses.edm_time(jax.random.split(key, 3)[0], sde, x.shape[0], edm, 1e-5)
    sigma = jnp.exp(-sde.half_log_snr(t))
    low = sigma < jnp.median(sigma)
    se = lambda v: float(jnp.std(v) / jnp.sqrt(v.size))
    for part in (loss, loss[low], loss[~low]):
        assert abs(float(part.mean()) - 1) < 4 * se(part), (float(part.mean()), se(part))
    worse = jax.jit(lambda x: make(edm=edm)(key, 1.2, x))(x)  # a wrong score costs more
    assert float(worse.mean()) > 1 + 10 * se(loss)


@pytest.mark.parametrize("name", ["vp", "subvp"])
def test_edm_time_gives_log_normal_noise_levels(name):
    """ln σ(t) ~ N(P_mean, P_std²) for t = edm_time(...) (ranges wide enough that the clip to
    [eps, T] is out of sight): mean, std and the 5/50/95% quantiles."""
    sde, edm = SDES[name], losses.EDMLoss(p_mean=-1.2, p_std=1.2)
    t = losses.edm_time(jax.random.key(3), sde, 100_000, edm, 1e-5)
    log_sigma = np.asarray(-sde.half_log_snr(t))
    assert abs(log_sigma.mean() + 1.2) < 4 * 1.2 / np.sqrt(t.size)
    assert abs(log_sigma.std() - 1.2) < 0.02
    q = np.quantile(log_sigma, [0.05, 0.5, 0.95])
    np.testing.assert_allclose(q, -1.2 + 1.2 * np.array([-1.6449, 0.0, 1.6449]), atol=0.03)


def test_min_snr_weight_is_the_formula():
    """min(SNR, gamma)/SNR on the eps error, SNR = alpha²/sigma² (Hang et al. 2023, Eq. 7):
    1 while SNR <= gamma, gamma/SNR above."""
    alpha = jnp.asarray([0.5, 0.9, 0.995, 0.2])
    std = jnp.sqrt(1 - alpha**2)
    snr = alpha**2 / std**2  # 0.33, 4.3, 99.5, 0.04
    want = np.where(snr <= 5.0, 1.0, 5.0 / snr)
    np.testing.assert_allclose(losses.min_snr_weight(alpha, std, 5.0), want, rtol=1e-12)
    np.testing.assert_allclose(losses.min_snr_weight(jnp.ones(1), jnp.full(1, 0.1), 5.0), [0.05])
