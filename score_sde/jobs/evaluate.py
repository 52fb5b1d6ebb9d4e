"""Evaluation and sampling of saved checkpoints.

``evaluate`` scores each snapshot checkpoint (every ``training.snapshot_freq`` steps, and the
last one) with the EMA parameters:

- ``loss``: the training objective on the whole eval split;
- ``bpd``: bits/dim of the eval split through the probability-flow ODE likelihood. Image data
  (8-bit levels) is uniformly dequantized first, y = (255 x + u) / 256 with u ~ U[0, 1), so
  bits/dim bound the discrete data's codelength from above and cannot go negative; they are
  -log2 p(y) / D + 8 for data in [0, 1], + 7 centred to [-1, 1] (``likelihood.bits_per_dim``).
  Vector data is continuous: bits/dim are -log2 p(x) / D, with no offset;
- ``samples``: ``eval.num_samples`` samples (a grid PNG and an .npz); for vector data also the
  sliced Wasserstein and energy distances to the held-out split;
- image quality (images, with ``eval.enable_sampling`` and ``eval.num_fid_samples`` > 0):
  ``fid``, ``kid`` (and ``kid_std``), ``inception_score`` (with pytorch-fid's weights, which
  have the logits; null otherwise), ``precision``, ``recall``, ``density`` and ``coverage``
  of ``eval.num_fid_samples`` samples against the statistics of ``eval.fid_split``
  (``fid_eval``). Without Inception weights they are null and one line says how to get them.

Class-conditional score models sample the classes in turn (``sampling.guidance_scale``) and
score log p(x | y) with the data's labels; on a labelled mixture, ``class_accuracy`` is the
fraction of samples whose most probable component is the label asked for. A classifier
(``model.name="classifier"``) reports its cross-entropy ``loss`` and ``accuracy`` at t ~ U(eps, T)
and ``accuracy_clean`` at t = ``training.eps``. With ``sampling.classifier_workdir`` (classifier
guidance, ``load_guide``), samples run through the classifier's classes, and on a labelled
mixture ``class_accuracy`` is reported too.

Results go to ``<workdir>/eval/report.json``, written after each checkpoint, and to
TensorBoard (``<workdir>/eval/tensorboard``). A rerun skips the
checkpoints already there (it resumes where it stopped); with ``eval.end_ckpt = -1`` it waits for
new checkpoints until the final step is evaluated, so it can run beside training.
"""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import datasets, likelihood, losses, metrics, models, sharding
from score_sde import rng as rng_lib
from score_sde.datasets.synthetic import MIXTURES
from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import fid_eval
from score_sde.jobs import runlog as runlog_lib
from score_sde.jobs.config import ConfigError, ExperimentConfig, make_sde
from score_sde.jobs.experiment import Experiment, keyed_batch, stream_key
from score_sde.jobs.runlog import say
from score_sde.jobs.state import UNREAD_BY_EVAL, TrainState, init_state
from score_sde.jobs.validation import MIN_FID_SET, from_config_dict, get_field, require
from score_sde.jobs.workdir import Workdir


