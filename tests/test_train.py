"""The train step on real numbers: warm-up, Adam's first step, EMA, the non-finite guard, scan vs
single steps, bf16 compute; and the job's stop after a non-finite streak."""

import dataclasses
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_toy_config

from score_sde import sharding
from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import train as train_lib
from score_sde.jobs.config import OptimConfig
from score_sde.jobs.state import init_state
from score_sde.jobs.workdir import Workdir

LR, WARMUP, EMA = 0.1, 4, 0.9


# --- a quadratic "model": loss = mean((x - w - c)²), c fixed (a stand-in for Fourier weights) ---
def quadratic_builder(rest):
    def loss_fn(rng, params, x, y):
        del rng, y
        return jnp.mean((x - params["w"] - rest["c"]) ** 2)

    return loss_fn


def _prepare(batch, rng):
    return batch["x"], None


def _setup(optim=None):
    optim = optim or OptimConfig(lr=LR, warmup=WARMUP, grad_clip=0.0)
    optimizer = train_lib.make_optimizer(optim)
    mesh = sharding.make_mesh()
    params, rest = {"w": np.zeros(3, np.float32)}, {"c": np.full(3, 0.5, np.float32)}
    state = init_state(0, params, rest, mesh, optimizer)
    step_fn = train_lib.make_train_step(quadratic_builder, optimizer, EMA, mesh, _prepare)
    return state, step_fn, mesh


def _batches(values, mesh):
    return sharding.put_batches([{"x": np.asarray(v, np.float32)[None]} for v in values], mesh)


def _host(state):
    return jax.tree.map(np.asarray, jax.device_get(state))


def test_learning_rate_warmup_starts_above_zero():
    schedule = train_lib.learning_rate(OptimConfig(lr=LR, warmup=WARMUP))
    got = np.array([schedule(i) for i in range(6)])
    np.testing.assert_allclose(got, [0.025, 0.05, 0.075, 0.1, 0.1, 0.1], rtol=1e-6)
    assert train_lib.learning_rate(OptimConfig(lr=LR, warmup=0))(0) == LR


def test_first_adam_step_moves_params_by_lr_over_warmup():
    """Adam's first step is lr_0 · g / (|g| + eps) = lr / warmup per coordinate."""
    state, step_fn, mesh = _setup()
    state, metrics = step_fn(state, _batches([[1.0, 2.0, 3.0]], mesh))
    np.testing.assert_allclose(np.asarray(state.params["w"]), [LR / WARMUP] * 3, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), [np.mean([0.25, 2.25, 6.25])])


@pytest.mark.parametrize("scan", [True, False])
def test_k_steps_per_call_equal_single_steps_and_ema_follows_its_recursion(scan):
    """Three steps in one call (lax.scan, or the CPU loop) equal three one-step calls."""
    xs = [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [2.0, 2.0, 2.0]]
    optimizer = train_lib.make_optimizer(OptimConfig(lr=LR, warmup=WARMUP, grad_clip=0.0))
    state, _, mesh = _setup()
    rest_before = _host(state.rest)
    step_fn = train_lib.make_train_step(
        quadratic_builder, optimizer, EMA, mesh, _prepare, scan=scan
    )
    chunked, metrics = step_fn(state, _batches(xs, mesh))
    chex.assert_shape(metrics["loss"], (3,))

    state, _, _ = _setup()
    ema = np.zeros(3, np.float32)
    for x in xs:
        state, _ = step_fn(state, _batches([x], mesh))
        ema = EMA * ema + (1 - EMA) * np.asarray(state.params["w"])
    jax.tree.map(np.testing.assert_array_equal, _host(chunked), _host(state))
    np.testing.assert_allclose(np.asarray(chunked.ema_params["w"]), ema, rtol=1e-6)
    assert int(chunked.step) == 3
    # The fixed variables are neither trained nor in the optimiser state.
    jax.tree.map(np.testing.assert_array_equal, _host(chunked.rest), rest_before)
    shapes = [a.shape for a in jax.tree.leaves(chunked.opt_state) if a.ndim]
    assert shapes == [(3,), (3,)]  # Adam's mu["w"] and nu["w"] only


