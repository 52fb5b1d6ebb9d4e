"""UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for Fast Sampling of
Diffusion Models", arXiv 2302.04867): multistep UniP-p predictors, each step corrected by UniC-p
with the model evaluation at the predicted point, the one the next predictor step needs anyway.

It is DPM-Solver's exponential integrator (``dpm_solver``: the same A, c, u = h for noise and
u = -h for data prediction, and model outputs m = eps or x0) with new weights. A step s -> t is
    x_t = A x_s - c [phi1(u) m_s + B(u) sum_k rho_k D_k],   D_k = (m_k - m_s) / r_k,
with r_k = (lam_k - lam_s) / h for earlier outputs m_k, B(u) = u ("bh1") or e^u - 1 ("bh2"),
and rho solving R rho = g / B with R_jk = r_k^(j-1), g_j = j! phi_{j+1}(u) (phi_2 = phi1/u - 1,
phi_{j+1} = phi_j/u - 1/j!). UniP-p uses the p - 1 earlier outputs; UniC-p uses them and m_t,
the model at the predicted x_t, with r = 1. A single difference takes rho = 1/2 instead of the
solve (the paper's choice for UniP-2 and UniC-1); elsewhere B rho = R^-1 g does not depend on B,
so the two variants differ only in UniP-2 and UniC-1 steps.

What equals what (tests/test_unipc.py): without the corrector (``unic=False``), UniP-1 is
DPM-Solver-1 (DDIM); UniP-2 with bh2 is multistep DPM-Solver-2 (noise) or DPM-Solver++(2M)
(data); UniP-3 is the exponential integral of the quadratic through the last three outputs,
exact on quadratics in lambda, which DPM-Solver(++)(3M) is not (its D2 term has half that
weight): order 3 differs.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from score_sde.sampling import dpm_solver, grids
from score_sde.sampling.dpm_solver import _combine, _phis, _step_coeffs
from score_sde.sde import SDE

Array = jax.Array
VARIANTS = ("bh1", "bh2")
# order=None takes UniPC-2 on grids of up to this many steps and UniPC-3 beyond: at 5, 8 and
# 10 NFE UniPC-2 is better under every SDE family (at 5, 0.57-0.68x UniPC-3's within-mode
# error), UniPC-3 at 15 under VP, VP-cosine and sub-VP (bench/unipc_order.py) and at 20 NFE
# (bench/defaults.py).
SECOND_ORDER_UP_TO = 10


def default_order(n_steps: int) -> int:
    """The order that ``order=None`` takes on a grid of ``n_steps`` steps."""
    return 2 if n_steps <= SECOND_ORDER_UP_TO else 3


# Up to this many steps (UniPC-2's, by default), unipc's default grid is its own optimized table
# under the SDE families of grid_tables.DEFAULT_FAMILIES["unipc"], beyond it dpm_solver's default
# grid: at 5-10 NFE its own table is better, at 15-20 it widens 2d-sharp's modes 2-3x
# (bench/unipc_grid.py).
OWN_GRID_UP_TO = 10


def grid(sde: SDE, *, n_steps: int = 20, time_grid: str | None = None, eps=None) -> Array:
    """``n_steps`` steps on ``time_grid`` from T to ``eps`` (default sde.end_time); "optimized"
    is unipc's own table. The default, None: up to ``OWN_GRID_UP_TO`` steps
    ``grid_tables.default_kind("unipc", ...)`` (that table under the families of
    ``DEFAULT_FAMILIES["unipc"]``, else logsnr), beyond it ``dpm_solver.grid``'s default, each
    the best measured (``python bench/unipc_grid.py``)."""
    if time_grid is None and n_steps > OWN_GRID_UP_TO:
        return dpm_solver.grid(sde, n_steps=n_steps, eps=eps)
    return grids.solver_grid(sde, "unipc", n_steps, time_grid, eps)


def _b_of(u: Array, variant: str) -> Array:
    """B(h) of the two variants, in DPM-Solver's signed step u."""
    return u if variant == "bh1" else jnp.expm1(u)


