"""Ho et al.'s DDPM U-Net (NeurIPS 2020), as an :class:`NCSNpp` with DDPM settings.

DDPM's residual blocks, plain resampling with convolutions, no skip rescaling, no progressive
growing, the sinusoidal embedding of 999 t and zero-initialised output layers. Attention follows
Ho et al.: after every decoder block at the attention resolutions (Song et al.'s ddpm.py puts one
per decoder level, 0.5M fewer parameters). CIFAR-10 (nf 128, ch_mult (1, 2, 2, 2), 2 blocks,
attention at 16): 35.7M parameters, as in Ho et al.
"""

from __future__ import annotations

from flax import nnx

from score_sde.models.ncsnpp import NCSNpp

# What makes an NCSN++ network Ho et al.'s: fixed, not options of DDPM.
SETTINGS = dict(
    resblock_type="ddpm",
    resamp_with_conv=True,
    fir=False,
    skip_rescale=False,
    progressive="none",
    progressive_input="none",
    embedding_type="positional",
    init_scale=0.0,
    attn_each_decoder_block=True,
)
# Ho et al.'s CIFAR-10 network where it differs from NCSN++'s defaults.
DEFAULTS = dict(num_res_blocks=2)


def DDPM(*, rngs: nnx.Rngs, **options) -> NCSNpp:
    """Build Ho et al.'s DDPM score network: an :class:`NCSNpp` with ``SETTINGS``; ``options``
    are NCSN++'s others (``models.OPTIONS["ddpm"]``), ``DEFAULTS`` where not given."""
    fixed = sorted(set(options) & set(SETTINGS))
    if fixed:
        raise ValueError(f"{fixed}: DDPM fixes them ({SETTINGS}); use model 'ncsnpp' to vary them.")
    return NCSNpp(**SETTINGS, **{**DEFAULTS, **options}, rngs=rngs)
