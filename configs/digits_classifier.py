"""The noise-conditional classifier p_t(y | x_t) of the digits (for classifier guidance of the
configs/digits.py model): the encoder half of its U-Net, trained by cross-entropy at t ~ U(eps, T).

    score-sde --config configs/digits_classifier.py --workdir runs/digits_classifier --mode train
"""

from configs import as_classifier, digits


def get_config():
    config = as_classifier(digits.get_config(), "classifier", num_classes=10)
    config.training.n_iters = 1000
    return config
