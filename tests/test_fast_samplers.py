"""DDIM, DPM-Solver(++), adaptive DPM-Solver and EDM's Heun against exact Gaussian targets.

Exact scores come from score_sde.analytic; the probability-flow ODE of a Gaussian N(m, diag(s))
has the closed-form solution x_t = alpha_t m + sqrt((alpha_t² s + sigma_t²)/(alpha_T² s +
sigma_T²)) (x_T - alpha_T m), the reference of the convergence tests.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_flow

from score_sde import analytic, metrics, sampling
from score_sde import rng as rng_lib
from score_sde import sde as sde_lib
from score_sde.sampling import dpm_solver, dpm_solver_adaptive, edm, grids

MEAN = np.array([0.5, -1.0, 2.0])  # numpy float64: the tests run with x64 on
VAR = np.array([0.04, 0.5, 2.0])


pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout


def gaussian():
    return analytic.GaussianMixture(jnp.ones(1), jnp.asarray(MEAN)[None], jnp.diag(VAR)[None])


def fitted_order(ns, errors):
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0]


# --- equivalences -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "sde,prediction",
    [(sde_lib.VPSDE(), "noise"), (sde_lib.SubVPSDE(), "data"), (sde_lib.VESDE(), "data")],
)
def test_ddim_eta0_is_dpm_solver_1_step_for_step(sde, prediction):
    score_fn = gaussian().score_fn(sde)
    ts = grids.time_grid(sde, 8, "logsnr")
    save_at = tuple(float(t) for t in ts)
    rng, shape = jax.random.PRNGKey(0), (16, 3)
    x_ddim, nfe_ddim, traj_ddim = sampling.trajectory(
        rng, sde, score_fn, shape, method="ddim", n_steps=8, time_grid="logsnr", save_at=save_at,
        denoise=False,
    )  # fmt: skip
    x_dpm, nfe_dpm, traj_dpm = sampling.trajectory(
        rng,
        sde,
        score_fn,
        shape,
        method="dpm_solver",
        n_steps=8,
        time_grid="logsnr",
        order=1,
        prediction=prediction,
        save_at=save_at,
        denoise=False,
    )
    assert nfe_ddim == nfe_dpm == 8
    chex.assert_shape(traj_ddim, (9, 16, 3))
    np.testing.assert_allclose(traj_ddim, traj_dpm, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(x_ddim, traj_ddim[-1], rtol=1e-12)


def test_ddim_eta1_on_the_chain_is_ddpm_ancestral():
    """DDIM(eta=1) on the DDPM chain = Ho et al. Alg. 2 with sigma_k² = beta-tilde_k."""
    sde = sde_lib.VPSDE(N=40)
    chain = sde.chain()
    mix = analytic.GaussianMixture.isotropic([0.4, 0.6], [[-1.0, 0.5], [1.5, -0.5]], 0.3)
    score_fn = lambda x, t: mix.score(x, chain, t)  # exact score of the chain's marginals
    rng, shape = jax.random.PRNGKey(3), (64, 2)
    x, nfe = sampling.sample(
        rng, sde, score_fn, shape, method="ddim", n_steps=40, eta=1.0, discrete=True
    )
    assert nfe == 40
    # Ho et al. (2020), Alg. 2, written out, with the same draws.
    prior_rng, noise_rng = jax.random.split(rng)
    betas = sde.discrete_betas()
    abar = jnp.cumprod(1 - betas)
    abar_prev = jnp.append(1.0, abar[:-1])

    def ddpm_step(y, i):
        k = 39 - i
        eps = -jnp.sqrt(1 - abar[k]) * score_fn(y, jnp.full((64,), k / 39))
        beta_tilde = (1 - abar_prev[k]) / (1 - abar[k]) * betas[k]
        z = rng_lib.normal(jax.random.fold_in(noise_rng, i), shape)
        y = (y - betas[k] / jnp.sqrt(1 - abar[k]) * eps) / jnp.sqrt(1 - betas[k])
        return y + jnp.sqrt(beta_tilde) * z, None

    ddpm = jax.jit(lambda y: jax.lax.scan(ddpm_step, y, jnp.arange(40))[0])
    y = ddpm(sde.prior_sampling(prior_rng, shape))
    np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-8)


def test_ddim_eta1_on_the_smld_chain_is_smld_ancestral():
    """VE's chain is SMLD's: DDIM(eta=1) on it is the SMLD ancestral step (Eq. 47), step for
    step with the same draws, its last step (to the data) Tweedie's at sigma_min."""
    sde = sde_lib.VESDE(N=20, sigma_max=5.0)
    chain = sde.chain()
    mix = analytic.GaussianMixture.isotropic([0.4, 0.6], [[-1.0, 0.5], [1.5, -0.5]], 0.3)
    score_fn = lambda x, t: mix.score(x, chain, t)  # exact score of the chain's marginals
    x_T, key = sde.prior_sampling(jax.random.PRNGKey(0), (32, 2)), jax.random.PRNGKey(1)
    x, nfe = sampling.solve(
        key, sde, score_fn, x_T, chain.times(20), method="ddim", eta=1.0, discrete=True
    )

    def smld_step(y, i):
        t = jnp.full((32,), (19 - i) / 19)
        z = rng_lib.normal(jax.random.fold_in(key, i), y.shape)
        return sde.ancestral_step(y, t, score_fn(y, t), z)[0], None

    y = jax.jit(lambda y: jax.lax.scan(smld_step, y, jnp.arange(20))[0])(x_T)
    assert int(nfe) == 20
    np.testing.assert_allclose(x, y, rtol=1e-8, atol=1e-8)


