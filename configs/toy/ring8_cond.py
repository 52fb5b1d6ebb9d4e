"""Class-conditional MLP on the ring of 8 Gaussians (label: the component), VP SDE, trained with
label dropout 0.2 for classifier-free guidance; eval reports the guided samples' class accuracy."""

from configs.default_toy_configs import get_default_configs


def get_config():
    config = get_default_configs("ring8", "vpsde")
    config.model.num_classes = 8
    config.training.label_dropout = 0.2
    config.sampling.guidance_scale = 1.5
    return config
