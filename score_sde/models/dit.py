"""DiT, the diffusion transformer of Peebles & Xie (ICCV 2023, "Scalable Diffusion Models with
Transformers"), in Flax NNX.

The image [B, H, W, C] is cut into p x p patches, each embedded by a dense layer (§3.1,
"Patchify"), plus a fixed 2-D sin-cos position embedding (stored as
:class:`PositionalEmbedding`, outside ``nnx.Param``: never trained, never averaged). ``depth``
transformer blocks with adaLN-Zero conditioning (§3.2) follow, then the final adaLN layer and
a dense layer to p x p x C per patch, put back in place ("unpatchify", §3.1).

The conditioning is the U-Nets' :class:`~score_sde.models.embeddings.Conditioning` with width
``hidden_size``: the sinusoidal embedding of 999 t (``nf`` = 256 wide, DiT's
frequency_embedding_size), dense, SiLU, dense, plus the class embedding (with ``null_label``,
the extra row of classifier-free guidance that DiT's label dropout uses). Its layers keep the
U-Nets' initialisation, not DiT's N(0, 0.02); the rest follows facebookresearch/DiT: Xavier
uniform weights, zero biases, and the adaLN modulations and the final dense layer at zero, so
an untrained DiT outputs exactly zero (``init_scale`` > 0 gives them Xavier weights times it).

``learn_sigma=True`` doubles the final layer's outputs as in DiT, which learns the variance of
its reverse process (§3); the score models here use the first C channels only and drop the
rest. It exists so that the paper's models (``PRESETS["dit_xl_2"]``, ...) have their sizes.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from score_sde.models import layers
from score_sde.models.embeddings import NetworkOptions

Array = jax.Array


class PositionalEmbedding(nnx.Variable):
    """DiT's fixed 2-D sin-cos embedding of the patch positions (§3.1): never trained."""


def sincos_1d(dim: int, positions: np.ndarray) -> np.ndarray:
    """[sin(pos w), cos(pos w)] with w = 10000^(-k / (dim / 2)): [M] -> [M, dim] (MAE's, §3.1)."""
    omega = 1.0 / 10_000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2))
    out = np.outer(positions.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: int) -> np.ndarray:
    """The [grid^2, dim] position embedding of a grid x grid patch raster, row-major (§3.1):
    the first half encodes the column, the second half the row, as in facebookresearch/DiT."""
    cols, rows = np.meshgrid(np.arange(grid), np.arange(grid))
    return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def patchify(x: Array, p: int) -> Array:
    """[B, H, W, C] -> [B, (H / p)(W / p), p p C]: the patches in row-major order (§3.1)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: Array, p: int, grid: int) -> Array:
    """[B, grid^2, p p C] -> [B, grid p, grid p, C]: the inverse of :func:`patchify` (§3.1)."""
    b, _, d = x.shape
    c = d // (p * p)
    x = x.reshape(b, grid, grid, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid * p, grid * p, c)


def layer_norm(x: Array, eps: float = 1e-6) -> Array:
    """LayerNorm over the last axis without scale nor bias (adaLN provides them, §3.2)."""
    h = x.astype(jnp.float32)
    mean = h.mean(axis=-1, keepdims=True)
    var = jnp.square(h - mean).mean(axis=-1, keepdims=True)
    return ((h - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def modulate(x: Array, shift: Array, scale: Array) -> Array:
    """Adaptive layer norm's affine map x (1 + scale) + shift, per example (§3.2)."""
    return x * (1 + scale[:, None, :]) + shift[:, None, :]


def zero_dense(cin: int, cout: int, prec: layers.Precision, rngs: nnx.Rngs, init_scale: float):
    """A dense layer initialised at exactly zero (adaLN-Zero, §3.2), or Xavier x ``init_scale``."""
    init = layers.default_init(init_scale) if init_scale else jax.nn.initializers.zeros
    return nnx.Linear(cin, cout, kernel_init=init, rngs=rngs, **prec.kw())


