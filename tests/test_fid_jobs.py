"""The image-quality jobs end to end, with random Inception weights (no torch): reference
statistics (--mode fid_stats) equal to the features' own moments, eval reporting FID, KID, IS,
precision/recall and density/coverage and resuming an interrupted FID evaluation to the same
numbers, --mode sample --fid, the null report without weights, and one process against two."""

import json
import os
import shutil

import numpy as np
import pytest
from helpers import DIGITS_TINY, ROOT, as_flags, config_dict, free_port, run_processes, write_folder

from score_sde import datasets, evaluation
from score_sde.evaluation import streaming
from score_sde.jobs import fid_eval
from score_sde.jobs.main import EXIT_CONFIG, run_job
from score_sde.jobs.validation import from_config_dict

pytestmark = pytest.mark.slow  # end-to-end jobs: CI runs them on python3 (3.11) only

# 24 test-split digits as the reference, in batches of 16 (the last one padded).
STATS = {"eval.fid_split": "test", "eval.fid_reference_size": 24, "eval.batch_size": 16}
FID = {
    **DIGITS_TINY,
    **STATS,
    "eval.enable_sampling": True,
    "eval.num_fid_samples": 32,  # 2 batches of 16
    "eval.fid_subsample": 20,
    "eval.num_samples": 8,
    "eval.enable_bpd": False,
}


def _report(workdir):
    with open(os.path.join(workdir, "eval", "report.json")) as f:
        return json.load(f)


