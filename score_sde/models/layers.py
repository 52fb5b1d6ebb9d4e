"""Layers of the DDPM / NCSN++ U-Nets (Ho et al. 2020; Song et al. 2021), in Flax NNX.

Initialisation follows the reference: DDPM's variance scaling (fan_avg, uniform) with a scale,
where scale 0 means 1e-10 (a zero-initialised layer that still has a gradient direction).
Every layer takes ``dtype`` (compute) and ``param_dtype`` (storage).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import up_down

Array = jax.Array
Dtype = Any

act = jax.nn.swish  # the nonlinearity of every paper config


def check_choice(name: str, value: str, options: Sequence[str]) -> None:
    """Raise a clear error when an option is not one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {tuple(options)}.")


def dropout_rngs(rngs: nnx.Rngs | Array | None, needed: bool) -> nnx.Rngs | None:
    """nnx.Rngs for dropout from an nnx.Rngs or a key; a clear error when missing."""
    if not needed:
        return None
    if rngs is None:
        raise ValueError(
            "train=True with dropout > 0 needs randomness: pass rngs=nnx.Rngs(dropout=key) "
            "(or a PRNG key), or use dropout=0."
        )
    return rngs if isinstance(rngs, nnx.Rngs) else nnx.Rngs(dropout=rngs)


def default_init(scale: float = 1.0) -> jax.nn.initializers.Initializer:
    """DDPM's initialiser: variance scaling (fan_avg, uniform); scale 0 is taken as 1e-10."""
    return jax.nn.initializers.variance_scaling(scale or 1e-10, "fan_avg", "uniform")


