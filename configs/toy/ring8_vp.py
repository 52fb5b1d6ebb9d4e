"""The MLP on the ring of 8 Gaussians (2-D, exact density), VP SDE."""

from configs.default_toy_configs import get_default_configs


def get_config():
    return get_default_configs("ring8", "vpsde")
