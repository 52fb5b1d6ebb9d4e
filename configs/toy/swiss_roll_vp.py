"""The MLP on the 2-D swiss roll, VP SDE."""

from configs.default_toy_configs import get_default_configs


def get_config():
    return get_default_configs("swiss_roll", "vpsde")
