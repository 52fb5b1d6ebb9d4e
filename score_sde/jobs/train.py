"""Training: a pure, jitted train step over a pytree state, data-parallel on a device mesh.

- ``TrainState`` holds params, their EMA (a separate copy), the optax state, the non-trainable
  model variables ``rest`` (e.g. Fourier-feature weights: outside the optimiser and the EMA),
  the step, the base RNG key and the non-finite-step counters.
- ``make_train_step`` runs ``training.n_jitted_steps`` optimiser steps per call (one
  ``lax.scan``; on CPU one compiled step called that many times, see ``TrainStep``), donates
  the state, and skips any step whose loss or gradient norm is not finite.
- Step ``s`` draws its randomness from ``fold_in(key, s)``: a run is a function of the seed,
  and a resumed run is bitwise equal to an uninterrupted one.
- ``Trainer`` / ``train`` is the job: data, checkpoints, logs, sample grids, preemption, and
  the ``Guard`` that stops a diverging run (a non-finite streak or an exploding loss).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import lock as lock_lib
from score_sde.jobs import runlog as runlog_lib
from score_sde.jobs.config import ConfigError, ExperimentConfig, OptimConfig, config_changes
from score_sde.jobs.experiment import keyed_batch, stream_key
from score_sde.jobs.runlog import say
from score_sde.jobs.state import TrainState, init_state
from score_sde.jobs.workdir import Workdir
from score_sde.sharding import make_mesh, put_batches, put_global, replicated

Array = jax.Array


class ConfigChangedError(ConfigError):
    """A resume whose config differs from the checkpoint's (a user error: exit code 2)."""


class DivergedError(RuntimeError):
    """Raised when training diverges: the loss explodes (``training.max_loss_ratio``)."""


class NonFiniteLossError(DivergedError):
    """Raised when the loss or the gradient's norm stays NaN/inf for
    ``training.max_bad_steps`` consecutive steps."""


# --- optimiser -------------------------------------------------------------------------------
def learning_rate(optim: OptimConfig) -> optax.Schedule:
    """lr · min(1, (count + 1) / warmup): linear warm-up whose FIRST step already has
    lr / warmup > 0 (the original code's first step had lr = 0)."""
    if optim.warmup == 0:
        return optax.constant_schedule(optim.lr)
    return lambda count: optim.lr * jnp.minimum((count + 1) / optim.warmup, 1.0)


