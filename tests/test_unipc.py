"""UniPC (score_sde.sampling.unipc) against DPM-Solver, an independent step-by-step oracle,
the exact flow of a Gaussian and an exact-score 2-D mixture, in float64.

The oracle builds each step from the definition rather than the linear system: the exponential
integral (Gauss-Legendre) of the Lagrange interpolant through the outputs the step uses, except
that a single difference takes rho = 1/2 (UniP-2 and UniC-1). The exact flow of N(m, diag(v)):
x_t = alpha_t m + sqrt((alpha_t² v + sigma_t²)/(alpha_T² v + sigma_T²)) (x_T - alpha_T m).
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from score_sde import analytic, metrics, sampling
from score_sde import sde as sde_lib
from score_sde.sampling import dpm_solver, grids, unipc

pytestmark = pytest.mark.usefixtures("x64")  # conftest: float64 throughout

VP, SUBVP, VE = sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()
GAUSS_MEAN, GAUSS_VAR = np.array([0.5, -1.0, 2.0]), np.array([0.04, 0.5, 2.0])


def mixture():
    return analytic.GaussianMixture.isotropic(
        [0.3, 0.4, 0.3], [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], 0.35
    )


def prior(sde, n, dim=2, seed=0):
    return sde.prior_sampling(jax.random.PRNGKey(seed), (n, dim))


def solver(sde, score_fn, **options):
    """unipc.integrate on (x, ts), jitted; returns (x, nfe, trajectory)."""
    return jax.jit(lambda x, ts: unipc.integrate(None, sde, score_fn, x, ts, **options))


# --- with unic=False: DPM-Solver's multistep where it should be ----------------------------
EQUIVALENCE = [(VP, "data"), (VP, "noise"), (SUBVP, "data"), (VE, "data"), (VE, "noise")]


@pytest.mark.parametrize(
    "sde,prediction", EQUIVALENCE, ids=["vp-data", "vp-noise", "subvp-data", "ve-data", "ve-noise"]
)
def test_unip2_with_bh2_is_multistep_dpm_solver_2(sde, prediction):
    """UniP-2 with bh2 (and lower_order_final) = DPM-Solver-2M (noise) or DPM-Solver++(2M)
    (data), its first and last steps UniP-1 = DPM-Solver-1, to float64 rounding."""
    score_fn, x = mixture().score_fn(sde), prior(sde, 64)
    ts = grids.time_grid(sde, 10, "logsnr")
    options = dict(order=2, prediction=prediction)
    dpm = jax.jit(lambda x: dpm_solver.integrate(None, sde, score_fn, x, ts, **options)[0])(x)
    uni = solver(sde, score_fn, variant="bh2", unic=False, **options)(x, ts)[0]
    np.testing.assert_allclose(uni, dpm, rtol=0, atol=1e-13 * float(jnp.max(jnp.abs(dpm))))


@pytest.mark.parametrize("prediction", dpm_solver.PREDICTIONS)
@pytest.mark.parametrize("variant", unipc.VARIANTS)
def test_unip_weights_against_dpm_solver_and_the_exact_integral(variant, prediction):
    """Step weights, where the equivalences come from. UniP-1 is DPM-Solver-1 and UniP-2 is
    multistep DPM-Solver-2 only with bh2 (bh1's B(h) = h is not e^h - 1). On model outputs
    quadratic in lambda a UniP-3 step is the exact exponential integral (either variant), while
    DPM-Solver(++)(3M) (Lu et al.'s formula) gives the quadratic term half its weight: UniP-3 is
    not DPM-Solver-3M."""
    ts = jnp.array([0.5, 0.4, 0.3, 0.2])  # outputs at ts[2], ts[1], ts[0]; step ts[2] -> ts[3]
    lams = VP.half_log_snr(ts)
    window, s, t = [lams[2], lams[1], lams[0]], ts[2], ts[3]
    uni = {k: unipc.weights(VP, prediction, variant, window, s, t, k, False) for k in (1, 2, 3)}
    dpm = {k: dpm_solver.multistep_weights(VP, prediction, window, s, t, k) for k in (1, 2, 3)}
    for k in (1, 2, 3):
        chex.assert_trees_all_close(uni[k][:2], dpm[k][:2], rtol=1e-14)  # A and c
    np.testing.assert_allclose(uni[1][2], dpm[1][2], rtol=1e-14)
    assert np.allclose(uni[2][2], dpm[2][2], rtol=1e-12) == (variant == "bh2")
    exact = interpolant_weights(VP, prediction, variant, window, s, t)[2]
    np.testing.assert_allclose(uni[3][2], exact, rtol=1e-12)
    quadratic = [(lam - window[0]) ** 2 for lam in window]
    integral = lambda w: sum(wj * m for wj, m in zip(w, quadratic, strict=True))
    np.testing.assert_allclose(integral(dpm[3][2]), 0.5 * integral(exact), rtol=1e-12)


# --- the paper's algorithm, step by step ---------------------------------------------------
def interpolant_weights(sde, prediction, variant, nodes, s, t):
    """(A, c, w) of x_t = A x_s - c sum_j w_j m_j for outputs m_j at lambdas ``nodes`` (nodes[0]
    at s): the exponential integral of their Lagrange interpolant, or with two nodes phi1 m_0 +
    B/2 (m_1 - m_0)/r_1."""
    lam_s, lam_t = float(sde.half_log_snr(s)), float(sde.half_log_snr(t))
    nodes, h = np.asarray(nodes, float), lam_t - lam_s
    alpha, sigma = (lambda v: float(sde.alpha(v))), (lambda v: float(sde.marginal_std(v)))
    if prediction == "data":  # x_t = (sigma_t/sigma_s) x_s + alpha_t ∫ e^(lam - lam_t) x0 dlam
        a, c, u, kernel = sigma(t) / sigma(s), alpha(t), -h, lambda lam: -np.exp(lam - lam_t)
    else:  # x_t = (alpha_t/alpha_s) x_s - sigma_t ∫ e^(lam_t - lam) eps dlam
        a, c, u, kernel = alpha(t) / alpha(s), sigma(t), h, lambda lam: np.exp(lam_t - lam)
    if len(nodes) == 2:
        half_b = 0.5 * (u if variant == "bh1" else np.expm1(u)) * h / (nodes[1] - nodes[0])
        return a, c, (np.expm1(u) - half_b, half_b)
    z, q = np.polynomial.legendre.leggauss(24)
    lam = lam_s + 0.5 * h * (z + 1)
    basis = [
        np.prod([(lam - nk) / (nj - nk) for k, nk in enumerate(nodes) if k != j], axis=0)
        for j, nj in enumerate(nodes)
    ]
    return a, c, tuple(0.5 * h * np.sum(q * kernel(lam) * lj) for lj in basis)


def oracle(sde, score_fn, x, ts, order, prediction, variant, unic):
    """UniPC-``order`` written as the paper's multistep algorithm; the state at every node."""
    model = lambda y, t: dpm_solver.predict(sde, score_fn, prediction, y, t)
    n, lams = len(ts) - 1, [float(v) for v in sde.half_log_snr(ts)]
    orders = dpm_solver.step_orders(n, order, "multistep", lower_order_final=True)
    outputs, states = [model(x, ts[0])], [x]  # outputs: newest first

    def update(x, nodes, ms, s, t):
        a, c, w = interpolant_weights(sde, prediction, variant, nodes, s, t)
        return a * x - c * sum(wj * m for wj, m in zip(w, ms, strict=True))

    for i in range(n):
        p, s, t = int(orders[i]), ts[i], ts[i + 1]
        nodes = lams[i::-1][:p]
        x_t = update(x, nodes, outputs[:p], s, t)  # UniP-p
        if i < n - 1:  # no model call after the last step, so no corrector there
            outputs.insert(0, model(x_t, t))
            if unic:  # UniC-p with the model at the prediction
                x_t = update(x, nodes + [lams[i + 1]], outputs[1 : p + 1] + outputs[:1], s, t)
        x = x_t
        states.append(x)
    return jnp.stack(states)


ORACLE_CASES = [  # (sde, prediction, variant, unic)
    (VP, "data", "bh1", True),
    (VP, "noise", "bh2", True),
    (SUBVP, "data", "bh2", True),
    (VE, "noise", "bh1", True),
    (VE, "data", "bh2", True),
    (VP, "data", "bh2", False),
]


@pytest.mark.parametrize(
    "sde,prediction,variant,unic",
    ORACLE_CASES,
    ids=["vp-data-bh1", "vp-noise-bh2", "subvp-data-bh2", "ve-noise-bh1", "ve-data-bh2", "unip"],
)
def test_every_step_is_the_papers_algorithm(sde, prediction, variant, unic):
    """UniPC-3 on 7 steps, of orders 1, 2, 3, 3, 3, 2, 1 (warm-up, lower_order_final): the
    state at every node (the corrected one, which the next step starts from) is the oracle's."""
    score_fn, x = mixture().score_fn(sde), prior(sde, 16)
    ts = grids.time_grid(sde, 7, "logsnr")
    options = dict(order=3, prediction=prediction, variant=variant, unic=unic)
    save_at = tuple(float(t) for t in ts)
    x_end, nfe, traj = solver(sde, score_fn, save_at=save_at, **options)(x, ts)
    want = oracle(sde, score_fn, x, ts, **options)
    chex.assert_shape(traj, (8, 16, 2))
    assert int(nfe) == 7
    np.testing.assert_allclose(traj, want, rtol=0, atol=1e-11 * float(jnp.max(jnp.abs(want))))
    np.testing.assert_array_equal(traj[-1], x_end)


# --- convergence order ------------------------------------------------------------------------
def gaussian_flow(sde, x_T, t):
    """The exact probability-flow solution from x_T at T to t for N(GAUSS_MEAN, GAUSS_VAR)."""
    (a_T, s_T), (a, s) = ((sde.alpha(jnp.asarray(u)), sde.marginal_std(jnp.asarray(u)))
                          for u in (sde.T, t))  # fmt: skip
    spread = (a**2 * GAUSS_VAR + s**2) / (a_T**2 * GAUSS_VAR + s_T**2)
    return a * GAUSS_MEAN + jnp.sqrt(spread) * (x_T - a_T * GAUSS_MEAN)


CONVERGENCE = [  # (name, sde, options, step counts, order); measured slopes in the comments
    ("unipc1-vp-bh1", VP, dict(order=1, variant="bh1"), (16, 32, 64), 2),  # 2.13, 2.07
    ("unipc2-ve", VE, dict(order=2), (32, 64, 128), 3),  # 2.96, 2.99
    ("unipc3-vp-noise", VP, dict(order=3, prediction="noise"), (64, 128, 256), 4),  # 4.11, 4.05
    ("unipc3-ve-bh1", VE, dict(order=3, variant="bh1"), (64, 128, 256), 4),  # 3.77, 4.00
]


@pytest.mark.parametrize("case", CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_convergence_order(case):
    """UniPC-p converges at order p + 1: the fitted slope of the final error against the exact
    flow over ``n_steps`` is within 0.3 of it. (Started from the prior alone, UniPC-3's first
    step is UniPC-1, of local error O(h³), which bounds its order by 3 as h -> 0; over these
    step counts that error is still far below the rest.)"""
    _, sde, options, ns, order = case
    gaussian = analytic.GaussianMixture(
        jnp.ones(1), jnp.asarray(GAUSS_MEAN)[None], jnp.diag(GAUSS_VAR)[None]
    )
    x_T = prior(sde, 8, dim=3)
    want = gaussian_flow(sde, x_T, sde.sampling_eps)
    run = solver(sde, gaussian.score_fn(sde), lower_order_final=False, **options)
    errors = [
        float(jnp.max(jnp.abs(run(x_T, grid)[0] - want)))
        for grid in [grids.time_grid(sde, n, "logsnr", t_end=sde.sampling_eps) for n in ns]
    ]
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert abs(slope - order) < 0.3, (errors, slope)


# --- the corrector's gain at few evaluations --------------------------------------------------
def exact_ode(sde, score_fn, x, n_steps):
    """The probability-flow ODE solved by singlestep DPM-Solver-3 (noise prediction) with
    ``n_steps`` steps, 3 evaluations each."""
    ts = grids.time_grid(sde, n_steps, "logsnr", t_end=sde.sampling_eps)
    options = dict(order=3, stepping="singlestep", prediction="noise", lower_order_final=False)
    return jax.jit(lambda x: dpm_solver.integrate(None, sde, score_fn, x, ts, **options)[0])(x)


def test_the_corrector_improves_the_predictor_at_few_evaluations():
    """Data prediction on the 2-D mixture under VP, against the ODE solution from the same prior
    draws (``exact_ode``, 100 steps: a mean distance of 1e-5 to 200 steps). At 10 evaluations
    UniC cuts UniP's mean error 0.278 -> 0.161 (order 1, bh2), 0.396 -> 0.196 (order 2, bh1),
    0.115 -> 0.076 (order 2, bh2), and the sliced W2 to those solutions 1.5x to 2x. UniPC-3
    needs more: at 10 its corrector raises the error, 0.075 -> 0.113; at 20 it cuts it 0.023 ->
    0.017 (sliced W2 0.019 -> 0.016)."""
    sde = VP
    score_fn, x = mixture().score_fn(sde), prior(sde, 500)
    reference = exact_ode(sde, score_fn, x, 100)
    key = jax.random.PRNGKey(1)
    cases = [(1, "bh2", 10), (2, "bh1", 10), (2, "bh2", 10), (3, "bh2", 20)]
    for order, variant, n_steps in cases:
        ts = grids.time_grid(sde, n_steps, "logsnr", t_end=sde.sampling_eps)
        errors, distances = [], []
        for unic in (False, True):
            y = solver(sde, score_fn, order=order, variant=variant, unic=unic)(x, ts)[0]
            errors.append(float(jnp.mean(jnp.linalg.norm(y - reference, axis=-1))))
            distances.append(float(metrics.sliced_wasserstein(key, y, reference)))
        assert errors[1] < 0.8 * errors[0], (order, variant, errors)
        assert distances[1] < 0.9 * distances[0], (order, variant, distances)


# --- the front door: evaluations, grid, options --------------------------------------------
CALLS = []


def counting_score(mix, sde, x, t):
    jax.debug.callback(lambda t: CALLS.append(1), t)
    return mix.score(x, sde, t)


FRONT_DOOR = [dict(n_steps=1, unic=False, prediction="noise"), dict(n_steps=7, eps=1e-2)]


@pytest.mark.parametrize("options", FRONT_DOOR, ids=str)
def test_nfe_is_n_steps_and_sample_is_the_solver_on_its_grid(options):
    """n_steps model calls, counted at run time (UniC adds none; the last step has none);
    ``sample`` = ``solve`` from the prior on ``unipc.grid`` (its own table at 7 steps)."""
    sde, rng, shape = VP, jax.random.PRNGKey(3), (5, 2)
    score_fn = Partial(counting_score, mixture(), sde)
    grid_names = sampling.METHODS["unipc"].grid_options
    ts = unipc.grid(sde, **{k: v for k, v in options.items() if k in grid_names})
    prior_key, solve_key = jax.random.split(rng)
    solver_options = {k: v for k, v in options.items() if k not in grid_names}
    x_T = sde.prior_sampling(prior_key, shape)
    runs = []
    for run in (
        lambda: sampling.sample(
            rng, sde, score_fn, shape, method="unipc", denoise=False, **options
        ),
        lambda: sampling.solve(solve_key, sde, score_fn, x_T, ts, method="unipc", **solver_options),
    ):
        CALLS.clear()
        x, nfe = run()
        jax.effects_barrier()
        assert int(nfe) == len(CALLS) == options["n_steps"]
        runs.append(x)
    np.testing.assert_allclose(runs[0], runs[1], rtol=1e-12, atol=1e-12)
    chex.assert_tree_all_finite(runs)


def test_clear_errors_for_bad_options():
    call = lambda **options: sampling.sample(
        jax.random.PRNGKey(0), VP, mixture().score_fn(VP), (2, 2), method="unipc", **options
    )
    cases = [
        (dict(order=4), "order=4"),
        (dict(variant="bh3"), "variant='bh3'"),
        (dict(prediction="x0"), "prediction='x0'"),
        (dict(unic="yes"), "unic='yes'"),
        (dict(time_grid="karras"), "time_grid='karras'"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            call(**options)
    with pytest.raises(TypeError, match="stepping"):
        call(stepping="singlestep")
