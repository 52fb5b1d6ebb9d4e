"""Time grids for fixed-step samplers, and trajectory recording at chosen times.

Grids run from ``t_start`` to ``t_end`` in the SDE's own time t, in either direction (decreasing
to sample, increasing to invert data to noise). Three spacings:

- ``"uniform"``: uniform in t (DDIM, Song et al. 2021).
- ``"logsnr"``: uniform in lambda = log(alpha/sigma) (DPM-Solver, Lu et al. 2022a, Sec. 3.3).
- ``"edm"``: EDM's rho-grid in sigma~ = sigma/alpha = exp(-lambda) (Karras et al. 2022, Eq. 5).

Trajectory recording. Every solver's loop takes ``save_at=(t1, t2, ...)`` and returns the
trajectory [len(save_at), *x.shape] with ``trajectory[j]`` the state at time ``save_at[j]``: exact
on a grid node, linearly interpolated in t between the two nodes that bracket it otherwise (the
adaptive ``ode`` solver saves diffrax's dense interpolant instead). The fixed-grid solvers write
one step as ``step(carry, i) -> (carry, (t, t_next, x, x_next))`` and ``scan`` records it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde.sde import SDE, batch_mul

Array = jax.Array
GRIDS = ("uniform", "logsnr", "edm")
# Steps per iteration of the fixed-step loops: unrolled, XLA updates the loop state in place
# instead of copying it every step (docs/benchmarks.md, "Samplers").
UNROLL = 2
MULTISTEP_UNROLL = 4  # DPM-Solver's multistep loop also carries the model history


def sigma_tilde(sde: SDE, t: Array) -> Array:
    """sigma(t)/alpha(t) = exp(-lambda(t)): the noise level of x/alpha, EDM's sigma(t)."""
    return jnp.exp(-sde.half_log_snr(t))


def t_from_sigma_tilde(sde: SDE, sigma: Array) -> Array:
    """Inverse of ``sigma_tilde``."""
    return sde.t_from_half_log_snr(-jnp.log(sigma))


def edm_sigmas(sigma_start: Array, sigma_end: Array, n_steps: int, rho: float = 7.0) -> Array:
    """EDM Eq. 5: sigma_i = (s0^(1/rho) + i/n (s1^(1/rho) - s0^(1/rho)))^rho, i = 0..n."""
    frac = jnp.linspace(0.0, 1.0, n_steps + 1)
    a, b = sigma_start ** (1 / rho), sigma_end ** (1 / rho)
    return (a + frac * (b - a)) ** rho


def time_grid(
    sde: SDE,
    n_steps: int,
    kind: str = "uniform",
    *,
    t_start: float | None = None,
    t_end: float | None = None,
    rho: float = 7.0,
) -> Array:
    """n_steps + 1 times from ``t_start`` (default T) to ``t_end`` (default
    ``sde.end_time(n_steps)``)."""
    if kind not in GRIDS:
        raise ValueError(f"time_grid={kind!r} is unknown; use one of {GRIDS}.")
    if not (isinstance(n_steps, int) and n_steps >= 1):
        raise ValueError(f"n_steps={n_steps!r}: need an int >= 1.")
    t0 = sde.T if t_start is None else t_start
    t1 = sde.end_time(n_steps) if t_end is None else t_end
    ends = jnp.asarray([t0, t1], dtype=jnp.result_type(float))
    if kind == "uniform":
        return jnp.linspace(ends[0], ends[1], n_steps + 1)
    if kind == "logsnr":
        lam = sde.half_log_snr(ends)
        ts = sde.t_from_half_log_snr(jnp.linspace(lam[0], lam[1], n_steps + 1))
    else:
        sig = sigma_tilde(sde, ends)
        ts = t_from_sigma_tilde(sde, edm_sigmas(sig[0], sig[1], n_steps, rho))
    return ts.at[0].set(ends[0]).at[-1].set(ends[1])  # the ends exactly, not via an inverse


def check_save_at(save_at: tuple, t_a: float, t_b: float, slack: float = 0.0) -> None:
    """Raise if a requested time lies outside the span [t_a, t_b] (either order) of a sampler,
    widened by ``slack`` (the rounding of a grid computed in float32)."""
    if not isinstance(save_at, tuple):
        raise TypeError(f"save_at={save_at!r}: pass a tuple of floats (it must be hashable).")
    lo, hi = min(t_a, t_b), max(t_a, t_b)
    bad = [s for s in save_at if not lo - slack <= s <= hi + slack]
    if bad:
        raise ValueError(f"save_at times {bad} are outside this sampler's span [{lo}, {hi}].")


def trajectory_init(save_at: tuple, x: Array) -> Array:
    """Zeros of shape [len(save_at), *x.shape] (empty when nothing is to be saved)."""
    return jnp.zeros((len(save_at),) + x.shape, x.dtype)


def record(traj, save_at, t_cur, t_next, x_cur, x_next, valid=None):
    """Store the interpolated state for every save time inside [t_cur, t_next].

    ``t_cur``/``t_next`` are scalars or per-example [B]; ``valid`` ([B] bool) masks examples whose
    step did not happen (a rejected adaptive step). Returns the updated trajectory.
    """
    if not save_at:
        return traj
    batch = x_cur.shape[0]
    s = jnp.asarray(save_at, x_cur.dtype)[:, None]  # [S, 1]
    tc = jnp.broadcast_to(t_cur, (batch,))[None]
    tn = jnp.broadcast_to(t_next, (batch,))[None]
    inside = (s >= jnp.minimum(tc, tn)) & (s <= jnp.maximum(tc, tn))  # [S, B]
    if valid is not None:
        inside = inside & valid[None]
    w = jnp.where(tn != tc, (s - tc) / jnp.where(tn != tc, tn - tc, 1.0), 1.0)
    interp = jax.vmap(lambda wj: batch_mul(1 - wj, x_cur) + batch_mul(wj, x_next))(w)
    return jnp.where(inside.reshape(inside.shape + (1,) * (x_cur.ndim - 1)), interp, traj)


def scan(step, carry, steps, save_at: tuple, traj: Array, unroll: int = UNROLL):
    """Run ``step(carry, i) -> (carry, (t, t_next, x, x_next))`` for i in ``steps`` as one
    ``lax.scan``, recording each step's segment at ``save_at`` into ``traj`` (from
    ``trajectory_init``); returns (carry, trajectory)."""

    def body(state, i):
        carry, traj = state
        carry, segment = step(carry, i)
        return (carry, record(traj, save_at, *segment)), None

    (carry, traj), _ = jax.lax.scan(body, (carry, traj), steps, unroll=unroll)
    return carry, traj
