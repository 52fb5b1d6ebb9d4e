"""The evaluation jobs' shared parts: ``Evaluator`` (the experiment, its mesh, a restore target
and the jitted metrics of one config, built once per job), ``load_model`` (a checkpoint's model
under the config saved with it) and ``load_guide``, the classifier of classifier guidance,
checked against the score model's experiment."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from score_sde import datasets, likelihood, losses, models, sharding
from score_sde import rng as rng_lib
from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import fid_eval
from score_sde.jobs import runlog as runlog_lib
from score_sde.jobs.config import ConfigError, ExperimentConfig, make_sde
from score_sde.jobs.experiment import Experiment, keyed_batch
from score_sde.jobs.state import UNREAD_BY_EVAL, TrainState, init_state
from score_sde.jobs.validation import from_config_dict, get_field, require
from score_sde.jobs.workdir import Workdir


class Evaluator:
    """The experiment, its mesh, a restore target and the jitted metrics, built once per job.
    ``ckpt``: the workdir's read-only checkpointer when the job opened it already (to fail
    at once on a workdir without checkpoints, before building the model). ``progress``: bars
    over the eval split's batches and the samples drawn, and a notice at each compile."""

    def __init__(self, cfg: ExperimentConfig, workdir: str, *, ckpt=None, progress=False):
        self.cfg, self.progress = cfg, progress
        self.ckpt = ckpt or ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
        self.mesh = sharding.make_mesh()
        self.exp = Experiment.create(cfg)
        self.images = len(self.exp.data_shape) == 3
        self.target = init_state(cfg.seed, self.exp.params, self.exp.rest, self.mesh)
        rep = sharding.replicated(self.mesh)
        announced = lambda fn, what: runlog_lib.Announced(fn, what, runlog_lib.note)
        self.losses = announced(jax.jit(self._losses, out_shardings=rep), "the eval loss")
        self.logp = announced(self._logp, "the likelihood")
        self._ode_input = jax.jit(self._dequantized)
        self._bits = jax.jit(self._bits_per_dim, out_shardings=rep)
        self.correct = jax.jit(self._correct, out_shardings=rep)
        self.sample = announced(self.exp.sample, "the sampler")
        self.guide = load_guide(cfg)
        if self.images:
            self.draw_uint8 = announced(fid_eval.sample_fn(self), "the sampler (for FID)")

    def restore(self, step: int | None = None) -> tuple[TrainState, int]:
        """The EMA parameters (and what the metrics' keys need) of checkpoint ``step``."""
        return self.ckpt.restore(self.target, step, skip=UNREAD_BY_EVAL)

    def batches(self):
        """(index, global batch) over one pass of the eval split, the last one padded."""
        ec = self.cfg.eval
        it = self.exp.data_iterator(ec.bpd_split, batch_size=ec.batch_size, repeat=False)
        for i, batch in enumerate(it):
            yield i, sharding.put_global(batch, self.mesh, axis=0)

    def bar(self, desc: str, total: int | None = None, unit: str = "batch"):
        """A progress bar (off without ``progress`` and on processes other than 0); its
        default total is the eval split's number of batches."""
        if total is None:
            total = math.ceil(len(eval_source(self.cfg)) / self.cfg.eval.batch_size)
        off = not self.progress or jax.process_index() != 0
        return tqdm(total=total, desc=desc, unit=unit, disable=off, dynamic_ncols=True)

    def _losses(self, state, batch, index):
        """(per-example eval losses of the EMA parameters [B], the batch's mask [B])."""
        x, y, loss_key = keyed_batch(self.exp.prepare_batch, state.rng, "eval_loss", index, batch)
        loss_fn = self.exp.loss_builder(train=False, per_example=True)(state.rest)
        return loss_fn(loss_key, state.ema_params, x, y), batch["mask"]

    def _logp(self, state, batch, key):
        """(log-density in nats [B], bits/dim [B], NFE, mask [B]) of a batch, dequantized first
        if it holds images. ``log_likelihood`` is called outside any jit: its own jitted solve
        then carries no host callback (its checks run after it), so XLA keeps it on disk."""
        ec, x, ode_key = self.cfg.eval, *self._ode_input(batch, key)
        labels = batch["label"] if self.exp.conditional else None  # log p(x | y)
        score_fn = self.exp.score_fn(state.ema_params, state.rest, labels)
        lp, nfe = likelihood.log_likelihood(
            ode_key, self.exp.sde, score_fn, x, rtol=ec.rtol, atol=ec.atol, eps=ec.eps
        )
        return self._bits(lp, nfe, batch["mask"])

    def _dequantized(self, batch, key):
        """(the model's input x, the ODE's key): images dequantized, then scaled."""
        deq_key, ode_key = jax.random.split(key)
        x = batch["x"]
        if self.images:
            x = likelihood.uniform_dequantize(deq_key, x, data_range=(0.0, 1.0))
        return self.exp.scaler(x), ode_key

    def _bits_per_dim(self, lp, nfe, mask):
        """(lp, bits/dim, nfe, mask), replicated: every process reads them."""
        x_shape = (lp.shape[0], *self.exp.data_shape)
        if self.images:  # 8-bit pixels: bits per pixel level, +8 (or +7 centred) per dimension
            lo = -1.0 if self.cfg.data.centered else 0.0
            bpd = likelihood.bits_per_dim(lp, x_shape, data_range=(lo, 1.0))
        else:  # continuous data: -log2 p / D, no offset
            bpd = likelihood.bits_per_dim(lp, x_shape, data_range=(0.0, 1.0), levels=1)
        return lp, bpd, nfe, mask

    def _correct(self, state, batch, index):
        """A classifier's hits [B] at t ~ U(eps, T) and at t = eps, and the mask [B]."""
        x, y, key = keyed_batch(self.exp.prepare_batch, state.rng, "eval_loss", index, batch)
        t_key, noise_key = jax.random.split(key)
        model = lambda params, x, t, y, rng: self.exp.model_output(params, state.rest, x, t)
        eps, batch_size = self.cfg.training.eps, x.shape[0]

        def hits(t):
            logits = losses.noisy_logits(noise_key, self.exp.sde, model, state.ema_params, x, t)
            return jnp.argmax(logits, axis=-1) == y

        t = rng_lib.uniform_scalars(t_key, batch_size, eps, self.exp.sde.T)
        return hits(t), hits(jnp.full((batch_size,), eps)), batch["mask"]