def _rhs(u: Array, variant: str, n: int) -> list[Array]:
    """g_j / B(u) = j! phi_{j+1}(u) / B(u) for j = 1..n (n <= 3)."""
    _, phi2, phi3 = _phis(u)
    phis = (phi2, phi3, phi3 / u - 1 / 6)
    return [math.factorial(j + 1) * phis[j] / _b_of(u, variant) for j in range(n)]


def _solve_rhos(rs: list[Array], rhs: list[Array]) -> list[Array]:
    """rho with sum_k r_k^(j-1) rho_k = rhs_j (the paper's R_p rho = g/B), elementwise over the
    grid: R_p is a Vandermonde matrix, inverted by the Lagrange basis on the nodes r, so rho_k
    is L_k(x) = prod_(l != k) (x - r_l)/(r_k - r_l) with each x^(j-1) replaced by rhs_j."""
    rhos = []
    for k, r_k in enumerate(rs):
        coeffs, denominator = [1.0], 1.0  # of the product, lowest power first
        for r_l in rs[:k] + rs[k + 1 :]:
            shifted = zip([0.0, *coeffs], [*coeffs, 0.0], strict=True)  # (x - r_l) * coeffs
            coeffs = [low - r_l * high for low, high in shifted]
            denominator = denominator * (r_k - r_l)
        rhos.append(sum(ci * bi for ci, bi in zip(coeffs, rhs, strict=True)) / denominator)
    return rhos


def weights(sde: SDE, prediction: str, variant: str, lams, s, t, order: int, corrector: bool):
    """UniP-``order`` (Zhao et al. 2023, Sec. 3.2), or with ``corrector`` UniC-``order`` (Sec.
    3.1), as x_t = A x_s - c sum_j w_j m_j; returns (A, c, (w_0, ...)). The outputs m_j: the last
    ``order``, newest first (m_0 at s, lambdas ``lams``), then for UniC m_t at the predicted x_t.
    Elementwise, so it computes every step of a grid at once."""
    a, c, u, h = _step_coeffs(sde, s, t, prediction)
    rs = [(lam - lams[0]) / h for lam in lams[1:order]] + ([jnp.ones_like(h)] if corrector else [])
    rhos = [0.5] * len(rs) if len(rs) <= 1 else _solve_rhos(rs, _rhs(u, variant, len(rs)))
    w = [_b_of(u, variant) * rho / r for rho, r in zip(rhos, rs, strict=True)]
    return a, c, (jnp.expm1(u) - sum(w), *w)


def _grid_weights(weights_of, orders: np.ndarray, slots: int):
    """(A, c, w) of every step at its own order (``weights_of(k)`` for order k), w padded with
    zeros to ``slots`` outputs (warm-up and final steps use fewer)."""
    w = None
    for k in sorted(set(orders.tolist())):
        a, c, w_k = weights_of(k)
        w_k = [*w_k, *[jnp.zeros_like(a)] * (slots - len(w_k))]
        use = jnp.asarray(orders == k)
        w = w_k if w is None else [jnp.where(use, *pair) for pair in zip(w_k, w, strict=True)]
    return a, c, w


