"""Image-quality jobs: a data split's reference statistics, and FID, KID, IS, precision/recall
and density/coverage of a checkpoint's samples, streamed through Inception and resumable.

Samples are quantised to 8 bits (round(255 x)), as images saved to PNG would be, so they go
through the Inception exactly as the data's own uint8 images; ``evaluation.streaming`` runs
them over devices and processes into the statistics. The first ``eval.fid_subsample`` features
of each side are kept for KID, precision/recall and density/coverage.

Reference statistics (``--mode fid_stats``, or on first need) are an ``.npz`` with pytorch-fid's
``mu`` and ``sigma``, the count ``n`` and the kept ``features``; a file with only ``mu`` and
``sigma`` (pytorch-fid's own) works for FID alone. An interrupted FID evaluation saves its
partial statistics in ``<workdir>/eval/fid_partial_<step>.npz`` and resumes from them; samples
depend only on (seed, step, index), so the result equals an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time

import jax
import numpy as np

from score_sde import checks, datasets, sharding
from score_sde import evaluation as ev
from score_sde.evaluation.streaming import (
    Accumulator,
    accumulate,
    batches_of,
    inception_outputs,
    progress_bar,
    to_uint8,
)
from score_sde.jobs.config import ConfigError, ExperimentConfig
from score_sde.jobs.experiment import stream_key
from score_sde.jobs.runlog import say, write_atomically
from score_sde.jobs.validation import MIN_FID_SET

SAVE_EVERY = 60.0  # seconds between saves of an evaluation's partial statistics
KID_SUBSET = 1000  # KID subset size (Binkowski et al.), fewer when the sets are smaller
PR_K, DC_K = 3, 5  # nearest neighbours: precision/recall (Kynkaanniemi), density/coverage (Naeem)


def load_inception(cfg: ExperimentConfig, *, required: bool = False) -> ev.Inception | None:
    """The FID Inception of ``eval.inception_weights`` (default: found in the cache), or None
    with one log line saying how to get the weights (a ``ConfigError`` when ``required``)."""
    try:
        inception = ev.Inception.load(cfg.eval.inception_weights or None)
    except ev.WeightsError as err:
        if cfg.eval.inception_weights:
            raise ConfigError(f"config.eval.inception_weights: {err}") from None
        if required:
            raise ConfigError(str(err)) from None
        say(f"FID, KID, IS and precision/recall are not computed: {err}")
        return None
    if not inception.has_logits:
        say(
            f"Inception weights {inception.path} have no logits: the Inception Score is null "
            "(pytorch-fid's file has them: score-sde-inception --from PATH.pth)."
        )
    return inception


# --- reference statistics --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Reference:
    """A data split's Inception statistics; ``features`` (for KID, precision/recall and
    density/coverage) is None for a file with only pytorch-fid's ``mu`` and ``sigma``."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    features: np.ndarray | None
    path: str


def reference_path(cfg: ExperimentConfig) -> str:
    """``eval.fid_stats``, or the cache file named after the data set, split and size."""
    if cfg.eval.fid_stats:
        return os.path.abspath(os.path.expanduser(cfg.eval.fid_stats))
    d, e = cfg.data, cfg.eval
    name = f"{d.dataset}_{e.fid_split}_{d.image_size}px_{d.num_channels}ch"
    if e.fid_reference_size:
        name += f"_first{e.fid_reference_size}"
    if d.data_dir:  # an image folder or a tfds folder of its own
        name += "_" + hashlib.sha1(os.path.abspath(d.data_dir).encode()).hexdigest()[:8]
    return os.path.join(ev.cache_dir(), "fid_stats", name + ".npz")


def reference_source(cfg: ExperimentConfig) -> datasets.Source:
    """The images of ``eval.fid_split`` (opened, not read: a bad split fails at once)."""
    d, e = cfg.data, cfg.eval
    try:
        source = datasets.get_source(
            d.dataset, split=e.fid_split, image_size=d.image_size, channels=d.num_channels,
            data_dir=d.data_dir,
        )  # fmt: skip
    except ValueError as err:
        raise ConfigError(f"config.eval.fid_split={e.fid_split!r}: {err}") from None
    if len(source.element_shape) != 3:
        raise ConfigError(f"config.data.dataset={d.dataset!r} is not image data: FID needs images.")
    return source


def compute_reference(cfg: ExperimentConfig, inception: ev.Inception, *, progress: bool):
    """The statistics of ``eval.fid_split`` (its first ``eval.fid_reference_size`` examples,
    or all), saved to ``reference_path(cfg)``."""
    d, e = cfg.data, cfg.eval
    source = reference_source(cfg)
    n = min(len(source), e.fid_reference_size or len(source))
    path = reference_path(cfg)
    say(f"Reference statistics of {d.dataset}/{e.fid_split} ({n} images) -> {path}")

    def batches():
        for start in range(0, n, e.batch_size):
            images, _ = source.read(np.arange(start, min(start + e.batch_size, n)))
            yield from batches_of(images, e.batch_size)

    with progress_bar(n, 0, "Inception (reference)", progress) as bar:
        acc = accumulate(inception, batches(), Accumulator.empty(n, e.fid_subsample, False), bar)
    ref = Reference(acc.stats.mean, acc.stats.cov, n, acc.kept, path)
    if jax.process_index() == 0:
        meta = dict(dataset=d.dataset, split=e.fid_split, image_size=d.image_size,
                    channels=d.num_channels, weights=os.path.basename(inception.path))  # fmt: skip
        _save_npz(path, mu=ref.mu, sigma=ref.sigma, n=n, features=ref.features,
                  meta=json.dumps(meta))  # fmt: skip
    return ref