class Evaluator:
    """The experiment, its mesh, a restore target and the jitted metrics, built once per job."""

    def __init__(self, cfg: ExperimentConfig, workdir: str):
        self.cfg = cfg
        self.mesh = sharding.make_mesh()
        self.exp = Experiment.create(cfg)
        self.target = init_state(cfg.seed, self.exp.params, self.exp.rest, self.mesh)
        self.ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
        rep = sharding.replicated(self.mesh)
        self.losses = jax.jit(self._losses, out_shardings=rep)
        self.logp = jax.jit(self._logp, out_shardings=rep)
        self.correct = jax.jit(self._correct, out_shardings=rep)
        self.guide = load_guide(cfg)
        self.images = len(self.exp.data_shape) == 3
        if self.images:
            self.draw_uint8 = fid_eval.sample_fn(self)

    def restore(self, step: int | None = None) -> tuple[TrainState, int]:
        """The EMA parameters (and what the metrics' keys need) of checkpoint ``step``."""
        return self.ckpt.restore(self.target, step, skip=UNREAD_BY_EVAL)

    def batches(self):
        """(index, global batch) over one pass of the eval split, the last one padded."""
        ec = self.cfg.eval
        it = self.exp.data_iterator(ec.bpd_split, batch_size=ec.batch_size, repeat=False)
        for i, batch in enumerate(it):
            yield i, sharding.put_global(batch, self.mesh, axis=0)

    def _losses(self, state, batch, index):
        """(per-example eval losses of the EMA parameters [B], the batch's mask [B])."""
        x, y, loss_key = keyed_batch(self.exp.prepare_batch, state.rng, "eval_loss", index, batch)
        loss_fn = self.exp.loss_builder(train=False, per_example=True)(state.rest)
        return loss_fn(loss_key, state.ema_params, x, y), batch["mask"]

    def _logp(self, state, batch, key):
        """(log-density in nats [B], bits/dim [B], NFE, mask [B]) of a batch, dequantized first
        if it holds images."""
        exp, ec, x = self.exp, self.cfg.eval, batch["x"]
        images = len(exp.data_shape) == 3
        deq_key, ode_key = jax.random.split(key)
        if images:
            x = likelihood.uniform_dequantize(deq_key, x, data_range=(0.0, 1.0))
        labels = batch["label"] if exp.conditional else None  # log p(x | y)
        score_fn = exp.score_fn(state.ema_params, state.rest, labels)
        lp, nfe = likelihood.log_likelihood(
            ode_key, exp.sde, score_fn, exp.scaler(x), rtol=ec.rtol, atol=ec.atol, eps=ec.eps
        )
        if images:  # 8-bit pixels: bits per pixel level, +8 (or +7 centred) per dimension
            lo = -1.0 if self.cfg.data.centered else 0.0
            bpd = likelihood.bits_per_dim(lp, x.shape, data_range=(lo, 1.0))
        else:  # continuous data: -log2 p / D, no offset
            bpd = likelihood.bits_per_dim(lp, x.shape, data_range=(0.0, 1.0), levels=1)
        return lp, bpd, nfe, batch["mask"]

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


def _host(tree):
    """Replicated results as host arrays."""
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a)), tree)


# --- metrics ---------------------------------------------------------------------------------
def eval_loss(evaluator: Evaluator, state) -> float:
    """Mean per-example training loss of the EMA parameters over the eval split."""
    values = []
    for i, batch in evaluator.batches():
        loss, mask = _host(evaluator.losses(state, batch, i))
        values.append(loss[mask])
    return float(np.mean(np.concatenate(values)))


def eval_accuracy(evaluator: Evaluator, state) -> dict:
    """A classifier's accuracy over the eval split, at t ~ U(eps, T) and at t = eps."""
    noisy, clean = [], []
    for i, batch in evaluator.batches():
        hit, hit_clean, mask = _host(evaluator.correct(state, batch, i))
        noisy.append(hit[mask])
        clean.append(hit_clean[mask])
    return {
        "accuracy": float(np.mean(np.concatenate(noisy))),
        "accuracy_clean": float(np.mean(np.concatenate(clean))),
    }


def eval_bpd(evaluator: Evaluator, state, step: int) -> dict:
    """Bits/dim (and NLL in nats per example) of the eval split under the probability-flow ODE,
    averaged over ``eval.bpd_num_repeats`` passes."""
    base = stream_key(jax.random.key(evaluator.cfg.seed), "bpd", step)
    nll, bpds, nfes = [], [], []
    for r in range(evaluator.cfg.eval.bpd_num_repeats):
        for i, batch in evaluator.batches():
            key = jax.random.fold_in(jax.random.fold_in(base, r), i)
            lp, bpd, nfe, mask = _host(evaluator.logp(state, batch, key))
            nll.append(-lp[mask])
            bpds.append(bpd[mask])
            nfes.append(float(nfe))
    return dict(
        bpd=float(np.mean(np.concatenate(bpds))),
        nll_nats=float(np.mean(np.concatenate(nll))),
        bpd_nfe=float(np.mean(nfes)),
    )


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
        saved, _ = ckpt.read_json()
        clf = from_config_dict(saved, device_count=jax.device_count())
    except ckpt_lib.NoCheckpointError as err:
        raise ckpt_lib.NoCheckpointError(
            f"{field}: {err} Train a noise-conditional classifier there first "
            "(e.g. configs/digits_classifier.py or configs/toy/ring8_classifier.py)."
        ) from None
    except ConfigError as err:
        raise ConfigError(f"{field}: its saved config is invalid here: {err}") from None
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
    evaluator = Evaluator(clf, workdir)
    state, _ = evaluator.restore()
    logits_fn = evaluator.exp.logits_fn(state.ema_params, state.rest)
    return experiment_lib.Guide(logits_fn, clf.model.num_classes, cfg.sampling.classifier_scale)


