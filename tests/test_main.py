"""The command line end to end, on tiny sizes: train a few steps, eval, sample, for each config
family; the paper's CIFAR-10 configs by one training step on small inputs; invalid configs stop
with one line and exit code 2."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import DIGITS_TINY, ROOT, TINY_TOY, config_dict
from PIL import Image

from score_sde.jobs.main import EXIT_CONFIG, run_job

pytestmark = pytest.mark.slow  # end-to-end jobs: CI runs them on python3 (3.11) only


def _report(workdir):
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        return json.load(f)


def test_toy_train_eval_sample_and_eval_resumes(tmp_path, capsys):
    workdir = str(tmp_path)
    cfg = config_dict("toy/ring8_ve.py", {**TINY_TOY, "training.snapshot_sampling": True})
    assert run_job(cfg, workdir, mode="train", progress=False) == 0
    out = capsys.readouterr().out
    assert "Model mlp: 2,498 trainable parameters" in out and "Trained steps 0 to 20" in out
    # The compiles are announced, as a newcomer would otherwise watch a frozen bar for minutes.
    assert re.search(r"Compiling the train step .*\nCompiled the train step in [\d.]+ s", out)
    assert "Compiled the snapshot sampler in" in out
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "train_10.png",
        "train_20.png",
    ]

    assert run_job(cfg, workdir, mode="eval") == 0
    out, err = capsys.readouterr()
    for compiled in ("the eval loss", "the likelihood", "the sampler"):
        assert f"Compiled {compiled} in" in out, compiled
    for bar in ("eval loss: 100%", "bits/dim: 100%", "samples: 100%"):  # with progress bars
        assert bar in err, bar
    assert re.search(r"step 20: loss=\S+, bpd=", out) and "nll_nats" not in out  # in the report
    report = _report(workdir)
    assert sorted(report["checkpoints"]) == ["10", "20"]
    final = report["checkpoints"]["20"]
    for key in ("loss", "bpd", "nll_nats", "sliced_wasserstein", "energy_distance"):
        assert np.isfinite(final[key]), key
    # Continuous 2-D data: bpd is the NLL in bits per dimension, no pixel offset.
    np.testing.assert_allclose(final["bpd"], final["nll_nats"] / (2 * np.log(2)), rtol=1e-5)
    samples = np.load(os.path.join(workdir, "eval", "samples_20.npz"))["samples"]
    assert samples.shape == (400, 2) and np.all(np.isfinite(samples))

    # A second eval finds every checkpoint done and leaves the report as it was.
    capsys.readouterr()
    assert run_job(cfg, workdir, mode="eval") == 0
    assert "Evaluating" not in capsys.readouterr().out and _report(workdir) == report

    assert run_job(cfg, workdir, mode="sample", step=10, num_samples=16) == 0
    got = np.load(os.path.join(workdir, "samples", "sample_10.npz"))["samples"]
    assert got.shape == (16, 2)

    # A checkpoint of another model is refused with the parameter's name (sample reads the EMA).
    wider = config_dict("toy/ring8_ve.py", {**TINY_TOY, "model.width": 32})
    assert run_job(wider, workdir, mode="sample") == EXIT_CONFIG
    err = capsys.readouterr().err
    want = r"parameter ema_params/\S+ has shape \(16,\) in the checkpoint but \(32,\)"
    assert re.search(want, err)


def _one_snapshot(n_iters: int, *, batch_size: int, chunk: int, every: int) -> dict:
    """Training overrides: ``n_iters`` steps of ``batch_size`` in calls of ``chunk`` steps, one
    snapshot (at the end), logs and rolling checkpoints every ``every`` steps."""
    return {
        "training.batch_size": batch_size,
        "training.n_iters": n_iters,
        "training.n_jitted_steps": chunk,
        "training.snapshot_freq": n_iters,
        "training.snapshot_freq_for_preemption": every,
        "training.log_freq": every,
        "training.eval_freq": n_iters,
    }


def test_class_conditional_toy_with_classifier_free_guidance(tmp_path):
    """Label dropout trains both the conditional and the null-label score: guided samples land
    on the requested component of the ring, null-label ones (scale 0) spread over all 8."""
    workdir = str(tmp_path)
    short = {
        **_one_snapshot(2000, batch_size=256, chunk=50, every=500),
        "training.snapshot_sampling": False,
        "model.width": 64,
        "model.num_blocks": 2,
        "optim.warmup": 100,
        "sampling.n_steps": 100,
        "eval.batch_size": 800,
        "eval.num_samples": 800,
        "eval.enable_bpd": False,  # over 10,000 points of a sharp trained density: minutes
    }
    assert run_job(config_dict("toy/ring8_cond.py", short), workdir, mode="train") == 0
    assert run_job(config_dict("toy/ring8_cond.py", short), workdir, mode="eval") == 0
    guided = _report(workdir)["latest"]
    assert guided["class_accuracy"] > 0.9, guided
    os.remove(os.path.join(workdir, "eval", "report.json"))
    unguided = {**short, "sampling.guidance_scale": 0.0}
    assert run_job(config_dict("toy/ring8_cond.py", unguided), workdir, mode="eval") == 0
    null = _report(workdir)["latest"]
    assert null["class_accuracy"] < 0.3 and null["sliced_wasserstein"] < 0.5, null


def test_classifier_guidance_from_a_classifier_workdir(tmp_path, capsys):
    """An unconditional ring model sampled with sampling.classifier_workdir: the samples cycle
    through the classifier's 8 classes and land on the class asked for; scale 0 does not
    guide. A workdir without a classifier stops at once, naming the field."""
    score_dir, clf_dir = str(tmp_path / "score"), str(tmp_path / "clf")
    small = {"model.width": 64, "model.num_blocks": 2, "optim.warmup": 100}
    score = {
        **small,
        **_one_snapshot(2000, batch_size=256, chunk=50, every=1000),
        "training.snapshot_sampling": False,
        "sampling.n_steps": 100,
        "eval.batch_size": 800,
        "eval.num_samples": 800,
        "eval.enable_bpd": False,
    }
    clf = {**small, **_one_snapshot(4000, batch_size=256, chunk=50, every=1000)}
    assert run_job(config_dict("toy/ring8_vp.py", score), score_dir, mode="train") == 0
    assert run_job(config_dict("toy/ring8_classifier.py", clf), clf_dir, mode="train") == 0

    def guided_eval(scale):
        report = os.path.join(score_dir, "eval", "report.json")
        if os.path.exists(report):
            os.remove(report)
        over = {**score, "sampling.classifier_workdir": clf_dir, "sampling.classifier_scale": scale}
        assert run_job(config_dict("toy/ring8_vp.py", over), score_dir, mode="eval") == 0
        return _report(score_dir)["latest"]

    guided, unguided = guided_eval(1.0), guided_eval(0.0)
    assert guided["class_accuracy"] > 0.9, guided  # measured 0.98; chance 0.125
    assert unguided["class_accuracy"] < 0.3, unguided
    over = {**score, "sampling.classifier_workdir": clf_dir}
    assert run_job(config_dict("toy/ring8_vp.py", over), score_dir, mode="sample") == 0
    got = np.load(os.path.join(score_dir, "samples", "sample_2000.npz"))["samples"]
    assert got.shape == (64, 2) and np.all(np.isfinite(got))

    capsys.readouterr()
    for wrong, extra, needle in [
        (str(tmp_path / "none"), {}, "No checkpoint"),
        (score_dir, {}, "'mlp' model"),
        (clf_dir, {"sde.beta_max": 10.0}, "trained with VPSDE(beta_min=0.1, beta_max=20.0"),
    ]:
        over = {**score, **extra, "sampling.classifier_workdir": wrong}
        assert run_job(config_dict("toy/ring8_vp.py", over), score_dir, mode="sample") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"config.sampling.classifier_workdir={wrong!r}") and needle in err


def test_digits_classifier_trains_and_reports_accuracy(tmp_path):
    workdir = str(tmp_path)
    small = {
        **_one_snapshot(300, batch_size=32, chunk=10, every=100),
        "training.eps": 1e-3,
        "optim.warmup": 20,
        "model.nf": 8,
        "model.ch_mult": (1, 2),
        "model.attn_resolutions": (),
        "eval.batch_size": 300,
    }
    cfg = config_dict("digits_classifier.py", small)
    assert run_job(cfg, workdir, mode="train", progress=False) == 0
    assert run_job(cfg, workdir, mode="eval") == 0
    result = _report(workdir)["latest"]
    # Chance is 0.1 and the loss log 10 = 2.30; near-clean digits are told apart after 300 steps.
    assert result["accuracy_clean"] > 0.3 and result["accuracy"] > 0.15, result
    assert result["loss"] < 2.2, result


def test_digits_unet_train_eval_sample(tmp_path):
    """The offline default's family (sklearn digits, NCSN++ U-Net, VP) on a tiny U-Net."""
    workdir = str(tmp_path)
    cfg = config_dict("digits.py", DIGITS_TINY)
    assert run_job(cfg, workdir, mode="train", progress=False) == 0
    assert run_job(cfg, workdir, mode="eval") == 0
    result = _report(workdir)["checkpoints"]["4"]
    # Dequantized 8-bit images: bpd = -log2 p / D + 7 (centred data) is positive and, for an
    # almost untrained network, far from the ~1-2 bits/dim a trained one reaches.
    assert 2 < result["bpd"] < 30
    np.testing.assert_allclose(result["bpd"], result["nll_nats"] / (256 * np.log(2)) + 7, rtol=1e-5)
    grid = np.asarray(Image.open(os.path.join(workdir, "eval", result["grid"])))
    # 8 grey 16x16 samples, 3 per row, enlarged 3x to 48x48 and padded by 2
    assert grid.shape == (3 * 50 + 2, 3 * 50 + 2)
    got = np.load(os.path.join(workdir, "eval", "samples_4.npz"))["samples"]
    assert got.shape == (8, 16, 16, 1) and got.min() >= 0 and got.max() <= 1


