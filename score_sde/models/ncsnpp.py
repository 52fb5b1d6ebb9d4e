"""NCSN++ / DDPM++ U-Net of Song et al. (ICLR 2021, App. H), in Flax NNX.

One class covers the family: DDPM-style or BigGAN-style residual blocks, self-attention at chosen
resolutions, plain or FIR resampling, skip rescaling by 1/sqrt(2), progressive growing of the
input (none / input_skip / residual) and output (none / output_skip / residual), sinusoidal or
Gaussian Fourier conditioning, optional class labels and ``scale_by_sigma``. Ho et al.'s DDPM is
this class with DDPM blocks and none of the ++ options (see ``ddpm.py``).

Call: ``model(x, t, sigma, y=None, *, train=False, rngs=None)`` with x: [B, H, W, C].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from score_sde.models import layers, up_down
from score_sde.models.embeddings import NetworkOptions

Array = jax.Array
RESBLOCKS = ("ddpm", "biggan")
PROGRESSIVE = ("none", "output_skip", "residual")
PROGRESSIVE_INPUT = ("none", "input_skip", "residual")
COMBINE = ("sum", "cat")


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The U-Net's shape, shared by its encoder and decoder: the input, the width nf, one level
    per ``ch_mult`` entry (halving the resolution between levels), residual blocks per level,
    the resolutions with attention, and resampling with a convolution or without."""

    image_size: int
    in_channels: int
    nf: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    resamp_with_conv: bool

    def __post_init__(self):
        image_size, nf, ch_mult, n = self.image_size, self.nf, self.ch_mult, len(self.ch_mult)
        if nf < 4:
            raise ValueError(f"nf={nf}: GroupNorm needs at least 4 channels (use nf >= 4).")
        if n < 1:
            raise ValueError("ch_mult=(): give one entry per resolution, e.g. (1, 2, 2).")
        if image_size < 2 ** (n - 1) or image_size % 2 ** (n - 1):
            raise ValueError(
                f"image_size={image_size} must be divisible by 2^(len(ch_mult) - 1) = "
                f"{2 ** (n - 1)} for ch_mult={ch_mult}: use fewer resolutions or another size."
            )
        resolutions = [image_size // 2**i for i in range(n)]
        bad = sorted(set(self.attn_resolutions) - set(resolutions))
        if bad:
            raise ValueError(
                f"attn_resolutions={self.attn_resolutions}: {bad} not among the model's "
                f"resolutions {resolutions} (image_size={image_size}, ch_mult={ch_mult})."
            )

    def attention_at(self, level: int) -> bool:
        return self.image_size >> level in self.attn_resolutions


class Blocks:
    """Builds the residual and attention blocks of one model with shared settings."""

    def __init__(
        self,
        prec: layers.Precision,
        rngs: nnx.Rngs,
        *,
        temb_dim: int,
        resblock_type: str,
        dropout: float,
        fir: bool,
        fir_kernel: Sequence[int],
        skip_rescale: bool,
        init_scale: float,
    ):
        layers.check_choice("resblock_type", resblock_type, RESBLOCKS)
        self.prec, self.rngs, self.fir, self.fir_kernel = prec, rngs, fir, tuple(fir_kernel)
        self.biggan = resblock_type == "biggan"
        self.skip_rescale, self.init_scale = skip_rescale, init_scale
        self.res_kw = dict(
            temb_dim=temb_dim,
            biggan=self.biggan,
            dropout=dropout,
            fir=fir,
            fir_kernel=fir_kernel,
            skip_rescale=skip_rescale,
            init_scale=init_scale,
        )

    def res(self, cin: int, cout: int | None = None, updown: str | None = None):
        return layers.ResnetBlock(
            cin, self.prec, self.rngs, cout=cout, updown=updown, **self.res_kw
        )

    def attn(self, ch: int) -> layers.AttnBlock:
        return layers.AttnBlock(
            ch, self.prec, self.rngs, skip_rescale=self.skip_rescale, init_scale=self.init_scale
        )

    def resample(self, ch: int, up: bool, with_conv: bool, cout: int | None = None):
        return layers.Resample(
            ch, self.prec, self.rngs, up=up, cout=cout, with_conv=with_conv, fir=self.fir,
            fir_kernel=self.fir_kernel,
        )  # fmt: skip

    def updown(self, ch: int, up: bool, with_conv: bool):
        """The resampling between resolutions: a BigGAN block, or DDPM's plain resampling."""
        if self.biggan:
            return self.res(ch, updown="up" if up else "down")
        return self.resample(ch, up, with_conv)


class Level(nnx.Module):
    """One resolution: residual blocks, each optionally followed by attention, then extras."""

    def __init__(self, blocks, attns, resample=None, pyramid=None, head=None):
        self.blocks, self.attns = nnx.List(blocks), nnx.List(attns)
        self.resample, self.pyramid, self.head = resample, pyramid, head


def _call(m, h, temb, train, rngs):
    """Call a resampling layer: a BigGAN block takes the embedding, Resample does not."""
    return m(h, temb, train=train, rngs=rngs) if isinstance(m, layers.ResnetBlock) else m(h)


class Encoder(nnx.Module):
    """The downsampling half of the U-Net (with the progressive input pyramid).

    Returns every intermediate feature map (the U-Net's skip connections), last one deepest.
    """

    def __init__(
        self, blocks: Blocks, g: Geometry, *, progressive_input: str, progressive_combine: str
    ):
        layers.check_choice("progressive_input", progressive_input, PROGRESSIVE_INPUT)
        layers.check_choice("progressive_combine", progressive_combine, COMBINE)
        prec, rngs, in_channels, nf = blocks.prec, blocks.rngs, g.in_channels, g.nf
        self.conv_in = layers.conv(in_channels, nf, prec, rngs)
        self.progressive_input, self.skip_rescale = progressive_input, blocks.skip_rescale
        self.fir_kernel = blocks.fir_kernel if blocks.fir else None
        channels = [nf]  # of each returned feature map
        ch, pyr_ch, levels = nf, in_channels, []
        for i, mult in enumerate(g.ch_mult):
            res_blocks, attns = [], []
            for _ in range(g.num_res_blocks):
                res_blocks.append(blocks.res(ch, nf * mult))
                ch = nf * mult
                attns.append(blocks.attn(ch) if g.attention_at(i) else None)
                channels.append(ch)
            resample = pyramid = None
            if i < len(g.ch_mult) - 1:
                resample = blocks.updown(ch, up=False, with_conv=g.resamp_with_conv)
                if progressive_input == "input_skip":
                    pyramid = layers.Combine(
                        in_channels, ch, prec, rngs, method=progressive_combine
                    )
                    ch *= 2 if progressive_combine == "cat" else 1
                elif progressive_input == "residual":
                    pyramid = blocks.resample(pyr_ch, up=False, with_conv=True, cout=ch)
                    pyr_ch = ch
                channels.append(ch)
            levels.append(Level(res_blocks, attns, resample, pyramid))
        self.levels = nnx.List(levels)
        self.channels = tuple(channels)

    def __call__(self, x: Array, temb: Array, *, train: bool, rngs) -> list[Array]:
        pyramid = x
        hs = [self.conv_in(x)]
        for level in self.levels:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(hs[-1], temb, train=train, rngs=rngs)
                hs.append(attn(h) if attn is not None else h)
            if level.resample is None:
                continue
            h = _call(level.resample, hs[-1], temb, train, rngs)
            if self.progressive_input == "input_skip":
                pyramid = up_down.downsample(pyramid, self.fir_kernel)
                h = level.pyramid(pyramid, h)
            elif self.progressive_input == "residual":
                pyramid = level.pyramid(pyramid)
                h = pyramid = layers.skip_sum(pyramid, h, self.skip_rescale)
            hs.append(h)
        return hs


class Decoder(nnx.Module):
    """The upsampling half of the U-Net (with the progressive output pyramid), consuming the
    encoder's feature maps (``Encoder.channels``) as skip connections, and the output head."""

    def __init__(
        self,
        blocks: Blocks,
        skip_channels: Sequence[int],
        g: Geometry,
        *,
        progressive: str,
        attn_each_decoder_block: bool,
    ):
        layers.check_choice("progressive", progressive, PROGRESSIVE)
        prec, rngs, init_scale = blocks.prec, blocks.rngs, blocks.init_scale
        in_channels, nf, ch_mult, num_res_blocks = g.in_channels, g.nf, g.ch_mult, g.num_res_blocks
        skips, ch = list(skip_channels), skip_channels[-1]
        levels, pyr_ch = [], in_channels
        for i in reversed(range(len(ch_mult))):
            res_blocks = []
            for _ in range(num_res_blocks + 1):
                res_blocks.append(blocks.res(ch + skips.pop(), nf * ch_mult[i]))
                ch = nf * ch_mult[i]
            # Song et al.: attention once per decoder level; Ho et al.: after every block.
            with_attn = g.attention_at(i)
            attns = [
                blocks.attn(ch)
                if with_attn and (attn_each_decoder_block or j == num_res_blocks)
                else None
                for j in range(num_res_blocks + 1)
            ]
            head = pyramid = None
            top = i == len(ch_mult) - 1
            if progressive == "output_skip" or (progressive == "residual" and top):
                out_ch = in_channels if progressive == "output_skip" else ch
                scale = init_scale if progressive == "output_skip" else 1.0
                head = layers.NormActConv(ch, out_ch, prec, rngs, init_scale=scale)
                pyr_ch = out_ch
            elif progressive == "residual":
                pyramid = blocks.resample(pyr_ch, up=True, with_conv=True, cout=ch)
                pyr_ch = ch
            resample = blocks.updown(ch, up=True, with_conv=g.resamp_with_conv) if i else None
            levels.append(Level(res_blocks, attns, resample, pyramid, head))
        assert not skips
        self.levels = nnx.List(levels)
        self.head = (
            layers.NormActConv(ch, in_channels, prec, rngs, init_scale=init_scale)
            if progressive != "output_skip"
            else None
        )
        self.skip_rescale = blocks.skip_rescale
        self.fir_kernel = blocks.fir_kernel if blocks.fir else None

    def __call__(self, h: Array, hs: list[Array], temb: Array, *, train: bool, rngs) -> Array:
        hs, pyramid = list(hs), None
        for level in self.levels:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = block(jnp.concatenate([h, hs.pop()], axis=-1), temb, train=train, rngs=rngs)
                h = attn(h) if attn is not None else h
            if level.head is not None:  # output_skip, or the first level of residual
                p = level.head(h)
                pyramid = p if pyramid is None else up_down.upsample(pyramid, self.fir_kernel) + p
            elif level.pyramid is not None:  # residual
                pyramid = level.pyramid(pyramid)
                h = pyramid = layers.skip_sum(pyramid, h, self.skip_rescale)
            if level.resample is not None:
                h = _call(level.resample, h, temb, train, rngs)
        return self.head(h) if self.head is not None else pyramid


@dataclasses.dataclass(frozen=True, kw_only=True)
class UNetOptions(NetworkOptions):
    """The U-Net's options, shared by NCSN++ and the classifier: its shape (``Geometry``) and
    its blocks' settings, with every network's options (defaults: DDPM++ cont., CIFAR-10)."""

    image_size: int
    in_channels: int = 3
    nf: int = 128
    ch_mult: Sequence[int] = (1, 2, 2, 2)
    num_res_blocks: int = 4
    attn_resolutions: Sequence[int] = (16,)
    dropout: float = 0.1
    resblock_type: str = "biggan"
    resamp_with_conv: bool = True
    fir: bool = False
    fir_kernel: Sequence[int] = (1, 3, 3, 1)
    skip_rescale: bool = True

    def geometry(self) -> Geometry:
        return Geometry(
            self.image_size, self.in_channels, self.nf, tuple(self.ch_mult),
            self.num_res_blocks, tuple(self.attn_resolutions), self.resamp_with_conv,
        )  # fmt: skip

    def blocks(self, rngs: nnx.Rngs, temb_dim: int) -> Blocks:
        return Blocks(
            self.precision, rngs, temb_dim=temb_dim, resblock_type=self.resblock_type,
            dropout=self.dropout, fir=self.fir, fir_kernel=self.fir_kernel,
            skip_rescale=self.skip_rescale, init_scale=self.init_scale,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True, kw_only=True)
class NCSNppOptions(UNetOptions):
    """NCSN++'s options: the U-Net's, the progressive input and output pyramids, and attention
    after every decoder block (Ho et al.) instead of once per level (Song et al.)."""

    progressive: str = "none"
    progressive_input: str = "none"
    progressive_combine: str = "sum"
    attn_each_decoder_block: bool = False


class NCSNpp(layers.ScoreNetwork):
    """The NCSN++ / DDPM++ score network; its keyword options are :class:`NCSNppOptions`'s."""

    def __init__(self, *, rngs: nnx.Rngs, **options):
        o = NCSNppOptions(**options)
        g = o.geometry()
        self.embed = o.conditioning(rngs)
        blocks = o.blocks(rngs, self.embed.dim)
        self.encoder = Encoder(
            blocks, g, progressive_input=o.progressive_input,
            progressive_combine=o.progressive_combine,
        )  # fmt: skip
        ch = self.encoder.channels[-1]
        self.mid = nnx.List([blocks.res(ch), blocks.attn(ch), blocks.res(ch)])
        self.decoder = Decoder(
            blocks, self.encoder.channels, g, progressive=o.progressive,
            attn_each_decoder_block=o.attn_each_decoder_block,
        )  # fmt: skip
        self.scale_by_sigma, self.dtype = o.scale_by_sigma, o.dtype
        self.has_dropout = o.dropout > 0

    def body(self, x: Array, temb: Array, *, train: bool, rngs) -> Array:
        hs = self.encoder(x, temb, train=train, rngs=rngs)
        h = self.mid[0](hs[-1], temb, train=train, rngs=rngs)
        h = self.mid[2](self.mid[1](h), temb, train=train, rngs=rngs)
        return self.decoder(h, hs, temb, train=train, rngs=rngs)
