"""Predictor–corrector sampling (Song et al. 2021, Algorithm 1) and the samplers built on it.

Time grid: ``n_steps`` points t_0 = T > t_1 > ... > t_{n-1} = eps, ``linspace(T, eps, n_steps)``,
one per level of the SDE's discrete chain (``sde.with_steps(n_steps)``, so t_k is chain index
n - 1 - k). x starts at the prior at T; each of the n - 1 steps is a predictor move from t_k to
t_{k+1} THEN ``n_corrector_steps`` corrector moves at t_{k+1}. The result is a sample of p_eps
(``sampling.sample`` then denoises it, which for DDPM and SMLD equals the mean of the chain's
last step). One score evaluation per predictor and corrector move; ``nfe`` counts them.

Recorded trajectories hold the states x_t on the grid (``score_sde.sampling.grids``): the times
must lie in [eps, T].

Every random draw is per example (``score_sde.rng``), keyed by (rng, step, move): sample i
depends only on (rng, i), never on the batch size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from score_sde import rng as rng_lib
from score_sde.sampling import grids
from score_sde.sde import SDE, batch_mul

Array = jax.Array


# --- predictors: (key, sde, score_fn, x, t, t_next, probability_flow) -> x at t_next ---------
def reverse_diffusion_predictor(key, sde, score_fn, x, t, t_next, probability_flow):
    """Reverse diffusion (Song et al. 2021, Eq. 46): x - f_i + G_i² s + G_i z on the chain."""
    f, G = sde.reverse(score_fn, probability_flow).discretize(x, t)
    return x - f + batch_mul(G, rng_lib.normal(key, x.shape, x.dtype))


def euler_maruyama_predictor(key, sde, score_fn, x, t, t_next, probability_flow):
    """Euler–Maruyama on the reverse SDE (Eq. 6): x + f̃ dt + g sqrt(|dt|) z, dt = t_next - t."""
    drift, diffusion = sde.reverse(score_fn, probability_flow).sde(x, t)
    dt = t_next - t
    noise = rng_lib.normal(key, x.shape, x.dtype)
    return x + batch_mul(dt, drift) + batch_mul(diffusion * jnp.sqrt(-dt), noise)


def ancestral_predictor(key, sde, score_fn, x, t, t_next, probability_flow):
    """Ancestral sampling (Eq. 47 for SMLD; Ho et al. 2020, Alg. 2 for DDPM): ``ancestral_step``."""
    z = rng_lib.normal(key, x.shape, x.dtype)
    return sde.ancestral_step(x, t, score_fn(x, t), z)[0]


def no_predictor(key, sde, score_fn, x, t, t_next, probability_flow):
    """No predictor: x unchanged (with a corrector, annealed Langevin dynamics of SMLD)."""
    return x


# --- correctors: (key, sde, score_fn, x, t, snr) -> x -------------------------------------
def _norm(v: Array) -> Array:
    return jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=-1)


def _langevin_move(key, sde, score_fn, x, t, step_size):
    """x + eps s + sqrt(2 eps) z with a per-example step size eps."""
    score = score_fn(x, t)
    z = rng_lib.normal(key, x.shape, x.dtype)
    eps = step_size(score, z)
    return x + batch_mul(eps, score) + batch_mul(jnp.sqrt(2 * eps), z)


def langevin_corrector(key, sde, score_fn, x, t, snr):
    """Langevin MCMC (Song et al. 2021, Alg. 4): step 2 alpha_i (snr |z| / |s|)², per example.

    Biased: the step depends on x and on the move's own noise z, so the move does not leave
    p_t invariant (sharp modes spread as steps are added; tests/test_sampling.py's xfail).

    The step eps makes the score move r = snr times the noise move: |eps s| / |sqrt(2 eps) z| =
    r sqrt(alpha_i); ALD's eps = 2 alpha_i (r sigma_t)² is the same on average, since |s| ≈
    |z| / sigma_t. alpha_i is 1 - beta_i on the DDPM chain (VP) and 1 otherwise.
    """

    def step_size(score, z):
        ratio = snr * _norm(z) / jnp.maximum(_norm(score), jnp.finfo(x.dtype).tiny)
        return 2 * sde.langevin_alpha(t) * ratio**2

    return _langevin_move(key, sde, score_fn, x, t, step_size)


def ald_corrector(key, sde, score_fn, x, t, snr):
    """Annealed Langevin dynamics (Song & Ermon 2019, Alg. 1): step 2 alpha_i (snr sigma_t)²."""

    def step_size(score, z):
        return 2 * sde.langevin_alpha(t) * (snr * sde.marginal_std(t)) ** 2

    return _langevin_move(key, sde, score_fn, x, t, step_size)


def no_corrector(key, sde, score_fn, x, t, snr):
    """No corrector: x unchanged."""
    return x


PREDICTORS = {
    "reverse_diffusion": reverse_diffusion_predictor,
    "euler_maruyama": euler_maruyama_predictor,
    "ancestral": ancestral_predictor,
    "none": no_predictor,
}
CORRECTORS = {"langevin": langevin_corrector, "ald": ald_corrector, "none": no_corrector}


def _check(predictor, corrector, n_corrector_steps, probability_flow):
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor={predictor!r} is unknown; use one of {sorted(PREDICTORS)}.")
    if corrector not in CORRECTORS:
        raise ValueError(f"corrector={corrector!r} is unknown; use one of {sorted(CORRECTORS)}.")
    if not (isinstance(n_corrector_steps, int) and n_corrector_steps >= 0):
        raise ValueError(f"n_corrector_steps={n_corrector_steps!r}: use an integer >= 0.")
    if probability_flow and predictor == "ancestral":
        raise ValueError(
            "probability_flow=True has no ancestral form: use predictor='reverse_diffusion' "
            "or 'euler_maruyama' with it."
        )


def grid(sde: SDE, *, n_steps: int | None = None, eps: float | None = None) -> Array:
    """``n_steps`` (default ``sde.N``) points linspace(T, eps), one per level of the chain;
    eps defaults to ``sde.sampling_eps`` (1e-3 VP/sub-VP, 1e-5 VE)."""
    n_steps = sde.N if n_steps is None else n_steps
    if not (isinstance(n_steps, int) and n_steps >= 2):
        raise ValueError(f"n_steps={n_steps!r}: the time grid needs n_steps >= 2 points.")
    return jnp.linspace(sde.T, sde.sampling_eps if eps is None else eps, n_steps)


def integrate(
    rng: Array,
    sde: SDE,
    score_fn,
    x: Array,
    ts: Array,
    *,
    predictor: str = "reverse_diffusion",
    corrector: str = "ald",
    snr: float = 0.16,
    n_corrector_steps: int = 1,
    probability_flow: bool = False,
    save_at: tuple = (),
) -> tuple[Array, Array, Array]:
    """Predictor–corrector sampling, predictor then corrector (Song et al. 2021, Algorithm 1).

    ALD is the default corrector, unbiased and the best of them at 20 NFE (``python
    bench/defaults.py``); at equal NFE, though, ``corrector="none"`` (twice the predictor
    steps) does better there (docs/benchmarks.md).

    Runs on ``sde.with_steps(len(ts))``: the chain-based moves (reverse diffusion, ancestral)
    take ts to be ``grid``'s linspace(T, eps).

    Args:
      predictor: "reverse_diffusion", "euler_maruyama", "ancestral" or "none".
      corrector: "ald" (default: its step does not depend on x, so it keeps p_t up to the
        step's O(eps) bias), "langevin" (Song et al.'s Alg. 4 with per-example norms: biased,
        see ``langevin_corrector``) or "none".
      snr: the corrector's signal-to-noise ratio r (see ``langevin_corrector``); Song et al.
        use 0.16 (CIFAR-10), smaller is gentler.
      n_corrector_steps: corrector moves after each predictor move.
      probability_flow: predict with the probability-flow ODE (c = 1/2, no noise).
      save_at: times at which to record x_t (after each step's corrector moves, linear in t
        between grid points; before denoising).

    Returns (x, nfe, trajectory) with nfe = (len(ts) - 1)(predictor + n_corrector_steps
    corrector evaluations).
    """
    _check(predictor, corrector, n_corrector_steps, probability_flow)
    n_steps = ts.shape[0]
    sde = sde.with_steps(n_steps)
    predict, correct = PREDICTORS[predictor], CORRECTORS[corrector]
    n_moves = n_corrector_steps if corrector != "none" else 0
    batch = x.shape[:1]

    def step(x, k):
        key = jax.random.fold_in(rng, k)
        t, t_next = (jnp.full(batch, s, x.dtype) for s in (ts[k], ts[k + 1]))
        x_next = predict(jax.random.fold_in(key, 0), sde, score_fn, x, t, t_next, probability_flow)

        def corrector_move(j, x):
            return correct(jax.random.fold_in(key, j + 1), sde, score_fn, x, t_next, snr)

        x_next = jax.lax.fori_loop(0, n_moves, corrector_move, x_next)
        return x_next, (ts[k], ts[k + 1], x, x_next)

    traj = grids.trajectory_init(save_at, x)
    x, traj = grids.scan(step, x, jnp.arange(n_steps - 1), save_at, traj, unroll=1)
    per_step = (predictor != "none") + n_moves
    return x, jnp.asarray((n_steps - 1) * per_step), traj


def euler_maruyama(rng, sde, score_fn, x, ts, *, save_at=()):
    """Euler–Maruyama on the reverse SDE (Song et al. 2021, Eq. 6), dt = t_{k+1} - t_k."""
    return integrate(
        rng, sde, score_fn, x, ts, predictor="euler_maruyama", corrector="none",
        save_at=save_at,
    )  # fmt: skip


def ancestral(rng, sde, score_fn, x, ts, *, save_at=()):
    """Ancestral sampling: DDPM for VP, SMLD's analogue for VE (Song et al. 2021, Eq. 47), the
    Tweedie posterior step for other SDEs (``sde.ancestral_step``)."""
    return integrate(
        rng, sde, score_fn, x, ts, predictor="ancestral", corrector="none",
        save_at=save_at,
    )  # fmt: skip
