"""The MLP on a 16-D mixture of 4 Gaussians (exact density), VP SDE."""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs("gmm16", "vpsde")
    config.model.width = 512
    return config