@dataclasses.dataclass(frozen=True)
class Precision:
    """Compute and parameter dtypes, shared by all layers of a model."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def kw(self) -> dict:
        return {"dtype": self.dtype, "param_dtype": self.param_dtype}


def conv(
    cin: int,
    cout: int,
    prec: Precision,
    rngs: nnx.Rngs,
    *,
    size: int = 3,
    stride: int = 1,
    init_scale: float = 1.0,
) -> nnx.Conv:
    """A size x size convolution with DDPM initialisation and zero bias ('SAME' padding)."""
    return nnx.Conv(
        cin,
        cout,
        (size, size),
        strides=stride,
        padding="SAME",
        kernel_init=default_init(init_scale),
        rngs=rngs,
        **prec.kw(),
    )


def dense(cin: int, cout: int, prec: Precision, rngs: nnx.Rngs, init_scale: float = 1.0):
    """A dense layer (DDPM's NIN on the channel axis) with DDPM initialisation."""
    return nnx.Linear(cin, cout, kernel_init=default_init(init_scale), rngs=rngs, **prec.kw())


def group_norm(channels: int, prec: Precision, rngs: nnx.Rngs) -> nnx.GroupNorm:
    """GroupNorm with min(C // 4, 32) groups and eps 1e-6, as in NCSN++ (32 groups for C >= 128)."""
    return nnx.GroupNorm(channels, num_groups=min(channels // 4, 32), rngs=rngs, **prec.kw())


class AttnBlock(nnx.Module):
    """Self-attention over all pixels with a residual connection (DDPM's AttnBlock)."""

    def __init__(
        self,
        channels: int,
        prec: Precision,
        rngs: nnx.Rngs,
        *,
        skip_rescale: bool = False,
        init_scale: float = 0.0,
    ):
        self.norm = group_norm(channels, prec, rngs)
        self.q, self.k, self.v = (dense(channels, channels, prec, rngs, 0.1) for _ in range(3))
        self.out = dense(channels, channels, prec, rngs, init_scale)
        self.skip_rescale = skip_rescale

    def __call__(self, x: Array) -> Array:
        b, hh, ww, c = x.shape
        h = self.norm(x)
        q, k, v = (f(h).reshape(b, hh * ww, c) for f in (self.q, self.k, self.v))
        logits = jnp.einsum("bic,bjc->bij", q, k).astype(jnp.float32) * c**-0.5
        w = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        h = self.out(jnp.einsum("bij,bjc->bic", w, v).reshape(b, hh, ww, c))
        return skip_sum(x, h, self.skip_rescale)


def skip_sum(x: Array, h: Array, rescale: bool) -> Array:
    """x + h, divided by sqrt(2) with skip rescaling (NCSN++)."""
    return (x + h) / math.sqrt(2.0) if rescale else x + h


class NormActConv(nnx.Module):
    """GroupNorm -> swish -> 3x3 conv: the output layers of the U-Net."""

    def __init__(self, cin: int, cout: int, prec: Precision, rngs: nnx.Rngs, init_scale: float):
        self.norm = group_norm(cin, prec, rngs)
        self.conv = conv(cin, cout, prec, rngs, init_scale=init_scale)

    def __call__(self, x: Array) -> Array:
        return self.conv(act(self.norm(x)))


class ResampleConv(nnx.Module):
    """A 3x3 convolution fused with FIR up- or downsampling (StyleGAN2's Conv2d)."""

    def __init__(
        self, cin: int, cout: int, prec: Precision, rngs: nnx.Rngs, *, up: bool, fir_kernel
    ):
        init = default_init()
        self.kernel = nnx.Param(init(rngs.params(), (3, 3, cin, cout), prec.param_dtype))
        self.bias = nnx.Param(jnp.zeros((cout,), prec.param_dtype))
        self.up, self.fir_kernel, self.dtype = up, tuple(fir_kernel), prec.dtype

    def __call__(self, x: Array) -> Array:
        w, b = self.kernel[...].astype(self.dtype), self.bias[...].astype(self.dtype)
        resample = up_down.upsample_conv_2d if self.up else up_down.conv_downsample_2d
        return resample(x.astype(self.dtype), w, self.fir_kernel) + b


class ScoreNetwork(nnx.Module):
    """The call of every model here, ``model(x, t, sigma, y=None, *, train, rngs)``: dropout
    keys, the conditioning ``embed(t, sigma, y)``, the subclass's ``body`` in ``dtype``, then
    the output in float32, divided by sigma when ``scale_by_sigma``, in x's dtype."""

    embed: nnx.Module
    dtype: Any
    has_dropout: bool
    scale_by_sigma: bool

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        raise NotImplementedError

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
        rngs = dropout_rngs(rngs, train and self.has_dropout)
        temb = self.embed(t, sigma, y)
        h = self.body(x.astype(self.dtype), temb, train=train, rngs=rngs).astype(jnp.float32)
        if self.scale_by_sigma:
            h = h / sigma.astype(jnp.float32).reshape((-1,) + (1,) * (h.ndim - 1))
        return h.astype(x.dtype)


class Resample(nnx.Module):
    """2x upsampling (nearest or FIR) or downsampling (mean pooling or FIR), optionally with a
    convolution: NCSN++'s Upsample and Downsample. With FIR the convolution is fused with the
    resampling; without, it follows nearest upsampling or is the strided downsampling."""

    def __init__(
        self,
        cin: int,
        prec: Precision,
        rngs: nnx.Rngs,
        *,
        up: bool,
        cout: int | None = None,
        with_conv: bool,
        fir: bool,
        fir_kernel: Sequence[int],
    ):
        cout = cout or cin
        self.up, self.fir_kernel = up, tuple(fir_kernel) if fir else None
        if not with_conv:
            self.conv = None
        elif fir:
            self.conv = ResampleConv(cin, cout, prec, rngs, up=up, fir_kernel=fir_kernel)
        else:
            self.conv = conv(cin, cout, prec, rngs, stride=1 if up else 2)

    def __call__(self, x: Array) -> Array:
        if not self.up:
            return up_down.downsample(x, self.fir_kernel) if self.conv is None else self.conv(x)
        if isinstance(self.conv, ResampleConv):
            return self.conv(x)
        h = up_down.upsample(x, self.fir_kernel)
        return self.conv(h) if self.conv is not None else h


class Combine(nnx.Module):
    """Merge the input pyramid into the features: 1x1 conv, then sum or concatenation."""

    def __init__(self, cin: int, cout: int, prec: Precision, rngs: nnx.Rngs, *, method: str):
        self.conv = conv(cin, cout, prec, rngs, size=1)
        self.method = method

    def __call__(self, x: Array, y: Array) -> Array:
        h = self.conv(x)
        return h + y if self.method == "sum" else jnp.concatenate([h, y], axis=-1)


class ResnetBlock(nnx.Module):
    """DDPM's residual block (``updown=None``) or BigGAN's, which may resample ("up"/"down").

    GroupNorm -> swish -> [resample] -> conv -> + dense(swish(temb)) -> GroupNorm -> swish ->
    dropout -> conv (init_scale) ; shortcut: identity, or a 1x1 conv when the shape changes.
    """

    def __init__(
        self,
        cin: int,
        prec: Precision,
        rngs: nnx.Rngs,
        *,
        cout: int | None = None,
        temb_dim: int,
        biggan: bool,
        updown: str | None = None,
        dropout: float = 0.1,
        fir: bool = False,
        fir_kernel: Sequence[int] = (1, 3, 3, 1),
        skip_rescale: bool = False,
        init_scale: float = 0.0,
    ):
        cout = cout or cin
        self.norm0 = group_norm(cin, prec, rngs)
        self.conv0 = conv(cin, cout, prec, rngs)
        self.temb = dense(temb_dim, cout, prec, rngs)
        self.norm1 = group_norm(cout, prec, rngs)
        self.dropout = nnx.Dropout(dropout)
        self.conv1 = conv(cout, cout, prec, rngs, init_scale=init_scale)
        if cin == cout and updown is None:
            self.shortcut = None
        elif biggan:  # BigGAN: 1x1 conv; DDPM: NIN (a dense layer on channels, init 0.1)
            self.shortcut = conv(cin, cout, prec, rngs, size=1)
        else:
            self.shortcut = dense(cin, cout, prec, rngs, 0.1)
        self.updown, self.fir_kernel = updown, tuple(fir_kernel) if fir else None
        self.skip_rescale = skip_rescale

    def _resample(self, x: Array) -> Array:
        if self.updown == "up":
            return up_down.upsample(x, self.fir_kernel)
        if self.updown == "down":
            return up_down.downsample(x, self.fir_kernel)
        return x

    def __call__(self, x: Array, temb: Array, *, train: bool, rngs: nnx.Rngs | None) -> Array:
        h = self._resample(act(self.norm0(x)))
        x = self._resample(x)
        h = self.conv0(h) + self.temb(act(temb))[:, None, None, :]
        h = self.dropout(act(self.norm1(h)), deterministic=not train, rngs=rngs)
        h = self.conv1(h)
        if self.shortcut is not None:
            x = self.shortcut(x)
        return skip_sum(x, h, self.skip_rescale)