@pytest.mark.parametrize("scan", [True, False])
def test_the_step_compiles_once_from_a_fresh_and_from_a_restored_state(scan, tmp_path):
    """The step-0 state and a restored one are placed as the step returns its state: the
    step compiles once, not again at its second call."""
    state, _, mesh = _setup()
    optimizer = train_lib.make_optimizer(OptimConfig(lr=LR, warmup=WARMUP, grad_clip=0.0))
    step_fn = train_lib.make_train_step(
        quadratic_builder, optimizer, EMA, mesh, _prepare, scan=scan
    )
    jitted = step_fn.scanned if scan else step_fn.single
    for _ in range(2):
        state, _ = step_fn(state, _batches([[1.0, 2.0, 3.0]], mesh))
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), async_save=False)
    ckpt.save(2, state, config={})
    restored, step = ckpt.restore(_setup()[0])
    step_fn(restored, _batches([[1.0, 2.0, 3.0]], mesh))
    assert step == 2 and jitted._cache_size() == 1


def test_scan_and_loop_agree_on_the_mlp():
    """The scan path (GPU/TPU default) and the CPU loop train the toy MLP alike."""
    cfg = tiny_toy_config()
    exp = experiment_lib.Experiment.create(cfg)
    optimizer, mesh = train_lib.make_optimizer(cfg.optim), sharding.make_mesh()
    it = exp.data_iterator("train")
    batches = sharding.put_batches([next(it) for _ in range(3)], mesh)
    out = {}
    for scan in (True, False):
        state = init_state(cfg.seed, exp.params, exp.rest, mesh, optimizer)
        fn = train_lib.make_train_step(
            exp.loss_builder(train=True), optimizer, 0.9, mesh, exp.prepare_batch, scan=scan
        )
        out[scan] = _host(fn(state, batches))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), *out.values())


def test_ema_warmup_decay_follows_min_rate_and_step_ratio():
    """With warm-up, update n uses decay min(rate, (1 + n) / (10 + n)): the first update keeps
    only 1/10 of the initial EMA; without it, the decay is the rate from the start."""
    xs = [[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0], [2.0, 2.0, 2.0]]
    optimizer = train_lib.make_optimizer(OptimConfig(lr=LR, warmup=WARMUP, grad_clip=0.0))
    state, _, mesh = _setup()
    step_fn = train_lib.make_train_step(
        quadratic_builder, optimizer, EMA, mesh, _prepare, ema_warmup=True
    )
    ema = np.asarray(state.ema_params["w"], np.float64)
    for n, x in enumerate(xs):
        state, _ = step_fn(state, _batches([x], mesh))
        decay = min(EMA, (1 + n) / (10 + n))
        ema = decay * ema + (1 - decay) * np.asarray(state.params["w"], np.float64)
    np.testing.assert_allclose(np.asarray(state.ema_params["w"]), ema, rtol=1e-5)
    assert float(train_lib.ema_decay(0.999, jnp.asarray(10_000), True)) == np.float32(0.999)
    assert train_lib.ema_decay(0.999, jnp.asarray(0), False) == 0.999


def test_ema_is_a_copy_with_its_own_buffers():
    state, step_fn, mesh = _setup()
    ptr = lambda a: a.addressable_shards[0].data.unsafe_buffer_pointer()
    assert ptr(state.params["w"]) != ptr(state.ema_params["w"])
    for _ in range(2):  # donating both trees twice would fail if they shared buffers
        state, _ = step_fn(state, _batches([[1.0, 1.0, 1.0]], mesh))


def test_nonfinite_step_is_skipped_and_counted():
    state, step_fn, mesh = _setup()
    state, _ = step_fn(state, _batches([[1.0, 2.0, 3.0]], mesh))
    before = _host(state)
    state, metrics = step_fn(state, _batches([[np.nan, 0.0, 0.0], [np.inf, 0.0, 0.0]], mesh))
    after = _host(state)
    for field in ("params", "ema_params", "opt_state"):
        jax.tree.map(np.testing.assert_array_equal, getattr(after, field), getattr(before, field))
    np.testing.assert_array_equal(np.asarray(metrics["finite"]), [False, False])
    np.testing.assert_array_equal(np.asarray(metrics["bad_steps"]), [1, 2])
    assert (int(state.step), int(state.skipped)) == (3, 2)
    state, metrics = step_fn(state, _batches([[1.0, 2.0, 3.0]], mesh))
    assert (int(state.bad_steps), int(state.skipped)) == (0, 2)
    assert not np.array_equal(np.asarray(state.params["w"]), before.params["w"])