def host(tree):
    """Replicated results as host arrays."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)


# Data fields a guiding classifier must share with the score model (and the SDE).
GUIDE_MUST_MATCH = ("data.dataset", "data.image_size", "data.num_channels", "data.centered")


def load_guide(cfg: ExperimentConfig) -> experiment_lib.Guide | None:
    """The classifier of ``sampling.classifier_workdir`` (its latest checkpoint, EMA weights)
    for classifier guidance, checked against this experiment; None when the field is empty."""
    workdir = cfg.sampling.classifier_workdir
    if not workdir:
        return None
    field = f"config.sampling.classifier_workdir={workdir!r}"
    try:
        ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
        clf = _saved_config(ckpt, None, field)
    except ckpt_lib.NoCheckpointError as err:
        raise ckpt_lib.NoCheckpointError(
            f"{field}: {err} Train a noise-conditional classifier there first "
            "(e.g. configs/digits_classifier.py or configs/toy/ring8_classifier.py)."
        ) from None
    require(
        clf.model.name in models.CLASSIFIERS,
        f"{field} holds a {clf.model.name!r} model, not a classifier {models.CLASSIFIERS}.",
    )
    for path in GUIDE_MUST_MATCH:
        theirs, ours = get_field(clf, path), get_field(cfg, path)
        require(
            theirs == ours,
            f"{field}: its classifier has {path}={theirs!r} but this model {ours!r}; guidance "
            "needs a classifier trained on the same data and SDE.",
        )
    theirs, ours = make_sde(clf), make_sde(cfg)
    require(
        theirs == ours,
        f"{field}: its classifier was trained with {theirs} but this model with {ours} "
        "(config.sde).",
    )
    classes = cfg.model.num_classes
    require(
        classes in (0, clf.model.num_classes),
        f"{field}: its classifier has {clf.model.num_classes} classes but config.model."
        f"num_classes={classes}.",
    )
    model = load_model(workdir)
    logits_fn = model.exp.logits_fn(model.params, model.rest)
    return experiment_lib.Guide(logits_fn, clf.model.num_classes, cfg.sampling.classifier_scale)


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """One checkpoint of a run: ``exp`` (its SDE, model, data scaling and sampler, built from
    the config saved with the checkpoint), the parameters and ``rest`` of the model, the step."""

    exp: Experiment
    params: Any
    rest: Any
    step: int

    def score_fn(self, y: jax.Array | None = None) -> Callable:
        """``Experiment.score_fn`` of these parameters: score_fn(x, t), or (x, t, y)."""
        return self.exp.score_fn(self.params, self.rest, y)


def load_model(workdir: str, step: int | None = None, *, ema: bool = True) -> TrainedModel:
    """Checkpoint ``step`` (default: the latest) of the run in ``workdir``, under the config it
    was trained with: its EMA parameters, or the raw ones with ``ema=False``; the optimiser
    state is not read. Raises ``NoCheckpointError`` for a workdir without checkpoints and
    ``ConfigError`` when the saved config does not validate here."""
    ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
    try:
        cfg = _saved_config(ckpt, step, workdir)
        exp = Experiment.create(cfg)
        target = init_state(cfg.seed, exp.params, exp.rest, sharding.make_mesh())
        if not ema:  # read params into the EMA's structure, and leave the EMA unread
            target = dataclasses.replace(target, params=target.ema_params, ema_params=None)
        skip = UNREAD_BY_EVAL if ema else ("ema_params", "opt_state")
        state, step = ckpt.restore(target, step, skip=skip)
    finally:
        ckpt.close()
    return TrainedModel(exp, state.ema_params if ema else state.params, state.rest, step)


def _saved_config(ckpt: ckpt_lib.Checkpointer, step: int | None, where: str) -> ExperimentConfig:
    """The config saved with checkpoint ``step`` (None: the latest), validated on this machine;
    a ``ConfigError`` names ``where`` when it does not validate."""
    saved, _ = ckpt.read_json(step)
    try:
        return from_config_dict(saved, device_count=jax.device_count())
    except ConfigError as err:
        raise ConfigError(f"{where}: its saved config is invalid here: {err}") from None


def eval_source(cfg: ExperimentConfig) -> datasets.Source:
    """The eval split (``eval.bpd_split``) as a random-access source."""
    d = cfg.data
    return datasets.get_source(
        d.dataset, split=cfg.eval.bpd_split, image_size=d.image_size, channels=d.num_channels,
        data_dir=d.data_dir,
    )  # fmt: skip
