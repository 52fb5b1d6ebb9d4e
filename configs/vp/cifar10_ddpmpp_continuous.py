"""DDPM++ cont. (VP) on CIFAR-10: FID 2.55, 3.16 bits/dim (Song et al. 2021, Tables 2–3)."""

from configs.default_cifar10_configs import get_default_configs, set_ddpmpp


def get_config():
    config = get_default_configs()
    training = config.training
    config.sde.name = "vpsde"
    training.continuous = True
    training.reduce_mean = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"

    config.data.centered = True
    set_ddpmpp(config.model, num_res_blocks=4)
    return config
