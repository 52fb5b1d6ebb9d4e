"""Tests of score_sde.evaluation.stats and .knn: FD, streaming statistics, KID, IS, precision/recall
and density/coverage, on closed forms and direct computations."""

import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from score_sde.evaluation import knn, stats


def _rng(seed=0):
    return np.random.default_rng(seed)


def _random_spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fd_reference(mu1, s1, mu2, s2):
    """FD with Tr((S1 S2)^½) = sum of the square roots of the eigenvalues of S1 S2 (real and
    non-negative for positive semi-definite S1, S2): neither of the two methods' computation."""
    lam = np.linalg.eigvals(s1 @ s2)
    cross = np.sqrt(np.clip(lam.real, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * cross)


# --------------------------------------------------------------------------------------------
# Fréchet distance.


def test_fd_of_set_with_itself_is_zero():
    f = _rng().normal(size=(500, 64))
    s = stats.FeatureStats.from_features(f)
    assert abs(stats.fid_from_stats(s, s)) <= 1e-6


@pytest.mark.parametrize("method", stats.FD_METHODS)
def test_fd_commuting_diagonal_covariances_closed_form(method):
    rng = _rng(1)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    a, b = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = stats.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("method", stats.FD_METHODS)
def test_fd_non_commuting_covariances_match_eigenvalues_of_the_product(method):
    rng = _rng(2)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12) + 0.3
    s1, s2 = _random_spd(rng, 12), _random_spd(rng, 12)
    assert not np.allclose(s1 @ s2, s2 @ s1)
    got = stats.frechet_distance(mu1, s1, mu2, s2, method=method)
    np.testing.assert_allclose(got, _fd_reference(mu1, s1, mu2, s2), rtol=1e-8)


def test_fd_methods_agree_on_rank_deficient_covariances():
    """Fewer samples than dimensions (as with few samples of 2048-d features): the covariances
    are singular; eigh and pytorch-fid's sqrtm with its retry give the same distance."""
    rng = _rng(12)
    f1, f2 = rng.normal(size=(20, 64)), rng.normal(size=(25, 64)) * 1.3 + 0.2
    args = (f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sqrtm's offset retry
        reference = stats.frechet_distance(*args, method="sqrtm")
    np.testing.assert_allclose(stats.frechet_distance(*args), reference, rtol=1e-6)
    with pytest.raises(ValueError, match="method='qr' is unknown"):
        stats.frechet_distance(*args, method="qr")


@pytest.mark.parametrize("method", stats.FD_METHODS)
def test_fd_emits_no_warnings_on_regular_input(method):
    rng = _rng(3)
    s1, s2 = _random_spd(rng, 8), _random_spd(rng, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. scipy's DeprecationWarning for sqrtm(disp=...)
        stats.frechet_distance(np.zeros(8), s1, np.ones(8), s2, method=method)


def test_fd_singular_product_retries_with_offset():
    rng = _rng(4)
    f1, f2 = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    f1[:, :3] = 0.0  # constant features: rank-deficient covariances, exactly singular product
    f2[:, 5:] = 1.0
    mu1, s1, mu2, s2 = f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    with pytest.warns(RuntimeWarning, match="singular"):
        got = stats.frechet_distance(mu1, s1, mu2, s2, eps=1e-6, method="sqrtm")
    assert np.isfinite(got)
    # pytorch-fid offsets only the square-root term; the traces keep the plain covariances.
    offset = 1e-6 * np.eye(8)
    want = _fd_reference(mu1, s1 + offset, mu2, s2 + offset) - 2 * np.trace(offset)
    np.testing.assert_allclose(got, want, rtol=1e-8)


def test_fd_raises_on_imaginary_square_root():
    with pytest.raises(ValueError, match="imaginary"):
        stats.frechet_distance(
            np.zeros(2), np.eye(2), np.zeros(2), np.diag([-1.0, 1.0]), method="sqrtm"
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((np.zeros((2, 2)), np.eye(2), np.zeros(2), np.eye(2)), "mu1 must be a vector"),
        ((np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)), "sigma1 must have shape"),
        ((np.zeros(2), np.eye(2), np.zeros(2), np.ones((2, 3))), "sigma2 must have shape"),
        ((np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)), "mu1 has dimension 2 but mu2 has 3"),
    ],
)
def test_fd_rejects_bad_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        stats.frechet_distance(*args)


