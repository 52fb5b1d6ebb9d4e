"""The digits default (configs/digits.py) with EDM's preconditioning and loss (Karras et al.
2022, Table 1): the network is F in D = c_skip x + c_out F(c_in x), trained with ln sigma ~
N(-1.2, 1.2²) and weight (sigma² + sigma_data²) / (sigma sigma_data)². Same SDE, steps and
sampler as the default, for a like-for-like comparison."""

from configs import digits


def get_config():
    config = digits.get_config()
    config.model.parameterization = "edm"
    config.model.sigma_data = 0.5  # EDM's value for every data set (the digits' std is 0.64)
    config.training.edm_loss = True
    config.training.p_mean = -1.2
    config.training.p_std = 1.2
    return config
