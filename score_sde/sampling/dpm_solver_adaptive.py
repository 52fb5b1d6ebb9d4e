"""Adaptive-step DPM-Solver-12 and -23 (Lu et al. 2022a, Sec. 3.3 and Alg. 4 of App. C).

Each attempt from s takes a step h in lambda with a lower-order solver (DPM-Solver-1, or
DPM-Solver-2 with r1 = 1/3) and a higher-order one that reuses its evaluations (DPM-Solver-2
with r1 = 1/2, or DPM-Solver-3); the step is accepted when
E = RMS((x_high - x_low) / max(atol, rtol max(|x_low|, |x_prev|))) <= 1, and the next h is
min(theta h E^(-1/order), lambda_end - lambda_s). Unlike the reference code, E and h are per
example (not the batch maximum), so sample i depends only on (rng, i) and not on its batch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from score_sde.sampling import dpm_solver as dpm
from score_sde.sampling import grids
from score_sde.sde import SDE

Array = jax.Array
_LAM_TOL = 1e-4  # steps ending this close to lambda_end (in lambda) go to t_end exactly


def _rms(v: Array) -> Array:
    return jnp.sqrt(jnp.mean(v.reshape(v.shape[0], -1) ** 2, axis=-1))


def _where(mask, a, b):
    return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)


def grid(sde: SDE, *, eps=None) -> Array:
    """The two ends (T, eps) of the adaptive solve; eps defaults to ``sde.end_time()``."""
    return jnp.asarray([sde.T, sde.end_time() if eps is None else eps])


def integrate(
    rng, sde, score_fn, x, ts, *, order=3, rtol=0.05, atol=0.0078, h_init=0.05, theta=0.9,
    prediction="data", max_steps=1000, save_at=(),
):  # fmt: skip
    """Adaptive DPM-Solver-12 (order 2) or -23 (order 3) from x at ts[0] to ts[-1].

    Defaults are the paper's (atol = 0.0078 suits data in [-1, 1]); ``prediction="data"`` runs
    the DPM-Solver++ forms, ``"noise"`` the original ones. Returns (x, nfe, trajectory). nfe
    counts batched score evaluations: ``order`` per attempt, until every example has reached
    ts[-1]. Examples that have not reached it after ``max_steps`` attempts are returned as NaN.
    """
    del rng  # deterministic
    if order not in (2, 3):
        raise ValueError(
            f"order={order!r}: the adaptive solver is DPM-Solver-12 (order=2) or -23 (order=3)."
        )
    dpm.check_options(order, "singlestep", prediction)
    model = functools.partial(dpm.predict, sde, score_fn, prediction)
    batch, dtype = x.shape[0], x.dtype
    t_start, t_end = ts[0].astype(dtype), ts[-1].astype(dtype)
    lam_end = sde.half_log_snr(t_end)
    sign = jnp.sign(lam_end - sde.half_log_snr(t_start))

    def body(st: _State) -> _State:
        t_try = sde.t_from_half_log_snr(st.lam_s + sign * st.h)
        # Last step when h reaches the end or t_try (an inexact inverse) lands within _LAM_TOL.
        last = (st.h >= jnp.abs(lam_end - st.lam_s)) | (
            sign * (sde.half_log_snr(t_try) - lam_end) > -_LAM_TOL
        )
        t = jnp.where(last, t_end, t_try)
        x_low, x_high = _attempt(sde, model, prediction, order, st.x, st.s, t)
        delta = jnp.maximum(atol, rtol * jnp.maximum(jnp.abs(x_low), jnp.abs(st.x_prev)))
        err = _rms((x_high - x_low) / delta)
        accept = (err <= 1.0) & ~st.done
        lam_s = jnp.where(accept, jnp.where(last, lam_end, sde.half_log_snr(t)), st.lam_s)
        return _State(
            x=_where(accept, x_high, st.x),
            x_prev=_where(accept, x_low, st.x_prev),
            s=jnp.where(accept, t, st.s),
            lam_s=lam_s,
            h=jnp.minimum(theta * st.h * err ** (-1.0 / order), jnp.abs(lam_end - lam_s)),
            done=st.done | (accept & last),
            it=st.it + 1,
            traj=grids.record(st.traj, save_at, st.s, t, st.x, x_high, valid=accept),
        )

    s0 = jnp.full((batch,), t_start, dtype)
    init = _State(
        x, x, s0, sde.half_log_snr(s0), jnp.full((batch,), h_init, dtype),
        jnp.zeros((batch,), bool), jnp.asarray(0), grids.trajectory_init(save_at, x),
    )  # fmt: skip
    out = jax.lax.while_loop(lambda st: jnp.any(~st.done) & (st.it < max_steps), body, init)
    return _where(out.done, out.x, jnp.full_like(x, jnp.nan)), order * out.it, out.traj


class _State(NamedTuple):
    """The while loop's state: per example, the state x at time s (lambda lam_s) with the
    low-order solution x_prev of its last accepted step, the next step h, and done."""

    x: Array
    x_prev: Array
    s: Array
    lam_s: Array
    h: Array
    done: Array
    it: Array
    traj: Array


def _attempt(sde, model, prediction, order, x, s, t):
    """(x_low, x_high) of a step s -> t: DPM-Solver-1 and -2, or -2 (r1 = 1/3) and -3."""
    m_s = model(x, s)
    if order == 2:
        x_low = dpm.first_update(sde, prediction, x, s, t, m_s)
        return x_low, dpm.second_update(sde, model, prediction, x, s, t, m_s, r1=0.5)[0]
    x_low, m_s1 = dpm.second_update(sde, model, prediction, x, s, t, m_s, r1=1 / 3)
    return x_low, dpm.third_update(sde, model, prediction, x, s, t, m_s, m_s1)
