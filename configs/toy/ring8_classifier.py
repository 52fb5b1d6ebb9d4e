"""The noise-conditional classifier p_t(y | x_t) of the ring of 8 Gaussians (label: the
component), VP SDE: an MLP trained by cross-entropy at t ~ U(eps, T), for classifier guidance of
the configs/toy/ring8_vp.py model:

    score-sde --config configs/toy/ring8_classifier.py --workdir runs/ring8_clf --mode train
    score-sde --config configs/toy/ring8_vp.py --workdir runs/ring8 --mode sample \
        --config.sampling.classifier_workdir=runs/ring8_clf
"""

from configs import as_classifier
from configs.default_toy_configs import get_default_configs


def get_config():
    config = as_classifier(get_default_configs("ring8", "vpsde"), "mlp_classifier", num_classes=8)
    config.training.n_iters = 5000
    config.training.snapshot_freq = 5000
    return config
