"""Training losses: denoising score matching and the discrete DDPM and SMLD objectives.

With x_t = alpha x0 + sigma z and s the network's score (any parameterisation, converted by
``parameterization.to_score``), every loss here is ``w · reduce(|sigma s + z|²)``:

- continuous, sigma² weighting (Song et al. 2021, Eq. 7): t ~ U(eps, T), w = 1;
- continuous, likelihood weighting (Song, Durkan, Murray & Ermon 2021): w = g²/sigma², i.e. the
  loss g² |s + z/sigma|²; optionally with t importance-sampled (see ``importance_sampled_time``);
- DDPM (Ho et al. 2020), VP chains: k ~ U{0, ..., N-1}, alpha_k = sqrt(alphabar_k),
  sigma_k = sqrt(1 - alphabar_k), w = 1: |sigma_k s + z|² = |eps_hat - z|²;
- SMLD (Song & Ermon 2019), VE chains: alpha_k = 1, sigma_k = discrete_sigmas()[k], w = 1:
  sigma_k² |s + z/sigma_k|².

``classifier_losses`` trains the noise-conditional classifier of classifier guidance instead:
the cross-entropy of its logits at (x_t, t) for the label y of x0, t ~ U(eps, T).

``reduce`` is the mean over dimensions (``reduce_mean=True``) or ½ the sum over them (so the DDPM
loss of Ho et al., a plain sum, is twice the ``reduce_mean=False`` value). Discrete losses call
the network at t = k T / (N - 1), and convert its output with the chain's own alpha_k, sigma_k.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from score_sde import rng as rng_lib
from score_sde.parameterization import PARAMETERIZATIONS, to_score
from score_sde.sde import SDE, batch_mul

Array = jax.Array
ModelFn = Callable[[Any, Array, Array, Array | None, Array], Array]
LossFn = Callable[..., Array]


def importance_sampled_time(rng: Array, sde: SDE, batch: int, eps: float) -> Array:
    """t on [eps, T] with density g(t)²/sigma(t)² / Z, by its closed-form inverse CDF: [batch].

    For any linear SDE g² = d sigma²/dt - 2 f sigma², so g²/sigma² = -2 d lambda/dt with
    lambda = ``half_log_snr``: the CDF is (lambda(eps) - lambda(t)) / (lambda(eps) - lambda(T)),
    and sampling it means sampling lambda uniformly (Song, Durkan, Murray & Ermon 2021, Sec. 5).
    """
    lam_eps, lam_T = _half_log_snr_range(sde, eps)
    u = rng_lib.uniform_scalars(rng, batch)
    return jnp.clip(sde.t_from_half_log_snr(lam_eps + u * (lam_T - lam_eps)), eps, sde.T)


def likelihood_normalizer(sde: SDE, eps: float) -> Array:
    """Z = ∫_eps^T g(t)²/sigma(t)² dt = 2 (lambda(eps) - lambda(T))."""
    lam_eps, lam_T = _half_log_snr_range(sde, eps)
    return 2 * (lam_eps - lam_T)


def _half_log_snr_range(sde: SDE, eps: float) -> tuple[Array, Array]:
    return sde.half_log_snr(jnp.asarray(eps, float)), sde.half_log_snr(jnp.asarray(sde.T, float))


def _reduce(v: Array, reduce_mean: bool) -> Array:
    """Mean, or ½ the sum, of v² over all but the batch dimension: [B]."""
    sq = jnp.square(v.reshape(v.shape[0], -1))
    return jnp.mean(sq, axis=-1) if reduce_mean else 0.5 * jnp.sum(sq, axis=-1)


def continuous_dsm_losses(
    sde: SDE, model_fn: ModelFn, parameterization: str, likelihood_weighting: bool,
    importance_sampling: bool, reduce_mean: bool, eps: float,
) -> LossFn:  # fmt: skip
    """Per-example denoising score matching losses (Song et al. 2021, Eq. 7): [B]; the options
    are ``get_loss_fn``'s."""

    def losses(rng: Array, params: Any, x: Array, y: Array | None = None) -> Array:
        t_rng, z_rng, model_rng = jax.random.split(rng, 3)
        batch = x.shape[0]
        if importance_sampling:
            t = importance_sampled_time(t_rng, sde, batch, eps)
        else:
            t = rng_lib.uniform_scalars(t_rng, batch, eps, sde.T)
        z = rng_lib.normal(z_rng, x.shape, x.dtype)
        mean, std = sde.marginal_prob(x, t)
        x_t = mean + batch_mul(std, z)
        output = model_fn(params, x_t, t, y, model_rng)
        score = to_score(sde, output, x_t, t, parameterization)
        loss = _reduce(batch_mul(std, score) + z, reduce_mean)
        if not likelihood_weighting:
            return loss
        if importance_sampling:
            # weight (g²/sigma²) · U(t)/p(t) = Z / (T - eps): the expectation is unchanged.
            return loss * likelihood_normalizer(sde, eps) / (sde.T - eps)
        return loss * sde.g2(t) / std**2

    return losses


