"""The few-step defaults of the fixed-step ODE solvers, and why, on a Gaussian whose
probability-flow map is closed form: the final step (``denoise=None``: up to
``sampling.FEW_STEPS`` steps the last evaluation is one more step, beyond it the denoising step)
and UniPC's order (``order=None``: 2 up to ``unipc.SECOND_ORDER_UP_TO`` steps, 3 beyond)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gaussian_flow
from jax.tree_util import Partial

from score_sde import analytic, sampling
from score_sde import sde as sde_lib
from score_sde.sampling import unipc

ODE_SOLVERS = ("ddim", "dpm_solver", "unipc")
D = 64  # a Gaussian with stds log-even over [0.01, 1], as images' spectrum
VAR = np.logspace(-2, 0, D) ** 2
MEAN = 0.3 * np.cos(np.arange(D))


def gaussian_score(sde):
    """The exact score of N(MEAN, diag(VAR)), a one-component ``analytic.GaussianMixture``."""
    gaussian = analytic.GaussianMixture(jnp.ones(1), jnp.asarray(MEAN)[None], jnp.diag(VAR)[None])
    return Partial(gaussian.score_fn(sde))


@pytest.mark.parametrize("method", ODE_SOLVERS)
def test_the_denoising_step_comes_after_more_than_few_steps(method):
    """n_steps <= 15: the default is denoise=False, n evaluations; 16 and more: denoise=True,
    n + 1. With thresholding, and for pc, the denoising step comes at any step count."""
    sde, score_fn = sde_lib.VPSDE(), Partial(lambda x, t: -0.5 * x)
    call = lambda **o: sampling.sample(jax.random.PRNGKey(1), sde, score_fn, (4, 3), method, **o)  # noqa: E731
    for n_steps, denoise in ((5, False), (sampling.FEW_STEPS, False), (16, True)):
        x, nfe = call(n_steps=n_steps)
        want, want_nfe = call(n_steps=n_steps, denoise=denoise)
        np.testing.assert_array_equal(x, want)
        assert int(nfe) == int(want_nfe) == n_steps + denoise, (n_steps, int(nfe))
    for n_steps in (5, 16):  # thresholding: the thresholded x0 is what lies in [-1, 1]
        x, nfe = call(n_steps=n_steps, thresholding="static")
        want, _ = call(n_steps=n_steps, thresholding="static", denoise=True)
        np.testing.assert_array_equal(x, want)
        assert int(nfe) == n_steps + 1 and float(jnp.max(jnp.abs(x))) <= 1 + 1e-6
    _, nfe = sampling.sample(jax.random.PRNGKey(1), sde, score_fn, (4, 3), "pc", n_steps=5)
    assert int(nfe) == 2 * 4 + 1  # predictor + corrector per step, then the denoising step


@pytest.mark.parametrize("method", ODE_SOLVERS)
def test_at_5_and_10_nfe_one_more_step_beats_the_denoising_step(method, x64):
    """At a budget of 5 and 10 evaluations, the default (that many steps to eps) lands closer
    to the exact flow's x(0) than one step fewer and the denoising step, on the 64-D Gaussian
    under VP (mean squared error at most 0.9x; measured 0.25-0.83x)."""
    sde, rng, shape = sde_lib.VPSDE(), jax.random.PRNGKey(0), (512, D)
    exact = gaussian_flow(sde, MEAN, VAR, sde.prior_sampling(jax.random.split(rng)[0], shape))
    for budget in (5, 10):
        x, nfe = sampling.sample(rng, sde, gaussian_score(sde), shape, method, n_steps=budget)
        denoised, nfe_d = sampling.sample(
            rng, sde, gaussian_score(sde), shape, method, n_steps=budget - 1, denoise=True
        )
        assert int(nfe) == int(nfe_d) == budget
        chex.assert_trees_all_equal_shapes(x, denoised, exact)
        mse, mse_d = (float(jnp.mean((y - exact) ** 2)) for y in (x, denoised))
        assert mse < 0.9 * mse_d, (budget, mse, mse_d)


def test_unipc_takes_order_2_up_to_10_steps_and_order_3_beyond():
    """order=None is order=2 bitwise on grids of 5 and 10 steps, order=3 on 11 and 20."""
    sde, score_fn = sde_lib.VPSDE(), Partial(lambda x, t: -0.5 * x + 0.1 * jnp.sin(3 * x))
    x_T = sde.prior_sampling(jax.random.PRNGKey(1), (4, 3))
    for n_steps, order in ((5, 2), (unipc.SECOND_ORDER_UP_TO, 2), (11, 3), (20, 3)):
        ts = sampling.METHODS["unipc"].grid(sde, n_steps=n_steps)
        x, _ = sampling.solve(None, sde, score_fn, x_T, ts, "unipc")
        want, _ = sampling.solve(None, sde, score_fn, x_T, ts, "unipc", order=order)
        other, _ = sampling.solve(None, sde, score_fn, x_T, ts, "unipc", order=5 - order)
        np.testing.assert_array_equal(x, want, err_msg=str(n_steps))
        assert not np.array_equal(x, other), n_steps


@pytest.mark.parametrize(
    "sde", [sde_lib.VPSDE(), sde_lib.SubVPSDE(), sde_lib.VESDE()], ids=lambda s: type(s).__name__
)
def test_unipc_default_order_is_the_closer_one_at_each_step_count(sde, x64):
    """On the 64-D Gaussian, UniPC's default order lands closer to the exact flow's x(eps)
    than the other order: at 5, 8 and 10 steps order 2 (mean squared error 0.09-0.80x order
    3's under VP, sub-VP and VE), at 15 order 3 (order 2's is 1.3-8.1x)."""
    x_T = sde.prior_sampling(jax.random.PRNGKey(0), (512, D))
    for n_steps in (5, 8, 10, 15):
        ts = sampling.METHODS["unipc"].grid(sde, n_steps=n_steps)
        exact = gaussian_flow(sde, MEAN, VAR, x_T, ts[-1])
        mse = {
            order: float(jnp.mean((sampling.solve(
                None, sde, gaussian_score(sde), x_T, ts, "unipc", order=order
            )[0] - exact) ** 2))
            for order in (None, 2, 3)
        }  # fmt: skip
        other = 3 if n_steps <= unipc.SECOND_ORDER_UP_TO else 2
        assert mse[None] < 0.9 * mse[other], (n_steps, mse)