# --------------------------------------------------------------------------------------------
# Streaming feature statistics.


def _accumulate(features, sizes):
    s = stats.FeatureStats.empty(features.shape[1])
    for batch in np.split(features, np.cumsum(sizes)[:-1]):
        s = s.update(batch)
    return s


def _assert_matches_numpy(s, features, rtol):
    assert s.n == features.shape[0]
    np.testing.assert_allclose(s.mean, features.mean(axis=0), rtol=rtol)
    want = np.cov(features, rowvar=False)
    np.testing.assert_allclose(s.cov, want, rtol=0, atol=rtol * np.abs(want).max())


@pytest.mark.parametrize(
    "sizes", [[60], [1] * 60, [7, 1, 23, 2, 27], [30, 30], [0, 59, 1]], ids=str
)
def test_streaming_stats_equal_numpy(sizes):
    f = _rng(5).normal(size=(60, 6)) * np.arange(1, 7) + 3.0
    _assert_matches_numpy(_accumulate(f, sizes), f, rtol=1e-12)


def test_streaming_stats_merge_of_two_processes_in_both_orders():
    f = _rng(6).normal(size=(61, 5)) + 2.0
    a = _accumulate(f[:25], [10, 15])
    b = _accumulate(f[25:], [1, 35])
    _assert_matches_numpy(a.merge(b), f, rtol=1e-12)
    _assert_matches_numpy(b.merge(a), f, rtol=1e-12)


def test_streaming_stats_badly_centred_features():
    f = 1e4 + _rng(7).normal(size=(2000, 8))
    s = _accumulate(f, [37] * 54 + [2])
    _assert_matches_numpy(s, f, rtol=1e-11)
    # The raw-moment formula E[ff^T] - mu mu^T loses ~8 digits here; the test would catch it.
    raw = (f.T @ f - np.outer(f.sum(0), f.sum(0)) / len(f)) / (len(f) - 1)
    assert np.abs(raw - np.cov(f, rowvar=False)).max() > 1e-9


def test_cov_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        _ = stats.FeatureStats.from_features(np.ones((1, 3))).cov


def test_feature_stats_round_trip_through_npz(tmp_path):
    s = _accumulate(_rng(8).normal(size=(40, 4)), [13, 27])
    np.savez(tmp_path / "s.npz", **s.to_arrays())
    with np.load(tmp_path / "s.npz") as z:
        back = stats.FeatureStats.from_arrays(z)
    assert back.n == s.n and isinstance(back.n, int)
    np.testing.assert_array_equal(back.mean, s.mean)
    np.testing.assert_array_equal(back.m2, s.m2)