def _save_npz(path: str, **arrays) -> None:
    write_atomically(path, lambda tmp: np.savez(tmp, **arrays), ".tmp.npz")


def read_reference(path: str) -> Reference:
    """Reference statistics from ``path`` (ours, or pytorch-fid's ``mu`` / ``sigma`` file)."""
    try:
        with np.load(path) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
            n = int(f["n"]) if "n" in f.files else None
            features = np.asarray(f["features"]) if "features" in f.files else None
    except (OSError, ValueError, KeyError) as err:
        raise ConfigError(
            f"{path}: not FID reference statistics ({err}); delete it or point "
            "config.eval.fid_stats at a file of --mode fid_stats (or pytorch-fid's mu, sigma)."
        ) from None
    if mu.shape != (ev.FEATURES,) or sigma.shape != (ev.FEATURES, ev.FEATURES):
        raise ConfigError(
            f"{path}: mu {mu.shape} and sigma {sigma.shape} are not 2048-d Inception pool3 "
            "statistics; compute them with --mode fid_stats."
        )
    return Reference(mu, sigma, n, features, path)


def load_reference(cfg: ExperimentConfig, inception: ev.Inception, *, progress: bool):
    """The reference statistics of ``reference_path(cfg)``, computed and saved on first need."""
    path = reference_path(cfg)
    if os.path.isfile(path):
        return read_reference(path)
    return compute_reference(cfg, inception, progress=progress)


# --- the metrics -----------------------------------------------------------------------------
def image_metrics(acc: Accumulator, ref: Reference, seed: int) -> dict:
    """FID (and its sample count), IS, KID, precision/recall and density/coverage; None where
    the inputs lack what a metric needs (logits for IS; for the rest, ``MIN_FID_SET`` reference
    features; for ``kid_std``, more than ``KID_SUBSET`` features on each side)."""
    out = {
        "fid": ev.frechet_distance(acc.stats.mean, acc.stats.cov, ref.mu, ref.sigma),
        "fid_num_samples": acc.stats.n,
        "inception_score": None,
        "inception_score_std": None,
    }
    if acc.score is not None:
        out["inception_score"], out["inception_score_std"] = acc.score.result()
    names = ("kid", "kid_std", "precision", "recall", "density", "coverage")
    m = 0 if ref.features is None else min(len(ref.features), len(acc.kept))
    if m < MIN_FID_SET:  # a file with mu and sigma only, or a tiny reference split
        return out | dict.fromkeys(names)
    real, fake = ref.features[:m], acc.kept[:m]
    kid = ev.kernel_inception_distance(real, fake, subset_size=min(KID_SUBSET, m), seed=seed)
    values = (*kid, *ev.precision_recall(real, fake, k=PR_K))
    values += ev.density_coverage(real, fake, k=DC_K)
    out |= {k: float(v) for k, v in zip(names, values, strict=True)}
    if m <= KID_SUBSET:  # each KID subset is all of both sets: their spread is no error bar
        out["kid_std"] = None
    return out


def images_metrics(cfg: ExperimentConfig, inception, images: np.ndarray, *, progress: bool):
    """The image metrics of ``images`` (uint8, or floats in [0, 1]) against the reference;
    ``{"fid": None}`` without ``inception`` (``load_inception``)."""
    if inception is None:
        return {"fid": None}
    ref = load_reference(cfg, inception, progress=progress)
    if images.dtype != np.uint8:
        images = np.asarray(to_uint8(images))
    acc = Accumulator.empty(len(images), cfg.eval.fid_subsample, inception.has_logits)
    with progress_bar(len(images), 0, "Inception (samples)", progress) as bar:
        acc = accumulate(inception, batches_of(images, cfg.eval.batch_size), acc, bar)
    return image_metrics(acc, ref, cfg.seed)


def fid_stats_job(cfg: ExperimentConfig, *, progress: bool = True) -> str:
    """``--mode fid_stats``: compute and save the reference statistics; returns their path."""
    reference_source(cfg)  # a bad split fails before the weights load (or convert)
    inception = load_inception(cfg, required=True)
    ref = compute_reference(cfg, inception, progress=progress)
    say(f"Wrote {ref.path}: {ref.n} images, {len(ref.features)} features kept.")
    return ref.path


