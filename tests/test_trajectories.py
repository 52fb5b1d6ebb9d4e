"""Trajectory recording (``sampling.trajectory``) of the predictor–corrector family and the ODE
sampler.

The target is a Gaussian N(MEAN, diag(VAR)) with its exact score (score_sde.analytic): its
marginals p_t are N(alpha_t MEAN, alpha_t² VAR + sigma_t²) and its probability-flow ODE has the
closed-form solution x_t = alpha_t m + sqrt((alpha_t² s + sigma_t²)/(alpha_T² s + sigma_T²))
(x_T - alpha_T m), the references of the checks below.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_flow

from score_sde import analytic, parameterization, sampling
from score_sde import sde as sde_lib
from score_sde.sampling import pc

MEAN = np.array([2.0, -1.0])  # numpy float64: the tests run with x64 on
VAR = np.array([0.04, 2.0])
SDE = sde_lib.VPSDE()
SCORE_FN = analytic.GaussianMixture(
    jnp.ones(1), jnp.asarray(MEAN)[None], jnp.diag(VAR)[None]
).score_fn(SDE)
EPS = SDE.sampling_eps
# (predictor, corrector) of each method, as pc.integrate runs them (snr 0.16, one corrector move).
MOVES = {
    "pc": ("reverse_diffusion", "ald"),
    "euler_maruyama": ("euler_maruyama", "none"),
    "ancestral": ("ancestral", "none"),
}


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


@functools.partial(jax.jit, static_argnums=0)
def pc_step(method, sde, rng, k, x, ts):
    """Step k of ``method`` from x at ts[k] to ts[k + 1], with pc.integrate's keys (rng, k,
    move)."""
    predictor, corrector = MOVES[method]
    key = jax.random.fold_in(jax.random.split(rng)[1], k)
    t, t_next = (jnp.full(x.shape[:1], s) for s in (ts[k], ts[k + 1]))
    x = pc.PREDICTORS[predictor](jax.random.fold_in(key, 0), sde, SCORE_FN, x, t, t_next, False)
    return pc.CORRECTORS[corrector](jax.random.fold_in(key, 1), sde, SCORE_FN, x, t_next, 0.16)


def tweedie(x, t):
    t = jnp.full(x.shape[:1], t)
    return parameterization.tweedie_denoise(SDE, SCORE_FN(x, t), x, t)


@pytest.mark.parametrize("method", sorted(MOVES))
def test_pc_family_records_its_grid_states(method):
    n_steps, shape, rng = 6, (8, 2), jax.random.PRNGKey(3)
    ts = jnp.linspace(SDE.T, EPS, n_steps)
    w = 0.3
    t_mid = float((1 - w) * ts[2] + w * ts[3])
    save_at = tuple(float(t) for t in ts) + (t_mid,)
    x_plain, nfe_plain = sampling.sample(rng, SDE, SCORE_FN, shape, method, n_steps=n_steps)
    x, nfe, traj = sampling.trajectory(
        rng, SDE, SCORE_FN, shape, method, n_steps=n_steps, save_at=save_at
    )
    chex.assert_shape(traj, (n_steps + 1,) + shape)
    np.testing.assert_array_equal(x, x_plain)  # recording changes neither the samples
    assert int(nfe) == int(nfe_plain)  # nor the number of score evaluations
    np.testing.assert_array_equal(traj[0], SDE.prior_sampling(jax.random.split(rng)[0], shape))
    chain = SDE.with_steps(n_steps)
    for k in range(n_steps - 1):  # node k + 1 is node k moved by step k (predictor, corrector)
        stepped = pc_step(method, chain, rng, k, traj[k], ts)
        np.testing.assert_allclose(traj[k + 1], stepped, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(traj[-1], (1 - w) * traj[2] + w * traj[3], rtol=1e-12)
    np.testing.assert_allclose(tweedie(traj[n_steps - 1], EPS), x, rtol=1e-12)
    # Without denoising, the same path and its last state is the sample.
    x_raw, _, traj_raw = sampling.trajectory(
        rng, SDE, SCORE_FN, shape, method, n_steps=n_steps, denoise=False, save_at=save_at
    )
    np.testing.assert_array_equal(traj_raw, traj)
    np.testing.assert_allclose(traj_raw[n_steps - 1], x_raw, rtol=1e-14, atol=1e-15)


# pc with ALD: the Langevin corrector is biased in 2-D (tests/test_sampling.py, LANGEVIN_BIAS).
@pytest.mark.parametrize(
    "method,options", [("pc", dict(corrector="ald")), ("euler_maruyama", {}), ("ancestral", {})]
)
def test_saved_states_have_the_marginal_of_p_t(method, options):
    """The states saved at the grid node nearest t = 0.5 (t = 0.5005) over n = 4000 examples
    have the mean and std of p_t within 4 standard errors."""
    n_steps, n = 101, 4000
    t = float(jnp.linspace(SDE.T, EPS, n_steps)[50])
    _, _, traj = sampling.trajectory(
        jax.random.PRNGKey(7),
        SDE,
        SCORE_FN,
        (n, 2),
        method,
        n_steps=n_steps,
        save_at=(t,),
        **options,
    )
    chex.assert_shape(traj, (1, n, 2))
    mean, std = SDE.marginal_prob(jnp.asarray(MEAN)[None], jnp.full((1,), t))
    sd = np.sqrt(std[0] ** 2 + SDE.alpha(jnp.asarray(t)) ** 2 * VAR)
    z_mean = (traj[0].mean(0) - mean[0]) / (sd / np.sqrt(n))
    z_std = (traj[0].std(0) - sd) / (sd / np.sqrt(2 * n))
    assert np.all(np.abs(z_mean) < 4), z_mean
    assert np.all(np.abs(z_std) < 4), z_std


def test_ode_trajectory_follows_the_exact_probability_flow():
    shape, rng = (8, 2), jax.random.PRNGKey(5)
    save_at = (0.5, SDE.T, EPS, 0.1)  # any order
    opts = dict(rtol=1e-9, atol=1e-9, denoise=False, eps=EPS)
    x_plain, nfe_plain = sampling.sample(rng, SDE, SCORE_FN, shape, "ode", **opts)
    x, nfe, traj = sampling.trajectory(rng, SDE, SCORE_FN, shape, "ode", save_at=save_at, **opts)
    chex.assert_shape(traj, (4,) + shape)
    np.testing.assert_allclose(x, x_plain, rtol=1e-13)  # the same steps, up to XLA's rounding
    assert int(nfe) == int(nfe_plain)
    x_T = SDE.prior_sampling(jax.random.split(rng)[0], shape)
    np.testing.assert_array_equal(traj[1], x_T)
    np.testing.assert_array_equal(traj[2], x)  # the pre-denoise state at eps, exactly
    for j, t in enumerate(save_at):
        want = gaussian_flow(SDE, MEAN, VAR, x_T, t)
        np.testing.assert_allclose(traj[j], want, rtol=0, atol=1e-7)
    # With denoising, the trajectory is unchanged and the sample is its Tweedie denoising.
    x_den, nfe_den, traj_den = sampling.trajectory(
        rng, SDE, SCORE_FN, shape, "ode", save_at=save_at, **{**opts, "denoise": True}
    )
    assert int(nfe_den) == int(nfe) + 1
    np.testing.assert_array_equal(traj_den, traj)
    np.testing.assert_allclose(x_den, tweedie(traj[2], EPS), rtol=1e-12)


@pytest.mark.parametrize("method", ["pc", "euler_maruyama", "ancestral", "ode"])
def test_invalid_save_at_raises(method):
    shape, rng = (2, 2), jax.random.PRNGKey(0)
    with pytest.raises(TypeError, match=r"save_at=\[0.5\].*a tuple"):
        sampling.trajectory(rng, SDE, SCORE_FN, shape, method, save_at=[0.5])
    with pytest.raises(TypeError, match=r"save_at.*sampling.trajectory"):
        sampling.sample(rng, SDE, SCORE_FN, shape, method, save_at=(0.5,))
    for t in (0.0, EPS / 2, SDE.T + 0.1):
        with pytest.raises(ValueError, match=r"outside this sampler's span \[0.001, 1.0\]"):
            sampling.trajectory(rng, SDE, SCORE_FN, shape, method, save_at=(0.5, t), eps=EPS)