def test_frechet_distance_of_linear_feature_fn_matches_numpy():
    rng = _rng(9)
    w = rng.normal(size=(12, 5))
    images1, images2 = rng.normal(size=(103, 3, 4)), rng.normal(size=(90, 3, 4)) + 0.2

    def feature_fn(batch):
        return batch.reshape(batch.shape[0], -1) @ w

    f1, f2 = feature_fn(images1), feature_fn(images2)
    want = stats.frechet_distance(
        f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0), np.cov(f2, rowvar=False)
    )
    got = stats.frechet_distance_of(feature_fn, images1, images2, batch_size=16)
    np.testing.assert_allclose(got, want, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Kernel Inception Distance.


def _mmd2_unbiased_loops(x, y):
    m, d = x.shape
    k = lambda a, b: (float(np.dot(a, b)) / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (xx + yy) / (m * (m - 1)) - 2.0 * xy / (m * m)


def test_kid_equals_double_loop_unbiased_mmd():
    rng = _rng(10)
    x, y = rng.normal(size=(30, 7)), rng.normal(size=(30, 7)) * 1.3 + 0.4
    # One subset of all n points: a permutation of each set, which the estimator ignores.
    mean, std = stats.kernel_inception_distance(x, y, num_subsets=1, subset_size=30)
    np.testing.assert_allclose(mean, _mmd2_unbiased_loops(x, y), rtol=1e-10)
    assert std == 0.0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_shift():
    rng = _rng(11)
    x, y = rng.normal(size=(120, 16)), rng.normal(size=(120, 16))
    kid = lambda a, b: stats.kernel_inception_distance(a, b, num_subsets=50, subset_size=40)
    # Given the two sets, subsets are i.i.d. and their MMD² averages to the full-set estimate.
    mean, std = kid(x, y)
    assert abs(mean - _mmd2_unbiased_loops(x, y)) < 4 * std / np.sqrt(50)
    # A set against itself: subsets share points, so E[KID] = 2 (mean k(x_i, x_j) over i != j
    # minus mean k(x_i, x_i)) / n, which is O(1/n) rather than 0.
    k = (x @ x.T / 16 + 1) ** 3
    bias = 2 * ((k.sum() - np.trace(k)) / (120 * 119) - np.trace(k) / 120) / 120
    self_mean, self_std = kid(x, x)
    assert abs(self_mean - bias) < 4 * self_std / np.sqrt(50)
    shifted = [kid(x, y + s)[0] for s in (0.25, 0.5, 1.0)]
    assert 5 * abs(mean) < shifted[0] < shifted[1] < shifted[2]


# --------------------------------------------------------------------------------------------
# Inception Score.


def test_is_of_uniform_logits_is_one():
    mean, std = stats.inception_score(np.zeros((50, 1008)), splits=5)
    np.testing.assert_allclose([mean, std], [1.0, 0.0], atol=1e-12)


def test_is_of_confident_evenly_spread_predictions_is_num_classes():
    c = 10
    logits = 60.0 * np.eye(c)[np.arange(200) % c]
    mean, std = stats.inception_score(logits, splits=10)
    np.testing.assert_allclose(mean, c, rtol=1e-9)
    assert std < 1e-9


def test_is_stream_equals_batch_for_uneven_batches_straddling_splits():
    rng = _rng(12)
    logits = 3.0 * rng.normal(size=(103, 17))
    want = stats.inception_score(logits, splits=10)
    acc = stats.InceptionScoreStats.empty(103, 17, splits=10)
    bounds = [0, 7, 8, 38, 51, 103]  # splits hold 11 x 3 then 10 x 7 samples
    for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:], strict=True))):
        acc = acc.update(logits[lo:hi], start=lo)
    np.testing.assert_allclose(acc.result(), want, rtol=1e-12)


