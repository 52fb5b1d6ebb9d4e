"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++ (Lu et al. 2022b): exponential integrators of
the probability-flow ODE in lambda = log(alpha/sigma).

Noise prediction (DPM-Solver) integrates x_t = (alpha_t/alpha_s) x_s - sigma_t ∫ e^lam eps dlam,
data prediction (DPM-Solver++) x_t = (sigma_t/sigma_s) x_s + alpha_t ∫ e^-lam x0 dlam. Both
forms share one set of formulas with u = h (noise) or u = -h (data), h = lam_t - lam_s:
    x_t = A x_s - c [phi1(u) m_s + phi2(u) D1 + phi3(u) D2],
    phi1 = e^u - 1, phi2 = phi1/u - 1, phi3 = phi2/u - 1/2,
with (A, c) = (alpha_t/alpha_s, sigma_t) or (sigma_t/sigma_s, alpha_t). The formulas only use
alpha(t), sigma(t) and lambda(t), so they hold for every SDE here, VE included (alpha = 1: the
VP-equivalent change of variables x/alpha is built in). Steps may run backwards (inversion).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import parameterization as param
from score_sde.sampling import grids
from score_sde.sde import SDE, batch_mul

Array = jax.Array
PREDICTIONS = ("noise", "data")
STEPPING = ("multistep", "singlestep")


def predict(sde: SDE, score_fn, prediction: str, x: Array, t: Array) -> Array:
    """The model as eps (``"noise"``) or x0 (``"data"``) at per-example times t: [B]."""
    kind = "eps" if prediction == "noise" else "x0"
    return param.from_score(sde, score_fn(x, t), x, t, kind)


def _phis(u):
    phi1 = jnp.expm1(u)
    phi2 = phi1 / u - 1.0
    return phi1, phi2, phi2 / u - 0.5


def _step_coeffs(sde, s, t, prediction):
    """(A, c, u, h) of a step s -> t (see the module docstring)."""
    h = sde.half_log_snr(t) - sde.half_log_snr(s)
    if prediction == "noise":
        a = jnp.exp(sde.log_mean_coeff(t) - sde.log_mean_coeff(s))
        return a, sde.marginal_std(t), h, h
    return sde.marginal_std(t) / sde.marginal_std(s), sde.alpha(t), -h, h


def _combine(a, x, c, terms):
    """A x - c sum_k w_k m_k, with per-example A, c and scalar-or-[B] weights w_k."""
    out = batch_mul(a, x)
    for w, m in terms:
        out = out - batch_mul(c * w, m)
    return out


def first_update(sde, prediction, x, s, t, m_s):
    """DPM-Solver-1 (= DDIM with eta = 0), Lu et al. 2022a Eq. 3.7 / 2022b Eq. 8."""
    a, c, u, _ = _step_coeffs(sde, s, t, prediction)
    return _combine(a, x, c, [(jnp.expm1(u), m_s)])


def second_update(sde, model, prediction, x, s, t, m_s, r1=0.5):
    """Singlestep DPM-Solver-2 (Lu et al. 2022a, Alg. 1); returns (x_t, m_s1)."""
    a, c, u, h = _step_coeffs(sde, s, t, prediction)
    s1 = sde.t_from_half_log_snr(sde.half_log_snr(s) + r1 * h)
    m_s1 = model(first_update(sde, prediction, x, s, s1, m_s), s1)
    phi1 = jnp.expm1(u)
    return _combine(a, x, c, [(phi1, m_s), (0.5 / r1 * phi1, m_s1 - m_s)]), m_s1


def third_update(sde, model, prediction, x, s, t, m_s, m_s1=None, r1=1 / 3, r2=2 / 3):
    """Singlestep DPM-Solver-3 (Lu et al. 2022a, Alg. 2), reusing m_s1 when given."""
    a, c, u, h = _step_coeffs(sde, s, t, prediction)
    lam_s = sde.half_log_snr(s)
    s1 = sde.t_from_half_log_snr(lam_s + r1 * h)
    s2 = sde.t_from_half_log_snr(lam_s + r2 * h)
    if m_s1 is None:
        m_s1 = model(first_update(sde, prediction, x, s, s1, m_s), s1)
    a2, c2, u2, _ = _step_coeffs(sde, s, s2, prediction)
    phi1_2, phi2_2, _ = _phis(u2)
    x_s2 = _combine(a2, x, c2, [(phi1_2, m_s), (r2 / r1 * phi2_2, m_s1 - m_s)])
    m_s2 = model(x_s2, s2)
    phi1, phi2, _ = _phis(u)
    return _combine(a, x, c, [(phi1, m_s), (phi2 / r2, m_s2 - m_s)])


def multistep_update(sde, prediction, x, lams, ms, t_prev, t, order):
    """Multistep DPM-Solver(++)-``order`` (Lu et al. 2022b, Alg. 2 and App. B).

    ``ms``/``lams``: the last three model outputs and their lambdas, newest first; ``t_prev``
    is the time of ms[0] (the current x).
    """
    a, c, u, h = _step_coeffs(sde, t_prev, t, prediction)
    phi1, phi2, phi3 = _phis(u)
    m0, m1, m2 = ms
    if order == 1:
        return _combine(a, x, c, [(phi1, m0)])
    r0 = (lams[0] - lams[1]) / h
    d1_0 = batch_mul(1 / r0, m0 - m1)
    if order == 2:
        return _combine(a, x, c, [(phi1, m0), (0.5 * phi1, d1_0)])
    r1 = (lams[1] - lams[2]) / h
    d1_1 = batch_mul(1 / r1, m1 - m2)
    d1 = d1_0 + batch_mul(r0 / (r0 + r1), d1_0 - d1_1)
    d2 = batch_mul(1 / (r0 + r1), d1_0 - d1_1)
    return _combine(a, x, c, [(phi1, m0), (phi2, d1), (phi3, d2)])


