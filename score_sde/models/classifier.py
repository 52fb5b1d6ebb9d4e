"""Noise-conditional classifier p(y | x_t, t) for classifier guidance (Song et al. 2021, §5).

The encoder half of the NCSN++ U-Net (same blocks and conditioning), then GroupNorm, swish,
global mean pooling and a dense layer to logits.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import layers
from score_sde.models.ncsnpp import Encoder, UNetOptions

Array = jax.Array


# The classifier's U-Net where it differs from NCSN++'s defaults: a small encoder.
DEFAULTS = dict(nf=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0)


class Classifier(layers.ScoreNetwork):
    """Logits [B, num_classes] of a noisy image x_t: [B, H, W, C] at time t / noise level sigma.
    Its other keyword options are :class:`UNetOptions`'s (``DEFAULTS`` where not given), but
    neither labels as inputs (``null_label``) nor ``scale_by_sigma``."""

    def __init__(self, *, num_classes: int, rngs: nnx.Rngs, **options):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
        o = UNetOptions(**{**DEFAULTS, **options})
        unused = {k: options[k] for k in ("null_label", "scale_by_sigma") if options.get(k)}
        if unused:
            raise ValueError(f"{unused}: a classifier takes no labels nor scales its logits.")
        self.embed = o.conditioning(rngs)
        blocks = o.blocks(rngs, self.embed.dim)
        self.encoder = Encoder(
            blocks, o.geometry(), progressive_input="none", progressive_combine="sum"
        )
        ch = self.encoder.channels[-1]
        self.norm = layers.group_norm(ch, o.precision, rngs)
        self.out = layers.dense(ch, num_classes, o.precision, rngs)
        self.dtype, self.has_dropout, self.scale_by_sigma = o.dtype, o.dropout > 0, False

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        h = self.encoder(x, temb, train=train, rngs=rngs)[-1]
        return self.out(layers.act(self.norm(h)).mean(axis=(1, 2)))

    def __call__(self, x, t, sigma, y=None, *, train=False, rngs=None):
        if y is not None:
            raise ValueError("The classifier predicts labels: call it with y=None.")
        return super().__call__(x, t, sigma, train=train, rngs=rngs).astype(jnp.float32)
