"""The eval job (score_sde.jobs.evaluate): which checkpoints it evaluates, the conditional
likelihood it reports, and an eval running beside training."""

import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import DIGITS_TINY, TINY_TOY, config_dict

from score_sde.jobs import evaluate, fid_eval
from score_sde.jobs.evaluator import Evaluator
from score_sde.jobs.main import run_job
from score_sde.jobs.validation import from_config_dict

# Two batches of 8 FID samples, 5 sampler steps.
FID_SMALL = {"eval.batch_size": 8, "eval.num_fid_samples": 16, "eval.fid_subsample": 10}


@pytest.mark.parametrize(
    "begin,end,want",
    [
        (0, -1, [5, 10, 15, 20, 23]),
        (10, -1, [10, 15, 20, 23]),
        (0, 12, [5, 10]),
        (15, 20, [15, 20]),
    ],
)
def test_the_job_evaluates_snapshots_between_begin_and_end_ckpt(begin, end, want):
    """Snapshots (every snapshot_freq, and the last step) with begin_ckpt <= step <= end_ckpt
    (-1: no upper bound); rolling checkpoints between snapshots are skipped."""
    over = {"training.n_iters": 23, "training.snapshot_freq": 5, "training.n_jitted_steps": 1}
    over |= {"training.snapshot_freq_for_preemption": 1, "training.log_freq": 1}
    over |= {"training.eval_freq": 1, "eval.begin_ckpt": begin, "eval.end_ckpt": end}
    cfg = from_config_dict(config_dict("toy/ring8_vp.py", over), device_count=1)
    assert [s for s in range(1, 24) if evaluate._wanted(cfg, s)] == want


@pytest.mark.slow
def test_conditional_bits_per_dim_condition_on_the_data_labels(tmp_path):
    """The eval's log-density of a class-conditional model is log p(x | y) for the batch's
    labels: the likelihood of ``score_fn(x, t, y)``; other labels give other values."""
    import jax

    from score_sde import likelihood

    longer = {"training.n_iters": 300, "training.snapshot_freq": 300, "training.eval_freq": 300}
    config = config_dict("toy/ring8_cond.py", {**TINY_TOY, **longer})
    assert run_job(config, str(tmp_path), mode="train", progress=False) == 0
    cfg = from_config_dict(config, device_count=1)
    evaluator = evaluate.Evaluator(cfg, str(tmp_path))
    (state, _), exp = evaluator.restore(), evaluator.exp
    x = np.asarray([[2.0, 0.0], [0.0, 2.0], [-1.4, -1.4], [0.1, 0.2]], np.float32)
    y = np.asarray([0, 2, 5, 7], np.int32)
    batch = {"x": x, "label": y, "mask": np.ones(4, bool)}
    key = jax.random.key(3)
    lp, _, _, _ = evaluator.logp(state, batch, key)
    _, ode_key = jax.random.split(key)

    def direct(labels):
        score_fn = exp.score_fn(state.ema_params, state.rest, labels)
        return likelihood.log_likelihood(
            ode_key, exp.sde, score_fn, x, rtol=cfg.eval.rtol, atol=cfg.eval.atol, eps=cfg.eval.eps
        )[0]

    np.testing.assert_allclose(lp, direct(y), rtol=1e-6)
    assert np.all(np.abs(np.asarray(direct((y + 1) % 8)) - np.asarray(lp)) > 1e-4)


@pytest.mark.slow
def test_eval_beside_training_picks_up_checkpoints_as_they_appear(tmp_path):
    """An eval job started before training finishes waits, evaluates each new snapshot as it
    lands, and stops once the final step is evaluated."""
    import threading

    from score_sde.jobs.train import train

    workdir = str(tmp_path)
    first = config_dict("toy/ring8_vp.py", {**TINY_TOY, "training.n_iters": 10})
    full = from_config_dict(config_dict("toy/ring8_vp.py", TINY_TOY), device_count=1)
    train(from_config_dict(first, device_count=1), workdir, progress=False)  # snapshot 10
    result = {}
    job = threading.Thread(
        target=lambda: result.update(
            evaluate.evaluate(full, workdir, poll_seconds=0.2, timeout_seconds=120)
        )
    )
    job.start()
    train(full, workdir, progress=False)  # resumes at 10, writes 20 while eval waits
    job.join(timeout=300)
    assert not job.is_alive()
    assert sorted(result["checkpoints"], key=int) == ["10", "20"]
    assert result["latest"]["step"] == 20 and np.isfinite(result["latest"]["bpd"])


class _PixelInception:
    """A stand-in for the Inception: each image's 2048 "features" are its mean pixel."""

    has_logits = False

    def outputs(self, images):
        means = images.reshape(len(images), -1).mean(-1, dtype=np.float32)
        return np.repeat(means[:, None], 2048, axis=1), None


def test_the_fid_sampler_is_one_cacheable_program_and_nan_samples_still_warn(tmp_path):
    """The eval's FID sampler is jitted with no host callback (XLA caches no program with one
    on disk, and every eval job would compile its sampler again); samples that come out NaN
    are still reported, after the program, once per batch."""
    cfg = from_config_dict(config_dict("digits.py", DIGITS_TINY | FID_SMALL), device_count=1)
    ev = Evaluator(cfg, str(tmp_path), ckpt=object())
    key_data = np.asarray(jax.random.key_data(jax.random.key(0)))
    args = (ev.exp.params, ev.exp.rest, key_data, None)
    assert "callback" not in ev.draw_uint8.fn.lower(*args).as_text()
    nan_params = jax.tree.map(lambda p: jnp.full_like(p, jnp.nan), ev.exp.params)
    images, count = ev.draw_uint8(nan_params, ev.exp.rest, key_data, None)
    chex.assert_shape(images, (8, 16, 16, 1))
    assert int(count) == 8

    ref = fid_eval.Reference(np.zeros(2048), np.eye(2048), 24, None, "reference")
    state = types.SimpleNamespace(ema_params=nan_params, rest=ev.exp.rest)
    with pytest.warns(RuntimeWarning, match="8 of 8 samples are not finite") as caught:
        fid_eval.evaluate_samples(
            ev, state, 4, str(tmp_path), _PixelInception(), ref, progress=False
        )
    assert len([w for w in caught if "not finite" in str(w.message)]) == 2  # two batches of 8
