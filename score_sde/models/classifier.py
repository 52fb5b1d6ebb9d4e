"""Noise-conditional classifier p(y | x_t, t) for classifier guidance (Song et al. 2021, §5).

The encoder half of the NCSN++ U-Net (same blocks and conditioning), then GroupNorm, swish,
global mean pooling and a dense layer to logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import layers
from score_sde.models.embeddings import Conditioning
from score_sde.models.ncsnpp import Blocks, Encoder, Geometry

Array = jax.Array


class Classifier(layers.ScoreNetwork):
    """Logits [B, num_classes] of a noisy image x_t: [B, H, W, C] at time t / noise level sigma."""

    def __init__(
        self,
        *,
        image_size: int,
        num_classes: int,
        in_channels: int = 3,
        nf: int = 32,
        ch_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        resblock_type: str = "biggan",
        resamp_with_conv: bool = True,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = True,
        embedding_type: str = "positional",
        fourier_scale: float = 16.0,
        time_scale: float = 999.0,
        init_scale: float = 0.0,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
        g = Geometry(
            image_size, in_channels, nf, tuple(ch_mult), num_res_blocks, tuple(attn_resolutions),
            resamp_with_conv,
        )  # fmt: skip
        prec = layers.Precision(dtype, param_dtype)
        self.embed = Conditioning(
            nf, prec, rngs, embedding_type=embedding_type, fourier_scale=fourier_scale,
            time_scale=time_scale,
        )  # fmt: skip
        blocks = Blocks(
            prec, rngs, temb_dim=self.embed.dim, resblock_type=resblock_type, dropout=dropout,
            fir=fir, fir_kernel=fir_kernel, skip_rescale=skip_rescale, init_scale=init_scale,
        )  # fmt: skip
        self.encoder = Encoder(blocks, g, progressive_input="none", progressive_combine="sum")
        ch = self.encoder.channels[-1]
        self.norm = layers.group_norm(ch, prec, rngs)
        self.out = layers.dense(ch, num_classes, prec, rngs)
        self.dtype, self.has_dropout, self.scale_by_sigma = dtype, dropout > 0, False

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        h = self.encoder(x, temb, train=train, rngs=rngs)[-1]
        return self.out(layers.act(self.norm(h)).mean(axis=(1, 2)))

    def __call__(self, x, t, sigma, y=None, *, train=False, rngs=None):
        if y is not None:
            raise ValueError("The classifier predicts labels: call it with y=None.")
        return super().__call__(x, t, sigma, train=train, rngs=rngs).astype(jnp.float32)
