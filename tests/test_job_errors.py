"""The jobs' boundary: what a user or the machine gets wrong (the workdir, its disk, the data)
ends the job with one line naming the path and the fix, exit code 2, and loses nothing: a run
stopped by a full disk resumes bitwise."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import ROOT, TINY_TOY, as_flags, config_dict, subprocess_env
from PIL import Image

from score_sde.jobs import main as main_lib
from score_sde.jobs import train as train_lib
from score_sde.jobs.checkpoint import Checkpointer
from score_sde.jobs.validation import from_config_dict
from score_sde.jobs.workdir import Workdir

TOY = os.path.join(ROOT, "configs", "toy", "ring8_vp.py")
SMALL_UNET = {
    "model.nf": 8,
    "model.ch_mult": (1,),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (),
    "training.batch_size": 8,
    "eval.batch_size": 8,
}


def _fails_with_one_line(capsys, config, workdir, *needles):
    capsys.readouterr()
    code = main_lib.run_job(config, workdir, progress=False)
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only=False) -> a fresh tmpfs folder (root only; skipped otherwise)."""
    mounted = []

    def mount(size: str, read_only: bool = False) -> str:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        )
        if proc.returncode:
            pytest.skip(f"needs a tmpfs mount (root): {proc.stderr.decode().strip()}")
        mounted.append(folder)
        return str(folder)

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_workdir_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "runs"
    path.write_text("not a folder")
    config = config_dict("toy/ring8_vp.py", TINY_TOY)
    _fails_with_one_line(capsys, config, str(path), f"File exists: {path}", "choose another")


def test_a_read_only_workdir(tmpfs, capsys):
    root = tmpfs("1m", read_only=True)
    config = config_dict("toy/ring8_vp.py", TINY_TOY)
    _fails_with_one_line(capsys, config, root, "Read-only file system", "writable --workdir")


def test_a_full_disk_during_a_checkpoint_stops_cleanly_and_the_run_resumes_bitwise(
    tmpfs, tmp_path, capsys
):
    """400 kB hold the first checkpoints, not all of them: the command stops with one line (no
    tracebacks from orbax's writing thread); with space freed, the same job resumes and ends
    equal to an uninterrupted run, logs included."""
    config = config_dict("toy/ring8_vp.py", {**TINY_TOY, "training.n_iters": 30})
    assert main_lib.run_job(config, str(tmp_path / "ref"), progress=False) == 0
    disk = tmpfs("400k")
    workdir = os.path.join(disk, "run")
    flags = as_flags({**TINY_TOY, "training.n_iters": 30})
    cli = [
        sys.executable,
        "-m",
        "score_sde",
        f"--config={TOY}",
        f"--workdir={workdir}",
        "--progress=false",
    ]
    proc = subprocess.run([*cli, *flags], capture_output=True, text=True, env=subprocess_env())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    # tensorstore words it in several ways; the file is named when the status quotes it.
    assert lines[0].startswith("No space left on device") and "free space" in lines[0]
    subprocess.run(["mount", "-o", "remount,size=20m", disk], check=True)
    assert main_lib.run_job(config, workdir, progress=False) == 0
    ref, got = Workdir(str(tmp_path / "ref")), Workdir(workdir)
    with open(ref.metrics) as a, open(got.metrics) as b:
        assert a.read() == b.read()
    trainer = train_lib.Trainer(from_config_dict(config, device_count=1))
    final = [
        Checkpointer(w.checkpoints, read_only=True).restore(trainer.initial_state())
        for w in (ref, got)
    ]
    assert final[0][1] == final[1][1] == 30
    jax.tree.map(np.testing.assert_array_equal, *(jax.device_get(s) for s, _ in final))


@pytest.mark.parametrize(
    "status",
    [
        'RESOURCE_EXHAUSTED: Error opening local file "/d/run/10/x": [OS error: No space left]',
        'RESOURCE_EXHAUSTED: Failed writing: "/d/run/10/x" [tensorstore_spec=...]',
    ],
)
def test_tensorstore_statuses_name_the_file_that_did_not_fit(status):
    """tensorstore words a full disk in more than one way; each names the file."""
    from score_sde.jobs.errors import file_system_error

    wrapped = ValueError("save failed")
    wrapped.__cause__ = ValueError(status)
    assert file_system_error(wrapped) == (
        "No space left on device: /d/run/10/x: free space, then rerun the same command: "
        "it resumes from the last checkpoint."
    )


ORPHANED_WRITE = """
import asyncio, gc, sys, tensorstore as ts
sys.path.insert(0, sys.argv[1])
from waiter import waiter
if sys.argv[2] == "quiet":
    from score_sde.jobs.errors import quiet_orbax_background_errors
    quiet_orbax_background_errors()
promise, future = ts.Promise.new()
loop = asyncio.new_event_loop()

async def orphan_a_write():  # as orbax does when a sibling write fails
    loop.create_task(waiter(future))
    await asyncio.sleep(0)

loop.run_until_complete(orphan_a_write())
failed = loop.create_future()  # a sibling write's error, never awaited
failed.set_exception(ValueError("RESOURCE_EXHAUSTED: writing run/10.orbax-checkpoint-tmp"))
del failed
loop.close()
promise.set_result(1)
gc.collect()

class Unrelated:
    def __del__(self):
        raise ValueError("an unrelated error in __del__")

Unrelated()

class JsonCheckpointHandler:  # orbax's, whose saves a failed save leaves unawaited
    async def async_save(self):
        pass

async def unrelated_work():
    pass

unawaited = [JsonCheckpointHandler().async_save(), unrelated_work()]
del unawaited
gc.collect()
"""


