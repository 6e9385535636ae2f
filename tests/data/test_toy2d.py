"""Tests for genjax/data/toy2d.py: samplers, closed-form densities and entropies."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from genjax.data import toy2d


def _grid(low: float, high: float, step: float) -> tuple[np.ndarray, float]:
    """Midpoints of a square grid over [low, high)^2, shape (M, 2), and the cell area."""
    centers = np.arange(low + step / 2, high, step)
    points = np.stack(np.meshgrid(centers, centers, indexing="ij"), axis=-1).reshape(-1, 2)
    return points.astype(np.float32), step**2


# Grids that hold (all but < 1e-6 of) each density's mass; cells are small next to the
# component std (0.354 for 8gaussians, 0.05 for grid25) and, for the checkerboard, aligned
# with the squares' edges (multiples of 2), so the midpoint rule is accurate to ~1e-6.
_QUADRATURE_GRIDS = {
    "8gaussians": (-6.0, 6.0, 0.02),
    "checkerboard": (-5.0, 5.0, 0.02),
    "grid25": (-4.5, 4.5, 0.01),
    "ring8": (-2.2, 2.2, 0.002),  # std 0.02: cells of 0.1 std
    "grid25_unit": (-1.6, 1.6, 0.002),  # std 0.0177
}


def _density_on_grid(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(points (M, 2), probability mass of each grid cell (M,)) in float64."""
    points, cell_area = _grid(*_QUADRATURE_GRIDS[name])
    density = np.exp(np.asarray(toy2d.log_prob(name, points), np.float64))
    return points.astype(np.float64), density * cell_area


@pytest.mark.parametrize("name", toy2d.TOY2D_NAMES)
def test_sample_shape_dtype_and_determinism(name):
    num = 101  # not a multiple of 5: the pinwheel arms must still give exactly num points
    first = toy2d.sample(name, np.random.default_rng(7), num)
    again = toy2d.sample(name, np.random.default_rng(7), num)
    other = toy2d.sample(name, np.random.default_rng(8), num)
    assert first.shape == (num, 2) and first.dtype == np.float32
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_unknown_names_are_rejected_with_the_allowed_names():
    with pytest.raises(ValueError, match="8gaussians.*checkerboard"):
        toy2d.sample("spirals", np.random.default_rng(0), 3)
    with pytest.raises(ValueError, match="moons"):
        toy2d.has_density("spirals")
    with pytest.raises(ValueError, match="8gaussians, grid25"):
        toy2d.mode_centers("checkerboard")
    with pytest.raises(ValueError, match="8gaussians, grid25"):
        toy2d.mode_std("moons")


@pytest.mark.parametrize("name", ["moons", "pinwheel", "swissroll", "circles"])
def test_no_closed_form_density_raises(name):
    assert not toy2d.has_density(name)
    with pytest.raises(ValueError, match="not known in closed form.*8gaussians"):
        toy2d.log_prob(name, np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="not known in closed form"):
        toy2d.entropy(name)


@pytest.mark.parametrize("name", toy2d.DENSITY_NAMES)
def test_log_prob_integrates_to_one(name):
    assert toy2d.has_density(name)
    _, cell_mass = _density_on_grid(name)
    # Tolerance 1e-3: quadrature and truncation errors are < 1e-5; float32 log densities
    # carry ~1e-6 relative error per point.
    assert abs(cell_mass.sum() - 1.0) < 1e-3


@pytest.mark.parametrize("name", toy2d.DENSITY_NAMES)
def test_samples_match_the_density_moments(name):
    """Mean and covariance of 50k samples agree with those of exp(log_prob) by quadrature."""
    points, cell_mass = _density_on_grid(name)
    mean = cell_mass @ points
    centered = points - mean
    covariance = (centered * cell_mass[:, None]).T @ centered
    samples = toy2d.sample(name, np.random.default_rng(3), 50_000).astype(np.float64)
    # Standard error of a sample mean coordinate is sqrt(var / n) <= sqrt(8 / 5e4) = 0.013;
    # 0.07 is > 5 standard errors. Covariance entries: standard error < 0.04; allow 0.2.
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.07)
    np.testing.assert_allclose(np.cov(samples.T), covariance, atol=0.2)


def test_checkerboard_support():
    samples = toy2d.sample("checkerboard", np.random.default_rng(1), 20_000)
    log_density = np.asarray(toy2d.log_prob("checkerboard", samples))
    np.testing.assert_allclose(log_density, -math.log(32.0), rtol=1e-6)
    # Filled squares: [0, 2)^2, [-4, -2)^2, [-4, -2) x [0, 2). Empty: [0, 2) x [2, 4),
    # [-4, -2) x [2, 4). (5, 0) is off the board.
    probes = np.array([[1.0, 1.0], [-3.0, -3.0], [-3.0, 1.0], [1.0, 3.0], [-3.0, 3.0], [5.0, 0]])
    inside, outside = -math.log(32.0), -np.inf
    expected = np.array([inside, inside, inside, outside, outside, outside])
    np.testing.assert_allclose(np.asarray(toy2d.log_prob("checkerboard", probes)), expected)


