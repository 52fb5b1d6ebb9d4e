"""Losses against closed forms for Gaussian data x0 ~ N(mu, s0² I) in D dimensions.

Under x_t = alpha x0 + sigma z the exact score is s = -(x_t - alpha mu)/v with v = alpha² s0² +
sigma². For a model c·s, sigma c s + z is Gaussian with per-dimension variance
1 + (c² - 2c) r, r = sigma²/v: at c = 1, |sigma s + z|² = q chi²_D with q = 1 - r, the irreducible
loss; the derivative in c is 2 (c - 1) D r. With weight w and the loss's ½-sum reduction,
E[loss | t] = w (D/2) (1 + (c² - 2c) r) and, at c = 1, E[loss² | t] = w² q² D (D + 2)/4.
The tests integrate these over t (or average over the chain index k).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic, losses, parameterization
from score_sde import sde as sde_lib

MU = [0.5, -1.0, 0.3, 2.0]
S0 = 0.7
D = len(MU)
EPS = 1e-5
# With likelihood weighting and uniform t the per-example loss has a ~1/t tail: at t >= 1e-5 its
# sample mean is skewed and its sample SE unreliable (the reason for importance sampling), so
# Monte-Carlo checks of uniform-t likelihood weighting start at 1e-3.
LIKELIHOOD_EPS = 1e-3
SDES = {"vp": sde_lib.VPSDE(), "subvp": sde_lib.SubVPSDE(), "ve": sde_lib.VESDE()}


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def _gaussian():
    return analytic.GaussianMixture.isotropic([1.0], [MU], S0)


def _se(v):
    return float(np.std(v) / np.sqrt(len(v)))


def _t_average(sde, eps, f):
    """(1/(T - eps)) ∫_eps^T f(r, lam, snr) dt with r = sigma²/v, lam = g²/sigma² and
    snr = alpha²/sigma²: trapezoid rule on a geometric grid (lam is ~1/t)."""
    t = jnp.geomspace(eps, sde.T, 200_001)
    alpha, sigma = sde.alpha(t), sde.marginal_std(t)
    r = sigma**2 / (alpha**2 * S0**2 + sigma**2)
    lam = sde.g2(t) / sigma**2
    snr = alpha**2 / sigma**2
    return float(jax.scipy.integrate.trapezoid(f(r, lam, snr), t)) / (sde.T - eps)


GAMMA = 5.0  # min-SNR-gamma's gamma (Hang et al. 2023)
WEIGHTS = {  # the weighting's w as a function of (lam = g²/sigma², snr = alpha²/sigma²)
    "sigma2": lambda lam, snr: jnp.ones_like(lam),
    "likelihood": lambda lam, snr: lam,
    "min_snr": lambda lam, snr: jnp.minimum(snr, GAMMA) / snr,  # Hang et al., Eq. 7, on eps
}
WEIGHTING_OPTIONS = {
    "sigma2": {},
    "likelihood": {"likelihood_weighting": True},
    "min_snr": {"min_snr_gamma": GAMMA},
}


def _expected_continuous(sde, weighting, eps=EPS):
    """(E[w] D/2, E[w r] D/2) over t ~ U(eps, T): E loss(c) = first + (c² - 2c) second."""
    w = WEIGHTS[weighting]
    return (
        _t_average(sde, eps, lambda r, lam, snr: w(lam, snr) * D / 2),
        _t_average(sde, eps, lambda r, lam, snr: w(lam, snr) * r * D / 2),
    )


def _likelihood_variances(sde, eps):
    """Exact variances of the likelihood-weighted per-example loss at c = 1: (uniform t, t
    importance-sampled with density lam/Z and weight Z/(T - eps))."""
    m2 = D * (D + 2) / 4
    mean = _t_average(sde, eps, lambda r, lam, snr: lam * (1 - r) * D / 2)
    second_uniform = _t_average(sde, eps, lambda r, lam, snr: lam**2 * (1 - r) ** 2 * m2)
    z = float(losses.likelihood_normalizer(sde, eps))
    second_is = (
        z / (sde.T - eps) * _t_average(sde, eps, lambda r, lam, snr: lam * (1 - r) ** 2 * m2)
    )
    return second_uniform - mean**2, second_is - mean**2


def _exact_model(gm, sde, kind):
    """c times the exact score, output in parameterisation ``kind``."""

    def model_fn(c, x, t, y, rng):
        return parameterization.from_score(sde, c * gm.score(x, sde, t), x, t, kind)

    return model_fn


C = jnp.asarray([0.8, 1.0, 1.2])


def _losses_and_grads(loss_fn, key, x):
    """Per-example losses and their derivatives in the scalar model parameter c, for c in C."""
    one = lambda c: jax.jvp(lambda c: loss_fn(key, c, x), (c,), (jnp.ones_like(c),))
    return jax.vmap(one)(C)


def _check_minimum(vals, grads, expected):
    """The Monte-Carlo loss and gradient at c = 0.8, 1, 1.2 match their analytic values, and the
    gradient is clearly negative below c = 1 and positive above."""
    e_w, e_wr = expected
    chex.assert_shape([vals, grads], (len(C), vals.shape[1]))
    for c, val, grad in zip(np.asarray(C), vals, grads, strict=True):
        want = e_w + (c * c - 2 * c) * e_wr
        assert abs(val.mean() - want) < 4 * _se(val), (c, float(val.mean()), want, _se(val))
        assert abs(grad.mean() - 2 * (c - 1) * e_wr) < 4 * _se(grad), (c, float(grad.mean()))
    assert grads[0].mean() < -8 * _se(grads[0]) and grads[2].mean() > 8 * _se(grads[2])


@pytest.fixture(scope="module")
def data():
    """16384 exact samples of the Gaussian data, drawn once."""
    with jax.enable_x64(True):
        return jax.jit(_gaussian().sample, static_argnums=1)(jax.random.key(1), 16384)


@pytest.mark.parametrize("weighting", sorted(WEIGHTS))
@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_score_minimises_dsm_at_its_analytic_value(name, weighting, data):
    """Also: eps, x0, v and EDM-D models giving the exact score's prediction have the same
    per-example loss."""
    sde, gm = SDES[name], _gaussian()
    likelihood = weighting == "likelihood"
    eps = LIKELIHOOD_EPS if likelihood else EPS
    make = lambda kind: losses.get_loss_fn(
        sde,
        _exact_model(gm, sde, kind),
        parameterization=kind,
        eps=eps,
        per_example=True,
        **WEIGHTING_OPTIONS[weighting],
    )
    kinds = ("eps", "x0", "v", "edm")

    @jax.jit
    def run(key, x):
        by_kind = {kind: make(kind)(key, 1.0, x) for kind in kinds}
        return _losses_and_grads(make("score"), key, x), by_kind

    (vals, grads), by_kind = run(jax.random.key(2), data if likelihood else data[:4096])
    _check_minimum(vals, grads, _expected_continuous(sde, weighting, eps))
    for kind in kinds:
        np.testing.assert_allclose(by_kind[kind], vals[1], rtol=1e-6, err_msg=kind)


class _Chain:
    """The discrete chain's marginal x_k = a_k x0 + s_k z at t = k T/(N - 1), from tables built
    here in float64, so analytic.GaussianMixture gives the chain's exact score."""

    def __init__(self, sde, a, s):
        self.sde, self.a, self.s = sde, jnp.asarray(a), jnp.asarray(s)

    def _k(self, t):
        return jnp.round(t * (self.sde.N - 1) / self.sde.T).astype(int)

    def alpha(self, t):
        return self.a[self._k(t)]

    def marginal_std(self, t):
        return self.s[self._k(t)]