def test_writes_orphaned_by_a_failed_save_print_nothing(tmp_path):
    """orbax closes a save's event loop when one write fails (a full disk) and leaves the
    other writes pending; when they end, tensorstore reports the closed loop as unraisable and
    asyncio logs the destroyed task, and Python warns of the handlers' saves never awaited: the
    job drops these, and only these."""
    orbax_like = tmp_path / "orbax"
    orbax_like.mkdir()
    (orbax_like / "waiter.py").write_text("async def waiter(future):\n    await future\n")
    script = [sys.executable, "-c", ORPHANED_WRITE, str(orbax_like)]
    loud = subprocess.run([*script, "loud"], capture_output=True, text=True, env=subprocess_env())
    quiet = subprocess.run([*script, "quiet"], capture_output=True, text=True, env=subprocess_env())
    assert loud.returncode == quiet.returncode == 0, loud.stderr + quiet.stderr
    noises = (
        "Event loop is closed", "Task was destroyed but", "Future exception was never",
        "coroutine 'JsonCheckpointHandler.async_save' was never awaited",
    )  # fmt: skip
    for noise in noises:
        assert noise in loud.stderr and noise not in quiet.stderr, quiet.stderr
    assert "an unrelated error in __del__" in quiet.stderr
    assert "coroutine 'unrelated_work' was never awaited" in quiet.stderr


def test_a_tfds_set_that_is_not_prepared(tmp_path, capsys):
    config = config_dict(
        "digits.py",
        {"data.dataset": "cifar10", "data.image_size": 32, "data.num_channels": 3,
         "data.data_dir": str(tmp_path / "nowhere")},
    )  # fmt: skip
    _fails_with_one_line(
        capsys, config, str(tmp_path / "w"), "'cifar10' (split 'train') is not prepared",
        "tfds build cifar10", "config.data.data_dir",
    )  # fmt: skip


def _image_folder(root, files: dict[str, bytes | None]):
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for name, content in files.items():
            path = root / split / name
            if content is None:
                Image.fromarray(np.full((16, 16), 128, np.uint8)).save(path)
            else:
                path.write_bytes(content)


@pytest.mark.parametrize(
    "files, needle",
    [
        ({}, "no image files (.png"),
        ({**{f"{i}.png": None for i in range(20)}, "bad.png": b"text"}, "bad.png: not an image"),
    ],
    ids=["empty", "unreadable"],
)
def test_an_image_folder_that_is_empty_or_holds_a_bad_file(tmp_path, capsys, files, needle):
    _image_folder(tmp_path / "images", files)
    config = config_dict(
        "digits.py",
        {**SMALL_UNET, "data.dataset": "image_folder", "data.data_dir": str(tmp_path / "images"),
         "data.image_size": 16, "data.num_channels": 1},
    )  # fmt: skip
    _fails_with_one_line(capsys, config, str(tmp_path / "w"), needle)


@pytest.mark.parametrize(
    "split, needle",
    [("valid", "is not a split of 'digits'"), ("test[400:]", "selects no example")],
)
def test_an_eval_split_that_is_not_one_fails_before_training(tmp_path, capsys, split, needle):
    config = config_dict("digits.py", {**SMALL_UNET, "eval.bpd_split": split})
    workdir = tmp_path / "w"
    _fails_with_one_line(capsys, config, str(workdir), f"config.eval.bpd_split={split!r}", needle)
    assert not (workdir / "checkpoints").exists()  # stopped at start-up, before any step


def test_every_row_of_docs_errors_names_tests_that_exist():
    """docs/errors.md catalogues each error with its test: a row without one, or naming a test
    that is gone, fails here."""
    import re

    tests = os.path.join(ROOT, "tests")
    with open(os.path.join(ROOT, "docs", "errors.md")) as f:
        doc = f.read()
    library = doc.split("## Library calls")[1]
    rows = [line for line in doc.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [r for r in rows if not r.startswith(("| case", "| code", "| 0 ", "| 1 ", "| 2 "))]
    rows = [r for r in rows if not r.startswith(("| 130", "| 143"))]
    assert len(rows) >= 25
    for row in rows:
        named = re.findall(r"`(test_\w+\.py)::(\w+)", row)
        if row in library:
            named += [("test_boundaries.py", n) for n in re.findall(r"`(test_\w+)`", row)]
        assert named, f"no test for: {row[:80]}"
        for file, name in named:
            with open(os.path.join(tests, file)) as f:
                assert f"def {name}(" in f.read(), f"{file}::{name} is named in docs/errors.md"


@pytest.mark.parametrize("mode", ["eval", "sample"])
def test_eval_or_sample_of_a_workdir_without_checkpoints(tmp_path, capsys, mode):
    config = config_dict("toy/ring8_vp.py", TINY_TOY)
    capsys.readouterr()
    assert main_lib.run_job(config, str(tmp_path), mode=mode, eval_timeout=0) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"No checkpoints at {tmp_path}/checkpoints: run --mode train with this --workdir first."
    )
