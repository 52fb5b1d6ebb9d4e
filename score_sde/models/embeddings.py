"""Noise-level and class conditioning shared by the score networks.

Song et al. condition on either a sinusoidal embedding of 999 t (DDPM-style, "positional") or
Gaussian Fourier features of log sigma ("fourier", NCSN++ with the VE SDE). The Fourier
frequencies are fixed random numbers: they are stored as :class:`FourierWeights`, not as
``nnx.Param``, so ``nnx.split(model, nnx.Param, ...)`` keeps them out of the optimiser and the EMA.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import layers

Array = jax.Array
EMBEDDINGS = ("positional", "fourier")


class FourierWeights(nnx.Variable):
    """Fixed random frequencies of a Gaussian Fourier embedding: never trained, never averaged."""


def sinusoidal_embedding(t: Array, dim: int, max_positions: float = 10_000.0) -> Array:
    """Transformer / DDPM sinusoidal embedding of t: [B] -> [B, dim], computed in float32."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
    arg = t.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class GaussianFourierProjection(nnx.Module):
    """[sin(2 pi W x), cos(2 pi W x)] with W ~ N(0, scale^2) fixed: [B] -> [B, 2 size]."""

    def __init__(self, size: int, scale: float, *, rngs: nnx.Rngs):
        self.W = FourierWeights(scale * jax.random.normal(rngs.params(), (size,), jnp.float32))

    def __call__(self, x: Array) -> Array:
        w = jax.lax.stop_gradient(self.W[...]).astype(jnp.float32)
        proj = x.astype(jnp.float32)[:, None] * w[None, :] * (2 * math.pi)
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)


class Conditioning(nnx.Module):
    """Embedding of (t, sigma[, y]) -> temb [B, width] (default width 4 nf), fed to every block.

    temb = dense(swish(dense(emb))) (+ a learnt class embedding when ``num_classes`` is set),
    emb the nf-wide sinusoidal embedding of t (or 2 nf Fourier features of log sigma).
    With ``null_label`` the table has one extra row, id ``num_classes``: the "no label" used by
    classifier-free guidance, and what ``y=None`` means for such a model.
    """

    def __init__(
        self,
        nf: int,
        prec: layers.Precision,
        rngs: nnx.Rngs,
        *,
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        num_classes: int | None = None,
        null_label: bool = False,
        width: int | None = None,
    ):
        if embedding_type not in EMBEDDINGS:
            raise ValueError(f"embedding_type={embedding_type!r}; choose one of {EMBEDDINGS}.")
        if null_label and not num_classes:
            raise ValueError("null_label=True needs num_classes (the null label is num_classes).")
        self.fourier = (
            GaussianFourierProjection(nf, fourier_scale, rngs=rngs)
            if embedding_type == "fourier"
            else None
        )
        self.nf, self.time_scale, self.width = nf, time_scale, width or 4 * nf
        emb_dim = 2 * nf if self.fourier else nf
        self.dense0 = layers.dense(emb_dim, self.width, prec, rngs)
        self.dense1 = layers.dense(self.width, self.width, prec, rngs)
        self.num_classes, self.null_label = num_classes, null_label
        self.label = (
            nnx.Embed(num_classes + int(null_label), self.width, rngs=rngs, **prec.kw())
            if num_classes
            else None
        )

    @property
    def dim(self) -> int:
        return self.width

    def __call__(self, t: Array, sigma: Array, y: Array | None = None) -> Array:
        if self.fourier is not None:
            emb = self.fourier(jnp.log(sigma))
        else:
            emb = sinusoidal_embedding(self.time_scale * t, self.nf)
        temb = self.dense1(layers.act(self.dense0(emb)))
        if self.label is None:
            if y is not None:
                raise ValueError(
                    "Got class labels y, but the model was built with num_classes=None: "
                    "set num_classes to train a class-conditional model."
                )
            return temb
        if y is None:
            if not self.null_label:
                raise ValueError(
                    f"This model is class-conditional (num_classes={self.num_classes}): pass "
                    "labels y, or build it with null_label=True to allow y=None."
                )
            y = jnp.full(t.shape, self.num_classes, jnp.int32)
        return temb + self.label(y)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkOptions:
    """The options every network here takes: its width ``nf``, dropout, the conditioning on t
    or sigma (and on labels y when ``num_classes``), the last layers' init scale, the output
    divided by sigma (``scale_by_sigma``) and the compute and parameter dtypes."""

    nf: int = 32
    dropout: float = 0.0
    embedding_type: str = "positional"
    fourier_scale: float = 16.0
    time_scale: float = 999.0
    init_scale: float = 0.0
    scale_by_sigma: bool = False
    num_classes: int | None = None
    null_label: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @property
    def precision(self) -> layers.Precision:
        return layers.Precision(self.dtype, self.param_dtype)

    def conditioning(self, rngs: nnx.Rngs, width: int | None = None) -> Conditioning:
        return Conditioning(
            self.nf, self.precision, rngs, embedding_type=self.embedding_type,
            fourier_scale=self.fourier_scale, time_scale=self.time_scale,
            num_classes=self.num_classes, null_label=self.null_label, width=width,
        )  # fmt: skip
