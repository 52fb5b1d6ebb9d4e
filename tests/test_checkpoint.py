"""Checkpoints: exact resume after SIGKILL, SIGINT and SIGTERM (bitwise on CPU, data position
included), and a clear error when a checkpoint does not fit the model."""

import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from helpers import TESTS, tiny_toy_config

from score_sde.jobs import checkpoint as ckpt_lib
from score_sde.jobs import runlog
from score_sde.jobs import train as train_lib
from score_sde.jobs.evaluator import load_model
from score_sde.jobs.state import UNREAD_BY_EVAL, init_state
from score_sde.jobs.workdir import Workdir

RESUME = {"training.n_iters": 40, "training.snapshot_freq_for_preemption": 10}


def _final_state(trainer, workdir):
    ckpt = ckpt_lib.Checkpointer(Workdir(workdir).checkpoints, read_only=True)
    state, step = ckpt.restore(trainer.initial_state())
    return jax.tree.map(np.asarray, jax.device_get(state)), step


def _read(path):
    with open(path) as f:
        return f.read()


SIGNAL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from helpers import TINY_TOY, config_dict
    from score_sde.jobs import main, runlog

    workdir = {workdir!r}
    scalars = runlog.RunLog.scalars

    def scalars_then_signal(self, step, metrics):
        scalars(self, step, metrics)
        if step == 15 and "loss" in metrics:  # logged past checkpoint 10; 20 is not written
            while not os.path.isdir(os.path.join(workdir, "checkpoints", "10")):
                time.sleep(0.01)
            os.kill(os.getpid(), {signum})

    runlog.RunLog.scalars = scalars_then_signal
    config = config_dict("toy/ring8_vp.py", {{**TINY_TOY, **{resume!r}}})
    sys.exit(main.run_job(config, workdir, progress=False))
    """
)


def _run_until_signal(workdir: str, signum: int) -> subprocess.CompletedProcess:
    script = SIGNAL_SCRIPT.format(tests=TESTS, workdir=workdir, resume=RESUME, signum=signum)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)


def test_resume_after_sigkill_sigint_and_sigterm_is_bitwise_equal(tmp_path, monkeypatch, capsys):
    trainer = train_lib.Trainer(tiny_toy_config(**RESUME))  # compiled once, run three times
    ref_dir, dir_ = str(tmp_path / "uninterrupted"), str(tmp_path / "interrupted")
    trainer.run(ref_dir, progress=False)
    steps = lambda: ckpt_lib.Checkpointer(Workdir(dir_).checkpoints, read_only=True).all_steps()

    # 1. A hard kill (no handler can run) in the middle of training, after checkpoint 10.
    proc = _run_until_signal(dir_, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert steps() == [10]
    assert '"step": 15, "loss"' in _read(Workdir(dir_).metrics)  # the resume must drop it

    # 2. Resume; SIGINT (Ctrl-C) after step 15: the job saves step 20, logs it and exits 130
    # with one line, no KeyboardInterrupt traceback.
    proc = _run_until_signal(dir_, signal.SIGINT)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "Interrupted (SIGINT): saved step 20; run again to resume."
    )
    assert "Traceback" not in proc.stderr and steps() == [10, 20]
    assert '"step": 20, "loss"' in _read(Workdir(dir_).metrics)

    # 3. Resume; SIGTERM arrives at step 25: the run saves at the next boundary and stops.
    progress = runlog.RunLog.progress

    def progress_then_term(self, step, **kw):
        progress(self, step, **kw)
        if step == 25:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runlog.RunLog, "progress", progress_then_term)
    with pytest.raises(ckpt_lib.Interrupted, match=r"SIGTERM\): saved step 30") as info:
        trainer.run(dir_, progress=False)
    assert (info.value.step, info.value.exit_code) == (30, 143)
    assert "Resumed from step 20" in capsys.readouterr().out
    monkeypatch.undo()

    # 4. Resume to the end: bitwise equal to the uninterrupted run, logs included.
    trainer.run(dir_, progress=False)
    assert "Resumed from step 30" in capsys.readouterr().out
    (ref, ref_step), (got, got_step) = _final_state(trainer, ref_dir), _final_state(trainer, dir_)
    assert ref_step == got_step == 40
    jax.tree.map(np.testing.assert_array_equal, got, ref)
    assert _read(os.path.join(dir_, "metrics.jsonl")) == _read(
        os.path.join(ref_dir, "metrics.jsonl")
    )


def test_restore_into_a_different_model_names_the_parameter(tmp_path):
    def state(width):
        return {"params": {"dense": {"kernel": np.zeros((2, width), np.float32)}}}

    ckpt = ckpt_lib.Checkpointer(str(tmp_path), data_names=())
    ckpt.save(1, state(3), config={"model": {"width": 3}})
    ckpt.wait()
    restored, step = ckpt.restore(state(3))
    assert step == 1 and restored["params"]["dense"]["kernel"].shape == (2, 3)
    with pytest.raises(
        ckpt_lib.CheckpointMismatchError,
        match=r"params/dense/kernel has shape \(2, 3\) in the checkpoint but \(2, 4\)",
    ):
        ckpt.restore(state(4))
    missing = {"params": {"dense": state(3)["params"]["dense"], "out": np.zeros(3, np.float32)}}
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="no parameter params/out"):
        ckpt.restore(missing)
    with pytest.raises(ckpt_lib.CheckpointMismatchError, match="lacks"):
        ckpt.restore({"params": {}})
    assert ckpt.read_json(1)[0] == {"model": {"width": 3}}
    ckpt.close()


def test_an_eval_reads_the_ema_parameters_and_not_the_optimiser(tmp_path, monkeypatch):
    """The eval's restore (``UNREAD_BY_EVAL``) asks orbax for no optimiser state and no raw
    parameters, and gets the EMA parameters, RNG and step of a full restore."""
    trainer = train_lib.Trainer(tiny_toy_config(**{"training.n_iters": 4}))
    trainer.run(str(tmp_path), progress=False)
    full, step = _final_state(trainer, str(tmp_path))
    asked = []
    restore = ocp.CheckpointManager.restore
    monkeypatch.setattr(
        ocp.CheckpointManager,
        "restore",
        lambda self, step, args: asked.append(args["state"].item) or restore(self, step, args=args),
    )
    ckpt = ckpt_lib.Checkpointer(Workdir(str(tmp_path)).checkpoints, read_only=True)
    target = init_state(0, trainer.exp.params, trainer.exp.rest, trainer.mesh)
    state, got_step = ckpt.restore(target, skip=UNREAD_BY_EVAL)
    assert got_step == step == 4 and state.params is None and state.opt_state is None
    assert set(asked[0]) == {"step", "ema_params", "rest", "rng", "bad_steps", "skipped"}
    chex.assert_trees_all_equal(jax.device_get(state.ema_params), full.ema_params)
    np.testing.assert_array_equal(np.asarray(state.rng), full.rng)
    writer = ckpt_lib.Checkpointer(Workdir(str(tmp_path)).checkpoints)
    with pytest.raises(ValueError, match="read_only"):
        writer.restore(trainer.initial_state(), skip=UNREAD_BY_EVAL)
    writer.close()


def test_load_model_reads_a_checkpoint_under_its_saved_config(tmp_path):
    """``load_model(workdir)`` needs no config: the EMA parameters (or the raw ones) and the
    step of the checkpoint asked for, equal to a full restore's, and a score function."""
    steps = {"n_iters": 4, "n_jitted_steps": 2, "snapshot_freq": 2, "log_freq": 2}
    overrides = {f"training.{k}": v for k, v in steps.items()}
    overrides |= {"training.snapshot_freq_for_preemption": 2, "model.width": 12}
    trainer = train_lib.Trainer(tiny_toy_config(**overrides))
    trainer.run(str(tmp_path), progress=False)
    full, step = _final_state(trainer, str(tmp_path))
    ema, raw = load_model(str(tmp_path)), load_model(str(tmp_path), ema=False)
    assert ema.step == raw.step == step == 4 and ema.exp.cfg.model.width == 12
    chex.assert_trees_all_equal(jax.device_get(ema.params), full.ema_params)
    chex.assert_trees_all_equal(jax.device_get(raw.params), full.params)
    x, t = jax.random.normal(jax.random.key(0), (5, 2)), jnp.full((5,), 0.5)
    assert not np.allclose(ema.score_fn()(x, t), raw.score_fn()(x, t))  # two sets of weights
    first = load_model(str(tmp_path), step=2)
    assert first.step == 2 and not np.allclose(first.score_fn()(x, t), ema.score_fn()(x, t))
    with pytest.raises(ckpt_lib.NoCheckpointError):
        load_model(str(tmp_path / "nothing_here"))