def discrete_losses(
    sde: SDE, model_fn: ModelFn, *, parameterization: str = "score", reduce_mean: bool = False
) -> LossFn:
    """Per-example DDPM (Ho et al. 2020) or SMLD (Song & Ermon 2019) losses of the SDE's chain:
    index k uniform in {0, ..., N-1}, the network called at t = k T / (N - 1): [B]."""
    chain = sde.chain()
    n = sde.N

    def losses(rng: Array, params: Any, x: Array, y: Array | None = None) -> Array:
        k_rng, z_rng, model_rng = jax.random.split(rng, 3)
        k = jnp.minimum(jnp.floor(rng_lib.uniform_scalars(k_rng, x.shape[0]) * n), n - 1)
        t = k * (sde.T / max(n - 1, 1))
        z = rng_lib.normal(z_rng, x.shape, x.dtype)
        std = chain.marginal_std(t)
        x_k = batch_mul(chain.alpha(t), x) + batch_mul(std, z)
        output = model_fn(params, x_k, t, y, model_rng)
        score = to_score(chain, output, x_k, t, parameterization)
        return _reduce(batch_mul(std, score) + z, reduce_mean)

    return losses


def noisy_logits(rng: Array, sde: SDE, logits_fn: ModelFn, params: Any, x: Array, t: Array):
    """A classifier's logits at (x_t, t), x_t ~ p_t(x_t | x0 = x): [B, num_classes].
    ``logits_fn(params, x, t, None, rng)`` is the classifier."""
    z_rng, model_rng = jax.random.split(rng)
    mean, std = sde.marginal_prob(x, t)
    x_t = mean + batch_mul(std, rng_lib.normal(z_rng, x.shape, x.dtype))
    return logits_fn(params, x_t, t, None, model_rng)


def classifier_losses(sde: SDE, logits_fn: ModelFn, *, eps: float = 1e-5) -> LossFn:
    """Per-example cross-entropy -log p_t(y | x_t) of a noise-conditional classifier (Song et
    al. 2021, Sec. 5; Dhariwal & Nichol 2021), t ~ U(eps, T): [B]."""

    def losses(rng: Array, params: Any, x: Array, y: Array | None = None) -> Array:
        if y is None:
            raise ValueError("The classifier loss needs the labels y of the batch.")
        t_rng, rng = jax.random.split(rng)
        t = rng_lib.uniform_scalars(t_rng, x.shape[0], eps, sde.T)
        logits = noisy_logits(rng, sde, logits_fn, params, x, t)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)

    return losses


def get_loss_fn(
    sde: SDE,
    model_fn: ModelFn,
    *,
    parameterization: str = "score",
    continuous: bool = True,
    likelihood_weighting: bool = False,
    importance_sampling: bool = False,
    reduce_mean: bool = False,
    eps: float = 1e-5,
    per_example: bool = False,
    classifier: bool = False,
) -> LossFn:
    """``loss_fn(rng, params, x, y=None)``: the batch-mean loss (per-example losses [B] with
    ``per_example``). ``model_fn(params, x, t, y, rng)`` returns the network's output of the
    given ``parameterization`` ("score", "eps" or "x0"); t: [B] continuous time. With
    ``classifier`` the model is a noise-conditional classifier (``classifier_losses``)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={parameterization!r}: use one of {PARAMETERIZATIONS}.")
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling=True samples t for the likelihood weighting: "
            "set likelihood_weighting=True as well, or importance_sampling=False."
        )
    if (continuous or classifier) and not 0 < eps < sde.T:
        raise ValueError(f"eps={eps}: the smallest training time must be in (0, {sde.T}).")
    if classifier:
        if not continuous or likelihood_weighting:
            raise ValueError(
                "A classifier is trained by cross-entropy at continuous t: set continuous=True "
                "and likelihood_weighting=False."
            )
        losses = classifier_losses(sde, model_fn, eps=eps)
    elif continuous:
        losses = continuous_dsm_losses(
            sde, model_fn, parameterization, likelihood_weighting, importance_sampling,
            reduce_mean, eps,
        )  # fmt: skip
    else:
        if likelihood_weighting:
            raise ValueError(
                "likelihood_weighting=True needs continuous=True: the DDPM and SMLD losses "
                "have fixed weights."
            )
        losses = discrete_losses(
            sde, model_fn, parameterization=parameterization, reduce_mean=reduce_mean
        )
    if per_example:
        return losses
    return lambda rng, params, x, y=None: jnp.mean(losses(rng, params, x, y))
