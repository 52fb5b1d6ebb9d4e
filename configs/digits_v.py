"""The digits default (configs/digits.py) with a v-prediction network (Salimans & Ho 2022):
v = alpha eps - sigma x0. Same loss, SDE, steps and sampler as the default."""

from configs import digits


def get_config():
    config = digits.get_config()
    config.model.parameterization = "v"
    return config