def make_optimizer(optim: OptimConfig) -> optax.GradientTransformation:
    """Global-norm clipping (identity if ``grad_clip`` is 0), then AdamW with the warm-up
    schedule (plain Adam at ``weight_decay`` 0). The state's structure is the same for every
    setting, so a run can resume with another clip or decay."""
    clip = optax.clip_by_global_norm(optim.grad_clip) if optim.grad_clip > 0 else optax.identity()
    adam = optax.adamw(
        learning_rate(optim),
        b1=optim.beta1,
        b2=optim.beta2,
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    return optax.chain(clip, adam)


# --- the step --------------------------------------------------------------------------------
LossBuilder = Callable[[Any], Callable]  # rest -> loss_fn(rng, params, x, y) -> scalar


def ema_decay(ema_rate: float, step: Array, warmup: bool) -> float | Array:
    """The EMA decay of update ``step`` (0-based): ``ema_rate``, or with ``warmup``
    min(ema_rate, (1 + step) / (10 + step)) as TF's ExponentialMovingAverage with num_updates,
    so that a short run's EMA forgets the random initialisation (0.9999^n does not for n << 1e4).
    """
    if not warmup:
        return ema_rate
    step = step.astype(jnp.float32)
    return jnp.minimum(ema_rate, (1 + step) / (10 + step))


def make_train_step(
    loss_builder: LossBuilder,
    optimizer: optax.GradientTransformation,
    ema_rate: float,
    mesh,
    prepare_batch: Callable[[dict, Array], tuple[Array, Array | None]],
    *,
    ema_warmup: bool = False,
    scan: bool | None = None,
):
    """``step_fn(state, batches) -> (state, metrics)``: one optimiser step per leading index of
    ``batches``, all in one ``lax.scan`` when ``scan`` (default: on every backend but CPU); the
    state is donated. ``prepare_batch(batch, rng) -> (x, y)`` scales the data and draws label
    dropout. ``metrics`` holds per-step ``loss``, ``grad_norm``, ``finite`` and ``bad_steps``
    [k]. A step with a non-finite loss or gradient norm leaves params, EMA and optimiser state
    unchanged and is counted. The EMA decay is ``ema_decay(ema_rate, step, ema_warmup)``."""

    def one_step(state: TrainState, batch: dict):
        x, y, loss_key = keyed_batch(prepare_batch, state.rng, "train", state.step, batch)
        loss_fn = loss_builder(state.rest)
        loss, grads = jax.value_and_grad(loss_fn, argnums=1)(loss_key, state.params, x, y)
        # The global norm, not each element: finite elements can have an infinite norm.
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(_):
            updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            decay = ema_decay(ema_rate, state.step, ema_warmup)
            ema = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p, state.ema_params, params)
            return params, ema, opt_state

        # A conditional, not a select per leaf: XLA compiles selects over every leaf very slowly.
        params, ema, opt_state = jax.lax.cond(
            finite, update, lambda _: (state.params, state.ema_params, state.opt_state), None
        )
        bad = jnp.where(finite, 0, state.bad_steps + 1).astype(jnp.int32)
        new_state = dataclasses.replace(
            state,
            step=state.step + 1,
            params=params,
            ema_params=ema,
            opt_state=opt_state,
            bad_steps=bad,
            skipped=state.skipped + (~finite).astype(jnp.int32),
        )
        metrics = dict(loss=loss, grad_norm=grad_norm, finite=finite, bad_steps=bad)
        return new_state, metrics

    def indexed_step(state: TrainState, batches: dict, i: Array):
        return one_step(state, jax.tree.map(lambda a: a[i], batches))

    def scanned_steps(state: TrainState, batches: dict):
        return jax.lax.scan(one_step, state, batches)

    rep = replicated(mesh)
    jit = lambda f: jax.jit(f, donate_argnums=(0,), out_shardings=(rep, rep))
    scan = jax.default_backend() != "cpu" if scan is None else scan
    return TrainStep(single=jit(indexed_step), scanned=jit(scanned_steps) if scan else None)


@dataclasses.dataclass(frozen=True)
class TrainStep:
    """``step_fn(state, batches) -> (state, metrics)`` for batches [k, B, ...]: one ``lax.scan``
    call (``scanned``), or k calls of ``single(state, batches, i)``.

    The second form is for CPU: XLA:CPU runs convolution gradients inside a loop body ~15x
    slower than at the top level (jax-ml/jax#12868).
    """

    single: Callable  # jitted (state, batches, i) -> (state, metrics of step i)
    scanned: Callable | None  # jitted (state, batches) -> (state, metrics [k])

    def __call__(self, state: TrainState, batches: dict):
        if self.scanned is not None:
            return self.scanned(state, batches)
        per_step = []
        for i in range(jax.tree.leaves(batches)[0].shape[0]):
            state, metrics = self.single(state, batches, i)
            per_step.append(metrics)
        return state, jax.tree.map(lambda *m: jnp.stack(m), *per_step)


def make_eval_loss(loss_builder: LossBuilder, mesh, prepare_batch):
    """``eval_fn(state, batch) -> loss`` of the EMA parameters on one batch (no dropout)."""

    def eval_loss(state: TrainState, batch: dict):
        x, y, loss_key = keyed_batch(prepare_batch, state.rng, "eval_loss", state.step, batch)
        return loss_builder(state.rest)(loss_key, state.ema_params, x, y)

    return jax.jit(eval_loss, out_shardings=replicated(mesh))


# --- the job ---------------------------------------------------------------------------------
def _chunk_metrics(m: dict) -> dict[str, float]:
    """Host summary of one chunk's per-step metrics (host arrays [k])."""
    finite = m["finite"].astype(bool)
    loss = float(np.mean(m["loss"][finite])) if finite.any() else float("nan")
    return dict(
        loss=loss,
        grad_norm=float(np.mean(m["grad_norm"][finite])) if finite.any() else float("nan"),
        bad_steps=int(m["bad_steps"][-1]),
        nonfinite=int((~finite).sum()),
    )


