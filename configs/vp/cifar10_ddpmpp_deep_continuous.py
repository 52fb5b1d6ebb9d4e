"""DDPM++ cont. deep (VP) on CIFAR-10: FID 2.41 (Song et al. 2021, Table 3)."""

from configs.default_cifar10_configs import get_default_configs, set_ddpmpp


def get_config():
    config = get_default_configs()
    training = config.training
    config.sde.name = "vpsde"
    training.continuous = True
    training.reduce_mean = True
    training.n_iters = 950_001

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "euler_maruyama"
    sampling.corrector = "none"

    config.data.centered = True
    set_ddpmpp(config.model, num_res_blocks=8)
    return config