def test_missing_step_lists_the_available_ones(tmp_path):
    ckpt = ckpt_lib.Checkpointer(str(tmp_path), data_names=())
    ckpt.save(5, {"a": np.ones(2, np.float32)}, config={})
    ckpt.close()
    with pytest.raises(FileNotFoundError, match=r"available steps: \[5\]"):
        ckpt_lib.Checkpointer(str(tmp_path), read_only=True).restore({"a": np.ones(2)}, 7)


def test_a_read_only_checkpointer_opens_without_orbax_s_warning(tmp_path, caplog):
    """Each eval restore opens the run read-only: orbax's "Given directory is read only"
    warning, logged every time, is dropped; other warnings still pass."""
    (tmp_path / "ck").mkdir()
    with caplog.at_level("WARNING", logger="absl"):
        ckpt_lib.Checkpointer(str(tmp_path / "ck"), read_only=True)
    assert not [r for r in caplog.records if "read only" in r.getMessage()], caplog.text
    with caplog.at_level("WARNING", logger="absl"), ckpt_lib._quiet_read_only_notice():
        logging.getLogger("absl").warning("another warning")
    assert "another warning" in caplog.text


def _rewrite_data(step_dir: str, change) -> None:
    """Apply ``change`` to the bytes of every array data file of the state (ocdbt's ``d/``
    folders: which of them holds which array is orbax's business)."""
    for folder, _, files in os.walk(os.path.join(step_dir, "state")):
        for name in files if os.path.basename(folder) == "d" else ():
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                data = bytearray(f.read())
            with open(path, "wb") as f:
                f.write(change(data))