def draw_samples(evaluator: Evaluator, state, step: int, n: int) -> np.ndarray:
    """``n`` samples in data space, drawn in batches of ``eval.batch_size``."""
    exp, bs = evaluator.exp, evaluator.cfg.eval.batch_size
    key = stream_key(jax.random.key(evaluator.cfg.seed), "sample", step)
    out = [
        exp.sample(
            state.ema_params,
            state.rest,
            jax.random.fold_in(key, i),
            min(bs, n - i * bs),
            start=i * bs,
            guide=evaluator.guide,
        )
        for i in range(math.ceil(n / bs))
    ]
    return np.concatenate(out)[:n]


def held_out(cfg: ExperimentConfig, n: int) -> np.ndarray:
    """The first ``n`` examples of the eval split (vector data): [n, D]."""
    d = cfg.data
    source = datasets.get_source(
        d.dataset, split=cfg.eval.bpd_split, image_size=d.image_size, channels=d.num_channels,
        data_dir=d.data_dir,
    )  # fmt: skip
    x, _ = source.read(np.arange(min(n, len(source))))
    return np.asarray(x, np.float32)


def sample_quality(evaluator: Evaluator, state, step: int, out_dir: str) -> dict:
    """Samples to ``out_dir`` (npz + PNG); for vector data, distances to held-out data."""
    n = evaluator.cfg.eval.num_samples
    samples = draw_samples(evaluator, state, step, n)
    result = {"num_samples": n}
    reference = None
    if len(evaluator.exp.data_shape) == 1:
        reference = held_out(evaluator.cfg, n)
        key = stream_key(jax.random.key(evaluator.cfg.seed), "metrics", step)
        m = min(len(reference), len(samples))
        result["sliced_wasserstein"] = float(metrics.sliced_wasserstein(key, samples, reference))
        result["energy_distance"] = float(metrics.energy_distance(samples[:m], reference[:m]))
        mixture = MIXTURES.get(evaluator.cfg.data.dataset)
        labels = evaluator.exp.sample_labels(0, n, evaluator.guide)
        if labels is not None and mixture is not None:
            best = np.argmax(np.asarray(jax.jit(mixture().responsibilities)(samples)), axis=1)
            result["class_accuracy"] = float(np.mean(best == labels))
    if jax.process_index() == 0:
        np.savez_compressed(os.path.join(out_dir, f"samples_{step}.npz"), samples=samples)
        png = runlog_lib.save_samples_png(
            os.path.join(out_dir, f"samples_{step}.png"),
            samples[: experiment_lib.SNAPSHOT_SAMPLES] if reference is None else samples,
            reference,
        )
        result["grid"] = os.path.relpath(png, out_dir)
    return result


def evaluate_checkpoint(
    evaluator: Evaluator, step: int, out_dir: str, quality: fid_eval.ImageQuality | None = None
) -> dict:
    state, step = evaluator.restore(step)
    ec, result = evaluator.cfg.eval, {}
    started = time.perf_counter()
    if ec.enable_loss:
        result["loss"] = eval_loss(evaluator, state)
        if evaluator.exp.classifier:
            result.update(eval_accuracy(evaluator, state))
    if ec.enable_bpd:
        result.update(eval_bpd(evaluator, state, step))
    if ec.enable_sampling:
        result.update(sample_quality(evaluator, state, step, out_dir))
    if quality is not None:
        result.update(quality(evaluator, state, step, out_dir))
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


