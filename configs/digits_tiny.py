"""configs/digits.py at the size of a smoke test: a one-level U-Net of 8 channels (10.6k
parameters, no attention) trained for 100 steps of 16 images, then evaluated on 64 test images
and 16 samples, without the image metrics. A run takes about a minute on a 2-core CPU (most of
it compiling) and its samples are speckle, not digits: it checks that a set-up works end to end.
The notebooks' CI mode (``SCORE_SDE_QUICK=1``) trains it, so that they share compiled programs.

    score-sde --config configs/digits_tiny.py --workdir /tmp/digits_tiny --mode train
"""

from configs import digits


def get_config():
    config = digits.get_config()
    training = config.training
    training.n_iters = 100
    training.batch_size = 16
    training.n_jitted_steps = 10
    training.log_freq = 10
    training.eval_freq = 50
    training.snapshot_freq = 50
    training.snapshot_freq_for_preemption = 50

    config.sampling.n_steps = 10  # the training snapshots' sampler

    model = config.model
    model.nf = 8
    model.ch_mult = (1,)
    model.attn_resolutions = ()
    model.resblock_type = "ddpm"

    config.optim.warmup = 10
    config.optim.lr = 2e-3

    evaluate = config.eval
    evaluate.batch_size = 64
    evaluate.bpd_split = "test[:64]"  # eval loss and bits/dim: the first 64 of 297 test images
    evaluate.rtol = evaluate.atol = 1e-2
    evaluate.num_samples = 16
    evaluate.num_fid_samples = 0
    return config
