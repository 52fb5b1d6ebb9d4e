"""The schedules of the VP-type SDEs and the discrete chain of an SDE as a noise schedule."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array
COSINE_S = 0.008
COSINE_T = 0.9946  # DPM-Solver's end time for the cosine schedule: beta(t) is infinite at t = 1.


@dataclasses.dataclass(frozen=True)
class LinearSchedule:
    """beta(t) = beta_min + t (beta_max - beta_min) on [0, 1] (Song et al. 2021)."""

    beta_min: float
    beta_max: float
    T = 1.0

    def beta(self, t: Array) -> Array:
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def log_mean_coeff(self, t: Array) -> Array:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def t_from_log_mean_coeff(self, m: Array) -> Array:
        # Solve ¼ Δ t² + ½ beta_min t + m = 0 in the cancellation-free form of DPM-Solver.
        delta = self.beta_max - self.beta_min
        tmp = -4 * delta * m
        return tmp / (jnp.sqrt(self.beta_min**2 + tmp) + self.beta_min) / delta

    def discrete_betas(self, N: int) -> Array:
        """DDPM's linspace(beta_min/N, beta_max/N, N)."""
        return jnp.linspace(self.beta_min / N, self.beta_max / N, N)


@dataclasses.dataclass(frozen=True)
class CosineSchedule:
    """alphabar(t) = cos²(((t + s)/(1 + s)) π/2) / cos²(s/(1 + s) π/2), s = 0.008 (Nichol &
    Dhariwal 2021); beta(t) = -d log alphabar / dt is infinite at t = 1, so T is 0.9946."""

    T = COSINE_T

    def _arg(self, t):
        return (t + COSINE_S) / (1 + COSINE_S) * (jnp.pi / 2)

    def beta(self, t: Array) -> Array:
        return jnp.pi / (1 + COSINE_S) * jnp.tan(self._arg(t))

    def log_mean_coeff(self, t: Array) -> Array:
        return jnp.log(jnp.cos(self._arg(t)) / math.cos(self._arg(0.0)))

    def t_from_log_mean_coeff(self, m: Array) -> Array:
        return (
            jnp.arccos(jnp.exp(m) * math.cos(self._arg(0.0))) * 2 * (1 + COSINE_S) / jnp.pi
            - COSINE_S
        )

    def discrete_betas(self, N: int) -> Array:
        """iDDPM's 1 - alphabar(k/N) / alphabar((k-1)/N)."""
        abar = jnp.exp(2 * self.log_mean_coeff(jnp.arange(N + 1) / N))
        return 1 - abar[1:] / abar[:-1]


@functools.partial(jax.tree_util.register_dataclass, data_fields=["sde"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class Chain:
    """The discrete chain of ``sde`` as a noise schedule: x_k = alpha_k x0 + sigma_k z at
    t_k = k T/(N - 1) (k = ``sde.step_index(t)``); any t < 0 is the data (alpha 1, sigma 0)."""

    sde: Any  # a score_sde.sde.SDE with a discrete chain (``SDE.chain`` builds this)

    def alpha(self, t: Array) -> Array:
        return jnp.where(t < 0, 1.0, self.sde.discrete_marginal()[0][self.sde.step_index(t)])

    def marginal_std(self, t: Array) -> Array:
        return jnp.where(t < 0, 0.0, self.sde.discrete_marginal()[1][self.sde.step_index(t)])

    def times(self, n_steps: int) -> Array:
        """Times of ``n_steps`` evenly spaced chain indices from N-1 to 0, then the data."""
        n = self.sde.N
        if not 1 <= n_steps <= n:
            raise ValueError(f"n_steps={n_steps}: the chain has N={n} steps; use 1..{n}.")
        k = jnp.round(jnp.linspace(n - 1, 0, n_steps))
        return jnp.append(k, -1.0) * (self.sde.T / max(n - 1, 1))
