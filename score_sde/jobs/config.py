"""Typed, validated experiment configs.

Config files (``configs/**.py``) build an ``ml_collections.ConfigDict`` with the sections of
yang-song/score_sde: ``training``, ``sampling``, ``eval``, ``data``, ``model``, ``optim`` and
``seed``, plus ``sde`` (which yang-song/score_sde spreads over ``training.sde`` and ``model``);
they start from ``to_config_dict()``, which holds every field below at its default, so
any field can be overridden on the command line. ``validation.from_config_dict`` turns the
ConfigDict into a frozen ``ExperimentConfig`` (``parse``) and checks every field: an unknown key,
a wrong type or an invalid value raises ``ConfigError`` with one line naming the field and the
fix; unknown SDE, model, sampler and data set names list the valid ones (read
from ``SDES``, ``models.MODELS``, ``sampling.METHODS`` and ``datasets.DATASETS``). Each field
has the name of the option it sets (``sde.N`` is ``VPSDE(N=...)``, ``sampling.denoise`` the
samplers' ``denoise``).

For the trainer: ``make_sde(cfg)``, ``model_kwargs(cfg, shape)`` (for ``models.create``) and
``sampling_kwargs(cfg)`` (for ``sampling.sample``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from score_sde.sde import SDE, SDES


class ConfigError(ValueError):
    """An invalid config: the message names the field and the fix."""


# docs/config.md is generated from the sections below (python -m score_sde.jobs.config_reference
# --write): a field's meaning is its trailing comment, else the comment block right above it.


@dataclasses.dataclass(frozen=True)
class SDEConfig:
    name: str = "vpsde"  # the SDE (it reads the fields its class takes)
    beta_min: float = 0.1  # VP and sub-VP: beta(0) of the linear schedule
    beta_max: float = 20.0  # VP and sub-VP: beta(1) of the linear schedule
    schedule: str = "linear"  # VP and sub-VP: beta(t), "linear" or "cosine"
    sigma_min: float = 0.01  # VE: the noise std at t = 0
    sigma_max: float = 50.0  # VE: the noise std at t = 1
    N: int = 1000  # steps of the discrete chain (yang-song/score_sde's model.num_scales)


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    batch_size: int = 128  # global batch, split over all devices
    n_iters: int = 1_300_001  # optimiser steps of the run
    snapshot_freq: int = 50_000  # steps between checkpoints kept for good (eval), sample grids
    snapshot_freq_for_preemption: int = 10_000  # steps between rolling checkpoints (resume)
    log_freq: int = 50  # steps between log lines of the training loss
    eval_freq: int = 100  # steps between losses on an eval batch
    snapshot_sampling: bool = True  # write a sample grid at each snapshot
    n_jitted_steps: int = 5  # optimiser steps per jitted call (lax.scan)
    continuous: bool = True  # the continuous-time loss; False: the DDPM / SMLD discrete loss
    reduce_mean: bool = False  # the loss is the mean over dimensions, not half their sum
    likelihood_weighting: bool = False  # weight the continuous loss by g(t)² / sigma(t)²
    importance_sampling: bool = False  # draw t in proportion to the likelihood weight
    min_snr_gamma: float = 0.0  # min-SNR-gamma weighting (Hang et al. 2023 use 5); 0: off
    # EDM's loss (Karras et al. 2022): ln sigma ~ N(p_mean, p_std²) with sigma = sigma(t)/alpha(t),
    # weight (sigma² + sigma_data²) / (sigma sigma_data)², sigma_data from config.model.
    edm_loss: bool = False
    p_mean: float = -1.2  # edm_loss: mean of ln sigma
    p_std: float = 1.2  # edm_loss: std of ln sigma
    eps: float = 1e-5  # smallest training time
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops
    max_loss_ratio: float = 1e4  # stop on a step loss this many times the running loss (0: off)
    keep_checkpoints: int = 3  # rolling checkpoints kept
    label_dropout: float = 0.0  # classifier-free guidance: P(label dropped)
    compute_dtype: str = "float32"  # "float32" or "bfloat16"; parameters stay float32


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    method: str = "pc"  # the sampler (it reads the fields and options it takes)
    predictor: str = "euler_maruyama"  # pc: the predictor
    corrector: str = "none"  # pc: the corrector
    snr: float = 0.16  # pc: the corrector's signal-to-noise ratio (its step size)
    n_corrector_steps: int = 1  # corrector steps per predictor step (Song's n_steps_each)
    denoise: bool | None = None  # final Tweedie denoising step (Song's noise_removal); None:
    # the method's choice (ddim, dpm_solver, unipc: after more than 15 steps; the others: always)
    probability_flow: bool = False  # pc: predict along the probability-flow ODE, not the SDE
    n_steps: int | None = None  # steps of the time grid; None: the method's default (pc: sde.N)
    eps: float | None = None  # end time; None: the SDE's default, sde.end_time(n_steps)
    # Class-conditional models: samples cycle through the classes; a scale w != 1 samples with
    # classifier-free guidance s(x, null) + w (s(x, y) - s(x, null)) (needs label_dropout > 0).
    guidance_scale: float = 1.0
    # Classifier guidance (Song et al. 2021, Eq. 14; Dhariwal & Nichol 2021): the workdir of a
    # noise-conditional classifier trained on the same data and SDE (model "classifier" or
    # "mlp_classifier"). Samples then cycle through its classes, drawn with the score
    # s(x, t) + classifier_scale * grad_x log p_t(y | x) (its latest checkpoint's EMA weights).
    classifier_workdir: str = ""
    classifier_scale: float = 1.0  # weight of the classifier's gradient (classifier_workdir)
    # Imagen's thresholding of the x0 prediction at every score evaluation (data.centered=True):
    # None (off), "static" (clip to [-1, 1]) or "dynamic" (divide by its percentile, then clip).
    thresholding: str | None = None
    threshold_percentile: float = 0.995  # "dynamic": the quantile of |x0| per example
    # Other keyword options of the method, e.g. {"eta": 0.5} for ddim or {"rtol": 1e-3} for ode.
    options: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    begin_ckpt: int = 0  # evaluate the checkpoints with begin_ckpt <= step <= end_ckpt
    end_ckpt: int = -1  # last step evaluated; -1: no bound (and new checkpoints as they appear)
    batch_size: int = 1024  # global batch of the eval loss, likelihood and sampling
    enable_loss: bool = True  # the loss on the eval split at each checkpoint
    enable_bpd: bool = False  # bits/dim (probability-flow likelihood) on bpd_split
    bpd_split: str = "test"  # the eval split (loss, bits/dim); a slice, "test[:1000]", for part
    bpd_num_repeats: int = 1  # passes over the split (the likelihood's estimator is random)
    enable_sampling: bool = False  # draw num_samples samples at each checkpoint
    num_samples: int = 50_000  # samples drawn at each checkpoint
    rtol: float = 1e-5  # relative tolerance of the likelihood's ODE solver
    atol: float = 1e-5  # absolute tolerance of the likelihood's ODE solver
    eps: float = 1e-5  # likelihood start time
    # Image quality of image models (with enable_sampling): FID, KID, IS, precision/recall and
    # density/coverage of num_fid_samples samples (0: off) against reference statistics of
    # fid_split (score_sde.jobs.fid_eval).
    num_fid_samples: int = 50_000
    fid_split: str = "train"  # the data split of the reference statistics
    fid_reference_size: int = 0  # the first n examples of fid_split; 0: all of them
    fid_stats: str = ""  # reference statistics (.npz); "": computed once into the cache
    fid_subsample: int = 10_000  # features kept per side for KID, precision/recall, density
    inception_weights: str = ""  # converted Inception weights (.npz); "": found in the cache


@dataclasses.dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"  # the data set (score_sde.datasets)
    image_size: int | None = 32  # images' height and width; None for vector data
    num_channels: int | None = 3  # images' channels (1 or 3); None for vector data
    random_flip: bool = True  # random horizontal flips of the training images
    centered: bool = False  # scale data to [-1, 1] instead of [0, 1]
    uniform_dequantization: bool = False  # uniform noise on 8-bit images' pixel values
    data_dir: str | None = None  # where tfds sets and image_folder are read; None: the default


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    name: str = "ncsnpp"  # the network (it reads the fields its constructor takes)
    # training
    dropout: float = 0.1  # dropout rate of the residual blocks (DiT: of its MLPs)
    ema_rate: float = 0.9999  # decay of the weights' moving average (eval and sampling use it)
    ema_warmup: bool = False  # decay min(ema_rate, (1 + n) / (10 + n)) at update n: short runs
    # What the network predicts: the score, noise (eps), data (x0), v = alpha eps - sigma x0, or
    # "edm": EDM's preconditioned denoiser c_skip x + c_out F(c_in x) around the network F.
    parameterization: str = "score"
    sigma_data: float = 0.5  # the data's std: EDM's preconditioning and loss
    # NCSN++ / DDPM++ / DDPM
    scale_by_sigma: bool = False  # divide the output by sigma(t) (NCSN)
    nf: int = 128  # base number of channels (MLP: embedding width; DiT: sinusoidal width of t)
    ch_mult: tuple[int, ...] = (1, 2, 2, 2)  # channels of each resolution, times nf
    num_res_blocks: int = 4  # residual blocks per resolution
    attn_resolutions: tuple[int, ...] = (16,)  # resolutions with self-attention
    resamp_with_conv: bool = True  # up- and downsample with a convolution
    fir: bool = False  # FIR-filtered up- and downsampling (StyleGAN2)
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)  # the FIR filter's taps
    skip_rescale: bool = True  # skip connections scaled by 1/sqrt(2)
    resblock_type: str = "biggan"  # residual block: DDPM's or BigGAN's
    progressive: str = "none"  # the decoder's output pyramid
    progressive_input: str = "none"  # the encoder's input pyramid
    progressive_combine: str = "sum"  # how the input pyramid joins the features
    embedding_type: str = "positional"  # time embedding: sinusoidal or Gaussian Fourier
    init_scale: float = 0.0  # init scale of the blocks' last layers (0: 1e-10; DiT's adaLN: 0)
    fourier_scale: float = 16.0  # std of the Gaussian Fourier features
    num_classes: int = 0  # classes of a class-conditional model; 0: unconditional
    # MLP (also nf: its embedding width)
    width: int = 256  # hidden width
    num_blocks: int = 3  # residual blocks of the MLP
    # DiT (also nf: the width of its sinusoidal embedding of t, 256 in the paper)
    patch_size: int = 2  # DiT's patches are patch_size x patch_size pixels, one token each
    hidden_size: int = 384  # DiT's token width
    depth: int = 12  # DiT's transformer blocks
    num_heads: int = 6  # DiT's attention heads (they divide hidden_size)
    mlp_ratio: float = 4.0  # DiT's MLP width, times hidden_size


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    optimizer: str = "Adam"  # the optimiser (AdamW: Adam with decoupled weight decay)
    lr: float = 2e-4  # learning rate after the warm-up
    beta1: float = 0.9  # Adam's first-moment decay
    beta2: float = 0.999  # Adam's second-moment decay
    eps: float = 1e-8  # Adam's epsilon
    weight_decay: float = 0.0  # decoupled weight decay (AdamW); 0: plain Adam
    warmup: int = 5000  # linear warm-up steps; the first step's lr is lr / warmup, not 0
    grad_clip: float = 1.0  # global-norm clipping; 0 disables it


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    sde: SDEConfig = dataclasses.field(default_factory=SDEConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    seed: int = 42  # seed of the initial weights and of every random stream


OPTIMIZERS = ("Adam",)
COMPUTE_DTYPES = ("float32", "bfloat16")
# Range rules: "must be <rule>" for each listed field (None, for optional fields, is allowed).
RANGES = {
    ">= 1": (
        lambda v: v >= 1,
        "training.n_iters training.n_jitted_steps training.max_bad_steps "
        "training.keep_checkpoints eval.num_samples eval.bpd_num_repeats data.image_size "
        "model.nf model.num_res_blocks model.width model.num_blocks model.patch_size "
        "model.hidden_size model.depth model.num_heads",
    ),
    "> 0": (
        lambda v: v > 0,
        "sampling.snr eval.rtol eval.atol optim.lr optim.eps model.sigma_data training.p_std "
        "model.mlp_ratio",
    ),
    ">= 0": (
        lambda v: v >= 0,
        "eval.begin_ckpt model.num_classes optim.weight_decay optim.warmup optim.grad_clip "
        "sampling.classifier_scale training.max_loss_ratio training.min_snr_gamma",
    ),
    "in [0, 1)": (
        lambda v: 0 <= v < 1,
        "model.dropout model.ema_rate optim.beta1 optim.beta2",
    ),
    "in [0, 1]": (lambda v: 0 <= v <= 1, "training.label_dropout"),
    "in (0, 1)": (lambda v: 0 < v < 1, "training.eps sampling.eps eval.eps"),
}


# --- parsing -------------------------------------------------------------------------------
def _coerce(path: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the annotation ``tp`` (ints pass as floats, lists as tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(path, value, inner)
    if origin is dict:
        if not (isinstance(value, Mapping) and all(isinstance(k, str) for k in value)):
            raise ConfigError(f"config.{path}={value!r}: expected a dict of named options.")
        return dict(value)
    if origin is tuple:
        if not isinstance(value, tuple | list):
            raise ConfigError(f"config.{path}={value!r}: expected a tuple such as (1, 2, 2).")
        return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(
            f"config.{path}={value!r} has type {type(value).__name__}, expected {tp.__name__}."
        )
    return float(value) if tp is float else value


def _section(cls: type, path: str, values: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"config.{path}{key} is not a known field: {hint}valid fields of "
                f"config.{path.rstrip('.') or '<top level>'}: {', '.join(hints)}."
            )
    kwargs = {}
    for key, value in values.items():
        if dataclasses.is_dataclass(hints[key]):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config.{path}{key} must be a section (a ConfigDict).")
            kwargs[key] = _section(hints[key], f"{path}{key}.", value)
        else:
            kwargs[key] = _coerce(f"{path}{key}", value, hints[key])
    return cls(**kwargs)


def parse(values: Mapping[str, Any]) -> ExperimentConfig:
    """The ``ExperimentConfig`` of nested ``values`` with each field's type checked (unknown
    keys and wrong types raise ``ConfigError``); ``validation.from_config_dict`` checks the rest."""
    return _section(ExperimentConfig, "", values)


def to_config_dict(exp: ExperimentConfig | None = None) -> ml_collections.ConfigDict:
    """``exp`` (default: every field at its default) as a ConfigDict with every field, so a
    config file can start from it and any field can be overridden on the command line
    (optional fields are typed references: ``None`` and values both override)."""
    exp = ExperimentConfig() if exp is None else exp
    cfg = ml_collections.ConfigDict()
    for f in dataclasses.fields(exp):
        value = getattr(exp, f.name)
        if not dataclasses.is_dataclass(value):
            setattr(cfg, f.name, value)
            continue
        section = ml_collections.ConfigDict()
        for name, tp in typing.get_type_hints(type(value)).items():
            v = getattr(value, name)
            if type(None) in typing.get_args(tp):  # typed, so None <-> value both override
                (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
                v = config_dict.FieldReference(v, field_type=inner)
            setattr(section, name, v)
        setattr(cfg, f.name, section)
    return cfg


# --- helpers for the trainer ---------------------------------------------------------------
def make_sde(cfg: ExperimentConfig) -> SDE:
    """The SDE named by ``sde.name``, with the fields of ``config.sde`` its class takes."""
    cls = SDES[cfg.sde.name]
    return cls(**{f.name: getattr(cfg.sde, f.name) for f in dataclasses.fields(cls)})


def sampling_kwargs(cfg: ExperimentConfig) -> dict[str, Any]:
    """Options for ``sampling.sample(..., method=cfg.sampling.method, **options)``: the sampling
    fields the method takes (None fields left to the method's default) and ``options``."""
    from score_sde.sampling import method_options

    c = cfg.sampling
    accepted = method_options(c.method)
    fields = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)}
    kwargs = {k: v for k, v in fields.items() if k in accepted and v is not None}
    return kwargs | c.options


