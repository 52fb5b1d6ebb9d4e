"""Inversion (DDIM, Song et al. 2021, Sec. 5.4; the probability-flow ODE, Song et al. 2021,
Sec. 4.3): encode data to a latent at T by solving the deterministic ODE forwards, decode by
solving it back. Any deterministic solver works: DDIM (eta = 0), DPM-Solver(++), EDM's Heun."""

from __future__ import annotations

import jax

from score_sde.control.sdedit import solve_between
from score_sde.sde import SDE


def _check_deterministic(options):
    noisy = {k: options[k] for k in ("eta", "S_churn") if options.get(k, 0) != 0}
    if noisy:
        raise ValueError(f"{noisy}: inversion needs a deterministic solver; set them to 0.")


def _ode_solve(
    sde: SDE, score_fn, x, forward: bool, *, solver: str, n_steps: int, eps: float | None,
    **options,
):  # fmt: skip
    """The deterministic solve from eps to T (``forward``) or from T to eps; returns (x, nfe)."""
    _check_deterministic(options)
    eps = sde.sampling_eps if eps is None else eps
    t_start, t_end = (eps, sde.T) if forward else (sde.T, eps)
    return solve_between(
        jax.random.PRNGKey(0), sde, score_fn, x, t_start, t_end, solver=solver, n_steps=n_steps,
        **options,
    )  # fmt: skip


def encode(sde: SDE, score_fn, data, *, solver="dpm_solver", n_steps=20, eps=None, **options):
    """The latent at T of ``data`` at eps (default sampling_eps) by ``solver`` in ``n_steps``
    (its other options as keywords); returns (latent, nfe)."""
    return _ode_solve(sde, score_fn, data, True, solver=solver, n_steps=n_steps, eps=eps, **options)


def decode(sde: SDE, score_fn, latent, *, solver="dpm_solver", n_steps=20, eps=None, **options):
    """Data at eps from a latent at T, the inverse of ``encode``; returns (data, nfe)."""
    return _ode_solve(
        sde, score_fn, latent, False, solver=solver, n_steps=n_steps, eps=eps, **options
    )


def reconstruct(sde: SDE, score_fn, data, **options):
    """decode(encode(data)) on the same grid; returns (reconstruction, total nfe)."""
    latent, nfe_enc = encode(sde, score_fn, data, **options)
    recon, nfe_dec = decode(sde, score_fn, latent, **options)
    return recon, nfe_enc + nfe_dec