def _ddpm_chain():
    vp = SDES["vp"]
    alphabar = np.cumprod(1 - np.asarray(vp.discrete_betas()))
    return vp, _Chain(vp, np.sqrt(alphabar), np.sqrt(1 - alphabar))


def _smld_chain():
    ve = SDES["ve"]
    sigmas = np.asarray(ve.discrete_sigmas())
    return ve, _Chain(ve, np.ones_like(sigmas), sigmas)


def _exact_chain_model(gm, chain, kind):
    """c times the chain's exact score, output as the score, eps = -s_k score or
    x0 = (x + s_k² score) / a_k."""

    def model_fn(c, x, t, y, rng):
        score = c * gm.score(x, chain, t)
        a, s = chain.alpha(t)[:, None], chain.marginal_std(t)[:, None]
        v = -(s / a) * (x + (a**2 + s**2) * score)
        return {"score": score, "eps": -s * score, "x0": (x + s**2 * score) / a, "v": v}[kind]

    return model_fn


@pytest.mark.parametrize("gamma", [0.0, GAMMA], ids=["plain", "min_snr"])
@pytest.mark.parametrize("make_chain", [_ddpm_chain, _smld_chain], ids=["ddpm", "smld"])
def test_discrete_losses_exact_model_gives_the_analytic_value(make_chain, gamma, data):
    """Also: eps, x0 and v models giving the chain's exact eps / x0 / v have the same
    per-example loss."""
    sde, chain = make_chain()
    gm = _gaussian()
    r = chain.s**2 / (chain.a**2 * S0**2 + chain.s**2)
    snr = chain.a**2 / chain.s**2
    w = jnp.minimum(snr, gamma) / snr if gamma else jnp.ones_like(snr)
    expected = (float(jnp.mean(w)) * D / 2, float(jnp.mean(w * r)) * D / 2)  # k uniform
    make = lambda kind: losses.get_loss_fn(
        sde,
        _exact_chain_model(gm, chain, kind),
        parameterization=kind,
        continuous=False,
        per_example=True,
        min_snr_gamma=gamma,
    )

    @jax.jit
    def run(key, x):
        by_kind = {kind: make(kind)(key, 1.0, x) for kind in ("eps", "x0", "v")}
        return _losses_and_grads(make("score"), key, x), by_kind

    (vals, grads), by_kind = run(jax.random.key(6), data[:4096])
    _check_minimum(vals, grads, expected)
    for kind in ("eps", "x0", "v"):
        np.testing.assert_allclose(by_kind[kind], vals[1], rtol=1e-6, err_msg=kind)


