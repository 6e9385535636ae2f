"""Tests for genjax/evaluate/sample_quality.py against closed forms and NumPy references."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy import stats
from scipy.spatial.distance import cdist

from genjax.data import toy2d
from genjax.evaluate import sample_quality as sq

# ---------------------------------------------------------------------------------------------
# Frechet distance.
# ---------------------------------------------------------------------------------------------


def _psd_sqrt(matrix):
    """Symmetric PSD square root via eigh, negative round-off eigenvalues clipped to 0."""
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def _reference_frechet(mean_a, cov_a, mean_b, cov_b):
    """||mu_a - mu_b||^2 + Tr S_a + Tr S_b - 2 Tr((S_a^{1/2} S_b S_a^{1/2})^{1/2})."""
    root_a = _psd_sqrt(cov_a)
    cross = np.trace(_psd_sqrt(root_a @ cov_b @ root_a))
    return np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross


def _random_covariance(rng, num_features):
    factor = rng.standard_normal((num_features, num_features))
    return factor @ factor.T / num_features + 0.1 * np.eye(num_features)


def test_gaussian_statistics_match_numpy():
    features = np.random.default_rng(0).standard_normal((50, 4)) * [1.0, 2.0, 3.0, 4.0]
    mean, covariance = sq.gaussian_statistics(features)
    np.testing.assert_allclose(mean, features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(covariance, np.cov(features, rowvar=False, ddof=1), rtol=1e-12)
    assert covariance.shape == (4, 4) and covariance.dtype == np.float64


def test_gaussian_statistics_rejects_one_sample_and_wrong_rank():
    with pytest.raises(ValueError, match="at least 2"):
        sq.gaussian_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="shape"):
        sq.gaussian_statistics(np.zeros(5))


def test_frechet_of_identical_features_is_zero():
    features = 5.0 * np.random.default_rng(1).standard_normal((400, 16)) + 3.0
    distance = sq.frechet_distance_features(features, features)
    scale = np.trace(np.cov(features, rowvar=False))  # ~ 16 * 25
    assert abs(distance) <= 1e-6 * scale


def test_frechet_diagonal_matches_closed_form():
    # Diagonal covariances commute: (S_a S_b)^{1/2} = diag(sqrt(s_a s_b)), so
    # d^2 = sum (mu_a - mu_b)^2 + sum (sqrt(s_a) - sqrt(s_b))^2.
    mean_a, var_a = np.array([0.0, 1.0, -2.0]), np.array([1.0, 4.0, 0.25])
    mean_b, var_b = np.array([1.0, 1.0, 0.0]), np.array([9.0, 1.0, 0.25])
    expected = (1.0 + 0.0 + 4.0) + ((1.0 - 3.0) ** 2 + (2.0 - 1.0) ** 2 + 0.0)  # = 10
    distance = sq.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    np.testing.assert_allclose(distance, expected, rtol=1e-12)


@pytest.mark.parametrize("seed", (0, 1, 2))
def test_frechet_full_covariance_matches_eigh_reference(seed):
    rng = np.random.default_rng(seed)
    num_features = 12
    mean_a, mean_b = rng.standard_normal(num_features), rng.standard_normal(num_features)
    cov_a = _random_covariance(rng, num_features)
    cov_b = _random_covariance(rng, num_features)
    distance = sq.frechet_distance(mean_a, cov_a, mean_b, cov_b)
    expected = _reference_frechet(mean_a, cov_a, mean_b, cov_b)
    np.testing.assert_allclose(distance, expected, rtol=1e-9)
    assert distance > 0.0


def test_frechet_is_symmetric():
    rng = np.random.default_rng(3)
    mean_a, mean_b = rng.standard_normal(8), rng.standard_normal(8)
    cov_a, cov_b = _random_covariance(rng, 8), _random_covariance(rng, 8)
    forward = sq.frechet_distance(mean_a, cov_a, mean_b, cov_b)
    backward = sq.frechet_distance(mean_b, cov_b, mean_a, cov_a)
    np.testing.assert_allclose(forward, backward, rtol=1e-10)


def test_frechet_with_rank_deficient_covariances_matches_eigh_reference():
    # N = 10 < F = 32: both covariances have rank 9 and their product is numerically singular.
    rng = np.random.default_rng(4)
    features_a = rng.standard_normal((10, 32))
    features_b = rng.standard_normal((10, 32)) + 0.5
    distance = sq.frechet_distance_features(features_a, features_b)
    expected = _reference_frechet(
        *sq.gaussian_statistics(features_a), *sq.gaussian_statistics(features_b)
    )
    assert np.isfinite(distance)
    np.testing.assert_allclose(distance, expected, rtol=1e-6)


def test_frechet_exactly_singular_product_uses_the_diagonal_offset():
    # cov_a = 0 makes the product exactly 0: sqrtm flags it and the eps fallback runs. With
    # diagonal covariances the fallback's value is known in closed form: the offset enters
    # only the square root, Tr(((0 + eps) (s_b + eps))^{1/2}) = sum sqrt(eps (s_b + eps)).
    eps = 1e-6
    mean_a, mean_b = np.zeros(3), np.array([1.0, -1.0, 2.0])
    var_b = np.array([1.0, 4.0, 9.0])
    with pytest.warns(RuntimeWarning, match="singular"):
        distance = sq.frechet_distance(mean_a, np.zeros((3, 3)), mean_b, np.diag(var_b), eps=eps)
    fallback = 6.0 + np.sum(var_b) - 2.0 * np.sum(np.sqrt(eps * (var_b + eps)))
    np.testing.assert_allclose(distance, fallback, rtol=1e-10)
    exact = 6.0 + np.sum(var_b)  # the true distance; the fallback is 0.012 below it
    assert 0.0 < exact - distance < 2.0 * math.sqrt(eps) * np.sum(np.sqrt(var_b + eps)) + 1e-12


def test_frechet_fallback_offsets_both_covariances_singular_in_different_directions():
    # cov_a is null along e0, cov_b along e1, both positive along e2: the product is exactly
    # singular and the fallback runs. For diagonal covariances its square root is known in
    # closed form, Tr(((S_a + eps) (S_b + eps))^{1/2}) = sum sqrt((a_i + eps) (b_i + eps)); an
    # offset added to one covariance only drops the sqrt(4 eps) of e1 (or e0's sqrt(eps)) and
    # shifts the distance by ~4e-3.
    eps = 1e-6
    var_a, var_b = np.array([0.0, 4.0, 9.0]), np.array([1.0, 0.0, 16.0])
    mean_a, mean_b = np.array([0.5, 0.0, -1.0]), np.array([0.0, 1.0, 1.0])
    with pytest.warns(RuntimeWarning, match="singular"):
        distance = sq.frechet_distance(mean_a, np.diag(var_a), mean_b, np.diag(var_b), eps=eps)
    cross = np.sum(np.sqrt((var_a + eps) * (var_b + eps)))
    fallback = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a) + np.sum(var_b) - 2.0 * cross
    np.testing.assert_allclose(distance, fallback, rtol=1e-10)
    # The same value from scipy's square root of the offset product.
    offset = eps * np.eye(3)
    root = scipy.linalg.sqrtm((np.diag(var_a) + offset) @ (np.diag(var_b) + offset)).real
    np.testing.assert_allclose(np.trace(root), cross, rtol=1e-10)


def test_frechet_with_a_constant_feature_is_finite():
    # A constant feature (a dead unit) gives covariance rows of exact zeros; whether SciPy
    # then flags the product (and the eps fallback runs) is its call, so either path is
    # accepted. Both covariances share the null direction, so the fallback's bias is ~eps.
    rng = np.random.default_rng(5)
    features_a, features_b = rng.standard_normal((50, 6)), rng.standard_normal((60, 6)) + 1.0
    features_a[:, 2] = 2.0
    features_b[:, 2] = 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        distance = sq.frechet_distance_features(features_a, features_b)
    expected = _reference_frechet(
        *sq.gaussian_statistics(features_a), *sq.gaussian_statistics(features_b)
    )
    np.testing.assert_allclose(distance, expected, atol=1e-4)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cov_a"):
        sq.frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="feature sizes"):
        sq.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="feature sizes"):
        sq.frechet_distance_features(np.zeros((4, 3)), np.zeros((4, 2)))


# ---------------------------------------------------------------------------------------------
# Improved precision and recall.
# ---------------------------------------------------------------------------------------------


def _brute_force_precision_recall(real, fake, k):
    """O(N^2) reference: direct Euclidean distances, k-th neighbour radii after sorting."""

    def radii(features):
        return np.sort(cdist(features, features), axis=1)[:, k]  # column 0 is the point itself

    def coverage(queries, manifold):
        return np.mean(np.any(cdist(queries, manifold) <= radii(manifold)[None, :], axis=1))

    return coverage(fake, real), coverage(real, fake)


def test_precision_recall_of_a_set_against_itself_is_one():
    features = np.random.default_rng(5).standard_normal((200, 8))
    result = sq.precision_recall(features, features, k=3)
    assert result == {"precision": 1.0, "recall": 1.0, "k": 3}


def test_precision_recall_of_far_apart_clusters_is_zero():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((150, 4))
    fake = rng.standard_normal((120, 4)) + 100.0
    result = sq.precision_recall(real, fake)
    assert result["precision"] == 0.0 and result["recall"] == 0.0


def test_precision_recall_when_fakes_are_one_of_two_real_clusters():
    rng = np.random.default_rng(7)
    cluster_a = rng.standard_normal((100, 3))
    cluster_b = rng.standard_normal((100, 3)) + 50.0
    real = np.concatenate([cluster_a, cluster_b])
    # The fakes are cluster A itself: all of them are real points (precision 1) and they
    # cover exactly the 100 reals of cluster A and none of cluster B (recall 1/2).
    result = sq.precision_recall(real, cluster_a)
    assert result["precision"] == 1.0
    assert result["recall"] == 0.5
    # Fresh draws from cluster A's distribution: cluster B still uncovered, so recall <= 1/2.
    fresh = sq.precision_recall(real, rng.standard_normal((100, 3)))
    assert fresh["precision"] > 0.85
    assert 0.4 < fresh["recall"] <= 0.5


@pytest.mark.parametrize("k, chunk_size", ((1, 7), (3, 13), (5, 1000)))
def test_precision_recall_matches_brute_force(k, chunk_size):
    rng = np.random.default_rng(8 + k)
    real = rng.standard_normal((230, 5))
    fake = 1.3 * rng.standard_normal((170, 5)) + 0.4
    result = sq.precision_recall(real, fake, k=k, chunk_size=chunk_size)
    precision, recall = _brute_force_precision_recall(real, fake, k)
    assert result["precision"] == pytest.approx(precision, abs=1e-12)
    assert result["recall"] == pytest.approx(recall, abs=1e-12)
    assert 0.0 < result["precision"] < 1.0 and 0.0 < result["recall"] < 1.0  # non-trivial case


def test_default_distance_blocks_stay_small_for_ten_thousand_points():
    rows = sq._default_chunk_size(10_000)
    assert rows >= 100
    assert rows * 10_000 * 8 <= 64 * 2**20


def test_precision_recall_rejects_bad_inputs():
    features = np.zeros((10, 3))
    with pytest.raises(ValueError, match="feature sizes"):
        sq.precision_recall(features, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="more than k"):
        sq.precision_recall(features, np.zeros((3, 3)), k=3)
    with pytest.raises(ValueError, match="positive integer"):
        sq.precision_recall(features, features, k=0)


# ---------------------------------------------------------------------------------------------
# Mode coverage.
# ---------------------------------------------------------------------------------------------


def _high_quality_probability(centers, std):
    """P(nearest-centre distance < 3 std) for a sample from mode 0 of an isotropic 2-D mixture.

    The 3-std discs are disjoint (checked), so it is chi2(2).cdf(9) for the own disc plus the
    noncentral chi-square mass of every other disc.
    """
    offsets = np.linalg.norm(centers[1:] - centers[0], axis=1) / std
    assert np.all(offsets > 2 * sq.HIGH_QUALITY_RADIUS_STDS)
    radius_squared = sq.HIGH_QUALITY_RADIUS_STDS**2
    others = sum(stats.ncx2.cdf(radius_squared, 2, offset**2) for offset in offsets)
    return stats.chi2.cdf(radius_squared, 2) + others


def test_mode_coverage_of_eight_gaussians_data():
    centers, std = toy2d.mode_centers("8gaussians"), toy2d.mode_std("8gaussians")
    num_samples = 20_000
    samples = toy2d.sample("8gaussians", np.random.default_rng(9), num_samples)
    result = sq.mode_coverage(samples, centers, std)
    assert result["modes_covered"] == 8 and result["num_modes"] == 8
    assert sum(result["mode_counts"]) == round(result["high_quality_fraction"] * num_samples)
    # 1 - exp(-9/2) = 0.98889 for one isolated 2-D Gaussian; the neighbouring discs (6.1 std
    # away on this circle) add 0.0012, so compare with the exact value, within 4 standard
    # errors of a binomial fraction (about 0.003 here).
    expected = _high_quality_probability(centers.astype(np.float64), std)
    assert abs(expected - (1.0 - math.exp(-4.5))) < 1.5e-3
    tolerance = 4.0 * math.sqrt(expected * (1.0 - expected) / num_samples)
    assert abs(result["high_quality_fraction"] - expected) < tolerance
    # Multinomial counts over 8 equal modes: E[KL] ~ (M - 1) / (2 N_hq) ~ 2e-4.
    assert 0.0 <= result["mode_kl"] < 2e-3


def test_mode_coverage_of_grid25_data():
    centers, std = toy2d.mode_centers("grid25"), toy2d.mode_std("grid25")
    num_samples = 2_500  # PacGAN's setting: a mode needs 20 = 0.2 * 2500 / 25 samples.
    samples = toy2d.sample("grid25", np.random.default_rng(10), num_samples)
    result = sq.mode_coverage(samples, centers, std)
    assert result["modes_covered"] == 25
    assert result["min_samples_per_mode"] == 20
    # Neighbours are 40 std apart, so the chi value 1 - exp(-9/2) is exact here.
    expected = 1.0 - math.exp(-4.5)
    tolerance = 4.0 * math.sqrt(expected * (1.0 - expected) / num_samples)  # about 0.0084
    assert abs(result["high_quality_fraction"] - expected) < tolerance


def test_mode_coverage_all_on_one_mode():
    centers, std = toy2d.mode_centers("8gaussians"), toy2d.mode_std("8gaussians")
    rng = np.random.default_rng(11)
    samples = centers[2] + 0.5 * std * rng.standard_normal((800, 2))  # all within 3 std
    result = sq.mode_coverage(samples, centers, std)
    assert result["modes_covered"] == 1
    assert result["mode_counts"] == [0, 0, 800, 0, 0, 0, 0, 0]
    assert result["high_quality_fraction"] == 1.0
    np.testing.assert_allclose(result["mode_kl"], math.log(8), rtol=1e-12)


def test_mode_coverage_of_far_samples_has_no_high_quality_sample():
    centers, std = toy2d.mode_centers("grid25"), toy2d.mode_std("grid25")
    samples = np.random.default_rng(12).standard_normal((300, 2)) + 100.0
    result = sq.mode_coverage(samples, centers, std)
    assert result["high_quality_fraction"] == 0.0
    assert result["modes_covered"] == 0
    assert result["mode_counts"] == [0] * 25
    assert math.isnan(result["mode_kl"])


def test_mode_coverage_threshold_is_inclusive():
    centers = toy2d.mode_centers("8gaussians").astype(np.float64)
    std = toy2d.mode_std("8gaussians")
    # N = 400 on M = 8 modes: uniform share 50, threshold 0.2 * 50 = 10 samples.
    counts = [10, 9, 100, 100, 100, 40, 40, 1]
    samples = np.repeat(centers, counts, axis=0)
    assert len(samples) == 400
    result = sq.mode_coverage(samples, centers, std)
    assert result["min_samples_per_mode"] == 10
    assert result["mode_counts"] == counts
    assert result["modes_covered"] == 6  # every mode but the ones holding 9 and 1
    q = np.array(counts) / 400
    np.testing.assert_allclose(result["mode_kl"], np.sum(q * np.log(8 * q)), rtol=1e-12)
    assert result["num_samples"] == 400 and result["hq_radius_stds"] == 3
    assert result["min_fraction_of_uniform"] == 0.2 and result["std"] == std


def test_mode_coverage_radius_is_three_std_strict():
    centers = np.zeros((1, 2))
    samples = np.array([[2.999, 0.0], [0.0, 3.001], [-1.0, 1.0]])
    result = sq.mode_coverage(samples, centers, std=1.0)
    assert result["mode_counts"] == [2]
    np.testing.assert_allclose(result["high_quality_fraction"], 2.0 / 3.0)


def test_mode_coverage_rejects_bad_inputs():
    centers = np.zeros((4, 2))
    with pytest.raises(ValueError, match="dimension"):
        sq.mode_coverage(np.zeros((10, 3)), centers, 1.0)
    with pytest.raises(ValueError, match="shape"):
        sq.mode_coverage(np.zeros(10), centers, 1.0)
    with pytest.raises(ValueError, match="std"):
        sq.mode_coverage(np.zeros((10, 2)), centers, 0.0)
    with pytest.raises(ValueError, match="min_fraction_of_uniform"):
        sq.mode_coverage(np.zeros((10, 2)), centers, 1.0, min_fraction_of_uniform=0.0)
