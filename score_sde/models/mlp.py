"""Networks for low-dimensional data [B, D]: a residual MLP conditioned on the noise level, as a
score model and as a noise-conditional classifier."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import layers
from score_sde.models.embeddings import NetworkOptions

Array = jax.Array


class ResidualMLPBlock(nnx.Module):
    """h + dense(dropout(swish(dense(swish(h)) + dense(swish(temb)))))."""

    def __init__(self, width, temb_dim, prec, rngs, *, dropout: float, init_scale: float):
        self.dense0 = layers.dense(width, width, prec, rngs)
        self.temb = layers.dense(temb_dim, width, prec, rngs)
        self.dropout = nnx.Dropout(dropout)
        self.dense1 = layers.dense(width, width, prec, rngs, init_scale)

    def __call__(self, h: Array, temb: Array, *, train: bool, rngs) -> Array:
        z = self.dense0(layers.act(h)) + self.temb(layers.act(temb))
        z = self.dropout(layers.act(z), deterministic=not train, rngs=rngs)
        return h + self.dense1(z)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLPOptions(NetworkOptions):
    """The MLP's options: the data's dimension, the hidden width, the number of residual
    blocks and the output size (default ``dim``), with every network's options."""

    dim: int
    width: int = 256
    num_blocks: int = 3
    outputs: int | None = None


class MLP(layers.ScoreNetwork):
    """Score model for x: [B, dim]; conditioning as in NCSN++ (999 t or log sigma). Its
    keyword options are :class:`MLPOptions`'s."""

    def __init__(self, *, rngs: nnx.Rngs, **options):
        o = MLPOptions(**options)
        if o.dim < 1 or o.width < 1 or o.num_blocks < 0:
            raise ValueError(
                f"MLP: need dim >= 1, width >= 1, num_blocks >= 0; got "
                f"dim={o.dim}, width={o.width}, num_blocks={o.num_blocks}."
            )
        prec, width = o.precision, o.width
        self.embed = o.conditioning(rngs)
        self.dense_in = layers.dense(o.dim, width, prec, rngs)
        self.blocks = nnx.List(
            ResidualMLPBlock(
                width, self.embed.dim, prec, rngs, dropout=o.dropout, init_scale=o.init_scale
            )
            for _ in range(o.num_blocks)
        )
        self.dense_out = layers.dense(width, o.outputs or o.dim, prec, rngs, o.init_scale)
        self.scale_by_sigma, self.dtype, self.has_dropout = o.scale_by_sigma, o.dtype, o.dropout > 0

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        h = self.dense_in(x)
        for block in self.blocks:
            h = block(h, temb, train=train, rngs=rngs)
        return self.dense_out(layers.act(h))


class MLPClassifier(MLP):
    """Noise-conditional classifier for x: [B, dim]: the MLP's trunk with a head of
    ``num_classes`` logits, log p_t(y | x) up to a constant (for classifier guidance)."""

    def __init__(
        self, *, num_classes: int, init_scale: float = 1.0, scale_by_sigma: bool = False, **kwargs
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes.")
        if scale_by_sigma:
            raise ValueError("scale_by_sigma=True: a classifier's logits are not scaled by sigma.")
        super().__init__(outputs=num_classes, init_scale=init_scale, **kwargs)

    def __call__(self, x, t, sigma, y=None, *, train=False, rngs=None):
        if y is not None:
            raise ValueError("The classifier predicts labels: call it with y=None.")
        return super().__call__(x, t, sigma, train=train, rngs=rngs).astype(jnp.float32)
