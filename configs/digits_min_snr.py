"""The digits default (configs/digits.py) with min-SNR-gamma loss weighting (Hang et al. 2023,
gamma = 5): the eps loss weighted by min(SNR, 5) / SNR. Same network, SDE, steps and sampler."""

from configs import digits


def get_config():
    config = digits.get_config()
    config.training.min_snr_gamma = 5.0
    return config
