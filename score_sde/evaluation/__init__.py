"""Image-quality metrics: the FID Inception-v3 (Flax NNX, equal to pytorch-fid's), FID, KID,
Inception Score, precision/recall and density/coverage.

    from score_sde import evaluation
    features = evaluation.inception_features(images)  # uint8 NHWC, any size, 1 or 3 channels
    stats = evaluation.FeatureStats.from_features(features)
    fid = evaluation.frechet_distance(stats.mean, stats.cov, ref_mu, ref_sigma)

The weights are converted once from a torch file (``score-sde-inception``, see ``weights``);
run time is pure JAX.
"""

from score_sde.evaluation.features import Inception, inception_features, preprocess
from score_sde.evaluation.inception import CLASSES, FEATURES, RESOLUTION, InceptionV3
from score_sde.evaluation.knn import density_coverage, precision_recall
from score_sde.evaluation.stats import (
    FeatureStats,
    InceptionScoreStats,
    feature_stats,
    fid_from_stats,
    frechet_distance,
    frechet_distance_of,
    inception_score,
    kernel_inception_distance,
)
from score_sde.evaluation.weights import WeightsError, cache_dir

__all__ = [
    "CLASSES",
    "FEATURES",
    "RESOLUTION",
    "FeatureStats",
    "Inception",
    "InceptionScoreStats",
    "InceptionV3",
    "WeightsError",
    "cache_dir",
    "density_coverage",
    "feature_stats",
    "fid_from_stats",
    "frechet_distance",
    "frechet_distance_of",
    "inception_features",
    "inception_score",
    "kernel_inception_distance",
    "precision_recall",
    "preprocess",
]
