"""Ho et al.'s DDPM U-Net (NeurIPS 2020), as an :class:`NCSNpp` with DDPM settings.

DDPM's residual blocks, plain resampling with convolutions, no skip rescaling, no progressive
growing, the sinusoidal embedding of 999 t and zero-initialised output layers. Attention follows
Ho et al.: after every decoder block at the attention resolutions (Song et al.'s ddpm.py puts one
per decoder level, 0.5M fewer parameters). CIFAR-10 (nf 128, ch_mult (1, 2, 2, 2), 2 blocks,
attention at 16): 35.7M parameters, as in Ho et al.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx

from score_sde.models.ncsnpp import NCSNpp


def DDPM(
    *,
    image_size: int,
    in_channels: int = 3,
    nf: int = 128,
    ch_mult: Sequence[int] = (1, 2, 2, 2),
    num_res_blocks: int = 2,
    attn_resolutions: Sequence[int] = (16,),
    dropout: float = 0.1,
    time_scale: float = 999.0,
    scale_by_sigma: bool = False,
    num_classes: int | None = None,
    null_label: bool = False,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    rngs: nnx.Rngs,
) -> NCSNpp:
    """Build Ho et al.'s DDPM score network (call contract of :class:`NCSNpp`)."""
    return NCSNpp(
        image_size=image_size,
        in_channels=in_channels,
        nf=nf,
        ch_mult=ch_mult,
        num_res_blocks=num_res_blocks,
        attn_resolutions=attn_resolutions,
        dropout=dropout,
        resblock_type="ddpm",
        resamp_with_conv=True,
        fir=False,
        skip_rescale=False,
        progressive="none",
        progressive_input="none",
        embedding_type="positional",
        time_scale=time_scale,
        init_scale=0.0,
        scale_by_sigma=scale_by_sigma,
        num_classes=num_classes,
        null_label=null_label,
        attn_each_decoder_block=True,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )
