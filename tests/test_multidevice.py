"""Data parallelism: 8 emulated CPU devices, and two jax.distributed processes on 127.0.0.1, give
the losses and parameters of one device for the same global batch (within float tolerance)."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from helpers import (
    ROOT,
    TINY_TOY,
    as_flags,
    free_port,
    run_processes,
    spawn_processes,
    subprocess_env,
    tiny_toy_config,
)

from score_sde.jobs import train as train_lib
from score_sde.jobs.checkpoint import Checkpointer
from score_sde.jobs.workdir import Workdir

pytestmark = pytest.mark.slow  # subprocess jobs: CI runs them on python3 (3.11) only

OVERRIDES = {"training.n_iters": 20, "training.eval_freq": 10, "training.log_freq": 5}


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {(r["step"], k): v for r in rows for k, v in r.items() if "loss" in k}


EIGHT_DEVICES = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from helpers import TINY_TOY, as_flags, tiny_toy_config
    from score_sde import sharding
    from score_sde.jobs import train
    assert jax.device_count() == 8, jax.devices()
    cfg = tiny_toy_config(**{overrides!r})
    put_batches, rows = train.put_batches, []

    def recording(batches, mesh):  # the rows of a batch each device holds
        placed = put_batches(batches, mesh)
        rows.append({{s.data.shape[1] for s in placed["x"].addressable_shards}})
        return placed

    train.put_batches = recording
    out = {{}}
    for n in (8, 1):
        mesh = sharding.make_mesh(jax.devices()[:n])
        state = train.Trainer(cfg, mesh=mesh).run(f"{{sys.argv[1]}}/{{n}}", progress=False)
        w = state.params
        out[n] = dict(
            shards=len(jax.tree.leaves(w)[0].sharding.device_set),
            params=[np.asarray(a).tolist() for a in jax.tree.leaves(w)],
            rows=sorted(set.union(*rows)),
        )
        rows.clear()
    print("RESULT" + json.dumps(out))
    """
)


def test_eight_devices_match_one_device(tmp_path):
    script = EIGHT_DEVICES.format(overrides=OVERRIDES)
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["8"]["shards"] == 8 and out["1"]["shards"] == 1
    batch = TINY_TOY["training.batch_size"]  # split over the devices, not replicated on each
    assert out["8"]["rows"] == [batch // 8] and out["1"]["rows"] == [batch]
    one, eight = _losses(str(tmp_path / "1")), _losses(str(tmp_path / "8"))
    assert sorted(one) == sorted(eight) and len(one) == 6  # 4 train + 2 eval losses
    for key in one:
        np.testing.assert_allclose(eight[key], one[key], rtol=1e-5, err_msg=str(key))
    for a, b in zip(out["8"]["params"], out["1"]["params"], strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_two_processes_match_one_process(tmp_path):
    """Two jax.distributed processes (one CPU device each), each reading its half of every
    global batch, train like one process reading whole batches."""
    config = os.path.join(ROOT, "configs", "toy", "ring8_vp.py")
    port, workdir = free_port(), str(tmp_path / "two")
    tiny = tiny_toy_config(**OVERRIDES)
    flags = [
        f"--config={config}",
        f"--workdir={workdir}",
        "--multihost",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--progress=false",
        *as_flags({**TINY_TOY, **OVERRIDES, "training.snapshot_sampling": True}),
    ]
    outs = run_processes(flags)
    assert "2 process(es)" in outs[0][0] and "Model" not in outs[1][0]  # only process 0 prints
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "train_10.png",
        "train_20.png",
    ]

    state = train_lib.train(tiny, str(tmp_path / "one"), progress=False)
    one, two = _losses(str(tmp_path / "one")), _losses(workdir)
    assert sorted(one) == sorted(two) and len(one) == 6
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-5, err_msg=str(key))
    assert jax.process_count() == 1 and int(state.step) == 20


FID_EIGHT_DEVICES = textwrap.dedent(
    """
    import json, sys, types
    import jax, numpy as np
    from helpers import DIGITS_TINY, config_dict, random_inception_arrays
    from score_sde import evaluation, sharding
    from score_sde.jobs import fid_eval
    from score_sde.jobs.validation import from_config_dict
    from score_sde.evaluation import weights
    from score_sde.jobs.experiment import Experiment
    assert jax.device_count() == 8, jax.devices()
    path = weights.save(random_inception_arrays(), sys.argv[1] + "/w.npz", "random")
    images = np.random.default_rng(0).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)
    eight = evaluation.Inception.load(path)
    one = evaluation.Inception.load(path, mesh=sharding.make_mesh(jax.devices()[:1]))
    f8, l8 = eight.outputs(images)
    f1, l1 = one.outputs(images)
    placed = jax.device_put(images, eight.batch_sharding)
    rows = eight(placed)[0].addressable_shards[0].data.shape[0]
    cfg = from_config_dict(config_dict("digits.py", {**DIGITS_TINY, "eval.batch_size": 16}))
    exp = Experiment.create(cfg)
    mesh = sharding.make_mesh()
    evaluator = types.SimpleNamespace(exp=exp, guide=None, cfg=cfg, mesh=mesh)
    key = jax.random.key(3)
    args = sharding.put_replicated(
        (exp.params, exp.rest, np.asarray(jax.random.key_data(key))), mesh
    )
    drawn, nonfinite = fid_eval.sample_fn(evaluator)(*args, None)
    single = np.asarray(fid_eval.to_uint8(exp.draw(exp.params, exp.rest, key, None, 16)))
    print("RESULT" + json.dumps(dict(
        features=float(np.abs(f8 - f1).max()), logits=float(np.abs(l8 - l1).max()),
        scale=float(np.abs(f1).max()), rows=rows,
        sample_rows=drawn.addressable_shards[0].data.shape[0], nonfinite=int(nonfinite),
        pixels=float(np.abs(np.asarray(drawn, np.int32) - single).max()),
    )))
    """
)


def test_fid_inception_and_sampler_sharded_over_eight_devices(tmp_path):
    """The Inception over 8 devices gives the features of one device; the FID sampler's
    batches come out split over the 8 devices, equal to the unsharded samples."""
    env = subprocess_env(XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", FID_EIGHT_DEVICES, str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT")[-1])
    assert out["rows"] == out["sample_rows"] == 2  # 16 images, 2 per device
    assert out["features"] <= 1e-5 * out["scale"] and out["logits"] <= 1e-4
    assert out["pixels"] <= 1 and out["nonfinite"] == 0  # a rounding at the 8-bit step at most


MULTIHOST_JOB = textwrap.dedent(
    """
    import os, signal, sys
    import jax
    workdir, mode, port, process, processes, kill_at = sys.argv[1:7]
    if int(processes) > 1:
        jax.distributed.initialize(
            f"127.0.0.1:{{port}}", num_processes=int(processes), process_id=int(process)
        )
    from helpers import TINY_TOY, config_dict
    from score_sde.jobs import checkpoint, main

    save = checkpoint.Checkpointer.save

    def save_then_kill(self, step, *args, **kw):  # SIGKILL while checkpoint `kill_at` is written
        out = save(self, step, *args, **kw)
        if step == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    checkpoint.Checkpointer.save = save_then_kill
    config = config_dict("toy/ring8_vp.py", {{**TINY_TOY, **{run!r}}})
    sys.exit(main.run_job(config, workdir, mode=mode, progress=False))
    """
)
MULTIHOST_RUN = {
    "training.n_iters": 30,
    "training.eval_freq": 10,
    "training.snapshot_freq": 15,
    "eval.begin_ckpt": 30,
    "eval.num_samples": 64,
    "eval.batch_size": 32,
}


def _job(workdir, mode, processes: int, devices: int, kill_at: int = -1) -> tuple[list[int], str]:
    """Exit codes of ``processes`` jax.distributed processes with ``devices`` CPU devices each
    running ``mode`` in ``workdir`` (a SIGKILL in every process at checkpoint ``kill_at``)."""
    script = MULTIHOST_JOB.format(run=MULTIHOST_RUN)
    env = subprocess_env(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    port = free_port()

    def argv(i: int) -> list[str]:
        args = (workdir, mode, port, i, processes, kill_at)
        return [sys.executable, "-c", script, *map(str, args)]

    codes, outs = spawn_processes(argv, processes, env=env, allowed=(0, -9))
    for _, err in outs:
        assert "Traceback" not in err, err[-3000:]
    return codes, outs[0][0]


def test_two_hosts_killed_and_resumed_train_and_evaluate_like_one_host(tmp_path):
    """2 processes x 2 CPU devices, both SIGKILLed while checkpoint 20 is written, then run
    again: the run resumes and ends as 1 process x 4 devices does (losses, parameters, EMA);
    evaluating it across the 2 processes gives the 1-process loss, bits/dim and samples."""
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    assert _job(one, "train", processes=1, devices=4)[0] == [0]
    assert _job(two, "train", processes=2, devices=2, kill_at=20)[0] == [-9, -9]
    assert max(_losses(two))[0] == 20  # killed after step 20 was logged, before 25
    codes, out = _job(two, "train", processes=2, devices=2)
    assert codes == [0, 0] and "Resumed from step" in out, out
    a, b = _losses(one), _losses(two)
    assert sorted(a) == sorted(b) and len(a) == 9  # 6 train + 3 eval losses
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=str(key))
    trainer = train_lib.Trainer(tiny_toy_config(**MULTIHOST_RUN))
    final = [
        jax.device_get(Checkpointer(Workdir(w).checkpoints, read_only=True).restore(
            trainer.initial_state())[0])
        for w in (one, two)
    ]  # fmt: skip
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6), *final)

    assert _job(one, "eval", processes=1, devices=4)[0] == [0]
    assert _job(two, "eval", processes=2, devices=2)[0] == [0, 0]
    reports = [json.load(open(Workdir(w).report))["checkpoints"]["30"] for w in (one, two)]
    for name in ("loss", "bpd", "nll_nats", "sliced_wasserstein", "energy_distance"):
        np.testing.assert_allclose(reports[1][name], reports[0][name], rtol=1e-5, err_msg=name)
    assert reports[0]["bpd_nfe"] == reports[1]["bpd_nfe"] and reports[1]["num_samples"] == 64
    drawn = [np.load(os.path.join(Workdir(w).eval, "samples_30.npz")) for w in (one, two)]
    assert drawn[0].files == drawn[1].files
    for name in drawn[0].files:
        np.testing.assert_allclose(drawn[1][name], drawn[0][name], rtol=1e-5, atol=1e-6)