# DDPM++ (VP and sub-VP differ only in the SDE) is the digits test's family; these add NCSN++
# (FIR, residual input, Fourier features, VE) and Ho et al.'s DDPM.
PAPER_CONFIGS = ["ve/cifar10_ncsnpp_continuous.py", "vp/cifar10_ddpm.py"]


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_config_trains_one_step_on_small_inputs(config, tmp_path, capsys):
    """The CIFAR-10 architectures (narrow, two levels, one block each) on 16x16 RGB digits."""
    small = {
        "data.dataset": "digits",
        "data.image_size": 16,
        "model.nf": 8,
        "model.ch_mult": (1, 2),
        "model.num_res_blocks": 1,
        "training.batch_size": 2,
        "training.n_iters": 1,
        "training.n_jitted_steps": 1,
        "training.snapshot_freq": 1,
        "training.snapshot_freq_for_preemption": 1,
        "training.log_freq": 1,
        "training.eval_freq": 2,  # none: the loss on an eval batch is the digits test's
        "training.snapshot_sampling": False,
    }
    assert run_job(config_dict(config, small), str(tmp_path), progress=False) == 0
    out = capsys.readouterr().out
    assert "Trained steps 0 to 1" in out
    with open(os.path.join(tmp_path, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == 1 and rows[0]["step"] == 1 and np.isfinite(rows[0]["loss"])


def test_cli_invalid_config_is_one_line_and_exit_code_2(tmp_path):
    config = os.path.join(ROOT, "configs", "digits.py")
    cmd = [sys.executable, "-m", "score_sde", f"--config={config}", f"--workdir={tmp_path}"]
    proc = subprocess.run(
        [*cmd, "--config.sde.beta_max=0.05"], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.sde" in lines[0] and "beta_max=0.05" in lines[0], proc.stderr
    assert not os.listdir(tmp_path)  # nothing was started


def test_console_script_from_another_folder_reports_a_typo_in_one_line(tmp_path):
    """``score-sde`` finds the ``configs`` package of a config under configs/vp/ from any
    folder, and a misspelt override is one line naming the field (exit code 2)."""
    script = os.path.join(os.path.dirname(sys.executable), "score-sde")
    config = os.path.join(ROOT, "configs", "vp", "cifar10_ddpm.py")
    base = [script, f"--config={config}", f"--workdir={tmp_path / 'run'}"]
    typo = subprocess.run(
        [*base, "--config.sde.bta_max=1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert typo.returncode == 2 and typo.stderr.count("\n") == 1, typo.stderr
    assert "bta_max" in typo.stderr and 'Did you mean "beta_max"' in typo.stderr
    invalid = subprocess.run(
        [*base, "--config.sde.beta_min=-1"], capture_output=True, text=True, cwd=tmp_path
    )
    assert invalid.returncode == 2 and "config.sde (name='vpsde')" in invalid.stderr
    assert "got beta_min=-1.0" in invalid.stderr and invalid.stderr.count("\n") == 1
    for flag in ("--config.sde.N=None", "--config.training.n_iters=abc", "--workdri=x"):
        bad = subprocess.run([*base, flag], capture_output=True, text=True, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert flag.split("=")[0].lstrip("-") in bad.stderr and "docs/config.md" in bad.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_flags_and_exits_0(flag, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "score-sde")
    proc = subprocess.run([script, flag], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in ("--config:", "--workdir:", "--mode:", "--[no]fid:", "--[no]multihost:"):
        assert name in proc.stdout, name
