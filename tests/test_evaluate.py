"""The eval job (score_sde.jobs.evaluate): which checkpoints it evaluates, the conditional
likelihood it reports, and an eval running beside training."""

import numpy as np
import pytest
from helpers import TINY_TOY, config_dict

from score_sde.jobs import evaluate
from score_sde.jobs.main import run_job
from score_sde.jobs.validation import from_config_dict


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