def _numerical_cdf(sde, eps=EPS):
    """CDF of g²/sigma² on [eps, T], by the trapezoid rule on a fine grid: (grid, cdf)."""
    t = jnp.geomspace(eps, sde.T, 200_001)
    w = sde.g2(t) / sde.marginal_std(t) ** 2
    cum = jnp.concatenate([jnp.zeros(1), jnp.cumsum(0.5 * (w[1:] + w[:-1]) * jnp.diff(t))])
    return t, cum


@pytest.mark.parametrize(
    "sde",
    [*SDES.values(), sde_lib.VPSDE(schedule="cosine")],
    ids=[*SDES, "vp-cosine"],
)
def test_importance_sampled_time_has_density_g2_over_sigma2(sde):
    n = 20_000
    t = losses.importance_sampled_time(jax.random.key(7), sde, n, EPS)
    chex.assert_shape(t, (n,))
    assert float(t.min()) >= EPS and float(t.max()) <= sde.T
    grid, cum = _numerical_cdf(sde)
    np.testing.assert_allclose(losses.likelihood_normalizer(sde, EPS), cum[-1], rtol=1e-5)
    u = np.sort(np.asarray(jnp.interp(t, grid, cum / cum[-1])))
    ks = np.max(np.abs(u - (np.arange(n) + 0.5) / n))
    assert ks < 1.63 / np.sqrt(n), ks  # Kolmogorov–Smirnov at the 1% level


