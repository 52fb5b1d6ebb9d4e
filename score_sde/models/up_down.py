"""Resampling of NHWC images: naive (nearest / mean pooling) and FIR (StyleGAN2's upfirdn).

FIR resampling (Song et al. 2021, App. H; Karras et al. 2020) filters with the separable kernel
k ⊗ k, normalised to unit gain, so a constant image stays constant away from the borders. The
fused versions apply a learnt 3x3 convolution and the FIR filter with one padding step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_DIMS = ("NHWC", "HWIO", "NHWC")


def naive_upsample(x: Array, factor: int = 2) -> Array:
    """Nearest-neighbour upsampling: each pixel becomes a factor x factor block."""
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


def naive_downsample(x: Array, factor: int = 2) -> Array:
    """Mean pooling over factor x factor blocks."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def fir_kernel(k: Sequence[float], gain: float = 1.0) -> np.ndarray:
    """The 2-D filter outer(k, k), normalised to sum to ``gain``."""
    k = np.asarray(k, dtype=np.float64)
    k2 = np.outer(k, k)
    return (k2 / k2.sum() * gain).astype(np.float32)


def upfirdn(x: Array, k2: np.ndarray, *, up: int = 1, down: int = 1, pad: tuple[int, int]) -> Array:
    """Upsample by inserting zeros, pad, filter with k2 (2-D FIR), keep every down-th pixel.

    Same as scipy.signal.upfirdn per axis: the zero-upsampled signal has length H * up (zeros
    after each pixel), is padded by ``pad`` (before, after) and convolved with k2 ("valid").
    """
    c = x.shape[-1]
    kh, kw = k2.shape
    w = jnp.asarray(k2[::-1, ::-1], dtype=x.dtype)  # convolution, not correlation
    w = jnp.broadcast_to(w[:, :, None, None], (kh, kw, 1, c))
    lo, hi = pad
    return jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(down, down),
        padding=[(lo, hi + up - 1)] * 2,  # lhs_dilation omits the up - 1 trailing zeros
        lhs_dilation=(up, up),
        dimension_numbers=_DIMS,
        feature_group_count=c,
    )


def upsample_2d(x: Array, k: Sequence[float], factor: int = 2) -> Array:
    """FIR upsampling: [B, H, W, C] -> [B, factor H, factor W, C]."""
    k2 = fir_kernel(k, gain=factor**2)
    p = k2.shape[0] - factor
    return upfirdn(x, k2, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def downsample_2d(x: Array, k: Sequence[float], factor: int = 2) -> Array:
    """FIR downsampling: [B, H, W, C] -> [B, H / factor, W / factor, C]."""
    k2 = fir_kernel(k)
    p = k2.shape[0] - factor
    return upfirdn(x, k2, down=factor, pad=((p + 1) // 2, p // 2))


def upsample(x: Array, fir_kernel: Sequence[float] | None = None) -> Array:
    """2x upsampling without parameters: FIR with ``fir_kernel``, or nearest when None."""
    return naive_upsample(x) if fir_kernel is None else upsample_2d(x, fir_kernel)


def downsample(x: Array, fir_kernel: Sequence[float] | None = None) -> Array:
    """2x downsampling without parameters: FIR with ``fir_kernel``, or mean pooling when None."""
    return naive_downsample(x) if fir_kernel is None else downsample_2d(x, fir_kernel)


def upsample_conv_2d(x: Array, w: Array, k: Sequence[float], factor: int = 2) -> Array:
    """Fused upsample-then-convolve (w: [kh, kw, in, out], kh odd) followed by the FIR filter."""
    kw = w.shape[0]
    # Transposed convolution with stride `factor`: correlate the zero-upsampled input with w.
    x = jax.lax.conv_general_dilated(
        x,
        w,
        window_strides=(1, 1),
        padding=[(kw - 1, kw - 1)] * 2,
        lhs_dilation=(factor, factor),
        dimension_numbers=_DIMS,
    )
    k2 = fir_kernel(k, gain=factor**2)
    p = (k2.shape[0] - factor) - (kw - 1)
    return upfirdn(x, k2, pad=((p + 1) // 2 + factor - 1, p // 2 + 1))


def conv_downsample_2d(x: Array, w: Array, k: Sequence[float], factor: int = 2) -> Array:
    """Fused FIR filter followed by a strided convolution (w: [kh, kw, in, out], kh odd)."""
    kw = w.shape[0]
    k2 = fir_kernel(k)
    p = (k2.shape[0] - factor) + (kw - 1)
    x = upfirdn(x, k2, pad=((p + 1) // 2, p // 2))
    return jax.lax.conv_general_dilated(
        x, w, window_strides=(factor, factor), padding="VALID", dimension_numbers=_DIMS
    )