def test_a_step_whose_gradient_norm_overflows_is_skipped():
    """loss = <w, x> at w = 0 is finite and so is each gradient element (x = 3e38), but the
    global norm overflows to inf: the step is skipped, as clipping by an infinite norm would
    corrupt the update."""
    optimizer = train_lib.make_optimizer(OptimConfig(lr=LR, warmup=WARMUP, grad_clip=1.0))
    mesh = sharding.make_mesh()
    params, rest = {"w": np.zeros(3, np.float32)}, {}
    state = init_state(0, params, rest, mesh, optimizer)
    linear = lambda rest: lambda rng, params, x, y: jnp.sum(params["w"] * x)
    step_fn = train_lib.make_train_step(linear, optimizer, EMA, mesh, _prepare)
    state, metrics = step_fn(state, _batches([[3e38, 3e38, 3e38]], mesh))
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    assert np.isinf(np.asarray(metrics["grad_norm"])).all()
    np.testing.assert_array_equal(np.asarray(metrics["finite"]), [False])
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.zeros(3))
    assert (int(state.skipped), int(state.bad_steps)) == (1, 1)


def test_bf16_compute_keeps_float32_params_and_tracks_float32_loss():
    losses = {}
    for dtype in ("float32", "bfloat16"):
        cfg = tiny_toy_config(**{"training.compute_dtype": dtype})
        exp = experiment_lib.Experiment.create(cfg)
        x = np.asarray(next(exp.data_iterator("train"))["x"])
        loss_fn = exp.loss_builder(train=True)(exp.rest)
        grad_fn = jax.jit(jax.value_and_grad(loss_fn, argnums=1))
        loss, grads = grad_fn(jax.random.key(0), exp.params, x, None)
        assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
        losses[dtype] = float(loss)
    assert np.isfinite(losses["bfloat16"])
    np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=0.05)


def test_job_stops_after_nonfinite_streak_and_keeps_last_checkpoint(tmp_path):
    """Train 10 steps, then resume with an absurd learning rate: the loss turns NaN/inf, the
    run stops after max_bad_steps, and the last checkpoint written before is untouched."""
    cfg = tiny_toy_config(**{"training.n_iters": 10})
    trainer = train_lib.Trainer(cfg)
    trainer.run(str(tmp_path), progress=False)
    ckpt = ckpt_lib.Checkpointer(Workdir(str(tmp_path)).checkpoints, read_only=True)
    assert ckpt.all_steps()[-1] == 10
    saved = _host(ckpt.restore(trainer.initial_state())[0])

    bad = dataclasses.replace(
        cfg,
        training=dataclasses.replace(cfg.training, n_iters=40, max_bad_steps=3),
        optim=dataclasses.replace(cfg.optim, lr=1e30, warmup=0),
    )
    with pytest.raises(
        train_lib.NonFiniteLossError, match="max_bad_steps=3.*last checkpoint, step 10, was"
    ):
        train_lib.train(bad, str(tmp_path), progress=False, allow_config_change=True)
    assert ckpt.all_steps()[-1] == 10
    again = _host(ckpt.restore(trainer.initial_state())[0])
    jax.tree.map(np.testing.assert_array_equal, again, saved)


@pytest.mark.parametrize(
    "lr, error, needle",
    [
        (10.0, train_lib.DivergedError, r"over training\.max_loss_ratio=10000 times"),
        (1e6, train_lib.NonFiniteLossError, "gradient's norm was NaN/inf for 10"),
    ],
)
def test_a_diverging_run_stops_and_keeps_only_good_checkpoints(tmp_path, lr, error, needle):
    """With gradient clipping, lr 10 makes the loss explode while finite (1e8 at the second
    step) and lr 1e6 makes the gradient's norm overflow: both stop the run, the message says
    which checkpoint is kept, and nothing after the divergence is saved (a checkpoint is due
    every 5 steps: it is written only after the guard has passed its chunk)."""
    diverge = {"optim.lr": lr, "optim.grad_clip": 1.0, "optim.warmup": 0, "training.n_iters": 40}
    with pytest.raises(error, match=f"{needle}.*No checkpoint was written before it"):
        train_lib.train(tiny_toy_config(**diverge), str(tmp_path / "fresh"), progress=False)
    assert not os.path.exists(tmp_path / "fresh" / "checkpoints" / "5")

    train_lib.train(tiny_toy_config(**{"training.n_iters": 10}), str(tmp_path), progress=False)
    with pytest.raises(error, match=f"{needle}.*The last checkpoint, step 10, was written"):
        train_lib.train(
            tiny_toy_config(**diverge), str(tmp_path), progress=False, allow_config_change=True
        )
    ckpt = ckpt_lib.Checkpointer(Workdir(str(tmp_path)).checkpoints, read_only=True)
    assert ckpt.all_steps() == [5, 10]