def pf_heun_in_sigma(sde, score_fn, x_T, sigmas):
    """Heun's method on dx^/dsigma of the probability-flow ODE in x^ = x/alpha, built from
    sde.reverse(..., probability_flow=True) and derivatives of alpha(t) and sigma(t)/alpha(t);
    Euler for the last step to sigma = 0 (EDM Alg. 1)."""
    flow = sde.reverse(score_fn, probability_flow=True)
    t_of = lambda s: grids.t_from_sigma_tilde(sde, s)

    def slope(x_hat, sigma):
        t = t_of(sigma)
        a, da = jax.jvp(sde.alpha, (t,), (jnp.ones_like(t),))
        _, dsig = jax.jvp(lambda u: grids.sigma_tilde(sde, u), (t,), (jnp.ones_like(t),))
        x = a * x_hat
        dx_dt = flow.sde(x, jnp.full((x.shape[0],), t))[0]
        return (dx_dt / a - x * da / a**2) / dsig

    x = x_T / sde.alpha(jnp.asarray(sde.T))
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):  # numpy floats
        d = slope(x, s)
        x_euler = x + (s_next - s) * d
        x = x_euler if s_next == 0 else x + (s_next - s) * 0.5 * (d + slope(x_euler, s_next))
    return x


@pytest.mark.parametrize("grid", ["edm", "uniform"])
@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()])
def test_heun_without_churn_is_heun_on_the_probability_flow_ode(sde, grid):
    score_fn = gaussian().score_fn(sde)
    rng, shape = jax.random.PRNGKey(1), (8, 3)
    x, nfe = sampling.sample(rng, sde, score_fn, shape, "heun", n_steps=6, time_grid=grid)
    assert nfe == 11
    ts = grids.time_grid(sde, 5, grid)
    sigmas = np.append(np.asarray(grids.sigma_tilde(sde, ts)), 0.0)
    x_T = sde.prior_sampling(jax.random.split(rng)[0], shape)
    want = jax.jit(lambda x: pf_heun_in_sigma(sde, score_fn, x, sigmas))(x_T)
    np.testing.assert_allclose(x, want, rtol=1e-9)


# --- convergence order --------------------------------------------------------------------
CONVERGENCE = [
    # (name, sde, solver, options, step counts, order)
    ("dpm1", sde_lib.VPSDE(), "dpm", dict(order=1), (16, 32, 64), 1),
    ("dpm2", sde_lib.VPSDE(), "dpm", dict(order=2, stepping="singlestep"), (16, 32, 64), 2),
    (
        "dpm3",
        sde_lib.VPSDE(),
        "dpm",
        dict(order=3, stepping="singlestep", prediction="noise"),
        (16, 32, 64),
        3,
    ),
    (
        "dpm++3-ve",
        sde_lib.VESDE(),
        "dpm",
        dict(order=3, stepping="singlestep"),
        (64, 128, 256),
        3,
    ),  # data prediction reaches its asymptotic rate later: slopes 2.5, 2.8, 2.9, 2.95
    ("dpm++2m", sde_lib.VPSDE(), "dpm", dict(order=2), (16, 32, 64), 2),
    ("heun", sde_lib.VPSDE(), "heun", {}, (8, 16, 32), 2),
]