@pytest.mark.parametrize("name", sorted(SDES))
def test_importance_sampling_is_unbiased_and_reduces_variance(name, data):
    """At eps = 1e-5 importance sampling hits the analytic mean, with its exact (small) variance;
    at LIKELIHOOD_EPS it agrees with uniform t, with a clearly smaller sample variance. For VE
    g²/sigma² is constant, so importance sampling draws the very same t as uniform."""
    sde, gm = SDES[name], _gaussian()
    make = lambda importance, eps: losses.get_loss_fn(
        sde,
        _exact_model(gm, sde, "score"),
        likelihood_weighting=True,
        importance_sampling=importance,
        eps=eps,
        per_example=True,
    )
    cases = [(True, EPS), (False, LIKELIHOOD_EPS), (True, LIKELIHOOD_EPS)]
    run = jax.jit(lambda key, x: [make(*case)(key, 1.0, x) for case in cases])
    small_eps, uniform, importance = map(np.asarray, run(jax.random.key(9), data))

    e_w, e_wr = _expected_continuous(sde, "likelihood", eps=EPS)
    var_uniform, var_is = _likelihood_variances(sde, EPS)
    assert abs(small_eps.mean() - (e_w - e_wr)) < 4 * _se(small_eps)
    np.testing.assert_allclose(small_eps.var(), var_is, rtol=0.1)

    e_w, e_wr = _expected_continuous(sde, "likelihood", eps=LIKELIHOOD_EPS)
    assert abs(importance.mean() - (e_w - e_wr)) < 4 * _se(importance)
    assert abs(importance.mean() - uniform.mean()) < 4 * np.hypot(_se(importance), _se(uniform))
    if name == "ve":
        np.testing.assert_allclose(var_uniform, var_is, rtol=1e-6)
        np.testing.assert_allclose(importance, uniform, rtol=1e-9)
    else:
        assert var_uniform > 100 * var_is, (var_uniform, var_is)  # at eps = 1e-5: exact
        assert uniform.var() > 5 * importance.var(), (uniform.var(), importance.var())


def _linear_model(p, x, t, y, rng):
    return p * x + 0.1 * y.reshape(-1, 1, 1) * t.reshape(-1, 1, 1)


CONFIGS = {
    "dsm": ("vp", {}),
    "likelihood-is": ("subvp", {"likelihood_weighting": True, "importance_sampling": True}),
    "ddpm": ("vp", {"continuous": False, "parameterization": "eps"}),
}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_shapes_reduction_and_batch_size_independence(config):
    name, options = CONFIGS[config]
    sde = SDES[name]
    make = lambda **kw: losses.get_loss_fn(sde, _linear_model, **options, **kw)

    @jax.jit
    def run(key, x, y):
        per_example = make(per_example=True)
        return {
            "big": per_example(key, 0.5, x, y),
            "small": per_example(key, 0.5, x[:8], y[:8]),
            "by_mean": make(per_example=True, reduce_mean=True)(key, 0.5, x, y),
            "loss_and_grad": jax.value_and_grad(make(), argnums=1)(key, 0.5, x, y),
        }

    out = run(
        jax.random.key(10), jax.random.normal(jax.random.key(11), (16, 2, 3)), jnp.arange(16.0)
    )
    big, (loss, grad) = out["big"], out["loss_and_grad"]
    chex.assert_shape([big, out["small"], loss, grad], [(16,), (8,), (), ()])
    chex.assert_tree_all_finite(out)
    np.testing.assert_allclose(out["small"], big[:8], rtol=1e-12)
    np.testing.assert_allclose(loss, big.mean(), rtol=1e-12)
    np.testing.assert_allclose(big, out["by_mean"] * 6 / 2, rtol=1e-12)  # ½ sum = (D/2) mean
    assert grad != 0


