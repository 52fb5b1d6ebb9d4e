"""Validation of an ``ExperimentConfig``: every rule names the field it checks and the fix.

Names are checked against the dicts that define them (SDEs, samplers, data sets, models, ...),
ranges by ``config.RANGES``, and the cross-field rules (device count, labels) below. The SDE,
the training loss, the sampler (traced) and the U-Net's geometry are validated by building
them: their own ``ValueError`` is re-raised with the config path. The whole model is built at
start-up (``Experiment.create``), its errors likewise under ``config.model``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from typing import Any

from score_sde.jobs.config import (
    COMPUTE_DTYPES,
    OPTIMIZERS,
    RANGES,
    ConfigError,
    ExperimentConfig,
    SamplingConfig,
    make_sde,
    parse,
    sampling_kwargs,
)
from score_sde.sde import SDE, SDES

MIN_FID_SET = 10  # images on each side of the image metrics


def require(ok: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


def _check_name(path: str, value: str, valid) -> None:
    require(
        value in valid,
        f"config.{path}={value!r} is unknown; valid names: {', '.join(sorted(valid))}.",
    )


def get_field(exp: ExperimentConfig, path: str) -> Any:
    """The value of ``path`` ("section.name") in ``exp``."""
    section, name = path.split(".")
    return getattr(getattr(exp, section), name)


def validate(exp: ExperimentConfig, device_count: int) -> None:
    """Raise ``ConfigError`` naming the first invalid field of ``exp``."""
    from score_sde import models

    _validate_names(exp)
    _validate_numbers(exp, device_count)
    _validate_data(exp)
    sde = build_sde(exp)
    _validate_sampler(exp, sde)
    _validate_model_inputs(exp)
    classifier = exp.model.name in models.CLASSIFIERS
    _validate_labels(exp, classifier)
    _validate_loss(exp, sde, classifier)


def _validate_names(exp: ExperimentConfig) -> None:
    """Each name field against the dict that defines its values."""
    from score_sde import datasets, models, parameterization, sampling
    from score_sde.models import embeddings, ncsnpp

    for path, valid in [
        ("sde.name", SDES),
        ("training.compute_dtype", COMPUTE_DTYPES),
        ("sampling.method", sampling.METHODS),
        ("data.dataset", datasets.DATASETS),
        ("model.name", models.MODELS),
        ("model.parameterization", parameterization.PARAMETERIZATIONS),
        ("model.embedding_type", embeddings.EMBEDDINGS),
        ("model.resblock_type", ncsnpp.RESBLOCKS),
        ("model.progressive", ncsnpp.PROGRESSIVE),
        ("model.progressive_input", ncsnpp.PROGRESSIVE_INPUT),
        ("model.progressive_combine", ncsnpp.COMBINE),
        ("optim.optimizer", OPTIMIZERS),
    ]:
        _check_name(path, get_field(exp, path), valid)


def _validate_finite(exp: ExperimentConfig) -> None:
    """No NaN or infinity in any float field (nor in sampling.options)."""
    values = {}
    for section in dataclasses.fields(exp):
        part = getattr(exp, section.name)
        if dataclasses.is_dataclass(part):
            values |= {
                f"{section.name}.{f.name}": getattr(part, f.name) for f in dataclasses.fields(part)
            }
    values |= {f"sampling.options.{k}": v for k, v in exp.sampling.options.items()}
    for path, value in values.items():
        require(
            not isinstance(value, float) or math.isfinite(value),
            f"config.{path}={value} must be a finite number.",
        )


def _validate_numbers(exp: ExperimentConfig, device_count: int) -> None:
    """Ranges, orderings, and the batch sizes and frequencies the devices and chunks need."""
    _validate_finite(exp)
    training = exp.training
    for rule, (ok, paths) in RANGES.items():
        for path in paths.split():
            value = get_field(exp, path)
            require(value is None or ok(value), f"config.{path}={value} must be {rule}.")
    for path in ("training.batch_size", "eval.batch_size"):
        batch = get_field(exp, path)
        require(
            batch >= 1 and batch % device_count == 0,
            f"config.{path}={batch} must be a positive multiple of the device count "
            f"({device_count}): each device takes an equal share of the global batch.",
        )
    for name in ("snapshot_freq", "snapshot_freq_for_preemption", "log_freq", "eval_freq"):
        freq = getattr(training, name)
        require(
            freq >= 1 and freq % training.n_jitted_steps == 0,
            f"config.training.{name}={freq} must be a positive multiple of "
            f"config.training.n_jitted_steps={training.n_jitted_steps} (steps run in chunks of "
            "it).",
        )
    require(
        exp.eval.end_ckpt == -1 or exp.eval.end_ckpt >= exp.eval.begin_ckpt,
        f"config.eval.end_ckpt={exp.eval.end_ckpt} must be >= config.eval.begin_ckpt="
        f"{exp.eval.begin_ckpt} (or -1: no upper bound).",
    )


def _validate_data(exp: ExperimentConfig) -> None:
    """Vector data or images, and enough images for the image metrics."""
    data = exp.data
    require(
        data.num_channels in (None, 1, 3),
        f"config.data.num_channels={data.num_channels} must be 1, 3 (or None for vector data).",
    )
    require(
        (data.image_size is None) == (data.num_channels is None),
        f"config.data.image_size={data.image_size} and config.data.num_channels="
        f"{data.num_channels}: set both (images) or neither (vector data).",
    )
    for path, zero in [
        ("eval.num_fid_samples", "0 (off) or "),
        ("eval.fid_reference_size", "0 (the whole split) or "),
        ("eval.fid_subsample", ""),
    ]:
        value = get_field(exp, path)
        require(
            value >= MIN_FID_SET or (zero and value == 0),
            f"config.{path}={value} must be {zero}>= {MIN_FID_SET}: the covariance, KID and "
            "the 5-nearest-neighbour metrics need several images.",
        )


def build_sde(exp: ExperimentConfig) -> SDE:
    """``make_sde(exp)``, its errors re-raised naming ``config.sde``."""
    try:
        return make_sde(exp)
    except ValueError as err:
        raise ConfigError(f"config.sde (name={exp.sde.name!r}): {err}") from None


def _standard_normal_score(x, t):
    return -x


def _validate_sampler(exp: ExperimentConfig, sde: SDE) -> None:
    """Option names against the method's, then values by tracing the sampler (no compile)."""
    import jax

    from score_sde import sampling

    sc, accepted = exp.sampling, sampling.method_options(exp.sampling.method)
    for name in sc.options:
        require(
            name in accepted,
            f"config.sampling.options has {name!r}, not an option of sampling.method="
            f"{sc.method!r}; its options: {', '.join(accepted)}.",
        )
    run = functools.partial(
        sampling.sample, sde=sde, score_fn=_standard_normal_score, shape=(1, 1), method=sc.method
    )
    try:
        jax.eval_shape(lambda key: run(key, **sampling_kwargs(exp)), jax.random.PRNGKey(0))
    except (ValueError, TypeError) as err:
        raise ConfigError(_sampler_message(sc, str(err))) from None