def integrate(
    rng,
    sde,
    score_fn,
    x,
    ts,
    *,
    order=None,
    prediction="data",
    variant="bh2",
    unic=True,
    lower_order_final=True,
    save_at=(),
):
    """Multistep UniPC-``order`` (Zhao et al. 2023, Sec. 3: UniP-p then UniC-p each step) from x
    at ts[0] along the grid ts; returns (x, nfe = len(ts) - 1, trajectory).

    Steps warm up with orders 1, 2, ... (and with ``lower_order_final`` end with lower ones), as
    multistep DPM-Solver. Each step is UniP, the model at the prediction, then UniC reusing that
    evaluation; the last step has no corrector (it would cost an evaluation), so n steps cost n
    evaluations. ``unic=False`` leaves UniP alone. ``order=None``, the default, is UniPC-2
    on grids of up to ``SECOND_ORDER_UP_TO`` = 10 steps and UniPC-3 beyond (``python
    bench/unipc_order.py``). The other defaults (bh2, data prediction, on dpm_solver's default
    grid) are the best measured at 20 NFE (``python bench/grid_families.py``,
    docs/benchmarks.md): on the optimized grid data and noise prediction tie there (within modes
    1.09x the noise floor, geometric mean over 4 targets under VPSDE), and data prediction is
    far better at 5 NFE (8.0x against 210x) and the safer choice under strong guidance (Lu et
    al. 2022b). On the 2-D mixture of tests/test_unipc.py, UniC-3 helps from 20 steps but not at
    10 (UniC-1, -2 do).
    """
    del rng  # deterministic
    check_options(order, prediction, variant, unic)
    n = ts.shape[0] - 1
    order = default_order(n) if order is None else order
    orders = dpm_solver.step_orders(n, order, "multistep", lower_order_final)
    window = dpm_solver.history_lambdas(sde.half_log_snr(ts), order)  # lam of m_j
    step_weights = functools.partial(weights, sde, prediction, variant, window, ts[:-1], ts[1:])
    a, c, w_p = _grid_weights(lambda k: step_weights(k, False), orders, order)
    _, _, w_c = _grid_weights(lambda k: _newest_first(step_weights(k, True)), orders, order + 1)
    model = functools.partial(dpm_solver.predict, sde, score_fn, prediction)

    def step(carry, inputs):
        x, ms = carry  # ms: the last ``order`` outputs, newest first
        s, t, a_i, c_i, wp_i, wc_i = inputs
        x_t = _combine(a_i, x, c_i, list(zip(wp_i, ms, strict=True)))  # UniP
        ms = (model(x_t, t), *ms)
        if unic:
            x_t = _combine(a_i, x, c_i, list(zip(wc_i, ms, strict=True)))
        return (x_t, ms[:order]), (s, t, x, x_t)

    history = (model(x, ts[0]), *[jnp.zeros_like(x)] * (order - 1))
    inputs = (ts[:-1], ts[1:], a, c, tuple(w_p), tuple(w_c))
    traj = grids.trajectory_init(save_at, x)
    (x, history), traj = grids.scan(
        step, (x, history), jax.tree.map(lambda v: v[:-1], inputs), save_at, traj,
        unroll=grids.MULTISTEP_UNROLL,
    )  # fmt: skip
    w_last = [w[-1] for w in w_p]  # the last step: UniP only, no evaluation after it
    x_end = _combine(a[-1], x, c[-1], list(zip(w_last, history, strict=True)))
    return x_end, n, grids.record(traj, save_at, ts[-2], ts[-1], x, x_end)


def _newest_first(coeffs):
    """UniC's weights with m_t's (the last) first, the order of the loop's outputs."""
    a, c, w = coeffs
    return a, c, (w[-1], *w[:-1])


def check_options(order, prediction, variant, unic):
    if order not in (None, 1, 2, 3):
        raise ValueError(
            f"order={order!r}: UniPC has orders 1, 2 and 3 (UniPC-p is of order p+1), or None"
            " (2 up to 10 steps, 3 beyond)."
        )
    if prediction not in dpm_solver.PREDICTIONS:
        raise ValueError(f"prediction={prediction!r}: use one of {dpm_solver.PREDICTIONS}.")
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: use 'bh1' (B(h) = h) or 'bh2' (B(h) = e^h - 1).")
    if not isinstance(unic, bool):
        raise ValueError(f"unic={unic!r}: pass True (UniC after each UniP) or False (UniP alone).")