def step_orders(n_steps: int, order: int, stepping: str, lower_order_final: bool) -> np.ndarray:
    """The order of each step: multistep warms up with orders 1, 2, ...; with
    ``lower_order_final`` the last steps drop to min(order, steps left)."""
    i = np.arange(n_steps)
    orders = np.full(n_steps, order)
    if stepping == "multistep":
        orders = np.minimum(orders, i + 1)
    if lower_order_final:
        orders = np.minimum(orders, n_steps - i)
    return orders


def dpm_solver_solve(
    rng,
    sde,
    score_fn,
    x,
    ts,
    *,
    order=2,
    stepping="multistep",
    prediction="data",
    lower_order_final=True,
    save_at=(),
):
    """DPM-Solver(++) from x at ts[0] along the grid ts; returns (x, nfe, trajectory or None).

    nfe = len(ts) - 1 for multistep, the sum of the step orders for singlestep.
    """
    del rng  # deterministic
    check_options(order, stepping, prediction)
    n = ts.shape[0] - 1
    orders = step_orders(n, order, stepping, lower_order_final)
    model = functools.partial(predict, sde, score_fn, prediction)
    batch = x.shape[0]
    traj = grids.trajectory_init(save_at, x)

    def times(i):
        return jnp.full((batch,), ts[i], x.dtype), jnp.full((batch,), ts[i + 1], x.dtype)

    if stepping == "singlestep":
        branches = [
            lambda x, s, t, m: first_update(sde, prediction, x, s, t, m),
            lambda x, s, t, m: second_update(sde, model, prediction, x, s, t, m)[0],
            lambda x, s, t, m: third_update(sde, model, prediction, x, s, t, m),
        ][:order]

        def step(carry, inputs):
            x, traj = carry
            i, k = inputs
            s, t = times(i)
            x_t = jax.lax.switch(k - 1, branches, x, s, t, model(x, s))
            return (x_t, grids.record(traj, save_at, ts[i], ts[i + 1], x, x_t)), None

        (x, traj), _ = jax.lax.scan(step, (x, traj), (jnp.arange(n), jnp.asarray(orders)))
        return x, int(orders.sum()), traj

    branches = [
        functools.partial(multistep_update, sde, prediction, order=k) for k in range(1, order + 1)
    ]

    def mstep(carry, inputs):
        x, ms, lams, traj = carry
        i, k = inputs
        s, t = times(i)
        ms = jnp.concatenate([model(x, s)[None], ms[:-1]])
        lams = jnp.concatenate([sde.half_log_snr(s)[None], lams[:-1]])
        x_t = jax.lax.switch(k - 1, branches, x, lams, tuple(ms), s, t)
        return (x_t, ms, lams, grids.record(traj, save_at, ts[i], ts[i + 1], x, x_t)), None

    ms = jnp.zeros((3,) + x.shape, x.dtype)
    lams = jnp.ones((3, batch), x.dtype)
    init = (x, ms, lams, traj)
    (x, _, _, traj), _ = jax.lax.scan(mstep, init, (jnp.arange(n), jnp.asarray(orders)))
    return x, n, traj


def dpm_solver_sampler(
    rng: Array,
    sde: SDE,
    score_fn,
    shape: tuple[int, ...],
    *,
    n_steps: int = 20,
    order: int = 2,
    stepping: str = "multistep",
    prediction: str = "data",
    lower_order_final: bool = True,
    time_grid: str = "logsnr",
    eps: float | None = None,
    save_at: tuple = (),
):
    """DPM-Solver(++) from the prior: ``n_steps`` steps on ``time_grid`` from T to ``eps``.

    Defaults give DPM-Solver++(2M). ``prediction="noise"`` is the original DPM-Solver;
    ``stepping="singlestep"`` spends ``order`` evaluations per step (nfe = sum of step orders).
    """
    check_options(order, stepping, prediction)
    eps = sde.sampling_eps if eps is None else eps
    grids.check_save_at(save_at, sde.T, eps)
    prior_rng, rng = jax.random.split(rng)  # the same prior draw as every sampler here
    x = sde.prior_sampling(prior_rng, shape)
    ts = grids.time_grid(sde, n_steps, time_grid, t_end=eps)
    x, nfe, traj = dpm_solver_solve(
        rng,
        sde,
        score_fn,
        x,
        ts,
        order=order,
        stepping=stepping,
        prediction=prediction,
        lower_order_final=lower_order_final,
        save_at=save_at,
    )
    return grids.outputs(x, nfe, traj)


def check_options(order, stepping, prediction):
    if order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: DPM-Solver has orders 1, 2 and 3.")
    if stepping not in STEPPING:
        raise ValueError(f"stepping={stepping!r}: use one of {STEPPING}.")
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"prediction={prediction!r}: use 'noise' (DPM-Solver) or 'data' (DPM-Solver++)."
        )