def test_is_stream_checks_completeness_and_round_trips(tmp_path):
    logits = _rng(13).normal(size=(20, 5))
    acc = stats.InceptionScoreStats.empty(20, 5, splits=3).update(logits[:12], start=0)
    with pytest.raises(ValueError, match="12 of 20"):
        acc.result()
    with pytest.raises(ValueError, match="more samples"):
        acc.update(logits[:1], start=0)
    np.savez(tmp_path / "is.npz", **acc.to_arrays())
    with np.load(tmp_path / "is.npz") as z:
        back = stats.InceptionScoreStats.from_arrays(z)
    full = back.update(logits[12:], start=12).result()
    np.testing.assert_allclose(full, stats.inception_score(logits, splits=3), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Precision/recall and density/coverage.


def _reference_prdc(real, fake, k_pr, k_dc):
    """Brute force with scipy's cdist and sorting (not the |a|²+|b|²-2ab blocks)."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    r_real = np.sort(d_rr, axis=1)[:, k_pr]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k_pr]
    precision = np.mean((d_rf <= r_real[:, None]).any(axis=0))
    recall = np.mean((d_rf <= r_fake[None, :]).any(axis=1))
    r_dc = np.sort(d_rr, axis=1)[:, k_dc]
    inside = d_rf < r_dc[:, None]
    return precision, recall, inside.sum() / (k_dc * fake.shape[0]), inside.any(axis=1).mean()


@pytest.mark.parametrize("block_elements", [None, 5, 700], ids=["one-block", "rows", "blocks"])
def test_prdc_match_brute_force(monkeypatch, block_elements):
    if block_elements is not None:
        monkeypatch.setattr(knn, "_BLOCK_ELEMENTS", block_elements)
    rng = _rng(14)
    real, fake = rng.normal(size=(150, 8)), rng.normal(size=(120, 8)) * 1.2 + 0.4
    got = knn.precision_recall(real, fake, k=3) + knn.density_coverage(real, fake, k=5)
    want = _reference_prdc(real, fake, 3, 5)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert 0.05 < min(got[:2]) and max(got[:2]) < 0.95  # a non-trivial case


@pytest.mark.parametrize("block_elements", [None, 7], ids=["one-block", "blocks"])
def test_prdc_of_identical_sets_are_exactly_one(monkeypatch, block_elements):
    if block_elements is not None:
        monkeypatch.setattr(knn, "_BLOCK_ELEMENTS", block_elements)
    base = _rng(15).normal(size=(300, 16))
    # The same array, an equal copy (distances computed twice must agree bit for bit), float32.
    for real, fake in ((base, base), (base, base.copy()), (base.astype(np.float32),) * 2):
        assert knn.precision_recall(real, fake) == (1.0, 1.0)
        assert knn.density_coverage(real, fake) == (1.0, 1.0)


def test_prdc_of_near_duplicates_far_from_the_origin_match_brute_force():
    rng = _rng(17)
    real, fake = rng.normal(size=(100, 8)), rng.normal(size=(90, 8)) + 0.3
    want = _reference_prdc(real, fake, 3, 5)
    # Distances of ~1e-3 at norms of ~3e4: |a|² + |b|² - 2ab alone would be all rounding error.
    real, fake = 1e4 + 1e-3 * real, 1e4 + 1e-3 * fake
    got = knn.precision_recall(real, fake, k=3) + knn.density_coverage(real, fake, k=5)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(_reference_prdc(real, fake, 3, 5), want, rtol=1e-12)


def test_knn_radii_of_duplicated_points_are_zero_not_negative():
    x = np.repeat(_rng(18).normal(size=(200, 32)) * 10.0, 2, axis=0)
    radii = knn._knn_sq_radii(x, 1)
    assert radii.min() >= 0.0 and radii.max() < 1e-9


def test_prdc_of_far_apart_sets_are_zero():
    rng = _rng(16)
    real, fake = rng.normal(size=(100, 4)), rng.normal(size=(80, 4)) + 100.0
    assert knn.precision_recall(real, fake) == (0.0, 0.0)
    assert knn.density_coverage(real, fake) == (0.0, 0.0)


def test_precision_recall_hand_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # 1-NN radius 1: balls cover [-1, 4]
    fake = np.array([[0.1], [0.3], [10.0], [10.2]])  # 1-NN radius 0.2; only ball(0.1) holds 0
    np.testing.assert_allclose(knn.precision_recall(real, fake, k=1), (0.5, 0.25))


def test_zero_radius_balls_are_closed_for_precision_recall_open_for_density_coverage():
    real = np.array([[0.0], [0.0], [1.0], [1.0]])  # duplicates: every 1-NN radius is 0
    fake = np.array([[0.0], [1.0], [5.0], [6.0]])  # 1-NN radius 1
    np.testing.assert_allclose(knn.precision_recall(real, fake, k=1), (0.5, 1.0))
    np.testing.assert_allclose(knn.density_coverage(real, fake, k=1), (0.0, 0.0))


def test_density_coverage_hand_case():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # open balls of radius 1
    fake = np.array([[0.5], [10.0], [20.0]])  # 0.5 lies in the balls of 0 and 1 only
    np.testing.assert_allclose(knn.density_coverage(real, fake, k=1), (2 / 3, 0.5))


def test_the_report_has_no_kid_std_when_each_subset_is_the_whole_set(monkeypatch):
    """With at most ``KID_SUBSET`` features a side, every KID subset is both whole sets: the
    report gives the KID of the sets and no spread (it would be ~1e-16, read as an error bar)."""
    from score_sde.evaluation.streaming import FEATURES, Accumulator
    from score_sde.jobs import fid_eval

    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(2, 40, FEATURES)).astype(np.float32)
    fake += 0.2
    acc = Accumulator.empty(40, 40, logits=False).update(fake, None)
    ref = fid_eval.Reference(real.mean(0), np.cov(real, rowvar=False), 40, real, "ref.npz")
    whole = fid_eval.image_metrics(acc, ref, seed=0)
    assert whole["kid_std"] is None
    np.testing.assert_allclose(whole["kid"], _mmd2_unbiased_loops(real, fake), rtol=1e-5)
    monkeypatch.setattr(fid_eval, "KID_SUBSET", 20)
    subsets = fid_eval.image_metrics(acc, ref, seed=0)
    assert subsets["kid_std"] > 0 and subsets["kid"] != whole["kid"]
