"""Training losses: denoising score matching and the discrete DDPM and SMLD objectives.

With x_t = alpha x0 + sigma z and s the network's score (any parameterisation, converted by
``parameterization.to_score``), every loss here is ``w · reduce(|sigma s + z|²)``:

- continuous, sigma² weighting (Song et al. 2021, Eq. 7): t ~ U(eps, T), w = 1;
- continuous, likelihood weighting (Song, Durkan, Murray & Ermon 2021): w = g²/sigma², i.e. the
  loss g² |s + z/sigma|²; optionally with t importance-sampled (see ``importance_sampled_time``);
- min-SNR-gamma (Hang et al. 2023, Eq. 7): the x0 error weighted by min(SNR, gamma), i.e.
  w = min(SNR, gamma) / SNR with SNR = alpha²/sigma² (|sigma s + z|² is the eps error, SNR times
  the x0 error); also for the discrete losses;
- EDM (Karras et al. 2022, Sec. 5, Table 1): ln σ ~ N(P_mean, P_std²) with σ = sigma/alpha, and
  λ(σ) |D - x0|² with λ = (σ² + σ_data²)/(σ σ_data)²: since |D - x0|² = σ² |sigma s + z|², that is
  w = (σ² + σ_data²) / σ_data² (``EDMLoss``);
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

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class EDMLoss:
    """EDM's noise distribution ln σ ~ N(p_mean, p_std²) and its weight's σ_data (Karras et al.
    2022, Table 1: -1.2, 1.2, 0.5)."""

    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5


def min_snr_weight(alpha: Array, std: Array, gamma: float) -> Array:
    """min(SNR, gamma) / SNR, SNR = alpha²/sigma²: min-SNR-gamma on the eps error (Hang et al.
    2023)."""
    snr = jnp.square(alpha / std)
    return jnp.minimum(snr, gamma) / snr


def edm_time(rng: Array, sde: SDE, batch: int, edm: EDMLoss, eps: float) -> Array:
    """t whose σ = sigma(t)/alpha(t) is log-normal(p_mean, p_std²), clipped to [eps, T]: [B]."""
    log_sigma = edm.p_mean + edm.p_std * rng_lib.normal(rng, (batch,), float)
    return jnp.clip(sde.t_from_half_log_snr(-log_sigma), eps, sde.T)


def _continuous_weighting(
    sde: SDE, likelihood_weighting: bool, importance_sampling: bool, eps: float,
    min_snr_gamma: float, edm: EDMLoss | None,
) -> tuple[Callable, Callable]:  # fmt: skip
    """(sample_t(rng, batch), weight(t, std)) of the continuous loss's options."""
    uniform = lambda rng, batch: rng_lib.uniform_scalars(rng, batch, eps, sde.T)
    if edm is not None:
        sigma2 = lambda t, std: jnp.square(std / sde.alpha(t))
        weight = lambda t, std: (sigma2(t, std) + edm.sigma_data**2) / edm.sigma_data**2
        return lambda rng, batch: edm_time(rng, sde, batch, edm, eps), weight
    if min_snr_gamma > 0:
        return uniform, lambda t, std: min_snr_weight(sde.alpha(t), std, min_snr_gamma)
    if not likelihood_weighting:
        return uniform, lambda t, std: 1.0
    if importance_sampling:
        # weight (g²/sigma²) · U(t)/p(t) = Z / (T - eps): the expectation is unchanged.
        z = likelihood_normalizer(sde, eps) / (sde.T - eps)
        return lambda rng, batch: importance_sampled_time(rng, sde, batch, eps), lambda t, s: z
    return uniform, lambda t, std: sde.g2(t) / std**2


def continuous_dsm_losses(
    sde: SDE, model_fn: ModelFn, parameterization: str, likelihood_weighting: bool,
    importance_sampling: bool, reduce_mean: bool, eps: float, *, min_snr_gamma: float = 0.0,
    edm: EDMLoss | None = None,
) -> LossFn:  # fmt: skip
    """Per-example denoising score matching losses (Song et al. 2021, Eq. 7) with the weighting
    and time distribution of the options (``get_loss_fn``'s): [B]."""
    sample_t, weight = _continuous_weighting(
        sde, likelihood_weighting, importance_sampling, eps, min_snr_gamma, edm
    )

    def losses(rng: Array, params: Any, x: Array, y: Array | None = None) -> Array:
        t_rng, z_rng, model_rng = jax.random.split(rng, 3)
        t = sample_t(t_rng, x.shape[0])
        z = rng_lib.normal(z_rng, x.shape, x.dtype)
        mean, std = sde.marginal_prob(x, t)
        x_t = mean + batch_mul(std, z)
        output = model_fn(params, x_t, t, y, model_rng)
        score = to_score(sde, output, x_t, t, parameterization)
        return _reduce(batch_mul(std, score) + z, reduce_mean) * weight(t, std)

    return losses


