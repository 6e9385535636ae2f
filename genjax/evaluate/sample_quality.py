"""Sample-quality metrics computed on the host with NumPy / SciPy, in float64.

Three families of metrics, all taking plain arrays of features or points:

- Frechet distance between Gaussians fitted to two feature sets (FID when the features are
  Inception pool features; Heusel et al. 2017, Dowson & Landau 1982).
- Improved precision and recall of Kynkaanniemi et al. 2019 (k-NN manifold estimates).
- Mode coverage of a Gaussian mixture, the toy mode-collapse benchmark of Metz et al. 2017,
  Srivastava et al. 2017 (VEEGAN) and Lin et al. 2018 (PacGAN).

Nothing here is traced by JAX: pass NumPy arrays (or anything `np.asarray` accepts), e.g.
features gathered from a jitted feature extractor with `jax.device_get`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import scipy.linalg

# Pairwise-distance blocks hold at most this many bytes of float64 (plus a few temporaries of
# the same size), so 10k x 10k features stay within a few hundred MB.
_MAX_DISTANCE_BLOCK_BYTES = 64 * 2**20
# pytorch-fid / TTUR defaults: the diagonal offset used when sqrtm fails, and the tolerance on
# the imaginary part of the diagonal of the square root.
FRECHET_EPS = 1e-6
FRECHET_IMAGINARY_ATOL = 1e-3
# VEEGAN: a sample is high quality when it lies within 3 standard deviations of a mode.
HIGH_QUALITY_RADIUS_STDS = 3.0


def _as_float64_matrix(array, name: str) -> np.ndarray:
    """`array` as a float64 (N, F) matrix; ValueError otherwise."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, F); got {array.shape}")
    return array


# ---------------------------------------------------------------------------------------------
# Frechet distance.
# ---------------------------------------------------------------------------------------------


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of a feature set, the Gaussian fit used by FID.

    Args:
      features: (N, F) array, one feature vector per row; N >= 2.

    Returns:
      (mean (F,), covariance (F, F)), float64; the covariance divides by N - 1 (ddof=1, as
      `np.cov` in the TTUR and pytorch-fid reference code).
    """
    features = _as_float64_matrix(features, "features")
    num_samples = features.shape[0]
    if num_samples < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance; got {num_samples}")
    mean = features.mean(axis=0)  # (F,)
    centered = features - mean  # (N, F)
    covariance = centered.T @ centered / (num_samples - 1)  # (F, F)
    return mean, covariance


def _check_gaussian(mean: np.ndarray, covariance: np.ndarray, name: str) -> None:
    if mean.ndim != 1:
        raise ValueError(f"mean_{name} must have shape (F,); got {mean.shape}")
    num_features = mean.shape[0]
    if covariance.shape != (num_features, num_features):
        raise ValueError(
            f"cov_{name} must have shape ({num_features}, {num_features}) to match "
            f"mean_{name}; got {covariance.shape}"
        )


def _sqrtm_or_none(matrix: np.ndarray, accept_flagged: bool = False) -> np.ndarray | None:
    """scipy's principal square root of `matrix`, or None when it failed.

    SciPy >= 1.16 flags an exactly singular or ill-conditioned input with a `LinAlgWarning`
    (older versions returned inf / NaN there, which TTUR and pytorch-fid test for). A flagged
    root counts as failure unless `accept_flagged`; a non-finite root always does.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(matrix)
    flagged = any(issubclass(w.category, scipy.linalg.LinAlgWarning) for w in caught)
    if (flagged and not accept_flagged) or not np.all(np.isfinite(root)):
        return None
    return root


