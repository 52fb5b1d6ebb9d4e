"""What a new user meets first, through the command line: Ctrl-C at start-up and in training
(one line, exit 130, nothing lost, bitwise resume), a missing config file, ``--dry_run``, and
an eval that says at once what it waits for."""

import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, TINY_TOY, config_dict, subprocess_env, tiny_toy_config

from score_sde.jobs import evaluate, main

TOY = os.path.join(ROOT, "configs", "toy", "ring8_vp.py")
# Chunks of 1,000 steps (about a second on a CPU): a Ctrl-C lands inside one, the save waits
# for its end, and a second Ctrl-C 0.1 s after the first arrives before it (signals sent
# back to back would merge into one).
LONG = {**TINY_TOY, "training.n_iters": 4000, "training.n_jitted_steps": 1000,
        "training.log_freq": 1000, "training.snapshot_freq": 4000,
        "training.snapshot_freq_for_preemption": 4000, "training.eval_freq": 4000}  # fmt: skip


def _cli(workdir, overrides: dict, *extra: str) -> list[str]:
    flags = [f"--config.{key}={value}" for key, value in overrides.items()]
    return [sys.executable, "-m", "score_sde", f"--config={TOY}", f"--workdir={workdir}",
            "--progress=false", *flags, *extra]  # fmt: skip


def _interrupt(argv: list[str], after: str, signals: int, env=None) -> tuple[int, str, str]:
    """Run ``argv``, send ``signals`` SIGINTs back to back once a stdout line contains
    ``after``; (exit code, stdout, stderr)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, env=env or subprocess_env())  # fmt: skip
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if after in line:
            break
    else:
        pytest.fail(f"never printed {after!r}: {''.join(seen)} {proc.stderr.read()}")
    time.sleep(0.2)
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, "".join(seen) + out, err


def _train(workdir, overrides=LONG) -> str:
    proc = subprocess.run(_cli(workdir, overrides), capture_output=True, text=True, cwd=ROOT,
                          env=subprocess_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _metrics(workdir) -> str:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read()


@pytest.mark.slow
def test_ctrl_c_while_compiling_stops_at_once_in_one_line(tmp_path):
    """Before the first step there is nothing to save: exit 130 at once, in the middle of the
    compile (it never finishes), one line, no traceback or crash; a rerun starts cleanly."""
    env = subprocess_env(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "empty_cache"))
    workdir = tmp_path / "run"
    code, out, err = _interrupt(_cli(workdir, TINY_TOY), "Compiling the train step", 1, env)
    assert code == 130, err[-2000:]
    assert "Compiled the train step" not in out  # stopped inside the compile, not after it
    assert err.strip().splitlines() == [
        "Interrupted (SIGINT): stopped at once; what was written before is intact: run the "
        "same command to go on."
    ]
    assert "Trained steps 0 to 20" in _train(workdir, TINY_TOY)


@pytest.mark.slow
def test_ctrl_c_in_training_saves_and_a_second_one_stops_at_once(tmp_path):
    """One Ctrl-C saves the step reached and exits 130; two stop at once, leaving the last
    checkpoint. Both resume to the end bitwise as an uninterrupted run (the logged losses)."""
    reference = tmp_path / "uninterrupted"
    _train(reference)
    once, twice = tmp_path / "once", tmp_path / "twice"

    code, _, err = _interrupt(_cli(once, LONG), "Compiled the train step", 1)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    lines = err.strip().splitlines()
    assert lines[0].startswith("SIGINT: saving at the end of this step"), err
    assert lines[-1].startswith("Interrupted (SIGINT): saved step "), err
    saved = int(lines[-1].split("saved step ")[1].split(";")[0])
    assert 0 < saved < 4000 and os.listdir(once / "checkpoints") == [str(saved)]
    assert f"Resumed from step {saved}" in _train(once)
    assert _metrics(once) == _metrics(reference)

    code, _, err = _interrupt(_cli(twice, LONG), "Compiled the train step", 2)
    assert code == 130 and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("Interrupted again (SIGINT): stopped at once")
    _train(twice)
    assert _metrics(twice) == _metrics(reference)


def test_a_missing_config_file_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "score_sde", "--config=configs/nope.py", f"--workdir={tmp_path}"],
        capture_output=True, text=True, cwd=ROOT, env=subprocess_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    want = "--config configs/nope.py: no such file (e.g. --config configs/digits.py).\n"
    assert proc.stderr == want


def test_dry_run_validates_the_config_and_touches_nothing(tmp_path):
    workdir = tmp_path / "run"
    good = subprocess.run(_cli(workdir, TINY_TOY, "--dry_run"), capture_output=True, text=True,
                          cwd=ROOT, env=subprocess_env())  # fmt: skip
    assert good.returncode == 0, good.stderr
    assert "Config valid: --mode train" in good.stdout
    # a field's own rule, and one that needs the data set (the split the eval reads)
    for field, value, needle in [
        ("sde.beta_min", -1, "beta_min=-1.0"),
        ("eval.bpd_split", "valid", "config.eval.bpd_split='valid': split='valid' is not a split"),
    ]:
        bad = subprocess.run(_cli(workdir, {field: value}, "--dry_run"), capture_output=True,
                             text=True, cwd=ROOT, env=subprocess_env())  # fmt: skip
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and needle in bad.stderr, (
            bad.stderr
        )
    assert not workdir.exists()


def test_eval_says_what_it_waits_for_before_building_the_model(tmp_path, monkeypatch, capsys):
    """A workdir without a run fails at once; one whose training has written no checkpoint
    yet gets the waiting line (with --eval_timeout) before the model is built."""
    cfg = tiny_toy_config()

    def built(*args, **kwargs):
        raise AssertionError("the model was built first")

    monkeypatch.setattr(evaluate, "Evaluator", built)
    assert main.run_job(config_dict("toy/ring8_vp.py", TINY_TOY), str(tmp_path / "none"),
                        mode="eval") == 2  # fmt: skip
    assert "No checkpoints at" in capsys.readouterr().err

    os.makedirs(tmp_path / "run" / "checkpoints")
    with pytest.raises(AssertionError, match="the model was built first"):
        evaluate.evaluate(cfg, str(tmp_path / "run"), timeout_seconds=30)
    out = capsys.readouterr().out
    assert "Waiting for training to write checkpoints up to step 20" in out
    assert "(none yet); the eval stops after 30 s without a new one (--eval_timeout" in out
