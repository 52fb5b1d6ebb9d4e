"""NCSN++ cont. (VE) on CIFAR-10: FID 2.38 with the PC sampler (Song et al. 2021, Table 3)."""

from configs.default_cifar10_configs import get_default_configs, set_ncsnpp


def get_config():
    config = get_default_configs()
    training = config.training
    config.sde.name = "vesde"
    training.continuous = True

    sampling = config.sampling
    sampling.method = "pc"
    sampling.predictor = "reverse_diffusion"
    sampling.corrector = "langevin"

    set_ncsnpp(config.model, num_res_blocks=4)
    return config