def model_kwargs(cfg: ExperimentConfig, shape: tuple[int, ...]) -> dict[str, Any]:
    """Keyword arguments of ``models.create(cfg.model.name, rngs, **kwargs)`` for examples of
    ``shape`` ((H, W, C) images or (D,) vectors, as ``datasets.dataset_info`` gives): the model
    fields it takes (``models.OPTIONS``), the data's size, labels and the compute dtype."""
    import jax.numpy as jnp

    m = cfg.model
    candidates = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    if len(shape) == 3:
        candidates.update(image_size=shape[0], in_channels=shape[2])
    else:
        candidates.update(dim=math.prod(shape))
    candidates.update(
        num_classes=m.num_classes or None,
        null_label=cfg.training.label_dropout > 0,
        dtype=jnp.dtype(cfg.training.compute_dtype),
    )
    from score_sde.models import OPTIONS

    return {k: v for k, v in candidates.items() if k in OPTIONS[m.name]}


# Fields a resume may change without --allow_config_change: the length of the run, its
# cadence of logs and checkpoints, its guard, the data's location, evaluation and sampling.
RESUMABLE = (
    "training.n_iters training.log_freq training.eval_freq training.snapshot_freq "
    "training.snapshot_freq_for_preemption training.snapshot_sampling training.keep_checkpoints "
    "training.max_bad_steps training.max_loss_ratio data.data_dir eval.* sampling.*"
).split()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out |= _flatten(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """ "path: old -> new" for each field of two JSON configs that differs, except
    ``RESUMABLE`` ones."""
    old, new = _flatten(saved), _flatten(current)
    changes = []
    for path in sorted(set(old) | set(new)):
        resumable = any(
            path == r or (r.endswith("*") and path.startswith(r[:-1])) for r in RESUMABLE
        )
        if not resumable and old.get(path, "(absent)") != new.get(path, "(absent)"):
            changes.append(
                f"config.{path}: {old.get(path, '(absent)')} -> {new.get(path, '(absent)')}"
            )
    return changes
