"""Tests for genjax/data/preprocess.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data import preprocess


class _ConstantUniforms:
    """A stand-in generator whose `random` always returns `value` (to probe bin edges)."""

    def __init__(self, value: float):
        self.value = value

    def random(self, shape):
        return np.full(shape, self.value)


def test_binarize_dynamic_is_bernoulli_with_mean_x():
    intensities = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    num_rows = 20_000
    x = np.tile(intensities, (num_rows, 1))  # (N, 11)
    b = preprocess.binarize_dynamic(x, np.random.default_rng(0))
    assert b.dtype == np.float32 and b.shape == x.shape
    assert set(np.unique(b).tolist()) <= {0.0, 1.0}
    assert np.all(b[:, 0] == 0.0) and np.all(b[:, -1] == 1.0)
    # Column means estimate x with standard error sqrt(x (1 - x) / N) <= 0.0036; allow 5 of
    # them (the chance that any of 11 columns fails is ~1e-5).
    tolerance = 5 * np.sqrt(intensities * (1 - intensities) / num_rows) + 1e-6
    assert np.all(np.abs(b.mean(axis=0) - intensities) <= tolerance)


def test_binarize_dynamic_draws_fresh_values_each_call():
    x = np.full((100, 28), 0.5, np.float32)
    rng = np.random.default_rng(1)
    first, second = preprocess.binarize_dynamic(x, rng), preprocess.binarize_dynamic(x, rng)
    assert not np.array_equal(first, second)


def test_binarize_fixed_is_deterministic_for_a_seed():
    x = np.random.default_rng(2).random((200, 10)).astype(np.float32)
    first = preprocess.binarize_fixed(x, seed=5)
    np.testing.assert_array_equal(first, preprocess.binarize_fixed(x, seed=5))
    assert not np.array_equal(first, preprocess.binarize_fixed(x, seed=6))
    assert first.dtype == np.float32 and set(np.unique(first).tolist()) <= {0.0, 1.0}
    # One draw over 2,000 entries: mean of b - x has standard error <= 0.011.
    assert abs((first - x).mean()) < 0.05


@pytest.mark.parametrize("num_levels", [2, 17, 256])
def test_dequantize_uniform_stays_in_the_bin_of_each_level(num_levels):
    levels = np.arange(num_levels, dtype=np.uint8)
    x_int = np.tile(levels, 400)
    y = preprocess.dequantize_uniform(x_int, num_levels, np.random.default_rng(3))
    assert y.dtype == np.float32 and y.shape == x_int.shape
    assert np.all(y >= 0.0) and np.all(y < 1.0)
    np.testing.assert_array_equal(np.floor(y * num_levels), x_int)  # float32 arithmetic
    np.testing.assert_array_equal(np.floor(y.astype(np.float64) * num_levels), x_int)
    # The offset inside the bin is U[0, 1): mean 1/2, standard error 0.29 / sqrt(n).
    offsets = y.astype(np.float64) * num_levels - x_int
    assert abs(offsets.mean() - 0.5) < 5 * 0.29 / np.sqrt(len(offsets))


@pytest.mark.parametrize("num_levels", [17, 256])
@pytest.mark.parametrize("uniform", [0.0, np.nextafter(1.0, 0.0)])
def test_dequantize_uniform_bin_edges_survive_float32_rounding(num_levels, uniform):
    # With u just below 1, (255 + u) / 256 rounds to exactly 1.0 in float32 unless handled.
    x_int = np.arange(num_levels)
    y = preprocess.dequantize_uniform(x_int, num_levels, _ConstantUniforms(uniform))
    assert np.all(y < 1.0)
    np.testing.assert_array_equal(np.floor(y * np.float32(num_levels)), x_int)
    np.testing.assert_array_equal(np.floor(y.astype(np.float64) * num_levels), x_int)


def test_dequantize_uniform_is_random_but_seedable():
    x_int = np.zeros(50, np.uint8)
    a = preprocess.dequantize_uniform(x_int, 256, np.random.default_rng(4))
    b = preprocess.dequantize_uniform(x_int, 256, np.random.default_rng(4))
    c = preprocess.dequantize_uniform(x_int, 256, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_to_symmetric_maps_unit_interval_onto_minus_one_one():
    x = np.array([0.0, 0.25, 1.0], np.float32)
    np.testing.assert_allclose(preprocess.to_symmetric(x), [-1.0, -0.5, 1.0])
    assert preprocess.to_symmetric(x).dtype == np.float32


def _per_example_log_abs_det(x: jax.Array, alpha: float) -> np.ndarray:
    """log |det| of the Jacobian of the flattened per-example map, by jax.jacfwd."""

    def flat_map(flat_example):
        example = flat_example.reshape((1, *x.shape[1:]))
        return preprocess.logit_transform(example, alpha)[0].reshape(-1)

    results = []
    for example in x.reshape(x.shape[0], -1):
        sign, log_abs_det = jnp.linalg.slogdet(jax.jacfwd(flat_map)(example))
        assert sign != 0
        results.append(log_abs_det)
    return np.array(results)


@pytest.mark.parametrize("alpha", [0.05, 1e-6])
def test_logit_log_det_matches_the_jacobian(alpha):
    x = jax.random.uniform(jax.random.key(0), (3, 2, 2, 1))  # (batch, H, W, C)
    y, log_det = preprocess.logit_transform(x, alpha)
    assert y.shape == x.shape and log_det.shape == (3,)
    np.testing.assert_allclose(log_det, _per_example_log_abs_det(x, alpha), rtol=1e-5, atol=1e-4)


def test_logit_transform_numpy_in_numpy_out_and_agrees_with_jax():
    x = np.random.default_rng(6).random((4, 8, 8, 1)).astype(np.float32)
    y, log_det = preprocess.logit_transform(x, 0.05)
    assert isinstance(y, np.ndarray) and isinstance(log_det, np.ndarray)
    assert y.dtype == np.float32 and log_det.dtype == np.float32 and log_det.shape == (4,)
    y_jax, log_det_jax = jax.jit(preprocess.logit_transform)(jnp.asarray(x))
    np.testing.assert_allclose(y, y_jax, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_det, log_det_jax, rtol=1e-5)


def test_logit_transform_is_finite_at_the_interval_ends_in_float32():
    x = np.array([[0.0, 1.0, 0.5]], np.float32)
    y, log_det = preprocess.logit_transform(x, 0.05)
    np.testing.assert_allclose(y[0], [np.log(0.05 / 0.95), np.log(0.95 / 0.05), 0.0], atol=1e-6)
    expected_log_det = np.sum(np.log(0.9) - np.log([0.05 * 0.95, 0.95 * 0.05, 0.25]))
    np.testing.assert_allclose(log_det, [expected_log_det], rtol=1e-6)


@pytest.mark.parametrize("as_jax", [False, True])
def test_logit_transform_inverse_round_trip(as_jax):
    x = np.random.default_rng(7).random((5, 3, 3)).astype(np.float32)
    x[0, 0, :2] = [0.0, 1.0]
    x_in = jnp.asarray(x) if as_jax else x
    y, _ = preprocess.logit_transform(x_in, 0.05)
    x_back = preprocess.logit_transform_inverse(y, 0.05)
    assert isinstance(x_back, jax.Array) == as_jax
    np.testing.assert_allclose(np.asarray(x_back), x, atol=2e-6)


@pytest.mark.parametrize("as_jax", [False, True])
def test_logit_transform_with_maf_alpha_is_accurate_next_to_one_in_float32(as_jax):
    """MAF's alpha = 1e-6 with float32 pixels a few ulps below 1 (and next to 0): y and the
    log-det match the float64 textbook formula on the same inputs. Forming 1 - s from a float32
    s = alpha + (1 - 2 alpha) x was off by 0.01 nats per such pixel."""
    alpha = 1e-6
    x = np.array([[1 - 2.0**-24 * k for k in (1, 2, 5, 40)] + [0.0, 1e-7, 0.3]], np.float32)
    x_in = jnp.asarray(x) if as_jax else x
    y, log_det = preprocess.logit_transform(x_in, alpha)
    s = alpha + (1 - 2 * alpha) * x.astype(np.float64)
    expected_y = np.log(s) - np.log1p(-s)
    expected_log_det = np.sum(np.log1p(-2 * alpha) - np.log(s) - np.log1p(-s))
    np.testing.assert_allclose(np.asarray(y), expected_y, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.asarray(log_det), [expected_log_det], rtol=1e-6)
