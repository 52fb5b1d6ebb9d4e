"""Data scaling.

Data come out of the pipeline in [0, 1] (images: k/255 for 8-bit levels k). Models see either
[0, 1] (``centered=False``) or [-1, 1] (``centered=True``). Uniform dequantization, for
training and bits/dim, is ``likelihood.uniform_dequantize``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax


def get_data_scaler(centered: bool) -> Callable[[jax.Array], jax.Array]:
    """[0, 1] -> [-1, 1] when ``centered``, else the identity."""
    return (lambda x: 2 * x - 1) if centered else (lambda x: x)


def get_data_inverse_scaler(centered: bool) -> Callable[[jax.Array], jax.Array]:
    """The inverse of ``get_data_scaler(centered)``: [-1, 1] -> [0, 1] when ``centered``."""
    return (lambda x: (x + 1) / 2) if centered else (lambda x: x)