@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE()], ids=["vp", "ve"])
def test_heun_on_a_grid_ending_at_zero_ends_with_an_euler_step(sde):
    """A grid ending at t = 0 ends at sigma = 0, the data, even on VE (sigma(0) = sigma_min):
    that step is Euler's (its correction would divide by 0), one evaluation fewer, and it
    returns the denoiser's output D at the previous time."""
    score_fn = gaussian().score_fn(sde)
    x = jax.random.normal(jax.random.PRNGKey(4), (8, 3))
    ts = jnp.append(jnp.linspace(sde.T, 0.05, 8), 0.0)
    to_zero, nfe_zero, _ = edm.integrate(None, sde, score_fn, x, ts)
    to_end, nfe, _ = edm.integrate(None, sde, score_fn, x, ts[:-1])
    assert (int(nfe), int(nfe_zero)) == (14, 15) and np.all(np.isfinite(to_zero))
    x_hat = to_end / sde.alpha(ts[-2])  # EDM's state x / s(t)
    np.testing.assert_allclose(to_zero, edm.denoise(sde, score_fn, x_hat, ts[-2]), rtol=1e-12)


@pytest.mark.parametrize("case", CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_convergence_order(case):
    """Final error against the exact flow falls as n_steps^-order (fitted slope within 0.3)."""
    _, sde, solver, options, ns, order = case
    score_fn = gaussian().score_fn(sde)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (8, 3))
    want = gaussian_flow(sde, MEAN, VAR, x_T, sde.sampling_eps)

    @jax.jit
    def solve(x_T, ts):
        if solver == "dpm":
            return dpm_solver.integrate(
                None, sde, score_fn, x_T, ts, lower_order_final=False, **options
            )[0]
        return edm.integrate(None, sde, score_fn, x_T, ts)[0]

    grid = "logsnr" if solver == "dpm" else "edm"
    ts = [grids.time_grid(sde, n, grid, t_end=sde.sampling_eps) for n in ns]
    errors = [float(jnp.max(jnp.abs(solve(x_T, grid) - want))) for grid in ts]
    slope = fitted_order(ns, errors)
    assert abs(slope - order) < 0.3, (errors, slope)


def test_adaptive_error_and_cost_follow_the_tolerance():
    sde = sde_lib.VPSDE()
    score_fn = gaussian().score_fn(sde)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (16, 3))
    want = gaussian_flow(sde, MEAN, VAR, x_T, sde.sampling_eps)
    results = {}
    for order in (2, 3):
        for tol in (1e-2, 1e-4):
            solve = jax.jit(
                lambda x, order=order, tol=tol: dpm_solver_adaptive.integrate(
                    None,
                    sde,
                    score_fn,
                    x,
                    dpm_solver_adaptive.grid(sde),
                    order=order,
                    rtol=tol,
                    atol=tol,
                )[:2]  # fmt: skip
            )
            x, nfe = solve(x_T)
            results[order, tol] = (float(jnp.max(jnp.abs(x - want))), int(nfe))
    for order in (2, 3):
        (err_loose, nfe_loose), (err_tight, nfe_tight) = results[order, 1e-2], results[order, 1e-4]
        assert err_tight < err_loose / 10 and nfe_tight > nfe_loose, results
        assert err_tight < 1e-3, results
        assert nfe_loose % order == 0
    assert results[3, 1e-4][1] < results[2, 1e-4][1], results  # higher order, fewer evaluations


# --- samplers through the dispatcher ------------------------------------------------------
def mixture():
    return analytic.GaussianMixture.isotropic(
        [0.3, 0.4, 0.3], [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], 0.35
    )