def discrete_losses(
    sde: SDE, model_fn: ModelFn, *, parameterization: str = "score", reduce_mean: bool = False,
    min_snr_gamma: float = 0.0,
) -> LossFn:  # fmt: skip
    """Per-example DDPM (Ho et al. 2020) or SMLD (Song & Ermon 2019) losses of the SDE's chain:
    index k uniform in {0, ..., N-1}, the network called at t = k T / (N - 1), weighted by
    ``min_snr_weight`` when min_snr_gamma > 0: [B]."""
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
        loss = _reduce(batch_mul(std, score) + z, reduce_mean)
        if min_snr_gamma > 0:
            return loss * min_snr_weight(chain.alpha(t), std, min_snr_gamma)
        return loss

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


def _check_options(
    sde: SDE, parameterization: str, continuous: bool, likelihood_weighting: bool,
    importance_sampling: bool, eps: float, classifier: bool, min_snr_gamma: float,
    edm: EDMLoss | None,
) -> None:  # fmt: skip
    """One clear ValueError, starting with the option's name, for options that do not fit."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization={parameterization!r}: use one of {PARAMETERIZATIONS}.")
    if importance_sampling and not likelihood_weighting:
        raise ValueError(
            "importance_sampling=True samples t for the likelihood weighting: "
            "set likelihood_weighting=True as well, or importance_sampling=False."
        )
    if (continuous or classifier) and not 0 < eps < sde.T:
        raise ValueError(f"eps={eps}: the smallest training time must be in (0, {sde.T}).")
    if parameterization == "edm" and not continuous:
        raise ValueError(
            "parameterization='edm' preconditions with the SDE's continuous sigma(t): "
            "set continuous=True."
        )
    if not min_snr_gamma >= 0:
        raise ValueError(f"min_snr_gamma={min_snr_gamma}: use a gamma > 0 (Hang et al.: 5), or 0.")
    if edm is not None:
        for name in ("p_std", "sigma_data"):
            if not getattr(edm, name) > 0:
                raise ValueError(f"{name}={getattr(edm, name)}: EDM's loss needs it > 0.")
        if not continuous:
            raise ValueError("edm_loss=True draws continuous noise levels: set continuous=True.")
    chosen = [n for n, on in [("likelihood_weighting=True", likelihood_weighting),
              (f"min_snr_gamma={min_snr_gamma}", min_snr_gamma > 0),
              ("edm_loss=True", edm is not None)] if on]  # fmt: skip
    if len(chosen) > 1:
        raise ValueError(f"{chosen[0]} and {chosen[1]}: choose one loss weighting.")
    if classifier and (not continuous or chosen):
        raise ValueError(
            "A classifier is trained by cross-entropy at continuous t: set continuous=True "
            "and no loss weighting (likelihood_weighting=False, min_snr_gamma=0, no EDM loss)."
        )
    if not continuous and likelihood_weighting:
        raise ValueError(
            "likelihood_weighting=True needs continuous=True: the DDPM and SMLD losses "
            "have fixed weights."
        )


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
    min_snr_gamma: float = 0.0,
    edm: EDMLoss | None = None,
) -> LossFn:
    """``loss_fn(rng, params, x, y=None)``: the batch-mean loss (per-example losses [B] with
    ``per_example``). ``model_fn(params, x, t, y, rng)`` returns the network's output of the
    given ``parameterization`` (``PARAMETERIZATIONS``; for "edm" the preconditioned D, see
    ``parameterization.network_output``); t: [B] continuous time. At most one weighting:
    ``likelihood_weighting``, ``min_snr_gamma`` > 0 or ``edm`` (EDM's noise distribution and
    weight). With ``classifier`` the model is a noise-conditional classifier
    (``classifier_losses``)."""
    _check_options(
        sde, parameterization, continuous, likelihood_weighting, importance_sampling, eps,
        classifier, min_snr_gamma, edm,
    )  # fmt: skip
    if classifier:
        losses = classifier_losses(sde, model_fn, eps=eps)
    elif continuous:
        losses = continuous_dsm_losses(
            sde, model_fn, parameterization, likelihood_weighting, importance_sampling,
            reduce_mean, eps, min_snr_gamma=min_snr_gamma, edm=edm,
        )  # fmt: skip
    else:
        losses = discrete_losses(
            sde, model_fn, parameterization=parameterization, reduce_mean=reduce_mean,
            min_snr_gamma=min_snr_gamma,
        )  # fmt: skip
    if per_example:
        return losses
    return lambda rng, params, x, y=None: jnp.mean(losses(rng, params, x, y))
