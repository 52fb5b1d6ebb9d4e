"""Experiment configs: ``get_config()`` in each file returns an ml_collections ConfigDict.

    digits.py                 the offline default (sklearn digits, small DDPM++, VP)
    digits_cond.py            the same, class-conditional with label dropout (classifier-free
                              guidance)
    digits_classifier.py      the noise-conditional digits classifier (classifier guidance)
    toy/                      the MLP on 2-D / 16-D synthetic data, VP and VE; ring8_cond.py
                              class-conditional with classifier-free guidance, ring8_classifier.py
                              its noise-conditional classifier
    vp/, subvp/, ve/          the CIFAR-10 models of Song et al. (2021), Table 3
    default_*_configs.py      defaults shared by the files above

Files under vp/, subvp/, ve/ and toy/ import ``configs.default_*``: run from the repository
root (``python -m score_sde --config configs/...`` puts it on the path).
"""


def as_classifier(config, model_name: str, num_classes: int):
    """``config`` turned into a noise-conditional classifier's: model ``model_name`` with
    ``num_classes`` logits, trained by cross-entropy, with no samples nor bits/dim."""
    config.model.name = model_name
    config.model.num_classes = num_classes
    config.training.snapshot_sampling = False
    config.eval.enable_bpd = False
    config.eval.enable_sampling = False
    return config