METHODS = [  # (method, options, nfe): the steps' evaluations, + 1 to denoise after 15 steps
    ("ddim", dict(n_steps=20), 21),
    ("ddim", dict(n_steps=20, eta=1.0), 21),
    ("dpm_solver", dict(n_steps=10), 10),
    ("dpm_solver", dict(n_steps=5, order=3, stepping="singlestep", prediction="noise"), 12),
    ("heun", dict(n_steps=10), 19),
    ("heun", dict(n_steps=10, time_grid="uniform"), 19),
    ("dpm_solver_adaptive", dict(rtol=0.05, atol=0.01), None),
    ("heun", dict(n_steps=40, S_churn=20.0), 79),  # churn needs steps (EDM uses 256 on ImageNet)
]


def test_quality_on_a_2d_mixture_at_few_evaluations():
    """Sliced W2 to exact samples within 2.5x the noise floor (two exact sample sets)."""
    n, sde, mix = 2000, sde_lib.VPSDE(), mixture()
    reference = mix.sample(jax.random.PRNGKey(10), n)
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(11), 3)
    floor = np.mean(
        [
            metrics.sliced_wasserstein(k3, mix.sample(a, n), mix.sample(b, n))
            for a, b in ((k1, k2), (k2, k3))
        ]
    )
    score_fn = mix.score_fn(sde)
    for method, options, want_nfe in METHODS:
        x, nfe = sampling.sample(
            jax.random.PRNGKey(12), sde, score_fn, (n, 2), method=method, **options
        )
        chex.assert_shape(x, (n, 2))
        assert nfe == want_nfe or (want_nfe is None and nfe <= 81), (method, nfe)
        sw = metrics.sliced_wasserstein(jax.random.PRNGKey(13), x, reference)
        assert sw < 2.5 * floor, (method, options, float(sw), float(floor))


@pytest.mark.parametrize(
    "method,options",
    [
        ("heun", dict(n_steps=4, S_churn=3.0)),
        ("dpm_solver_adaptive", {}),
    ],
)
def test_samples_do_not_depend_on_the_batch(method, options):
    sde = sde_lib.VPSDE()
    score_fn = mixture().score_fn(sde)
    small, _ = sampling.sample(
        jax.random.PRNGKey(4), sde, score_fn, (4, 2), method=method, **options
    )
    large, _ = sampling.sample(
        jax.random.PRNGKey(4), sde, score_fn, (16, 2), method=method, **options
    )
    np.testing.assert_allclose(small, large[:4], rtol=1e-10)


# --- grids and trajectories ---------------------------------------------------------------
@pytest.mark.parametrize("kind", [k for k in grids.GRIDS if k != "optimized"])  # own file
@pytest.mark.parametrize(
    "sde", [sde_lib.VPSDE(), sde_lib.VPSDE(schedule="cosine"), sde_lib.SubVPSDE(), sde_lib.VESDE()]
)
def test_time_grids(kind, sde):
    ts = grids.time_grid(sde, 10, kind)
    chex.assert_shape(ts, (11,))
    assert ts[0] == sde.T and ts[-1] == sde.sampling_eps
    assert jnp.all(jnp.diff(ts) < 0)
    spacing = {
        "uniform": ts,
        "logsnr": sde.half_log_snr(ts),
        "edm": grids.sigma_tilde(sde, ts) ** (1 / 7),
    }[kind]
    np.testing.assert_allclose(jnp.diff(spacing), jnp.diff(spacing)[0], rtol=1e-6)
    backwards = grids.time_grid(sde, 10, kind, t_start=sde.sampling_eps, t_end=sde.T)
    np.testing.assert_allclose(backwards, ts[::-1], rtol=1e-9)


