"""Score networks in Flax NNX, used functionally.

Every model is called as ``model(x, t, sigma, y=None, *, train=False, rngs=None)`` with x:
[B, H, W, C] (or [B, D] for the MLP), t: [B] continuous time in [0, T] and sigma: [B] the
marginal std at t; it returns an array shaped like x (the classifier: logits [B, num_classes]).

Split once, then jit plain functions over pytrees::

    model = models.create(rngs=nnx.Rngs(0), **models.PRESETS["ddpmpp_cifar10"])
    graphdef, params, rest = models.split(model)     # params: trainable nnx.Param only
    apply = jax.jit(models.apply, static_argnames="train")
    out = apply(graphdef, params, rest, x, t, sigma)  # optional: y, train=True, rng=key

``rest`` holds everything that is not trained (the fixed Gaussian Fourier frequencies, DiT's
position embedding), so the optimiser and the EMA see ``params`` alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
from flax import nnx

from score_sde.models import ddpm
from score_sde.models.classifier import Classifier
from score_sde.models.ddpm import DDPM
from score_sde.models.dit import DiT, DiTOptions, PositionalEmbedding
from score_sde.models.embeddings import FourierWeights, NetworkOptions
from score_sde.models.mlp import MLP, MLPClassifier, MLPOptions
from score_sde.models.ncsnpp import NCSNpp, NCSNppOptions, UNetOptions

__all__ = [
    "CLASSIFIERS",
    "MODELS",
    "PRESETS",
    "Classifier",
    "DDPM",
    "DiT",
    "DiTOptions",
    "FourierWeights",
    "MLP",
    "MLPClassifier",
    "MLPOptions",
    "NCSNpp",
    "NCSNppOptions",
    "NetworkOptions",
    "OPTIONS",
    "PositionalEmbedding",
    "UNetOptions",
    "apply",
    "count_params",
    "create",
    "split",
]

MODELS: dict[str, Callable[..., nnx.Module]] = {
    "mlp": MLP,
    "ncsnpp": NCSNpp,
    "ddpm": DDPM,
    "classifier": Classifier,
    "mlp_classifier": MLPClassifier,
    "dit": DiT,
}


def _fields(options: type, *, without: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(options) if f.name not in without)


# The keyword options of each model's constructor (``rngs`` aside), declared by its options
# dataclass: what ``create`` accepts and what a config's model section can set.
OPTIONS: dict[str, tuple[str, ...]] = {
    "mlp": _fields(MLPOptions),
    "ncsnpp": _fields(NCSNppOptions),
    "ddpm": _fields(NCSNppOptions, without=tuple(ddpm.SETTINGS)),
    "classifier": _fields(UNetOptions, without=("null_label", "scale_by_sigma")),
    "mlp_classifier": _fields(MLPOptions, without=("null_label", "outputs")),
    "dit": _fields(DiTOptions),
}

# Models that output class logits [B, num_classes] (trained by cross-entropy, not score matching).
CLASSIFIERS = ("classifier", "mlp_classifier")

_DDPMPP_CIFAR10 = dict(
    name="ncsnpp",
    image_size=32,
    in_channels=3,
    nf=128,
    ch_mult=(1, 2, 2, 2),
    num_res_blocks=4,
    attn_resolutions=(16,),
    dropout=0.1,
    resblock_type="biggan",
    resamp_with_conv=True,
    fir=False,
    fir_kernel=(1, 3, 3, 1),
    skip_rescale=True,
    progressive="none",
    progressive_input="none",
    progressive_combine="sum",
    embedding_type="positional",
    init_scale=0.0,
    scale_by_sigma=False,
)
_NCSNPP_CIFAR10 = dict(
    _DDPMPP_CIFAR10,
    fir=True,
    progressive_input="residual",
    embedding_type="fourier",
    fourier_scale=16.0,
    scale_by_sigma=True,
)

# The CIFAR-10 models of Song et al. (2021), from the reference configs vp/cifar10_ddpmpp_*,
# ve/cifar10_ncsnpp_* and vp/ddpm/cifar10_continuous. Use as create(rngs=..., **PRESETS[key]).
# (Song's VE configs also feed the network data in [0, 1] and map it to 2x - 1 inside; here the
# data pipeline owns the scaling of the data.)
PRESETS: dict[str, dict] = {
    "ddpmpp_cifar10": _DDPMPP_CIFAR10,
    "ddpmpp_deep_cifar10": dict(_DDPMPP_CIFAR10, num_res_blocks=8),
    "ncsnpp_cifar10": _NCSNPP_CIFAR10,
    "ncsnpp_deep_cifar10": dict(_NCSNPP_CIFAR10, num_res_blocks=8),
    "ddpm_cifar10": dict(name="ddpm", image_size=32, in_channels=3),  # DDPM's defaults are Ho's
}

# DiT (Peebles & Xie 2023, Table 1): (depth, hidden_size, num_heads) of each size.
DIT_SIZES = {"s": (12, 384, 6), "b": (12, 768, 12), "l": (24, 1024, 16), "xl": (28, 1152, 16)}
# The paper's ImageNet 256x256 models, on 32x32x4 latents: "dit_xl_2" is DiT-XL/2 (patch 2),
# class-conditional with the null label (1001 embedding rows) and learn_sigma (8 outputs), as
# in facebookresearch/DiT. Position embeddings are in ``rest``, so ``params`` is 256 x hidden
# (or 64, 16 for patches 4, 8) smaller than the code's count of the same model.
PRESETS |= {
    f"dit_{size}_{patch}": dict(
        name="dit",
        image_size=32,
        in_channels=4,
        patch_size=patch,
        depth=depth,
        hidden_size=width,
        num_heads=heads,
        num_classes=1000,
        null_label=True,
        learn_sigma=True,
    )
    for size, (depth, width, heads) in DIT_SIZES.items()
    for patch in (2, 4, 8)
}


def create(name: str, rngs: nnx.Rngs, **kwargs) -> nnx.Module:
    """Build model ``name`` (a key of MODELS) with keyword options (``OPTIONS[name]``)."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; valid names: {sorted(MODELS)}.")
    unknown = sorted(set(kwargs) - set(OPTIONS[name]))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for model {name!r}; valid options: "
            f"{sorted(OPTIONS[name])}."
        )
    return MODELS[name](rngs=rngs, **kwargs)


def split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, params, rest): params are the trainable nnx.Param; rest is everything else."""
    return nnx.split(model, nnx.Param, ...)


def apply(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rest: nnx.State,
    x: jax.Array,
    t: jax.Array,
    sigma: jax.Array,
    y: jax.Array | None = None,
    *,
    train: bool = False,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Pure call of the model (jit-able): dropout, when ``train``, is keyed by ``rng``."""
    model = nnx.merge(graphdef, params, rest)
    rngs = None if rng is None else nnx.Rngs(dropout=rng)
    return model(x, t, sigma, y, train=train, rngs=rngs)


def count_params(params) -> int:
    """Number of scalars in a pytree of arrays (or of jax.ShapeDtypeStruct, from eval_shape)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
