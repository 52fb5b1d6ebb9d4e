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
    """The model as eps (``"noise"``) or x0 (``"data"``) at time t: a scalar or per example [B]."""
    kind = "eps" if prediction == "noise" else "x0"
    score = score_fn(x, jnp.broadcast_to(t, x.shape[:1]))
    return param.from_score(sde, score, x, t, kind)


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


def multistep_weights(sde, prediction, lams, s, t, order):
    """Multistep DPM-Solver(++)-``order`` (Lu et al. 2022b, Alg. 2 and App. B) as
    x_t = A x_s - c sum_j w_j m_j over the last ``order`` model outputs m_j, newest first
    (m_0 at s); returns (A, c, (w_0, ...)). ``lams``: the lambdas of those outputs.
    Elementwise, so it computes every step of a grid at once.

    With r_j = (lam_j - lam_{j+1}) / h and D1_j = (m_j - m_{j+1}) / r_j the update is
    phi1 m_0 (order 1), + phi1/2 D1_0 (order 2), or phi1 m_0 + phi2 D1 + phi3 D2 with
    D1 = D1_0 + r_0/(r_0 + r_1) (D1_0 - D1_1) and D2 = (D1_0 - D1_1)/(r_0 + r_1) (order 3).
    """
    a, c, u, h = _step_coeffs(sde, s, t, prediction)
    phi1, phi2, phi3 = _phis(u)
    if order == 1:
        return a, c, (phi1,)
    r0 = (lams[0] - lams[1]) / h
    if order == 2:
        return a, c, (phi1 + 0.5 * phi1 / r0, -0.5 * phi1 / r0)
    r1 = (lams[1] - lams[2]) / h
    d1_0 = (phi2 * (1 + r0 / (r0 + r1)) + phi3 / (r0 + r1)) / r0  # weight of D1_0, over r0
    d1_1 = (phi2 * r0 / (r0 + r1) + phi3 / (r0 + r1)) / r1  # minus the weight of D1_1, over r1
    return a, c, (phi1 + d1_0, -d1_0 - d1_1, d1_1)


def history_lambdas(lams: Array, order: int) -> list[Array]:
    """For each step i of a grid with lambdas ``lams``, the lambdas of the last ``order`` model
    outputs, newest first: [lam_i, lam_{i-1}, ...]. Before the grid's start (warm-up steps,
    whose lower order leaves those weights unused) the lambdas continue at the first step's
    spacing, so that the unused weights stay finite and their gradients are not NaN."""
    i = np.arange(lams.shape[0] - 1)
    return [
        jnp.where(i >= j, lams[np.maximum(i - j, 0)], lams[0] - (j - i) * (lams[1] - lams[0]))
        for j in range(order)
    ]


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


def order_runs(orders: np.ndarray) -> list[tuple[int, int, int]]:
    """(first step, end step, order) of each run of equal step orders."""
    cuts = [0, *np.flatnonzero(np.diff(orders)) + 1, len(orders)]
    return [(a, b, int(orders[a])) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]


def grid(sde: SDE, *, n_steps: int = 20, time_grid: str | None = None, eps=None) -> Array:
    """``n_steps`` steps on ``time_grid`` from T to ``eps`` (default sde.end_time). The default,
    ``grid_tables.default_kind``, is the optimized grid under VP, VP-cosine and sub-VP and the
    logsnr grid otherwise: the best measured at 20 NFE (``python bench/grid_families.py``)."""
    return grids.solver_grid(sde, "dpm_solver", n_steps, time_grid, eps)


def integrate(
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
    """DPM-Solver(++) from x at ts[0] along the grid ts; returns (x, nfe, trajectory).

    Defaults give DPM-Solver++(2M), on ``grid``'s default grid within the noise of the best
    candidate measured at 20 NFE (``python bench/defaults.py``, ``python
    bench/grid_families.py``, docs/benchmarks.md); ``prediction="noise"`` is the original
    DPM-Solver, ``stepping="singlestep"`` spends ``order`` evaluations per step. nfe =
    len(ts) - 1 for multistep, the sum of the step orders for singlestep. Each run of steps of
    one order is one ``lax.scan`` (no per-step branch), with the model history of multistep in
    the carry.
    """
    del rng  # deterministic
    check_options(order, stepping, prediction)
    n = ts.shape[0] - 1
    orders = step_orders(n, order, stepping, lower_order_final)
    model = functools.partial(predict, sde, score_fn, prediction)
    traj = grids.trajectory_init(save_at, x)
    if stepping == "multistep":
        x, traj = _multistep(sde, model, prediction, x, ts, orders, order, save_at, traj)
        return x, n, traj
    updates = [
        lambda x, s, t, m: first_update(sde, prediction, x, s, t, m),
        lambda x, s, t, m: second_update(sde, model, prediction, x, s, t, m)[0],
        lambda x, s, t, m: third_update(sde, model, prediction, x, s, t, m),
    ]
    for first, end, k in order_runs(orders):  # one scan per run of steps of one order

        def step(x, i, k=k):
            s, t = ts[i], ts[i + 1]  # scalars: the step's coefficients are computed once
            x_t = updates[k - 1](x, s, t, model(x, s))
            return x_t, (s, t, x, x_t)

        x, traj = grids.scan(step, x, jnp.arange(first, end), save_at, traj)
    return x, int(orders.sum()), traj


def _multistep(sde, model, prediction, x, ts, orders, order, save_at, traj):
    """Multistep steps with each step's (A, c, w) computed for the whole grid up front (the
    loop body is the model call and one fused update); warm-up and final steps of lower
    order get zero weights for the outputs they do not use. Returns (x, trajectory)."""
    window = history_lambdas(sde.half_log_snr(ts), order)  # lam of m_j
    a, c, w = multistep_weights(sde, prediction, window, ts[:-1], ts[1:], 1)
    w = list(w) + [jnp.zeros_like(a)] * (order - 1)
    for k in range(2, order + 1):
        _, _, w_k = multistep_weights(sde, prediction, window, ts[:-1], ts[1:], k)
        use = jnp.asarray(orders == k)
        w = [jnp.where(use, w_kj, wj) for wj, w_kj in zip(w, (*w_k, *w[k:]), strict=True)]

    def step(carry, inputs):
        x, history = carry
        s, t, a_i, c_i, w_i = inputs
        ms = (model(x, s), *history)
        x_t = _combine(a_i, x, c_i, list(zip(w_i, ms, strict=True)))
        return (x_t, ms[: order - 1]), (s, t, x, x_t)

    history = tuple(jnp.zeros_like(x) for _ in range(order - 1))  # newest first
    inputs = (ts[:-1], ts[1:], a, c, tuple(w))
    (x_end, _), traj = grids.scan(
        step, (x, history), inputs, save_at, traj, unroll=grids.MULTISTEP_UNROLL
    )
    return x_end, traj


def check_options(order, stepping, prediction):
    if order not in (1, 2, 3):
        raise ValueError(f"order={order!r}: DPM-Solver has orders 1, 2 and 3.")
    if stepping not in STEPPING:
        raise ValueError(f"stepping={stepping!r}: use one of {STEPPING}.")
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"prediction={prediction!r}: use 'noise' (DPM-Solver) or 'data' (DPM-Solver++)."
        )