class Guard:
    """Stops a diverging run: ``training.max_bad_steps`` non-finite steps in a row, or a step
    whose loss is over ``training.max_loss_ratio`` times the running loss (an average over
    the steps before it). ``saved``: the step of the last checkpoint written (None: none)."""

    def __init__(self, tc, saved: int | None):
        self.tc, self.saved, self.running = tc, saved, None

    def check(self, step: int, m: dict) -> None:
        """Check the chunk ending at ``step`` (host metrics [k])."""
        tc = self.tc
        if int(m["bad_steps"].max()) >= tc.max_bad_steps:
            raise NonFiniteLossError(
                f"Stopped at step {step}: the loss or the gradient's norm was NaN/inf for "
                f"{tc.max_bad_steps} consecutive steps (training.max_bad_steps="
                f"{tc.max_bad_steps}). {self._kept()}"
            )
        for loss in m["loss"][m["finite"].astype(bool)].astype(float):
            if (
                self.running is not None
                and tc.max_loss_ratio
                and loss > tc.max_loss_ratio * (self.running)
            ):
                raise DivergedError(
                    f"Stopped at step {step}: a loss of {loss:.3g} is over training."
                    f"max_loss_ratio={tc.max_loss_ratio:g} times the running loss "
                    f"{self.running:.3g}. {self._kept()}"
                )
            self.running = loss if self.running is None else 0.9 * self.running + 0.1 * loss

    def _kept(self) -> str:
        if self.saved is None:
            return (
                "No checkpoint was written before it: lower optim.lr, raise optim.warmup or "
                "set optim.grad_clip, and train again."
            )
        return (
            f"The last checkpoint, step {self.saved}, was written before it and is kept: "
            "lower optim.lr, raise optim.warmup or set optim.grad_clip, and resume."
        )


