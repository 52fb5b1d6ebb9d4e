"""Class-conditional digits for classifier-free guidance: the configs/digits.py model with a
label embedding, trained with 10% of the labels replaced by the null label; samples run through
the classes with guidance scale 2 (s(x, null) + 2 (s(x, y) - s(x, null))).

    score-sde --config configs/digits_cond.py --workdir runs/digits_cond --mode train
"""

from configs import digits


def get_config():
    config = digits.get_config()
    config.model.num_classes = 10
    config.training.label_dropout = 0.1
    config.sampling.guidance_scale = 2.0
    return config
