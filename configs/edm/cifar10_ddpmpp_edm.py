"""EDM on CIFAR-10, unconditional (Karras et al. 2022, Table 7's "VP" column, config F: FID 1.97
with 35 NFE): DDPM++ with EDM's preconditioning and loss, 200 Mimg at batch 512.

EDM's own noise process x = x0 + sigma n is the VE SDE with sigma from 0.002 to 80; the sampler is
its Heun method on the rho = 7 grid, 18 noise levels (35 score evaluations). Not reproduced
here: EDM's non-leaky augmentation (probability 0.12), so expect a somewhat worse FID (not
measured: this machine has no GPU).
"""

from configs.default_cifar10_configs import get_default_configs, set_ddpmpp


def get_config():
    config = get_default_configs()
    config.sde.name = "vesde"
    config.sde.sigma_min = 0.002
    config.sde.sigma_max = 80.0

    training = config.training
    training.batch_size = 512
    training.n_iters = 390_625  # 200 Mimg / 512
    training.snapshot_freq = 25_000
    training.continuous = True
    training.reduce_mean = True  # the loss's scale only: Adam does not see it
    training.edm_loss = True
    training.p_mean = -1.2
    training.p_std = 1.2

    sampling = config.sampling
    sampling.method = "heun"
    sampling.n_steps = 18
    sampling.options = {"time_grid": "edm", "rho": 7.0}

    config.data.centered = True

    model = config.model
    set_ddpmpp(model, num_res_blocks=4)
    model.ch_mult = (2, 2, 2)  # EDM's DDPM++: 128 x (2, 2, 2), attention at 16: 55.7M parameters
    model.dropout = 0.13
    model.parameterization = "edm"
    model.sigma_data = 0.5
    model.ema_rate = 0.99929  # half-life 0.5 Mimg at batch 512: 0.5 ** (512 / 500_000)
    model.ema_warmup = True  # EDM ramps its EMA up at the start (ema_rampup_ratio 0.05)

    optim = config.optim
    optim.lr = 1e-3
    optim.warmup = 19_531  # EDM's 10 Mimg learning-rate ramp-up at batch 512
    optim.grad_clip = 0.0  # EDM does not clip
    return config
