"""Experiment configs: ``get_config()`` in each file returns an ml_collections ConfigDict.

    digits.py                 the offline default (sklearn digits, small DDPM++, VP)
    digits_cond.py            the same, class-conditional with label dropout (classifier-free
                              guidance)
    digits_classifier.py      the noise-conditional digits classifier (classifier guidance)
    toy/                      the MLP on 2-D / 16-D synthetic data, VP and VE; ring8_cond.py
                              class-conditional with classifier-free guidance
    vp/, subvp/, ve/          the CIFAR-10 models of Song et al. (2021), Table 3
    default_*_configs.py      defaults shared by the files above

Files under vp/, subvp/, ve/ and toy/ import ``configs.default_*``: run from the repository
root (``python -m score_sde.main --config configs/...`` puts it on the path).
"""