def _sampler_message(sc: SamplingConfig, message: str) -> str:
    """A sampler's "name=value: ..." message with the config path of ``name``."""
    name = re.match(r"(\w+)=", message)
    if name and name[1] in sc.options:
        return f"config.sampling.options: {message}"
    if name and hasattr(sc, name[1]):
        return f"config.sampling.{message}"
    return f"config.sampling (method={sc.method!r}): {message}"


def _validate_model_inputs(exp: ExperimentConfig) -> None:
    """Labels the model needs; a U-Net's shape (``Geometry``: images it can halve
    len(ch_mult) - 1 times, attention at resolutions it reaches); DiT's (``DiTOptions``:
    images it can cut into patches, heads that divide its width)."""
    from score_sde import models
    from score_sde.models.ncsnpp import Geometry

    model, size = exp.model, exp.data.image_size
    require(
        model.num_classes > 0 or model.name not in models.CLASSIFIERS,
        f"config.model.name={model.name!r} needs classes: set config.model.num_classes.",
    )
    require(
        exp.sampling.thresholding is None or exp.data.centered,
        f"config.sampling.thresholding={exp.sampling.thresholding!r} bounds the data to [-1, 1]: "
        "set config.data.centered=True (or thresholding=None).",
    )
    require(
        not (model.parameterization == "edm" and model.scale_by_sigma),
        "config.model.scale_by_sigma=True with parameterization='edm': EDM's c_out scales the "
        "network's output already: set config.model.scale_by_sigma=False.",
    )
    if size is None or not {"ch_mult", "patch_size"} & set(models.OPTIONS[model.name]):
        return
    try:  # the U-Net's or DiT's shape, as the model builds it
        if "patch_size" in models.OPTIONS[model.name]:
            models.DiTOptions(
                image_size=size, in_channels=exp.data.num_channels, nf=model.nf,
                patch_size=model.patch_size, hidden_size=model.hidden_size, depth=model.depth,
                num_heads=model.num_heads, mlp_ratio=model.mlp_ratio,
            )  # fmt: skip
        else:
            Geometry(
                size, exp.data.num_channels, model.nf, model.ch_mult, model.num_res_blocks,
                model.attn_resolutions, model.resamp_with_conv,
            )  # fmt: skip
    except ValueError as err:
        section = "data" if str(err).startswith("image_size") else "model"
        raise ConfigError(f"config.{section}.{err}") from None