class Trainer:
    """The training job of one config: built once (mesh, model, optimiser, jitted steps), then
    ``run(workdir)`` any number of times without recompiling."""

    def __init__(self, cfg: ExperimentConfig, *, mesh=None):
        self.cfg = cfg
        self.mesh = make_mesh() if mesh is None else mesh
        self.exp = experiment_lib.Experiment.create(cfg)
        self.optimizer = make_optimizer(cfg.optim)
        self.step_fn = make_train_step(
            self.exp.loss_builder(train=True),
            self.optimizer,
            cfg.model.ema_rate,
            self.mesh,
            self.exp.prepare_batch,
            ema_warmup=cfg.model.ema_warmup,
        )
        self.eval_fn = make_eval_loss(
            self.exp.loss_builder(train=False), self.mesh, self.exp.prepare_batch
        )

    def initial_state(self) -> TrainState:
        return init_state(self.cfg.seed, self.exp.params, self.exp.rest, self.mesh, self.optimizer)

    def _resume(self, wd: Workdir, allow_config_change: bool):
        """(state, checkpointer, data iterators, restored step or None): the latest good
        checkpoint's, or fresh ones. A resume whose config differs from the checkpoint's
        beyond ``config.RESUMABLE`` stops unless ``allow_config_change``; the config is saved
        in the workdir."""
        tc = self.cfg.training
        iterators = {
            "train": self.exp.data_iterator("train"),
            "eval": self.exp.data_iterator(self.cfg.eval.bpd_split),
        }
        ckpt = ckpt_lib.Checkpointer(
            wd.checkpoints, max_to_keep=tc.keep_checkpoints, keep_period=tc.snapshot_freq
        )
        state, config_json = self.initial_state(), experiment_lib.config_to_json(self.cfg)
        restored_step = None
        restored = ckpt.restore_newest_good(state, iterators=iterators, damaged_dir=wd.damaged)
        if restored is not None:
            changes = config_changes(ckpt.read_json(restored[1])[0], config_json)
            if changes and not allow_config_change:
                raise ConfigChangedError(
                    f"The config differs from the one {ckpt.directory} was trained with: "
                    f"{'; '.join(changes)}. Resume with that config (saved in {wd.config}), "
                    "train in a fresh --workdir, or pass --allow_config_change to accept."
                )
            state, restored_step = restored
            say(f"Resumed from step {int(state.step)} of {ckpt.directory}.")
            if changes:
                say(f"With config changes: {'; '.join(changes)}.")
        if jax.process_index() == 0:
            runlog_lib.write_json(wd.config, config_json)
        return state, ckpt, iterators, restored_step

    def run(
        self, workdir: str, *, progress: bool = True, allow_config_change: bool = False
    ) -> TrainState:
        """Train in ``workdir``, resuming from its latest checkpoint; returns the final state.

        Holds the workdir's lock (``lock.WorkdirBusyError`` if another job trains there).
        Raises ``ConfigChangedError`` for a resume with another config (see ``_resume``),
        ``DivergedError`` (``NonFiniteLossError`` for a non-finite streak) when the run
        diverges, keeping the checkpoints written before; ``checkpoint.Interrupted`` after
        saving the step reached when SIGTERM or SIGINT arrived.
        """
        wd = Workdir(workdir)
        say(self.exp.describe(self.mesh))
        with lock_lib.exclusive(wd.lock):
            return self._run(wd, progress, allow_config_change)

    def _run(self, wd: Workdir, progress: bool, allow_config_change: bool) -> TrainState:
        cfg, tc, exp, mesh = self.cfg, self.cfg.training, self.exp, self.mesh
        state, ckpt, iterators, restored_step = self._resume(wd, allow_config_change)
        train_it, eval_it = iterators["train"], iterators["eval"]
        step = start_step = int(state.step)
        log = runlog_lib.RunLog(
            wd, total_steps=tc.n_iters, initial_step=step, enabled=jax.process_index() == 0,
            progress=progress,
        )  # fmt: skip
        config_json = experiment_lib.config_to_json(cfg)
        meta = dict(param_count=exp.param_count, process_count=jax.process_count())
        guard = Guard(tc, saved=restored_step)
        pending = None  # (step, metrics) of the previous chunk, read after the next is dispatched
        started = time.perf_counter()
        step_fn = runlog_lib.Announced(self.step_fn, "the train step", log.write)
        sample = runlog_lib.Announced(exp.sample, "the snapshot sampler", log.write)
        try:
            with ckpt_lib.Preemption() as preemption:
                while step < tc.n_iters:
                    k = min(tc.n_jitted_steps, tc.n_iters - step)
                    batches = put_batches([next(train_it) for _ in range(k)], mesh)
                    state, metrics = step_fn(state, batches)
                    preemption.arm()  # past the compile: a signal now saves the step reached
                    step += k
                    if pending is not None:
                        _report(log, guard, *pending)
                    pending = (step, metrics)
                    if step % tc.eval_freq == 0:
                        eval_loss = self.eval_fn(state, put_global(next(eval_it), mesh))
                        log.scalars(step, {"eval_loss": float(eval_loss)})
                    snapshot = step % tc.snapshot_freq == 0 or step == tc.n_iters
                    preempted = preemption.reached(step)
                    if preempted or snapshot or step % tc.snapshot_freq_for_preemption == 0:
                        _report(log, guard, *pending)  # the guard passes a chunk before it is saved
                        pending = None
                        # Never save inside a non-finite streak, except to honour a preemption.
                        if preempted or int(state.bad_steps) == 0:
                            ckpt.save(
                                step, state, config=config_json, metadata=meta, iterators=iterators
                            )
                            guard.saved = step
                    if snapshot and tc.snapshot_sampling:
                        rng = stream_key(jax.random.key(cfg.seed), "sample", step)
                        log.samples(step, "train", sample(state.ema_params, state.rest, rng))
                    if preempted:
                        break
                if pending is not None:
                    _report(log, guard, *pending)
        finally:
            ckpt.close()
            log.close()
        if preemption.signum is not None and step < tc.n_iters:
            raise ckpt_lib.Interrupted(preemption.signum, step)
        elapsed = time.perf_counter() - started
        say(f"Trained steps {start_step} to {step} in {elapsed:.1f} s.")
        return state


def train(
    cfg: ExperimentConfig,
    workdir: str,
    *,
    progress: bool = True,
    allow_config_change: bool = False,
) -> TrainState:
    """Train ``cfg`` in ``workdir`` (resuming from its latest checkpoint); see ``Trainer.run``."""
    return Trainer(cfg).run(workdir, progress=progress, allow_config_change=allow_config_change)


def _report(log: runlog_lib.RunLog, guard: Guard, step: int, metrics: dict) -> None:
    """Progress bar and logs for one finished chunk; stop a diverging run."""
    m = jax.device_get(metrics)
    summary = _chunk_metrics(m)
    log.progress(step, loss=summary["loss"])
    if step % guard.tc.log_freq == 0:
        log.scalars(step, summary)
    guard.check(step, m)