# --- a checkpoint's samples ------------------------------------------------------------------
def sample_fn(evaluator):
    """Jitted (params, rest, key data, labels) -> (a global batch of ``eval.batch_size`` uint8
    samples, sharded over ``evaluator.mesh``; how many of them came out NaN or inf, for
    ``checks.report_nonfinite_count``), ``evaluator``: ``evaluator.Evaluator``. The count is
    reported after the program, which then has no host callback and is kept in JAX's
    persistent compilation cache: an eval job does not compile its sampler again."""
    exp, guide, n = evaluator.exp, evaluator.guide, evaluator.cfg.eval.batch_size

    def draw(params, rest, key_data, y):
        key = jax.random.wrap_key_data(key_data)
        x = exp.draw_raw(params, rest, key, y, n, guide, on_nonfinite="ignore")
        return to_uint8(exp.to_data(x)), checks.count_nonfinite(x)

    out = (sharding.batch_sharding(evaluator.mesh), sharding.replicated(evaluator.mesh))
    return jax.jit(draw, out_shardings=out)


def _fingerprint(cfg: ExperimentConfig, logits: bool) -> str:
    """What a partial evaluation's statistics depend on: a resume must match it."""
    e = cfg.eval
    return json.dumps(
        dict(
            n=e.num_fid_samples,
            batch_size=e.batch_size,
            keep=e.fid_subsample,
            logits=logits,
            sampling=dataclasses.asdict(cfg.sampling),
            seed=cfg.seed,
        ),  # fmt: skip
        sort_keys=True,
    )


def _resume(path: str, fingerprint: str) -> tuple[Accumulator | None, int]:
    """(statistics, batches done) of a partial evaluation at ``path``, or (None, 0)."""
    if not os.path.isfile(path):
        return None, 0
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    if str(arrays.pop("fingerprint")) != fingerprint:
        say(f"{path}: saved with other sampling or eval settings; starting the FID afresh.")
        return None, 0
    done = int(arrays.pop("batches_done"))
    say(f"Resuming the FID evaluation from batch {done + 1} ({path}).")
    return Accumulator.from_arrays(arrays), done


def evaluate_samples(evaluator, state, step: int, out_dir: str, inception, ref, *, progress):
    """The image metrics of ``eval.num_fid_samples`` samples of checkpoint ``step``, drawn in
    sharded batches and streamed through Inception; resumable (``fid_partial_<step>.npz``)."""
    cfg, e = evaluator.cfg, evaluator.cfg.eval
    n, bs = e.num_fid_samples, e.batch_size
    partial = os.path.join(out_dir, f"fid_partial_{step}.npz")
    fingerprint = _fingerprint(cfg, inception.has_logits)
    acc, done = _resume(partial, fingerprint)
    acc = acc or Accumulator.empty(n, e.fid_subsample, inception.has_logits)
    key = stream_key(jax.random.key(cfg.seed), "fid", step)
    num_batches = math.ceil(n / bs)

    def batches():
        for i in range(done, num_batches):
            key_data = np.asarray(jax.random.key_data(jax.random.fold_in(key, i)))
            y = evaluator.exp.sample_labels(i * bs, bs, evaluator.guide)
            args = sharding.put_replicated((key_data, y), evaluator.mesh)
            images, nonfinite = evaluator.draw_uint8(state.ema_params, state.rest, *args)
            checks.report_nonfinite_count(nonfinite, bs, "warn", "samples")
            yield sharding.gather(images), min(bs, n - i * bs)

    saved = time.monotonic()
    with progress_bar(n, done * bs, "FID samples", progress) as bar:
        outputs = inception_outputs(inception, batches(), bar)
        for i, (features, logits) in enumerate(outputs, start=done + 1):
            acc = acc.update(features, logits)
            if i < num_batches and time.monotonic() - saved >= SAVE_EVERY:
                if jax.process_index() == 0:
                    _save_npz(partial, fingerprint=np.asarray(fingerprint),
                              batches_done=np.asarray(i), **acc.to_arrays())  # fmt: skip
                saved = time.monotonic()
    result = image_metrics(acc, ref, cfg.seed)
    if jax.process_index() == 0 and os.path.exists(partial):
        os.remove(partial)
    return result


class ImageQuality:
    """The image metrics of an eval job's checkpoints (``evaluator.Evaluator``): the Inception is
    loaded and the reference split opened at start-up, its statistics read (or computed) at the
    first checkpoint; without Inception weights, each result is ``{"fid": None}``. Off (no
    results) for non-image data, without ``eval.enable_sampling`` or with
    ``eval.num_fid_samples`` = 0."""

    def __init__(self, cfg: ExperimentConfig, *, images: bool, progress: bool):
        ec = cfg.eval
        self.cfg, self.progress = cfg, progress
        self.on = images and ec.enable_sampling and ec.num_fid_samples > 0
        self.inception = load_inception(cfg) if self.on else None
        self.reference = None
        if self.inception is not None and not os.path.isfile(reference_path(cfg)):
            reference_source(cfg)

    def __call__(self, evaluator, state, step: int, out_dir: str) -> dict:
        if not self.on:
            return {}
        if self.inception is None:
            return {"fid": None}
        if self.reference is None:
            self.reference = load_reference(self.cfg, self.inception, progress=self.progress)
        return evaluate_samples(
            evaluator, state, step, out_dir, self.inception, self.reference, progress=self.progress
        )
