"""k-NN manifold metrics on feature arrays: precision/recall (Kynkäänniemi et al. 2019) and
density/coverage (Naeem et al. 2020).

Distances are computed in row blocks with numpy float64 BLAS rather than JAX float32, which is
too coarse for near-duplicates; every block goes through the same gemm, so identical sets come
out exactly (1, 1).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from score_sde.evaluation.stats import _as_2d, _check_same_dim

# Elements (float64) per block of the pairwise-distance matrix: 64 MiB.
_BLOCK_ELEMENTS = 1 << 23


def _block_rows(num_cols: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(num_cols, 1))


def _sq_dists(a: np.ndarray, a_sq: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """Squared distances [len(a), len(b)] as |a|² + |b|² - 2 a·b, clipped at 0."""
    # The copy of `a` keeps numpy from switching to syrk when a is a leading slice of b, so every
    # block uses the same gemm and equal inputs give bitwise-equal distances (ties stay exact).
    d2 = a_sq[:, None] + b_sq[None, :] - 2.0 * (np.array(a) @ b.T)
    return np.maximum(d2, 0.0, out=d2)


def _sq_norms(x: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, x)


def _knn_sq_radii(x: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point of x to its k-th nearest other point of x."""
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be in [1, {n - 1}] for a set of {n} points, got {k}")
    x_sq = _sq_norms(x)
    radii = np.empty(n)
    step = _block_rows(n)
    for s in range(0, n, step):
        d2 = _sq_dists(x[s : s + step], x_sq[s : s + step], x, x_sq)
        rows = np.arange(d2.shape[0])
        d2[rows, s + rows] = np.inf
        radii[s : s + step] = np.partition(d2, k - 1, axis=1)[:, k - 1]
    return radii


def _ball_counts(
    points: np.ndarray, centres: np.ndarray, sq_radii: np.ndarray, *, strict: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(number of balls B(centre_i, r_i) holding each point, number of points in each ball)."""
    p_sq, c_sq = _sq_norms(points), _sq_norms(centres)
    per_point = np.zeros(points.shape[0], np.int64)
    per_ball = np.empty(centres.shape[0], np.int64)
    step = _block_rows(points.shape[0])
    # Rows are centres, as in _knn_sq_radii, so that for identical sets the distance to the k-th
    # neighbour is recomputed bit for bit and compares exactly equal to its radius.
    for s in range(0, centres.shape[0], step):
        d2 = _sq_dists(centres[s : s + step], c_sq[s : s + step], points, p_sq)
        r2 = sq_radii[s : s + step, None]
        inside = d2 < r2 if strict else d2 <= r2
        per_point += inside.sum(axis=0)
        per_ball[s : s + step] = inside.sum(axis=1)
    return per_point, per_ball


def _centred_pair(real: ArrayLike, fake: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 [n, d] minus the mean of `real` (distances are unchanged)."""
    real, fake = _as_2d(real, "real"), _as_2d(fake, "fake")
    _check_same_dim(real, fake, "real", "fake")
    # |a|² + |b|² - 2 a·b cancels catastrophically when the norms dwarf the distances (features
    # far from the origin); centring removes most of that at the cost of one pass over the data.
    centre = real.mean(axis=0)
    return real - centre, fake - centre


def precision_recall(real: ArrayLike, fake: ArrayLike, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall with k-NN balls (Kynkäänniemi et al. 2019)."""
    real, fake = _centred_pair(real, fake)
    in_real, _ = _ball_counts(fake, real, _knn_sq_radii(real, k), strict=False)
    in_fake, _ = _ball_counts(real, fake, _knn_sq_radii(fake, k), strict=False)
    return float(np.mean(in_real > 0)), float(np.mean(in_fake > 0))


def density_coverage(real: ArrayLike, fake: ArrayLike, *, k: int = 5) -> tuple[float, float]:
    """Density and coverage with open k-NN balls around real points (Naeem et al. 2020)."""
    real, fake = _centred_pair(real, fake)
    # Open balls (strict <), as in the authors' prdc code: identical sets then give density 1.
    per_fake, per_ball = _ball_counts(fake, real, _knn_sq_radii(real, k), strict=True)
    return float(per_fake.sum() / (k * fake.shape[0])), float(np.mean(per_ball > 0))