def test_discrete_loss_for_subvp_is_a_clear_error():
    with pytest.raises(ValueError, match="continuous=True"):
        losses.get_loss_fn(SDES["subvp"], _linear_model, continuous=False)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"parameterization": "w"}, "parameterization='w'"),
        ({"importance_sampling": True}, "likelihood_weighting=True"),
        ({"continuous": False, "likelihood_weighting": True}, "continuous=True"),
        ({"eps": 0.0}, "eps=0.0"),
        ({"min_snr_gamma": -1.0}, "min_snr_gamma=-1.0"),
        ({"min_snr_gamma": 5.0, "likelihood_weighting": True}, "choose one loss weighting"),
        ({"edm": losses.EDMLoss(), "min_snr_gamma": 5.0}, "choose one loss weighting"),
        ({"edm": losses.EDMLoss(), "continuous": False}, "^edm_loss=True .*continuous=True"),
        ({"edm": losses.EDMLoss(p_std=0.0)}, "^p_std=0.0"),
        ({"edm": losses.EDMLoss(sigma_data=-1.0)}, "^sigma_data=-1.0"),
        ({"classifier": True, "min_snr_gamma": 5.0}, "no loss weighting"),
    ],
)
def test_invalid_options_are_clear_errors(options, match):
    with pytest.raises(ValueError, match=match):
        losses.get_loss_fn(SDES["vp"], _linear_model, **options)


def test_discrete_loss_with_the_sde_as_a_traced_argument():
    """The chain lives on the SDE, so a loss built inside jax.jit from a traced SDE works."""
    x = _gaussian().sample(jax.random.key(0), 8)
    rng = jax.random.key(1)

    def loss(sde, rng):
        model = lambda p, x, t, y, rng: -p * x  # noqa: E731
        return losses.get_loss_fn(sde, model, continuous=False)(rng, 1.0, x)

    eager = loss(SDES["vp"], rng)
    np.testing.assert_allclose(jax.jit(loss)(SDES["vp"], rng), eager, rtol=1e-12)
    assert np.isfinite(eager)


# --- the noise-conditional classifier's cross-entropy ------------------------------------------
def _two_class_mixture():
    return analytic.GaussianMixture.isotropic([0.3, 0.7], [[-1.0, 0.5], [1.0, -0.5]], 0.6)


@pytest.mark.parametrize("name", sorted(SDES))
def test_exact_classifier_minimises_the_cross_entropy(name):
    """With the exact p_t(y | x_t) as logits scaled by c, the expected cross-entropy is minimal
    at c = 1 (a proper scoring rule): its c-derivative is 0 there, negative below and positive
    above; logits of 0 give log K for every example."""
    sde, gm = SDES[name], _two_class_mixture()

    def logits_fn(c, x, t, y, rng):
        return c * gm.component_log_probs(x, sde, t)

    loss_fn = losses.get_loss_fn(sde, logits_fn, classifier=True, per_example=True)
    x, y = jax.jit(gm.sample_labelled, static_argnums=1)(jax.random.key(3), 32768)
    key = jax.random.key(4)
    vals, grads = jax.jit(
        lambda x, y: _losses_and_grads(lambda k, c, x: loss_fn(k, c, x, y), key, x)
    )(x, y)
    chex.assert_shape([vals, grads], (len(C), 32768))
    assert abs(grads[1].mean()) < 4 * _se(grads[1]), (float(grads[1].mean()), _se(grads[1]))
    # Paired over the same (t, x_t): the loss is higher and the slope steeper away from c = 1.
    for other, sign in ((0, -1), (2, 1)):
        dv, dg = vals[other] - vals[1], sign * (grads[other] - grads[1])
        assert dv.mean() > 4 * _se(dv) and dg.mean() > 8 * _se(dg), other
    np.testing.assert_allclose(loss_fn(key, 0.0, x, y), np.log(2.0), rtol=1e-12)
    with pytest.raises(ValueError, match="needs the labels y"):
        loss_fn(key, 1.0, x)
    with pytest.raises(ValueError, match="continuous=True"):
        losses.get_loss_fn(sde, logits_fn, classifier=True, continuous=False)