class Attention(nnx.Module):
    """Multi-head self-attention over the tokens, qkv with biases (ViT's, §3.2)."""

    def __init__(self, width: int, heads: int, prec: layers.Precision, rngs: nnx.Rngs):
        self.qkv = layers.dense(width, 3 * width, prec, rngs)
        self.proj = layers.dense(width, width, prec, rngs)
        self.heads = heads

    def __call__(self, x: Array) -> Array:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32)
        w = jax.nn.softmax(logits * (d // self.heads) ** -0.5, axis=-1).astype(v.dtype)
        return self.proj(jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, d))


class DiTBlock(nnx.Module):
    """A transformer block with adaLN-Zero (§3.2): shift, scale and gate of the attention and
    of the MLP (ratio ``mlp_ratio``, GELU tanh) regressed from SiLU(c), the gates starting at 0."""

    def __init__(
        self,
        width: int,
        heads: int,
        prec: layers.Precision,
        rngs: nnx.Rngs,
        *,
        mlp_ratio: float,
        dropout: float,
        init_scale: float,
    ):
        self.attn = Attention(width, heads, prec, rngs)
        hidden = int(width * mlp_ratio)
        self.fc1 = layers.dense(width, hidden, prec, rngs)
        self.fc2 = layers.dense(hidden, width, prec, rngs)
        self.dropout = nnx.Dropout(dropout)
        self.modulation = zero_dense(width, 6 * width, prec, rngs, init_scale)

    def __call__(self, x: Array, c: Array, *, train: bool, rngs) -> Array:
        mod = jnp.split(self.modulation(layers.act(c)), 6, axis=-1)
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = mod
        x = x + gate_attn[:, None] * self.attn(modulate(layer_norm(x), shift_attn, scale_attn))
        h = jax.nn.gelu(self.fc1(modulate(layer_norm(x), shift_mlp, scale_mlp)), approximate=True)
        h = self.dropout(h, deterministic=not train, rngs=rngs)
        return x + gate_mlp[:, None] * self.fc2(h)


class FinalLayer(nnx.Module):
    """adaLN (shift and scale from SiLU(c)), then a dense layer to each patch's p p C outputs;
    both zero-initialised (§3.2)."""

    def __init__(
        self, width: int, outputs: int, prec: layers.Precision, rngs: nnx.Rngs, init_scale: float
    ):
        self.modulation = zero_dense(width, 2 * width, prec, rngs, init_scale)
        self.linear = zero_dense(width, outputs, prec, rngs, init_scale)

    def __call__(self, x: Array, c: Array) -> Array:
        shift, scale = jnp.split(self.modulation(layers.act(c)), 2, axis=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiTOptions(NetworkOptions):
    """DiT's options (§3.2, Table 1): the input, the patch size p, the width, depth and heads of
    the transformer, its MLP ratio, ``learn_sigma`` (DiT's 2 C outputs, half dropped), and every
    network's options; ``nf`` is the width of the sinusoidal embedding of t (DiT's 256)."""

    image_size: int
    in_channels: int = 4
    patch_size: int = 2
    hidden_size: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    learn_sigma: bool = False
    nf: int = 256

    def __post_init__(self):
        for name in ("image_size", "in_channels", "patch_size", "hidden_size", "depth", "nf"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1.")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be divisible by patch_size="
                f"{self.patch_size}: DiT cuts the image into patch_size x patch_size patches."
            )
        if self.num_heads < 1 or self.hidden_size % self.num_heads:
            raise ValueError(
                f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size} "
                "(each head has hidden_size / num_heads channels)."
            )
        if self.hidden_size % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} must be a multiple of 4 (the 2-D sin-cos "
                "position embedding gives a quarter of it to each of sin and cos of each axis)."
            )
        if self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={self.mlp_ratio} must be > 0.")


class DiT(layers.ScoreNetwork):
    """The diffusion transformer (§3) for x: [B, H, W, C]; its keyword options are
    :class:`DiTOptions`'s. Returns [B, H, W, C] (of ``learn_sigma``'s 2 C, the first C)."""

    def __init__(self, *, rngs: nnx.Rngs, **options):
        o = DiTOptions(**options)
        prec, width, p = o.precision, o.hidden_size, o.patch_size
        self.embed = o.conditioning(rngs, width=width)
        self.patch_embed = layers.dense(p * p * o.in_channels, width, prec, rngs)
        self.grid = o.image_size // p
        self.pos_embed = PositionalEmbedding(jnp.asarray(sincos_2d(width, self.grid), jnp.float32))
        block = dict(mlp_ratio=o.mlp_ratio, dropout=o.dropout, init_scale=o.init_scale)
        self.blocks = nnx.List(
            DiTBlock(width, o.num_heads, prec, rngs, **block) for _ in range(o.depth)
        )
        outputs = p * p * o.in_channels * (2 if o.learn_sigma else 1)
        self.final = FinalLayer(width, outputs, prec, rngs, o.init_scale)
        self.patch_size, self.in_channels = p, o.in_channels
        self.scale_by_sigma, self.dtype, self.has_dropout = o.scale_by_sigma, o.dtype, o.dropout > 0

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        h = self.patch_embed(patchify(x, self.patch_size))
        h = h + self.pos_embed[...].astype(h.dtype)[None]
        for block in self.blocks:
            h = block(h, temb, train=train, rngs=rngs)
        out = unpatchify(self.final(h, temb), self.patch_size, self.grid)
        return out[..., : self.in_channels]