def _validate_labels(exp: ExperimentConfig, classifier: bool) -> None:
    """Label dropout and guidance need a class-conditional score model; a classifier is trained
    by cross-entropy at continuous t and has no samples nor likelihood."""
    training, model, scale = exp.training, exp.model, exp.sampling.guidance_scale
    require(
        training.label_dropout == 0 or (model.num_classes > 0 and not classifier),
        f"config.training.label_dropout={training.label_dropout} drops the class labels of a "
        f"class-conditional score model, but config.model.name={model.name!r} with "
        f"num_classes={model.num_classes}: set config.training.label_dropout=0.",
    )
    require(
        scale == 1 or training.label_dropout > 0,
        f"config.sampling.guidance_scale={scale} needs a model trained with the null label: set "
        "config.training.label_dropout > 0 (e.g. 0.1) and config.model.num_classes, or scale 1.",
    )
    if not classifier:
        return
    for path, value, fix in [
        ("training.continuous", training.continuous, True),
        ("training.likelihood_weighting", training.likelihood_weighting, False),
        ("training.min_snr_gamma", training.min_snr_gamma, 0.0),
        ("training.edm_loss", training.edm_loss, False),
        ("training.snapshot_sampling", training.snapshot_sampling, False),
        ("eval.enable_bpd", exp.eval.enable_bpd, False),
        ("eval.enable_sampling", exp.eval.enable_sampling, False),
        ("model.scale_by_sigma", model.scale_by_sigma, False),
        ("sampling.classifier_workdir", exp.sampling.classifier_workdir, ""),
    ]:
        require(
            value == fix,
            f"config.{path}={value}: config.model.name={model.name!r} trains a noise-conditional "
            f"classifier (cross-entropy at continuous t, no samples): set config.{path}={fix!r}.",
        )


def loss_options(exp: ExperimentConfig) -> dict[str, Any]:
    """``losses.get_loss_fn``'s keyword options from the config (the model and classifier
    aside): the one place the config's loss fields meet the library."""
    from score_sde import losses

    tc = exp.training
    edm = losses.EDMLoss(tc.p_mean, tc.p_std, exp.model.sigma_data) if tc.edm_loss else None
    return dict(
        parameterization=exp.model.parameterization, continuous=tc.continuous,
        likelihood_weighting=tc.likelihood_weighting, importance_sampling=tc.importance_sampling,
        reduce_mean=tc.reduce_mean, eps=tc.eps, min_snr_gamma=tc.min_snr_gamma, edm=edm,
    )  # fmt: skip


def _validate_loss(exp: ExperimentConfig, sde: SDE, classifier: bool) -> None:
    """Build the training loss (with a stand-in model): its errors under the config path."""
    from score_sde import losses

    tc = exp.training
    try:
        losses.get_loss_fn(sde, _standard_normal_score, classifier=classifier, **loss_options(exp))
    except ValueError as err:
        name = re.match(r"(\w+)=", str(err))
        for section in ("training", "model"):
            if name and hasattr(getattr(exp, section), name[1]):
                raise ConfigError(f"config.{section}.{err}") from None
        raise ConfigError(
            f"config.training.continuous={tc.continuous} with config.sde.name="
            f"{exp.sde.name!r}: {err}"
        ) from None


def from_config_dict(cfg: Mapping[str, Any], *, device_count: int | None = None):
    """The validated ``ExperimentConfig`` of an ``ml_collections.ConfigDict`` (or a nested dict,
    e.g. ``dataclasses.asdict`` of an ExperimentConfig read back from JSON).

    ``device_count`` (default ``jax.device_count()``) must divide the batch sizes.
    Raises ``ConfigError`` naming the first invalid field.
    """
    values = cfg.to_dict() if hasattr(cfg, "to_dict") else cfg
    exp = parse(values)
    if device_count is None:
        import jax

        device_count = jax.device_count()
    validate(exp, device_count)
    return exp