def test_trajectory_is_recorded_at_the_requested_times():
    sde = sde_lib.VPSDE()
    score_fn = mixture().score_fn(sde)
    rng, shape = jax.random.PRNGKey(2), (8, 2)
    ts = grids.time_grid(sde, 10, "logsnr")
    t_mid = float(0.5 * (ts[3] + ts[4]))
    save_at = (sde.T, float(ts[3]), t_mid, float(ts[4]), sde.sampling_eps, 0.5)
    x, nfe, traj = sampling.trajectory(
        rng, sde, score_fn, shape, method="dpm_solver", n_steps=10, time_grid="logsnr",
        save_at=save_at, denoise=False,
    )  # fmt: skip
    chex.assert_shape(traj, (6, 8, 2))
    np.testing.assert_allclose(traj[0], sde.prior_sampling(jax.random.split(rng)[0], shape))
    np.testing.assert_allclose(traj[2], 0.5 * (traj[1] + traj[3]), rtol=1e-10)
    np.testing.assert_allclose(traj[4], x)
    at_half = traj[5]
    x_plain, _ = sampling.sample(
        rng,
        sde,
        score_fn,
        shape,
        method="dpm_solver",
        n_steps=10,
        time_grid="logsnr",
        denoise=False,
    )
    np.testing.assert_allclose(x_plain, x)  # recording does not change the solve
    # Heun ends at sigma = 0, saved as t = 0; the adaptive solver records accepted steps only.
    x, _, traj = sampling.trajectory(
        rng, sde, score_fn, shape, method="heun", n_steps=5, save_at=(sde.T, 0.0)
    )
    np.testing.assert_allclose(traj[-1], x)
    x, _, traj = sampling.trajectory(
        rng,
        sde,
        score_fn,
        shape,
        method="dpm_solver_adaptive",
        save_at=(sde.T, 0.5, sde.sampling_eps),
        eps=sde.sampling_eps,
        denoise=False,
    )
    np.testing.assert_allclose(traj[-1], x)
    np.testing.assert_allclose(traj[1], at_half, atol=0.1)  # the same ODE path at t = 0.5
    with pytest.raises(ValueError, match="outside"):
        sampling.trajectory(rng, sde, score_fn, shape, method="ddim", save_at=(0.0,))


def test_clear_errors_for_bad_options():
    sde, score_fn, rng = sde_lib.VPSDE(), mixture().score_fn(sde_lib.VPSDE()), jax.random.PRNGKey(0)
    cases = [
        ("dpm_solver", dict(order=4), "order=4"),
        ("dpm_solver", dict(prediction="v"), "prediction='v'"),
        ("dpm_solver", dict(time_grid="karras"), "time_grid='karras'"),
        ("dpm_solver_adaptive", dict(order=1), "order=1"),
        ("heun", dict(n_steps=1), "n_steps=1"),
        ("heun", dict(time_grid="karras"), "time_grid='karras'"),
        ("ddim", dict(eta=-1.0), "eta=-1.0"),
        ("ddim", dict(discrete=True, n_steps=2000), "n_steps=2000"),
        ("ddim", dict(discrete=True, time_grid="edm"), "discrete=True"),
    ]
    for method, options, message in cases:
        with pytest.raises(ValueError, match=message):
            sampling.sample(rng, sde, score_fn, (2, 2), method=method, **options)
    with pytest.raises(ValueError, match="SubVPSDE has no discrete chain"):
        sampling.sample(rng, sde_lib.SubVPSDE(), score_fn, (2, 2), method="ddim", discrete=True)


@pytest.mark.parametrize(
    "method,options",
    [("dpm_solver", dict(order=2)), ("dpm_solver", dict(order=3)), ("unipc", dict(order=3))],
)
def test_the_multistep_solvers_differentiate_in_their_grid(method, options):
    """d x(eps) / d ts is finite and is the finite difference (what fitting a grid needs): the
    warm-up steps' unused weights once divided by a zero step ratio, and 0 x inf made it NaN."""
    sde = sde_lib.VPSDE()
    score_fn = mixture().score_fn(sde)
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (16, 2))
    ts = grids.time_grid(sde, 7, "logsnr")

    def loss(interior):
        grid = ts.at[1:-1].set(interior)
        x, _ = sampling.solve(None, sde, score_fn, x_T, grid, method=method, **options)
        return jnp.sum(x**2)

    grad = jax.grad(loss)(ts[1:-1])
    assert bool(jnp.all(jnp.isfinite(grad))), grad
    delta = 1e-6 * jnp.eye(ts.shape[0] - 2)
    numeric = [(loss(ts[1:-1] + d) - loss(ts[1:-1] - d)) / 2e-6 for d in delta]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)