def _flip_one_bit(data: bytearray) -> bytearray:
    data[len(data) // 2] ^= 0x10
    return data


def _empty(step_dir: str) -> None:
    for name in os.listdir(step_dir):
        path = os.path.join(step_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


DAMAGES = {
    "metadata removed": lambda d: os.remove(os.path.join(d, "state", "_METADATA")),
    "data truncated": lambda d: _rewrite_data(d, lambda b: b[: len(b) // 2]),
    "random bytes": lambda d: _rewrite_data(d, lambda b: np.random.default_rng(0).bytes(len(b))),
    "one bit flipped": lambda d: _rewrite_data(d, _flip_one_bit),
    "folder emptied": _empty,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(trainer, workdir) of an uninterrupted 30-step run (checkpoints 10, 20, 25, 30)."""
    trainer = train_lib.Trainer(tiny_toy_config(**{"training.n_iters": 30}))
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    trainer.run(workdir, progress=False)
    return trainer, workdir


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_resumes_before_it(
    finished_run, tmp_path, capsys, damage
):
    """The last checkpoint damaged on disk: the resume says so in one line, moves it (never
    deletes it), restores the one before, and trains to the same final state and logs."""
    trainer, ref_dir = finished_run
    dir_ = str(tmp_path / "run")
    shutil.copytree(ref_dir, dir_)
    wd = Workdir(dir_)
    DAMAGES[damage](os.path.join(wd.checkpoints, "30"))
    capsys.readouterr()
    trainer.run(dir_, progress=False)
    out = capsys.readouterr().out
    moved = [line for line in out.splitlines() if "moved to" in line]
    assert len(moved) == 1 and f"Checkpoint {wd.checkpoints}/30" in moved[0], out
    assert "Resumed from step 25" in out
    (aside,) = os.listdir(wd.damaged)
    assert aside.startswith("30-") and moved[0].endswith("trying the one before it.")
    (ref, _), (got, step) = _final_state(trainer, ref_dir), _final_state(trainer, dir_)
    assert step == 30
    jax.tree.map(np.testing.assert_array_equal, got, ref)
    assert _read(wd.metrics) == _read(Workdir(ref_dir).metrics)


def test_when_every_checkpoint_is_damaged_the_job_stops_with_one_line(
    finished_run, tmp_path, capsys
):
    """Every checkpoint is damaged: each is moved aside with a line, and the job stops with one
    line (exit 2) instead of training from step 0 or from wrong parameters."""
    from helpers import TINY_TOY, config_dict

    from score_sde.jobs import main as main_lib

    _, ref_dir = finished_run
    wd = Workdir(str(tmp_path / "run"))
    shutil.copytree(ref_dir, wd.root)
    steps = sorted(s for s in os.listdir(wd.checkpoints) if s.isdigit())
    for step in steps:
        DAMAGES["data truncated"](os.path.join(wd.checkpoints, step))
    config = config_dict("toy/ring8_vp.py", {**TINY_TOY, "training.n_iters": 30})
    capsys.readouterr()
    assert main_lib.run_job(config, wd.root, progress=False) == 2
    out, err = capsys.readouterr()
    assert err.strip().startswith("Every checkpoint in") and "\n" not in err.strip(), err
    assert out.count("cannot be read") == len(steps) == len(os.listdir(wd.damaged))
    assert not [s for s in os.listdir(wd.checkpoints) if s.isdigit()]


FAULT_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from helpers import TINY_TOY, config_dict
    from score_sde.jobs import checkpoint, main, runlog

    workdir, fault, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    signals = {{"kill": signal.SIGKILL, "int": signal.SIGINT, "term": signal.SIGTERM}}
    if fault == "kill_saving":  # SIGKILL while checkpoint `at` is being written
        save = checkpoint.Checkpointer.save

        def save_then_kill(self, step, *args, **kw):
            out = save(self, step, *args, **kw)
            if step == at:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        checkpoint.Checkpointer.save = save_then_kill
    elif fault in signals:  # the signal once step `at` is reported
        scalars = runlog.RunLog.scalars

        def scalars_then_signal(self, step, metrics):
            scalars(self, step, metrics)
            if step == at and "loss" in metrics:
                os.kill(os.getpid(), signals[fault])

        runlog.RunLog.scalars = scalars_then_signal
    print("started", flush=True)
    sys.exit(main.run_job(config_dict("toy/ring8_vp.py", {{**TINY_TOY, **{run!r}}}), workdir,
                          progress=False))
    """
)
FAULT_RUN = {"training.n_iters": 100, "training.snapshot_freq_for_preemption": 5}


@pytest.mark.slow
def test_a_run_under_repeated_faults_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path):
    """Seven faults in one run at seeded random moments: five SIGKILLs (after a logged step,
    during a checkpoint's write, after a random delay), one SIGINT and one SIGTERM; rerunning
    the same command after each ends with the parameters, EMA, optimiser state and
    metrics.jsonl of an uninterrupted run, bit for bit."""
    ref = str(tmp_path / "uninterrupted")
    train_lib.Trainer(tiny_toy_config(**FAULT_RUN)).run(ref, progress=False)
    rng = np.random.default_rng(0)
    steps = lambda lo, hi: int(rng.integers(lo // 5, hi // 5 + 1)) * 5  # logged every 5 steps
    # Each fault lies past the checkpoint the one before leaves, so that every one fires.
    faults = [
        ("kill", steps(5, 15)), ("kill_saving", steps(20, 30)), ("kill", steps(35, 45)),
        ("int", steps(50, 55)), ("kill_saving", steps(65, 70)), ("term", steps(75, 80)),
        ("kill_timer", float(rng.uniform(0.5, 4.0))), ("none", 0),
    ]  # fmt: skip
    workdir, codes = str(tmp_path / "faults"), []
    for fault, at in faults:
        script = FAULT_SCRIPT.format(tests=TESTS, run=FAULT_RUN)
        args = [sys.executable, "-c", script, workdir, fault, str(int(at))]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if fault == "kill_timer":  # a moment chosen by the clock, not by the job
            assert proc.stdout.readline().strip() == "started"
            time.sleep(at)
            proc.kill()
        out, err = proc.communicate(timeout=600)
        codes.append(proc.returncode)
        assert "Traceback" not in err, f"{fault} at {at}: {err[-3000:]}"
    want = {"kill": -9, "kill_saving": -9, "int": 130, "term": 143, "none": 0}
    for (fault, at), code in zip(faults, codes, strict=True):
        if fault in want:
            assert code == want[fault], (fault, at, codes)
    trainer = train_lib.Trainer(tiny_toy_config(**FAULT_RUN))
    (r, r_step), (g, g_step) = _final_state(trainer, ref), _final_state(trainer, workdir)
    assert r_step == g_step == 100
    jax.tree.map(np.testing.assert_array_equal, g, r)
    assert _read(Workdir(workdir).metrics) == _read(Workdir(ref).metrics)
