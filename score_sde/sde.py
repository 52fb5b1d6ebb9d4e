"""SDEs of Song et al. (ICLR 2021): VP, sub-VP and VE, with their discrete chains.

Every SDE here is linear, dx = f(t) x dt + g(t) dW, so its marginal given x0 is Gaussian:
x_t = alpha(t) x0 + sigma(t) z. Subclasses give alpha (through its log, ``log_mean_coeff``),
sigma, g², the prior and the discrete chain; everything else is shared.

SDEs are frozen dataclasses registered as pytrees (the floats are leaves, ``N`` and the schedule
are static), so they can be passed to ``jax.jit`` either as pytree arguments or as static ones.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from score_sde import checks, pytree
from score_sde import rng as rng_lib
from score_sde.schedules import Chain, CosineSchedule, LinearSchedule

Array = jax.Array
ScoreFn = Callable[[Array, Array], Array]


def batch_mul(a: Array, x: Array) -> Array:
    """Multiply a per-example quantity a: [B] with x: [B, ...]."""
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) * x


def _sum_sq(z: Array) -> Array:
    return jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)


def _dims(z: Array) -> int:
    return math.prod(z.shape[1:])


def _check_range(sde: SDE, lo: str, hi: str) -> None:
    # Concrete values only: under a transform the fields are tracers or placeholder leaves.
    a, b = getattr(sde, lo), getattr(sde, hi)
    for name, value in ((lo, a), (hi, b)):
        if checks.is_real_number(value) and not math.isfinite(value):
            raise ValueError(
                f"{type(sde).__name__}: {name}={value} is not finite. Set {name} to a finite "
                "positive value."
            )
    if checks.is_real_number(a) and checks.is_real_number(b) and not b > a > 0:
        raise ValueError(
            f"{type(sde).__name__}: need 0 < {lo} < {hi}, got {lo}={a}, {hi}={b}. "
            f"Set {lo} to a positive value below {hi}."
        )
    if not (isinstance(sde.N, int) and sde.N >= 1):
        raise ValueError(f"{type(sde).__name__}: N={sde.N!r}; the discrete chain needs N >= 1.")


class SDE(abc.ABC):
    """A linear SDE on t in [0, T] with a discrete chain of N steps."""

    N: int
    grid_family = property(lambda self: type(self).__name__)  # grid_tables.TABLES' key
    T = property(lambda self: 1.0)

    @property
    def sampling_eps(self) -> float:
        """Default end time of sampling (Song et al.: 1e-3 for VP-type, 1e-5 for VE)."""
        return 1e-3

    def end_time(self, n_steps: int | None = None) -> float:
        """The end time of a sampler taking ``n_steps`` steps (None: an adaptive one), used
        when the caller gives no ``eps``: ``sampling_eps`` unless the SDE says otherwise."""
        return self.sampling_eps

    # --- what a subclass defines ---------------------------------------------------------
    @abc.abstractmethod
    def log_mean_coeff(self, t: Array) -> Array:
        """log alpha(t), where alpha(t) scales x0 in the marginal."""

    @abc.abstractmethod
    def marginal_std(self, t: Array) -> Array:
        """sigma(t), the marginal standard deviation given x0."""

    @abc.abstractmethod
    def g2(self, t: Array) -> Array:
        """g(t)², the squared diffusion coefficient."""

    @abc.abstractmethod
    def drift_coeff(self, t: Array) -> Array:
        """f(t) with drift f(t) x."""

    @abc.abstractmethod
    def prior_std(self) -> float:
        """Standard deviation of the isotropic Gaussian prior at T."""

    @abc.abstractmethod
    def t_from_half_log_snr(self, lam: Array) -> Array:
        """Inverse of ``half_log_snr``: the time t with log(alpha(t)/sigma(t)) = lam."""

    # --- shared behaviour ----------------------------------------------------------------
    def alpha(self, t: Array) -> Array:
        return jnp.exp(self.log_mean_coeff(t))

    def half_log_snr(self, t: Array) -> Array:
        """lambda(t) = log(alpha(t) / sigma(t)), the time variable of DPM-Solver."""
        return self.log_mean_coeff(t) - jnp.log(self.marginal_std(t))

    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Drift f(t) x: [B, ...] and diffusion g(t): [B]."""
        return batch_mul(self.drift_coeff(t), x), jnp.sqrt(self.g2(t))

    def marginal_prob(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Mean alpha(t) x0: [B, ...] and std sigma(t): [B] of p_t(x | x0)."""
        return batch_mul(self.alpha(t), x), self.marginal_std(t)

    def prior_sampling(self, rng: Array, shape: tuple[int, ...]) -> Array:
        """Samples of the prior; example i depends only on (rng, i), not on the batch size."""
        return self.prior_std() * rng_lib.normal(rng, shape)

    def prior_logp(self, z: Array) -> Array:
        """log N(z; 0, prior_std² I) for each example: [B]."""
        s2 = self.prior_std() ** 2
        return -0.5 * _dims(z) * jnp.log(2 * jnp.pi * s2) - _sum_sq(z) / (2 * s2)

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """Euler–Maruyama step of size T/N: x_{i+1} = x_i + f_i + G_i z."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    def step_index(self, t: Array) -> Array:
        """Index i of the discrete chain for time t, i = floor(t (N - 1) / T).

        The floor tolerates a few ulps of rounding, so t = i T / (N - 1) maps to i exactly.
        """
        i = jnp.floor(t * (self.N - 1) / self.T * (1 + 1e-6)).astype(jnp.int32)
        return jnp.clip(i, 0, self.N - 1)

    def discrete_marginal(self) -> tuple[Array, Array]:
        """(alpha_k, sigma_k) of the SDE's discrete chain, k < N; only chains with a discrete
        training loss (DDPM for VP, SMLD for VE) define it."""
        raise ValueError(
            f"{type(self).__name__} has no discrete chain with known marginals (DDPM is VP's, "
            "SMLD is VE's): use its continuous form (continuous=True to train it with "
            "denoising score matching, discrete=False to sample with DDIM)."
        )

    def chain(self) -> Chain:
        """The discrete chain (DDPM for VP, SMLD for VE) as a noise schedule; raises for an SDE
        without one."""
        self.discrete_marginal()
        return Chain(self)

    def langevin_alpha(self, t: Array) -> Array:
        """The alpha_i that scales the Langevin corrector's step (1 unless a chain sets it)."""
        return jnp.ones_like(t)

    def ancestral_step(self, x: Array, t: Array, score: Array, z: Array) -> tuple[Array, Array]:
        """One ancestral step from t to t - T/N: returns (x_prev, its mean).

        Generic form for any linear SDE: sample the Gaussian posterior q(x_s | x_t, x0) with x0
        replaced by its Tweedie estimate. VP and VE override it with the DDPM and SMLD steps.
        """
        s = jnp.maximum(t - self.T / self.N, 0.0)
        a_t, a_s = self.alpha(t), self.alpha(s)
        v_t, v_s = self.marginal_std(t) ** 2, self.marginal_std(s) ** 2
        a_ts = a_t / a_s
        v_ts = jnp.maximum(v_t - a_ts**2 * v_s, 0.0)  # variance of q(x_t | x_s)
        x0 = batch_mul(1 / a_t, x + batch_mul(v_t, score))
        mean = batch_mul(a_ts * v_s / v_t, x) + batch_mul(a_s * v_ts / v_t, x0)
        std = jnp.sqrt(v_ts * v_s / v_t)
        return mean + batch_mul(std, z), mean

    def reverse(self, score_fn: ScoreFn, probability_flow: bool = False) -> ReverseSDE:
        """The reverse-time SDE (or, with ``probability_flow``, the probability-flow ODE)."""
        return ReverseSDE(self, score_fn, probability_flow)

    def with_steps(self, N: int) -> SDE:
        """The same SDE with a discrete chain of ``N`` steps."""
        return dataclasses.replace(self, N=N)


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """Reverse-time SDE of ``forward`` (Song et al. 2021, Eq. 6), or its probability-flow ODE
    (Eq. 13): drift f - c g² score with c = 1, or ½ and no diffusion."""

    forward: SDE
    score_fn: ScoreFn
    probability_flow: bool = False

    @property
    def T(self) -> float:
        return self.forward.T

    @property
    def N(self) -> int:
        return self.forward.N

    @property
    def _c(self) -> float:
        return 0.5 if self.probability_flow else 1.0

    def sde(self, x: Array, t: Array) -> tuple[Array, Array]:
        drift, diffusion = self.forward.sde(x, t)
        drift = drift - batch_mul(self._c * diffusion**2, self.score_fn(x, t))
        return drift, jnp.zeros_like(diffusion) if self.probability_flow else diffusion

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """x_i = x_{i+1} - f_{i+1} + c G² s + G z, returned as (-(f - c G² s), G)."""
        f, G = self.forward.discretize(x, t)
        rev_f = f - batch_mul(self._c * G**2, self.score_fn(x, t))
        return rev_f, jnp.zeros_like(G) if self.probability_flow else G


@dataclasses.dataclass(frozen=True)
class _BetaSchedule(SDE):
    """beta(t) of VP and sub-VP: ``schedule`` "linear" (``LinearSchedule``, from beta_min to
    beta_max) or "cosine" (``CosineSchedule``; beta_min and beta_max unused)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000
    schedule: str = "linear"
    grid_family = property(  # a table per SDE kind and beta schedule
        lambda s: (
            ("subvp" if isinstance(s, SubVPSDE) else "vp") + "-cosine" * (s.schedule == "cosine")
        )
    )

    def __post_init__(self):
        if self.schedule not in ("linear", "cosine"):
            raise ValueError(f"schedule={self.schedule!r}: use 'linear' or 'cosine'.")
        _check_range(self, "beta_min", "beta_max")

    @property
    def _beta_t(self) -> LinearSchedule | CosineSchedule:
        if self.schedule == "cosine":
            return CosineSchedule()
        return LinearSchedule(self.beta_min, self.beta_max)

    @property
    def T(self) -> float:
        return self._beta_t.T

    def beta(self, t: Array) -> Array:
        return self._beta_t.beta(t)

    def log_mean_coeff(self, t: Array) -> Array:
        return self._beta_t.log_mean_coeff(t)

    def t_from_log_mean_coeff(self, m: Array) -> Array:
        """Inverse of ``log_mean_coeff`` (closed form for both schedules)."""
        return self._beta_t.t_from_log_mean_coeff(m)

    def drift_coeff(self, t: Array) -> Array:
        return -0.5 * self.beta(t)

    def prior_std(self) -> float:
        return 1.0

    def discrete_betas(self) -> Array:
        """beta_k of the discrete chain (the schedule's ``discrete_betas``), clipped at 0.999 as
        iDDPM does, so that a short chain (N <= beta_max: beta_max/N >= 1) stays defined."""
        return jnp.minimum(self._beta_t.discrete_betas(self.N), 0.999)

    def langevin_alpha(self, t: Array) -> Array:
        return 1.0 - self.discrete_betas()[self.step_index(t)]


@functools.partial(pytree.frozen, data=["beta_min", "beta_max"], meta=["N", "schedule"])
class VPSDE(_BetaSchedule):
    """Variance preserving: dx = -½ beta(t) x dt + sqrt(beta(t)) dW; its chain is DDPM."""

    def marginal_std(self, t: Array) -> Array:
        return jnp.sqrt(-jnp.expm1(2 * self.log_mean_coeff(t)))

    def end_time(self, n_steps: int | None = None) -> float:
        """1e-3 up to 15 steps, 1e-4 beyond and for adaptive solvers (Lu et al. 2022's advice
        for continuous-time VP models). The final denoising step shrinks a mode of std s by
        sigma(eps)² / s² (sigma(1e-3) = 0.0105, sigma(1e-4) = 0.0032), a bias that many steps
        would otherwise keep; few steps do better on the shorter span."""
        return self.sampling_eps * (1.0 if n_steps is not None and n_steps <= 15 else 0.1)

    def g2(self, t: Array) -> Array:
        return self.beta(t)

    def t_from_half_log_snr(self, lam: Array) -> Array:
        # alpha² = sigmoid(2 lam), so m = -½ softplus(-2 lam).
        return self.t_from_log_mean_coeff(-0.5 * jnp.logaddexp(0.0, -2 * lam))

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """DDPM chain: f_i = (sqrt(alpha_i) - 1) x, G_i = sqrt(beta_i)."""
        beta = self.discrete_betas()[self.step_index(t)]
        return batch_mul(jnp.sqrt(1 - beta) - 1, x), jnp.sqrt(beta)

    def discrete_marginal(self) -> tuple[Array, Array]:
        """(sqrt(alphabar_k), sqrt(1 - alphabar_k)) of the DDPM chain, k < N."""
        log_alphabar = jnp.cumsum(jnp.log1p(-self.discrete_betas()))
        return jnp.exp(0.5 * log_alphabar), jnp.sqrt(-jnp.expm1(log_alphabar))

    def ancestral_step(self, x: Array, t: Array, score: Array, z: Array) -> tuple[Array, Array]:
        """DDPM ancestral step (Ho et al. 2020, Alg. 2 with sigma_i² = beta_i):
        x_{i-1} = (x_i + beta_i s) / sqrt(alpha_i) + sqrt(beta_i) z."""
        beta = self.discrete_betas()[self.step_index(t)]
        mean = batch_mul(1 / jnp.sqrt(1 - beta), x + batch_mul(beta, score))
        return mean + batch_mul(jnp.sqrt(beta), z), mean


@functools.partial(pytree.frozen, data=["beta_min", "beta_max"], meta=["N", "schedule"])
class SubVPSDE(_BetaSchedule):
    """sub-VP: dx = -½ beta x dt + sqrt(beta (1 - e^{4m})) dW, with m = log alpha(t) (Song et al.
    2021, Eq. 29: the discount is 1 - exp(-2 ∫ beta)); its chain is Euler–Maruyama."""

    def marginal_std(self, t: Array) -> Array:
        return -jnp.expm1(2 * self.log_mean_coeff(t))

    def g2(self, t: Array) -> Array:
        return self.beta(t) * -jnp.expm1(4 * self.log_mean_coeff(t))

    def t_from_half_log_snr(self, lam: Array) -> Array:
        # alpha / (1 - alpha²) = e^lam, so alpha = 2 e^lam / (1 + sqrt(1 + 4 e^{2 lam})).
        e = jnp.exp(lam)
        return self.t_from_log_mean_coeff(jnp.log(2 * e / (1 + jnp.sqrt(1 + 4 * e**2))))


@functools.partial(pytree.frozen, data=["sigma_min", "sigma_max"], meta=["N"])
class VESDE(SDE):
    """Variance exploding: dx = sigma(t) sqrt(2 ln(sigma_max/sigma_min)) dW; its chain is SMLD."""

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    N: int = 1000
    grid_family = "ve"  # grid_tables.TABLES' key (see _BetaSchedule.grid_family)

    def __post_init__(self):
        _check_range(self, "sigma_min", "sigma_max")

    def _log_ratio(self):
        return jnp.log(self.sigma_max / self.sigma_min)

    def log_mean_coeff(self, t: Array) -> Array:
        return jnp.zeros_like(t)

    def marginal_std(self, t: Array) -> Array:
        return self.sigma_min * jnp.exp(t * self._log_ratio())

    def g2(self, t: Array) -> Array:
        return self.marginal_std(t) ** 2 * 2 * self._log_ratio()

    def drift_coeff(self, t: Array) -> Array:
        return jnp.zeros_like(t)

    def prior_std(self) -> float:
        return self.sigma_max

    @property
    def sampling_eps(self) -> float:
        return 1e-5

    def t_from_half_log_snr(self, lam: Array) -> Array:
        return (-lam - jnp.log(self.sigma_min)) / self._log_ratio()

    def discrete_sigmas(self) -> Array:
        """SMLD noise levels: geometric from sigma_min to sigma_max, N of them."""
        return jnp.exp(jnp.linspace(jnp.log(self.sigma_min), jnp.log(self.sigma_max), self.N))

    def discrete_marginal(self) -> tuple[Array, Array]:
        """(1, sigma_k) of the SMLD chain, k < N."""
        sigmas = self.discrete_sigmas()
        return jnp.ones_like(sigmas), sigmas

    def _sigma_pair(self, t):
        i = self.step_index(t)
        sigmas = self.discrete_sigmas()
        return sigmas[i], jnp.where(i == 0, 0.0, sigmas[jnp.maximum(i - 1, 0)])

    def discretize(self, x: Array, t: Array) -> tuple[Array, Array]:
        """SMLD chain: f_i = 0, G_i = sqrt(sigma_i² - sigma_{i-1}²) with sigma_{-1} = 0."""
        sigma, prev = self._sigma_pair(t)
        return jnp.zeros_like(x), jnp.sqrt(sigma**2 - prev**2)

    def ancestral_step(self, x: Array, t: Array, score: Array, z: Array) -> tuple[Array, Array]:
        """SMLD ancestral step (Song et al. 2021, Eq. 47)."""
        sigma, prev = self._sigma_pair(t)
        mean = x + batch_mul(sigma**2 - prev**2, score)
        std = jnp.sqrt(prev**2 * (sigma**2 - prev**2) / sigma**2)
        return mean + batch_mul(std, z), mean


SDES: dict[str, type[SDE]] = {"vpsde": VPSDE, "subvpsde": SubVPSDE, "vesde": VESDE}