def frechet_distance(
    mean_a,
    cov_a,
    mean_b,
    cov_b,
    eps: float = FRECHET_EPS,
    imaginary_atol: float = FRECHET_IMAGINARY_ATOL,
) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})

    (Dowson & Landau 1982; the FID of Heusel et al. 2017, "GANs Trained by a Two Time-Scale
    Update Rule Converge to a Local Nash Equilibrium", eq. 6). The square root is
    `scipy.linalg.sqrtm` of the product, with the numerical guards of the TTUR / pytorch-fid
    reference code:

    - if SciPy finds the product exactly singular or ill-conditioned (it warns; e.g. a
      constant feature gives a zero row) or the root is not finite, `eps * I` is added to
      both covariances inside the square root only (the trace terms keep the given
      covariances, as in the reference code) and the root is recomputed, with a
      RuntimeWarning. This biases the result by up to about 2 sqrt(eps) sqrt(s) per null
      direction of one covariance (s the other's variance there). Merely rank-deficient
      covariances (N < F) usually do not trigger it, and sqrtm is accurate for them;
    - the root of a real product can come back complex from round-off: the imaginary part is
      dropped when the diagonal's is within `imaginary_atol` of 0, otherwise ValueError.

    Args:
      mean_a, mean_b: (F,) means.
      cov_a, cov_b: (F, F) symmetric positive semi-definite covariances.
      eps: diagonal offset of the fallback.
      imaginary_atol: largest tolerated |imag| on the diagonal of the square root.

    Returns:
      The distance as a Python float (not clipped: it can be -1e-12-ish for equal inputs).
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    _check_gaussian(mean_a, cov_a, "a")
    _check_gaussian(mean_b, cov_b, "b")
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"feature sizes differ: mean_a {mean_a.shape}, mean_b {mean_b.shape}")

    covariance_root = _sqrtm_or_none(cov_a @ cov_b)  # (F, F), maybe complex
    if covariance_root is None:
        warnings.warn(
            f"frechet_distance: singular product of covariances; adding {eps} to their diagonals",
            RuntimeWarning,
            stacklevel=2,
        )
        offset = eps * np.eye(mean_a.shape[0])
        covariance_root = _sqrtm_or_none((cov_a + offset) @ (cov_b + offset), accept_flagged=True)
        if covariance_root is None:
            raise ValueError("frechet_distance: sqrtm is not finite even after the diagonal offset")
    if np.iscomplexobj(covariance_root):
        if not np.allclose(np.diagonal(covariance_root).imag, 0.0, atol=imaginary_atol):
            largest = float(np.max(np.abs(covariance_root.imag)))
            raise ValueError(f"frechet_distance: square root has imaginary part {largest}")
        covariance_root = covariance_root.real

    mean_difference = mean_a - mean_b  # (F,)
    trace_term = np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covariance_root)
    return float(mean_difference @ mean_difference + trace_term)


def frechet_distance_features(features_a, features_b, eps: float = FRECHET_EPS) -> float:
    """`frechet_distance` between Gaussians fitted (`gaussian_statistics`) to two feature sets.

    Args:
      features_a: (N_a, F) features, N_a >= 2.
      features_b: (N_b, F) features, N_b >= 2, same F.
      eps: see `frechet_distance`.

    Returns:
      The Frechet distance as a Python float (FID for Inception pool features).
    """
    mean_a, cov_a = gaussian_statistics(features_a)
    mean_b, cov_b = gaussian_statistics(features_b)
    if mean_a.shape != mean_b.shape:
        raise ValueError(
            f"feature sizes differ: features_a has {mean_a.shape[0]}, "
            f"features_b has {mean_b.shape[0]}"
        )
    return frechet_distance(mean_a, cov_a, mean_b, cov_b, eps=eps)


# ---------------------------------------------------------------------------------------------
# Pairwise squared distances in bounded memory.
# ---------------------------------------------------------------------------------------------