def test_fid_stats_equal_the_moments_of_the_features(random_inception, capsys):
    cfg = config_dict("digits.py", STATS | {"eval.fid_subsample": 20})
    assert run_job(cfg, None, mode="fid_stats", progress=False) == 0
    path = fid_eval.reference_path(from_config_dict(cfg, device_count=1))
    assert (
        path.startswith(random_inception) and f"Wrote {path}: 24 images" in capsys.readouterr().out
    )
    images, _ = datasets.get_source("digits", split="test", image_size=16, channels=1).read(
        np.arange(24)
    )
    features = evaluation.inception_features(images)
    with np.load(path) as ref:
        assert int(ref["n"]) == 24
        np.testing.assert_allclose(ref["mu"], features.mean(0), rtol=1e-5, atol=1e-6)
        cov = np.cov(features.astype(np.float64), rowvar=False)
        np.testing.assert_allclose(ref["sigma"], cov, rtol=1e-4, atol=1e-6 * np.abs(cov).max())
        np.testing.assert_allclose(ref["features"], features[:20], atol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workdir with a 4-step tiny digits U-Net."""
    workdir = str(tmp_path_factory.mktemp("digits"))
    assert run_job(config_dict("digits.py", FID), workdir, mode="train", progress=False) == 0
    return workdir


def test_eval_reports_image_metrics_and_resumes_to_the_same(
    trained, random_inception, tmp_path, monkeypatch, capsys
):
    cfg = config_dict("digits.py", FID)
    whole = str(tmp_path / "whole")
    shutil.copytree(trained, whole)
    assert run_job(cfg, whole, mode="eval", progress=False) == 0
    metrics = _report(whole)["checkpoints"]["4"]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage"):
        assert np.isfinite(metrics[key]), key
    assert metrics["fid"] > 0 and metrics["fid_num_samples"] == 32
    assert metrics["inception_score"] >= 1.0  # random weights with an FC: logits exist
    assert os.listdir(os.path.join(whole, "eval", "tensorboard"))

    # Interrupted after the first of the two batches: the partial statistics are kept, and the
    # rerun finishes from them to the uninterrupted numbers.
    cut = str(tmp_path / "cut")
    shutil.copytree(trained, cut)
    monkeypatch.setattr(fid_eval, "SAVE_EVERY", 0.0)
    update = streaming.Accumulator.update
    calls = []

    def interrupt(self, features, logits):
        calls.append(len(features))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return update(self, features, logits)

    monkeypatch.setattr(streaming.Accumulator, "update", interrupt)
    capsys.readouterr()
    assert run_job(cfg, cut, mode="eval", progress=False) == 130  # Ctrl-C: one line, no traceback
    assert capsys.readouterr().err.strip() == "Interrupted (SIGINT)."
    with np.load(os.path.join(cut, "eval", "fid_partial_4.npz")) as partial:
        assert int(partial["batches_done"]) == 1 and int(partial["stats_n"]) == 16
    monkeypatch.setattr(streaming.Accumulator, "update", update)
    capsys.readouterr()
    assert run_job(cfg, cut, mode="eval", progress=False) == 0
    assert "Resuming the FID evaluation from batch 2" in capsys.readouterr().out
    resumed = _report(cut)["checkpoints"]["4"]
    for key in ("fid", "kid", "kid_std", "inception_score", "precision", "recall", "density"):
        assert resumed[key] == metrics[key], key
    assert not os.path.exists(os.path.join(cut, "eval", "fid_partial_4.npz"))


def test_sample_fid_and_no_weights(trained, random_inception, tmp_path, monkeypatch, capsys):
    cfg = config_dict("digits.py", FID)
    assert run_job(cfg, trained, mode="sample", num_samples=16, fid=True, progress=False) == 0
    with open(os.path.join(trained, "samples", "sample_4_metrics.json")) as f:
        result = json.load(f)
    assert result["num_samples"] == 16 and result["fid_num_samples"] == 16
    assert np.isfinite(result["fid"]) and np.isfinite(result["precision"])

    # Without weights: the eval still runs, reports null and says once how to get them.
    monkeypatch.setenv("SCORE_SDE_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(evaluation.weights, "fid_helper_file", lambda: None)
    workdir = str(tmp_path / "w")
    shutil.copytree(trained, workdir)
    capsys.readouterr()
    assert run_job(cfg, workdir, mode="eval", progress=False) == 0
    out = capsys.readouterr().out
    assert out.count("score-sde-inception --from fid-helper") == 1
    assert _report(workdir)["checkpoints"]["4"]["fid"] is None
    bad = config_dict("digits.py", FID | {"eval.inception_weights": str(tmp_path / "x.npz")})
    assert run_job(bad, workdir, mode="sample", fid=True, progress=False) == EXIT_CONFIG
    assert "config.eval.inception_weights" in capsys.readouterr().err
    wrong = config_dict("digits.py", FID | {"eval.fid_split": "validation"})
    assert run_job(wrong, None, mode="fid_stats", progress=False) == EXIT_CONFIG


def test_two_processes_compute_the_statistics_of_one(random_inception, tmp_path):
    """Two jax.distributed processes, each running its half of every batch through Inception,
    save the statistics one process computes."""
    config = os.path.join(ROOT, "configs", "digits.py")
    port, out = free_port(), str(tmp_path / "two.npz")
    overrides = STATS | {"eval.fid_stats": out}
    flags = [
        f"--config={config}",
        "--mode=fid_stats",
        "--multihost",
        f"--coordinator_address=127.0.0.1:{port}",
        "--num_processes=2",
        "--progress=false",
        *as_flags(overrides),
    ]
    run_processes(flags)
    one = str(tmp_path / "one.npz")
    assert run_job(config_dict("digits.py", STATS | {"eval.fid_stats": one}), None,
                   mode="fid_stats", progress=False) == 0  # fmt: skip
    with np.load(one) as a, np.load(out) as b:
        assert int(a["n"]) == int(b["n"]) == 24
        for key in ("mu", "sigma", "features"):
            np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_fid_stats_of_an_image_folder_and_a_tfds_set(random_inception, tmp_path):
    """Every source the project reads: a folder of images and a tensorflow-datasets set."""
    import tensorflow_datasets as tfds

    write_folder(tmp_path)
    folder = {"data.dataset": "image_folder", "data.data_dir": str(tmp_path),
              "data.num_channels": 3, "eval.fid_split": "train"}  # fmt: skip
    assert run_job(config_dict("digits.py", folder), None, mode="fid_stats", progress=False) == 0
    path = fid_eval.reference_path(from_config_dict(config_dict("digits.py", folder)))
    assert os.path.basename(path).startswith("image_folder_train_16px_3ch_")
    ref = fid_eval.read_reference(path)
    assert ref.n == 5 and ref.features.shape == (5, 2048)
    assert np.isfinite(ref.sigma).all()

    cifar = {"eval.batch_size": 8, "eval.fid_split": "test"}
    with tfds.testing.mock_data(num_examples=12):
        cfg = config_dict("vp/cifar10_ddpmpp_continuous.py", cifar)
        assert run_job(cfg, None, mode="fid_stats", progress=False) == 0
    ref = fid_eval.read_reference(fid_eval.reference_path(from_config_dict(cfg)))
    assert ref.n == 12 and os.path.basename(ref.path) == "cifar10_test_32px_3ch.npz"
