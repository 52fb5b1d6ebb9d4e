"""Probability-flow ODE sampling (Song et al. 2021, Eq. 13) with an adaptive Runge–Kutta solver."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde import odeint, parameterization
from score_sde.sampling import grids
from score_sde.sde import SDE

Array = jax.Array


def probability_flow_drift(sde: SDE):
    """dx/dt = f(x, t) - ½ g(t)² s(x, t) for ONE example x (no batch axis), as
    (t, x, score_fn) -> dx/dt; score_fn is called on the example as a batch of one."""

    def drift(t, x, score_fn):
        reverse = sde.reverse(score_fn, probability_flow=True)
        return reverse.sde(x[None], jnp.full((1,), t, x.dtype))[0][0]

    return drift


def ode_sampler(
    rng: Array,
    sde: SDE,
    score_fn,
    shape: tuple[int, ...],
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float | None = None,
    denoise: bool = True,
    solver: str = "tsit5",
    save_at: tuple = (),
) -> tuple[Array, ...]:
    """Solve the probability-flow ODE from the prior at T down to eps (Song et al. 2021, Eq. 13).

    Each example gets its own adaptive steps (diffrax ``solver`` "tsit5" or "dopri5" with a PID
    controller at ``rtol``, ``atol``). eps defaults to ``sde.sampling_eps``; ``denoise`` returns
    E[x_0 | x_eps] (Tweedie). nfe is exact: the batched score evaluations of the solve (see
    ``score_sde.odeint.solve``) plus one for denoising.

    ``save_at`` (times in [eps, T]) adds the trajectory [len(save_at), *shape] to the outputs:
    x_t from the solver's dense interpolant (not linear: the 4th-order one of the Runge–Kutta
    pair), before denoising; recording changes neither the steps nor nfe.
    """
    odeint.check_solver(solver)
    eps = sde.sampling_eps if eps is None else eps
    grids.check_save_at(save_at, sde.T, eps)
    x = sde.prior_sampling(rng, shape)
    x, nfe, *traj = odeint.solve(
        probability_flow_drift(sde),
        x,
        sde.T,
        eps,
        rtol=rtol,
        atol=atol,
        args=score_fn,
        solver=solver,
        save_at=save_at,
    )
    if denoise:
        t = jnp.full(shape[:1], eps, x.dtype)
        x = parameterization.tweedie_denoise(sde, score_fn(x, t), x, t)
    return grids.outputs(x, nfe + denoise, traj[0] if traj else None)