def _default_chunk_size(num_references: int) -> int:
    """Query rows per block so one (rows, num_references) float64 block fits the budget."""
    return max(1, _MAX_DISTANCE_BLOCK_BYTES // (8 * max(1, num_references)))


def _squared_distance_blocks(
    queries: np.ndarray, references: np.ndarray, chunk_size: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start, block) with block[i, j] = ||queries[start + i] - references[j]||^2.

    Uses ||q||^2 - 2 q.r + ||r||^2 in float64, clipped at 0, `chunk_size` query rows at a time:
    each block is (<= chunk_size, R).
    """
    reference_squared_norms = np.einsum("ij,ij->i", references, references)  # (R,)
    for start in range(0, queries.shape[0], chunk_size):
        chunk = queries[start : start + chunk_size]  # (C, F)
        block = chunk @ references.T  # (C, R)
        block *= -2.0
        block += np.einsum("ij,ij->i", chunk, chunk)[:, None]
        block += reference_squared_norms[None, :]
        np.maximum(block, 0.0, out=block)
        yield start, block


# ---------------------------------------------------------------------------------------------
# Improved precision and recall.
# ---------------------------------------------------------------------------------------------


def _kth_neighbour_squared_radii(features: np.ndarray, k: int, chunk_size: int) -> np.ndarray:
    """(N,) squared distance from each row of `features` (N, F) to its k-th nearest other row."""
    squared_radii = np.empty(features.shape[0])
    for start, block in _squared_distance_blocks(features, features, chunk_size):
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = 0.0  # the point itself: exactly 0, so it sorts first.
        squared_radii[start : start + len(rows)] = np.partition(block, k, axis=1)[:, k]
    return squared_radii


def _inside_manifold(
    queries: np.ndarray, manifold: np.ndarray, squared_radii: np.ndarray, chunk_size: int
) -> np.ndarray:
    """(Q,) bool: whether each query lies in some ball (manifold[j], radius_j), boundary in."""
    inside = np.empty(queries.shape[0], dtype=bool)
    for start, block in _squared_distance_blocks(queries, manifold, chunk_size):
        inside[start : start + block.shape[0]] = np.any(block <= squared_radii[None, :], axis=1)
    return inside


def precision_recall(real_features, fake_features, k: int = 3, chunk_size: int | None = None):
    """Improved precision and recall (Kynkaanniemi et al. 2019, "Improved Precision and Recall
    Metric for Assessing Generative Models", eq. 1-2).

    The manifold of a feature set Phi is the union of balls centred on each phi' in Phi with
    radius ||phi' - NN_k(phi')||, the distance to its k-th nearest neighbour in Phi other than
    itself; f(phi, Phi) = 1 when phi lies in one of the balls (boundary included, eq. 1).
    precision = mean over fakes of f(fake, reals); recall = mean over reals of f(real, fakes)
    (eq. 2). As in the reference implementation, a duplicate of a point counts as a neighbour.

    Distances are computed in float64 blocks of `chunk_size` query rows against all of the
    other set (by default sized to keep a block near 64 MB, so 10k x 10k features need a few
    hundred MB at most).

    Args:
      real_features: (N_real, F), N_real > k.
      fake_features: (N_fake, F), N_fake > k.
      k: the neighbour index; the paper uses 3.
      chunk_size: query rows per distance block; None picks it from the memory budget.

    Returns:
      {'precision': float, 'recall': float, 'k': k}.
    """
    real_features = _as_float64_matrix(real_features, "real_features")
    fake_features = _as_float64_matrix(fake_features, "fake_features")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(
            f"feature sizes differ: real {real_features.shape}, fake {fake_features.shape}"
        )
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}")
    for name, features in (("real_features", real_features), ("fake_features", fake_features)):
        if features.shape[0] <= k:
            raise ValueError(f"{name} needs more than k={k} rows; got {features.shape[0]}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive; got {chunk_size}")

    def rows_per_block(references: np.ndarray) -> int:
        return chunk_size or _default_chunk_size(references.shape[0])

    real_radii = _kth_neighbour_squared_radii(real_features, k, rows_per_block(real_features))
    fake_radii = _kth_neighbour_squared_radii(fake_features, k, rows_per_block(fake_features))
    fakes_in_real = _inside_manifold(
        fake_features, real_features, real_radii, rows_per_block(real_features)
    )
    reals_in_fake = _inside_manifold(
        real_features, fake_features, fake_radii, rows_per_block(fake_features)
    )
    return {
        "precision": float(np.mean(fakes_in_real)),
        "recall": float(np.mean(reals_in_fake)),
        "k": int(k),
    }


# ---------------------------------------------------------------------------------------------
# Mode coverage of a Gaussian mixture.
# ---------------------------------------------------------------------------------------------


def _minimum_count(threshold: float) -> int:
    """The least integer count >= `threshold` (round-off in the threshold ignored), at least 1."""
    return max(1, math.ceil(threshold - 1e-9 * max(1.0, threshold)))


def _kl_from_uniform(counts: np.ndarray) -> float:
    """KL(q || uniform) in nats for the histogram q = counts / sum; NaN when the sum is 0."""
    total = counts.sum()
    if total == 0:
        return float("nan")
    occupied = counts[counts > 0] / total
    return float(np.sum(occupied * np.log(occupied * len(counts))))


def mode_coverage(samples, centers, std: float, min_fraction_of_uniform: float = 0.2) -> dict:
    """How many modes of a Gaussian mixture the samples cover, and how evenly.

    The toy mode-collapse benchmark (Metz et al. 2017, "Unrolled Generative Adversarial
    Networks"; Srivastava et al. 2017, "VEEGAN"; Lin et al. 2018, "PacGAN"):

    - a sample is *high quality* when its Euclidean distance to the nearest centre is below
      3 std (VEEGAN), and is then registered to that nearest mode;
    - a mode is *covered* when it holds at least `min_fraction_of_uniform * N / M`
      high-quality samples (rounded up to an integer, at least 1), N counting all samples.
      PacGAN counts a mode of the 25-mode grid as lost with fewer than 20 of 2,500 samples:
      20 is 0.2 of the uniform share 2,500 / 25 = 100, hence the default 0.2;
    - `mode_kl` = KL(q || uniform over the M modes) in nats, q the histogram of the
      high-quality samples over modes: 0 when balanced, log M when all sit on one mode. With
      no high-quality sample q is undefined and `mode_kl` is NaN (the key is kept so every
      result has the same fields).

    For an isotropic Gaussian in D dimensions P(distance < 3 std) is the chi-square CDF
    chi2(D).cdf(9); 1 - exp(-9/2) ~ 0.989 in 2-D, so perfect samples score about that.

    Args:
      samples: (N, D) points, N >= 1 (D = 2 for the toy mixtures; any D works).
      centers: (M, D) mode means, M >= 1.
      std: the per-coordinate standard deviation of every component, > 0.
      min_fraction_of_uniform: the coverage threshold as a fraction of N / M, > 0.

    Returns:
      dict with `modes_covered` (int), `num_modes` (M), `high_quality_fraction` (float),
      `mode_counts` (list of M ints: high-quality samples per mode), `mode_kl` (float),
      `min_samples_per_mode` (the integer threshold used), and the settings `num_samples`,
      `std`, `hq_radius_stds`, `min_fraction_of_uniform`.
    """
    samples = _as_float64_matrix(samples, "samples")
    centers = _as_float64_matrix(centers, "centers")
    num_samples, num_modes = samples.shape[0], centers.shape[0]
    if num_samples < 1 or num_modes < 1:
        raise ValueError(f"need samples and centers; got {samples.shape} and {centers.shape}")
    if samples.shape[1] != centers.shape[1]:
        raise ValueError(f"samples {samples.shape} and centers {centers.shape} differ in dimension")
    std = float(std)
    if not (math.isfinite(std) and std > 0.0):
        raise ValueError(f"std must be a positive finite number; got {std}")
    if not min_fraction_of_uniform > 0.0:
        raise ValueError(f"min_fraction_of_uniform must be > 0; got {min_fraction_of_uniform}")

    nearest_mode = np.empty(num_samples, dtype=np.int64)
    nearest_squared_distance = np.empty(num_samples)
    chunk_size = _default_chunk_size(num_modes)
    for start, block in _squared_distance_blocks(samples, centers, chunk_size):
        stop = start + block.shape[0]
        nearest_mode[start:stop] = np.argmin(block, axis=1)
        nearest_squared_distance[start:stop] = np.min(block, axis=1)
    high_quality = nearest_squared_distance < (HIGH_QUALITY_RADIUS_STDS * std) ** 2  # (N,)
    mode_counts = np.bincount(nearest_mode[high_quality], minlength=num_modes)  # (M,)
    min_samples_per_mode = _minimum_count(min_fraction_of_uniform * num_samples / num_modes)

    return {
        "modes_covered": int(np.sum(mode_counts >= min_samples_per_mode)),
        "num_modes": int(num_modes),
        "high_quality_fraction": float(np.mean(high_quality)),
        "mode_counts": [int(count) for count in mode_counts],
        "mode_kl": _kl_from_uniform(mode_counts),
        "min_samples_per_mode": int(min_samples_per_mode),
        "num_samples": int(num_samples),
        "std": std,
        "hq_radius_stds": HIGH_QUALITY_RADIUS_STDS,
        "min_fraction_of_uniform": float(min_fraction_of_uniform),
    }