# --- the job ---------------------------------------------------------------------------------
def _is_snapshot(cfg: ExperimentConfig, step: int) -> bool:
    return step % cfg.training.snapshot_freq == 0 or step == cfg.training.n_iters


def _wanted(cfg: ExperimentConfig, step: int) -> bool:
    ec = cfg.eval
    return (
        _is_snapshot(cfg, step)
        and step >= ec.begin_ckpt
        and (ec.end_ckpt == -1 or step <= ec.end_ckpt)
    )


def evaluate(
    cfg: ExperimentConfig,
    workdir: str,
    *,
    step: int | None = None,
    poll_seconds: float = 10.0,
    timeout_seconds: float = 600.0,
    progress: bool = True,
) -> dict:
    """Evaluate the snapshot checkpoints of ``workdir`` (or only ``step``); returns the report.

    Follows training: with ``eval.end_ckpt = -1`` it waits for new checkpoints until the final
    step (``training.n_iters``) is done, or until none appears for ``timeout_seconds``.
    """
    images = cfg.data.image_size is not None
    quality = fid_eval.ImageQuality(cfg, images=images, progress=progress)  # bad paths fail early
    evaluator = Evaluator(cfg, workdir)
    log = runlog_lib.EvalLog(Workdir(workdir))
    last_new, waiting = time.monotonic(), False
    while True:
        steps = evaluator.ckpt.all_steps() if step is None else [step]
        steps = [s for s in steps if step is not None or _wanted(cfg, s)]
        for s in [s for s in steps if str(s) not in log.done]:
            say(f"Evaluating checkpoint {s} ...")
            result = evaluate_checkpoint(evaluator, s, log.out_dir, quality)
            numbers = (f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float))
            say(f"  step {s}: " + ", ".join(numbers))
            log.add(s, result)
            last_new, waiting = time.monotonic(), False
        final = cfg.training.n_iters
        if step is not None or cfg.eval.end_ckpt != -1 or str(final) in log.done:
            break
        if time.monotonic() - last_new > timeout_seconds:
            say(f"No new checkpoint for {timeout_seconds:.0f} s; step {final} not reached: done.")
            break
        if not waiting:
            say(f"Waiting for checkpoints up to step {final} (at most {timeout_seconds:.0f} s).")
            waiting = True
        time.sleep(poll_seconds)
    log.close()
    return log.report


def generate(
    cfg: ExperimentConfig,
    workdir: str,
    *,
    step: int | None = None,
    num_samples: int = 64,
    fid: bool = False,
    progress: bool = True,
) -> str:
    """Samples of checkpoint ``step`` (default: the latest) as ``<workdir>/samples/sample_<step>``
    .png and .npz; returns the PNG's path. With ``fid``, also their image metrics against the
    reference statistics (``fid_eval``), in ``sample_<step>_metrics.json``."""
    if fid and cfg.data.image_size is None:
        raise ConfigError(f"--fid: config.data.dataset={cfg.data.dataset!r} is not image data.")
    if fid and num_samples < MIN_FID_SET:
        raise ConfigError(f"--fid with --num_samples={num_samples}: draw at least {MIN_FID_SET}.")
    inception = fid_eval.load_inception(cfg) if fid else None  # a bad path fails early
    evaluator = Evaluator(cfg, workdir)
    state, step = evaluator.restore(step)
    samples = draw_samples(evaluator, state, step, num_samples)
    out = Workdir(workdir).samples
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"sample_{step}.png")
    if jax.process_index() == 0:
        np.savez_compressed(os.path.join(out, f"sample_{step}.npz"), samples=samples)
        runlog_lib.save_samples_png(path, samples)
    if fid:
        result = fid_eval.images_metrics(cfg, inception, samples, progress=progress)
        result = {"step": step, "num_samples": num_samples, **result}
        if jax.process_index() == 0:
            runlog_lib.write_json(os.path.join(out, f"sample_{step}_metrics.json"), result)
            numbers = (f"{k}={v:.4g}" for k, v in result.items() if isinstance(v, float))
            print(f"Step {step}, {num_samples} samples: " + ", ".join(numbers))
    return path