@pytest.mark.parametrize("name", toy2d.MIXTURE_NAMES)
def test_mixture_log_prob_matches_scipy(name):
    centers, std = toy2d.mode_centers(name), toy2d.mode_std(name)
    points = np.concatenate(
        [
            toy2d.sample(name, np.random.default_rng(2), 200),
            np.random.default_rng(3).uniform(-5, 5, size=(50, 2)).astype(np.float32),
        ]
    )
    component_densities = np.stack(
        [stats.multivariate_normal(mean=c, cov=std**2).logpdf(points) for c in centers]
    )  # (K, N)
    reference = np.logaddexp.reduce(component_densities, axis=0) - np.log(len(centers))
    # float32 evaluation: absolute error grows with |log p| (up to ~2e4 far from grid25).
    np.testing.assert_allclose(
        np.asarray(toy2d.log_prob(name, points)), reference, rtol=1e-5, atol=1e-4
    )


@pytest.mark.parametrize("name", toy2d.DENSITY_NAMES)
def test_log_prob_under_jit_matches_eager(name):
    points = toy2d.sample(name, np.random.default_rng(4), 64)
    jitted = jax.jit(toy2d.log_prob, static_argnums=0)
    np.testing.assert_allclose(jitted(name, points), toy2d.log_prob(name, points), rtol=1e-6)


@pytest.mark.parametrize("name", toy2d.MIXTURE_NAMES)
def test_mixture_samples_sit_near_one_centre_each(name):
    centers, std = toy2d.mode_centers(name), toy2d.mode_std(name)
    num = 40_000
    samples = toy2d.sample(name, np.random.default_rng(5), num)
    distance = np.linalg.norm(samples[:, None, :] - centers[None], axis=-1)  # (N, K)
    # In 2-D, P(|z| < 3 std) = 1 - exp(-9 / 2) for each component (its neighbours are more
    # than 6 std away); binomial standard error ~5e-4, tolerance 0.004.
    within = (distance.min(axis=1) < 3 * std).mean()
    assert abs(within - (1.0 - math.exp(-4.5))) < 0.004
    # Equal weights: each mode's share is 1/K (standard error <= 1.7e-3; tolerance 0.01).
    shares = np.bincount(distance.argmin(axis=1), minlength=len(centers)) / num
    np.testing.assert_allclose(shares, 1.0 / len(centers), atol=0.01)


def test_mode_geometry():
    np.testing.assert_allclose(
        np.linalg.norm(toy2d.mode_centers("8gaussians"), axis=1), 4 / 1.414, rtol=1e-6
    )
    grid = toy2d.mode_centers("grid25")
    assert grid.shape == (25, 2)
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in grid.tolist()}) == 25
    assert toy2d.mode_std("grid25") == 0.05
    assert toy2d.mode_std("8gaussians") == pytest.approx(0.5 / 1.414)


def test_narrow_ring_and_unit_grid_geometry():
    """ring8: radius 2, std 0.02, neighbours 45 degrees apart (Metz et al. 2017); grid25_unit:
    grid25 / (2 sqrt 2), so the centres' per-coordinate standard deviation is exactly 1."""
    ring = toy2d.mode_centers("ring8")
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 2.0, rtol=1e-6)
    np.testing.assert_allclose(ring[1], [math.sqrt(2.0), math.sqrt(2.0)], rtol=1e-6)
    assert toy2d.mode_std("ring8") == 0.02
    unit = toy2d.mode_centers("grid25_unit")
    np.testing.assert_allclose(unit, toy2d.mode_centers("grid25") / math.sqrt(8.0), rtol=1e-6)
    np.testing.assert_allclose(unit.std(axis=0), [1.0, 1.0], rtol=1e-6)
    assert toy2d.mode_std("grid25_unit") == pytest.approx(0.05 / math.sqrt(8.0))


def test_checkerboard_entropy_is_exact():
    assert toy2d.entropy("checkerboard") == (math.log(32.0), 0.0)


@pytest.mark.parametrize("name", toy2d.MIXTURE_NAMES)
def test_mixture_entropy_agrees_with_an_independent_estimate(name):
    value, standard_error = toy2d.entropy(name)
    assert toy2d.entropy(name) == (value, standard_error)  # deterministic
    assert 0.0 < standard_error < 0.01
    log_density = np.asarray(
        toy2d.log_prob(name, toy2d.sample(name, np.random.default_rng(11), 200_000)),
        np.float64,
    )
    independent = -log_density.mean()
    independent_error = log_density.std(ddof=1) / math.sqrt(len(log_density))
    assert abs(value - independent) < 4.0 * math.hypot(standard_error, independent_error)
    # Nearly separated modes: close to, and (up to noise) below, log K + log(2 pi e std^2).
    std, num_modes = toy2d.mode_std(name), len(toy2d.mode_centers(name))
    separated = math.log(num_modes) + math.log(2 * math.pi * math.e * std**2)
    assert value < separated + 4 * standard_error
    assert value > separated - 0.05
