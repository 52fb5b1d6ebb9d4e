"""A workdir belongs to one run: one training job at a time (a lock naming its holder, taken
over from a holder that died), and a resume that stops when the config is not the run's."""

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest
from helpers import TINY_TOY, config_dict, subprocess_env, tiny_toy_config

from score_sde.jobs import experiment as experiment_lib
from score_sde.jobs import lock as lock_lib
from score_sde.jobs import main as main_lib
from score_sde.jobs import train as train_lib
from score_sde.jobs.workdir import Workdir

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from score_sde.jobs import lock
    with lock.exclusive(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_one_trainer_per_workdir_and_a_dead_holder_s_lock_is_taken_over(tmp_path, capsys):
    """Another process holds the workdir: training stops at once naming it (the CLI: one line,
    exit 2), writing nothing; once that process is killed, the next run takes the lock over
    with a log line, trains, and leaves the lock released."""
    wd = Workdir(str(tmp_path))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, wd.lock], stdout=subprocess.PIPE, text=True,
        env=subprocess_env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        owner = f"pid {holder.pid} on {socket.gethostname()}"
        with pytest.raises(lock_lib.WorkdirBusyError, match=f"being trained by {owner}"):
            train_lib.train(tiny_toy_config(), wd.root, progress=False)
        assert sorted(os.listdir(wd.root)) == ["train.lock"]  # no checkpoint, log or config

        code = main_lib.run_job(config_dict("toy/ring8_vp.py", TINY_TOY), wd.root, progress=False)
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err and owner in err, err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()

    train_lib.train(tiny_toy_config(), wd.root, progress=False)
    assert (
        f"Took over the lock of {owner}, which did not finish cleanly." in capsys.readouterr().out
    )
    assert open(wd.lock).read() == ""  # released cleanly: the next run reports no takeover
    train_lib.train(tiny_toy_config(**{"training.n_iters": 30}), wd.root, progress=False)
    assert "Took over" not in capsys.readouterr().out


def test_a_lock_held_in_this_process_is_exclusive_too(tmp_path):
    path = str(tmp_path / "train.lock")
    with lock_lib.exclusive(path):
        with pytest.raises(lock_lib.WorkdirBusyError, match=f"pid {os.getpid()}"):
            with lock_lib.exclusive(path):
                pass
    with lock_lib.exclusive(path):  # released on exit
        pass


def test_a_file_system_without_locks_is_told_apart_from_a_busy_workdir(
    tmp_path, monkeypatch, capsys
):
    """flock failing with ENOSYS (Lustre without -o flock) is not "being trained by another
    job": one line naming the lock file, the cause and the fix; exit 2, nothing written."""

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(lock_lib.fcntl, "flock", no_locks)
    wd = Workdir(str(tmp_path / "run"))
    capsys.readouterr()
    assert main_lib.run_job(config_dict("toy/ring8_vp.py", TINY_TOY), wd.root, progress=False) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"{wd.lock} cannot be locked (Function not implemented): the file system does not "
        "support file locks; use a --workdir on one that does (local disk, NFSv4) or mount it "
        "with locks on (Lustre: -o flock)."
    )
    assert sorted(os.listdir(wd.root)) == ["train.lock"]


def test_a_resume_with_another_config_stops_listing_the_fields(tmp_path, capsys):
    """A second run with another seed and learning rate does not silently continue the first
    one's checkpoint; a longer n_iters (or eval fields) may change; --allow_config_change
    accepts the rest with a log line. The resolved config is saved in the workdir."""
    wd = Workdir(str(tmp_path))
    first = tiny_toy_config(**{"training.n_iters": 10})
    train_lib.train(first, wd.root, progress=False)
    with open(wd.config) as f:
        assert json.load(f) == experiment_lib.config_to_json(first)

    other = {"optim.lr": 0.003, "training.n_iters": 20}
    changed = tiny_toy_config(**other)
    with pytest.raises(train_lib.ConfigChangedError) as info:
        train_lib.train(dataclasses.replace(changed, seed=1), wd.root, progress=False)
    message = str(info.value)
    lr = f"config.optim.lr: {first.optim.lr} -> 0.003"
    assert f"{lr}; config.seed: {first.seed} -> 1." in message, message
    assert "n_iters" not in message and "--allow_config_change" in message
    code = main_lib.run_job(config_dict("toy/ring8_vp.py", {**TINY_TOY, **other}), wd.root)
    assert code == 2 and lr in capsys.readouterr().err

    longer = {"training.n_iters": 20, "eval.num_samples": 7, "training.log_freq": 10}
    state = train_lib.train(tiny_toy_config(**longer), wd.root, progress=False)
    assert int(state.step) == 20
    state = train_lib.train(
        tiny_toy_config(**{**other, "training.n_iters": 30}), wd.root, progress=False,
        allow_config_change=True,
    )  # fmt: skip
    assert int(state.step) == 30
    assert f"With config changes: {lr}." in capsys.readouterr().out
