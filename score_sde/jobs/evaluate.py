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
  ``fid``, ``kid`` (and ``kid_std``, its spread over subsets of 1,000 samples: null with no
  more samples than that), ``inception_score`` (with pytorch-fid's weights, which have the
  logits; null otherwise), ``precision``, ``recall``, ``density`` and ``coverage``
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
import numpy as np

from score_sde import metrics
from score_sde.datasets.synthetic import MIXTURES
from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import fid_eval
from score_sde.jobs import runlog as runlog_lib
from score_sde.jobs.config import ConfigError, ExperimentConfig
from score_sde.jobs.evaluator import Evaluator, eval_source, host
from score_sde.jobs.experiment import stream_key
from score_sde.jobs.runlog import say
from score_sde.jobs.validation import MIN_FID_SET
from score_sde.jobs.workdir import Workdir


# --- metrics ---------------------------------------------------------------------------------
def eval_loss(evaluator: Evaluator, state) -> float:
    """Mean per-example training loss of the EMA parameters over the eval split."""
    values = []
    with evaluator.bar("eval loss") as bar:
        for i, batch in evaluator.batches():
            loss, mask = host(evaluator.losses(state, batch, i))
            values.append(loss[mask])
            bar.update()
    return float(np.mean(np.concatenate(values)))


def eval_accuracy(evaluator: Evaluator, state) -> dict:
    """A classifier's accuracy over the eval split, at t ~ U(eps, T) and at t = eps."""
    noisy, clean = [], []
    for i, batch in evaluator.batches():
        hit, hit_clean, mask = host(evaluator.correct(state, batch, i))
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
    repeats = evaluator.cfg.eval.bpd_num_repeats
    with evaluator.bar("bits/dim") as bar:
        bar.total *= repeats
        for r in range(repeats):
            for i, batch in evaluator.batches():
                key = jax.random.fold_in(jax.random.fold_in(base, r), i)
                lp, bpd, nfe, mask = host(evaluator.logp(state, batch, key))
                nll.append(-lp[mask])
                bpds.append(bpd[mask])
                nfes.append(float(nfe))
                bar.set_postfix(bpd=f"{np.mean(np.concatenate(bpds)):.4f}", refresh=False)
                bar.update()
    return dict(
        bpd=float(np.mean(np.concatenate(bpds))),
        nll_nats=float(np.mean(np.concatenate(nll))),
        bpd_nfe=float(np.mean(nfes)),
    )


def draw_samples(evaluator: Evaluator, state, step: int, n: int) -> np.ndarray:
    """``n`` samples in data space, drawn in batches of ``eval.batch_size``."""
    bs = evaluator.cfg.eval.batch_size
    key = stream_key(jax.random.key(evaluator.cfg.seed), "sample", step)
    out = []
    with evaluator.bar("samples", total=n, unit="sample") as bar:
        for i in range(math.ceil(n / bs)):
            size = min(bs, n - i * bs)
            rng = jax.random.fold_in(key, i)
            out.append(
                evaluator.sample(
                    state.ema_params, state.rest, rng, size, start=i * bs, guide=evaluator.guide
                )
            )
            bar.update(size)
    return np.concatenate(out)[:n]


def held_out(cfg: ExperimentConfig, n: int) -> np.ndarray:
    """The first ``n`` examples of the eval split (vector data): [n, D]."""
    source = eval_source(cfg)
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
    ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)  # fails at once
    images = cfg.data.image_size is not None
    quality = fid_eval.ImageQuality(cfg, images=images, progress=progress)  # bad paths fail early
    waiting = step is None and not ckpt.all_steps()
    if waiting:
        say(_waiting_line(ckpt, cfg.training.n_iters, timeout_seconds))
    evaluator = Evaluator(cfg, workdir, ckpt=ckpt, progress=progress)
    log = runlog_lib.EvalLog(Workdir(workdir))
    last_new = time.monotonic()
    while True:
        steps = ckpt.all_steps() if step is None else [step]
        steps = [s for s in steps if step is not None or _wanted(cfg, s)]
        for s in [s for s in steps if str(s) not in log.done]:
            say(f"Evaluating checkpoint {s} ...")
            result = evaluate_checkpoint(evaluator, s, log.out_dir, quality)
            say(f"  step {s}: {_numbers(result)}")
            log.add(s, result)
            last_new, waiting = time.monotonic(), False
        final = cfg.training.n_iters
        if step is not None or cfg.eval.end_ckpt != -1 or str(final) in log.done:
            break
        if time.monotonic() - last_new > timeout_seconds:
            say(f"No new checkpoint for {timeout_seconds:.0f} s; step {final} not reached: done.")
            break
        if not waiting:
            say(_waiting_line(ckpt, final, timeout_seconds))
            waiting = True
        time.sleep(poll_seconds)
    log.close()
    return log.report


def _waiting_line(ckpt: ckpt_lib.Checkpointer, final: int, timeout_seconds: float) -> str:
    steps = ckpt.all_steps()
    have = f"the latest is step {steps[-1]}" if steps else "none yet"
    return (
        f"Waiting for training to write checkpoints up to step {final} in {ckpt.directory} "
        f"({have}); the eval stops after {timeout_seconds:.0f} s without a new one "
        "(--eval_timeout=SECONDS), or now with Ctrl-C."
    )


def _numbers(result: dict) -> str:
    """The eval line's numbers (nll_nats, the same as bpd in nats per example, stays in the
    report)."""
    shown = {k: v for k, v in result.items() if isinstance(v, float) and k != "nll_nats"}
    return ", ".join(f"{k}={v:.4g}" for k, v in shown.items())


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
    ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
    step = ckpt.step_or_latest(step)  # fails at once without it, before the model is built
    inception = fid_eval.load_inception(cfg) if fid else None  # a bad path fails early
    evaluator = Evaluator(cfg, workdir, ckpt=ckpt, progress=progress)
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
