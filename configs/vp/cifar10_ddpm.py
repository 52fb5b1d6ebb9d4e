"""DDPM (Ho et al. 2020) on CIFAR-10: discrete VP chain, FID 3.17 (Song et al. 2021, Table 3)."""

from configs.default_cifar10_configs import get_default_configs


def get_config():
    config = get_default_configs()
    training = config.training
    config.sde.name = "vpsde"
    training.continuous = False
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "ancestral"
    sampling.corrector = "none"

    config.data.centered = True

    model = config.model
    model.name = "ddpm"
    model.parameterization = "eps"
    model.scale_by_sigma = False
    model.ema_rate = 0.9999
    model.nf = 128
    model.ch_mult = (1, 2, 2, 2)
    model.num_res_blocks = 2
    model.attn_resolutions = (16,)
    model.resamp_with_conv = True
    model.embedding_type = "positional"
    return config
