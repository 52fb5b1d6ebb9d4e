"""DDPM++ cont. (sub-VP) on CIFAR-10: FID 2.61, 3.02 bits/dim (Song et al. 2021, Tables 2–3).

The VP config with the sub-VP SDE: nothing else differs."""

from configs.vp.cifar10_ddpmpp_continuous import get_config as get_vp_config


def get_config():
    config = get_vp_config()
    config.sde.name = "subvpsde"
    return config
