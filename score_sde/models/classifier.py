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
from score_sde.models.ncsnpp import RESBLOCKS, Blocks, Encoder, check_unet

Array = jax.Array


class Classifier(nnx.Module):
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
        layers.check_choice("resblock_type", resblock_type, RESBLOCKS)
        check_unet(image_size, nf, ch_mult, attn_resolutions)
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
        prec = layers.Precision(dtype, param_dtype)
        self.embed = Conditioning(
            nf,
            prec,
            rngs,
            embedding_type=embedding_type,
            fourier_scale=fourier_scale,
            time_scale=time_scale,
        )
        blocks = Blocks(
            prec,
            rngs,
            temb_dim=self.embed.dim,
            resblock_type=resblock_type,
            dropout=dropout,
            fir=fir,
            fir_kernel=fir_kernel,
            skip_rescale=skip_rescale,
            init_scale=init_scale,
        )
        self.encoder = Encoder(
            blocks,
            image_size=image_size,
            in_channels=in_channels,
            nf=nf,
            ch_mult=ch_mult,
            num_res_blocks=num_res_blocks,
            attn_resolutions=attn_resolutions,
            resamp_with_conv=resamp_with_conv,
            progressive_input="none",
            progressive_combine="sum",
        )
        ch = self.encoder.channels[-1]
        self.norm = layers.group_norm(ch, prec, rngs)
        self.out = layers.dense(ch, num_classes, prec, rngs)
        self.dtype, self.has_dropout = dtype, dropout > 0

    def __call__(
        self,
        x: Array,
        t: Array,
        sigma: Array,
        y: Array | None = None,
        *,
        train: bool = False,
        rngs: nnx.Rngs | Array | None = None,
    ) -> Array:
        if y is not None:
            raise ValueError("The classifier predicts labels: call it with y=None.")
        rngs = layers.dropout_rngs(rngs, train and self.has_dropout)
        temb = self.embed(t, sigma)
        h = self.encoder(x.astype(self.dtype), temb, train=train, rngs=rngs)[-1]
        h = layers.act(self.norm(h)).mean(axis=(1, 2))
        return self.out(h).astype(jnp.float32)
