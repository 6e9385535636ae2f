"""Tests for genjax/objectives/likelihoods.py against NumPy / SciPy references."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from genjax.objectives import likelihoods

SEEDS = (0, 1)

# Jitted once per input shape: much faster on CPU than tracing every eager op per shape, and it
# checks that the functions compile with their integer options static.
_jit_over_events = functools.partial(jax.jit, static_argnames="event_ndims")
_jit_over_bins_and_events = functools.partial(jax.jit, static_argnames=("num_bins", "event_ndims"))
bernoulli_log_prob = _jit_over_events(likelihoods.bernoulli_log_prob)
gaussian_log_prob = _jit_over_events(likelihoods.gaussian_log_prob)
discretized_logistic_log_prob = _jit_over_bins_and_events(likelihoods.discretized_logistic_log_prob)
discretized_logistic_mixture_log_prob = _jit_over_bins_and_events(
    likelihoods.discretized_logistic_mixture_log_prob
)
bits_per_dim = jax.jit(likelihoods.bits_per_dim, static_argnames="num_dims")


def _float32(array):
    """Rounds to float32 and back, so a float64 reference sees exactly the tested inputs."""
    return np.asarray(array, np.float32).astype(np.float64)


# ---------------------------------------------------------------- Bernoulli


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", ((6,), (3, 4), (2, 3, 5)))
def test_bernoulli_binary_matches_scipy(seed, shape):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, shape).astype(np.float64)
    logits = _float32(4.0 * rng.standard_normal(shape))
    log_probs = bernoulli_log_prob(jnp.asarray(x), jnp.asarray(logits, jnp.float32))
    expected = stats.bernoulli.logpmf(x, special.expit(logits))
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_bernoulli_continuous_x_is_negative_cross_entropy(seed):
    rng = np.random.default_rng(seed)
    x = _float32(rng.uniform(size=(4, 7)))
    logits = _float32(4.0 * rng.standard_normal((4, 7)))
    log_probs = bernoulli_log_prob(jnp.asarray(x, jnp.float32), logits)
    probs = special.expit(logits)
    expected = x * np.log(probs) + (1.0 - x) * np.log1p(-probs)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-6)


def test_bernoulli_event_ndims_and_broadcasting():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 2, (3, 4, 5)).astype(np.float32)  # (B, H, W)
    logits = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)  # (K, B, H, W)
    per_element = bernoulli_log_prob(x, logits)
    per_image = bernoulli_log_prob(x, logits, event_ndims=2)
    assert per_element.shape == (2, 3, 4, 5)
    assert per_image.shape == (2, 3)
    np.testing.assert_allclose(per_image, per_element.sum(axis=(-2, -1)), rtol=1e-6)
    everything = bernoulli_log_prob(x, logits, event_ndims=4)
    assert everything.shape == ()
    np.testing.assert_allclose(everything, per_element.sum(), rtol=1e-5)
    with pytest.raises(ValueError):
        bernoulli_log_prob(x, logits, event_ndims=5)


def test_bernoulli_extreme_logits_values_and_gradients():
    x = jnp.array([1.0, 0.0, 1.0, 0.0, 0.3])
    logits = jnp.array([1e4, 1e4, -1e4, -1e4, 80.0])
    log_probs = bernoulli_log_prob(x, logits)
    np.testing.assert_allclose(log_probs, [0.0, -1e4, -1e4, 0.0, -0.7 * 80.0], rtol=1e-6)
    gradient = jax.jit(jax.grad(lambda lg: bernoulli_log_prob(x, lg).sum()))(logits)
    np.testing.assert_allclose(gradient, x - special.expit(np.asarray(logits)), atol=1e-6)


# ---------------------------------------------------------------- Gaussian


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, event_ndims", (((6,), 0), ((3, 4), 1), ((2, 3, 5), 2)))
def test_gaussian_matches_scipy(seed, shape, event_ndims):
    rng = np.random.default_rng(seed)
    x, mean = _float32(rng.normal(size=shape)), _float32(rng.normal(size=shape))
    log_var = _float32(rng.uniform(-3.0, 3.0, size=shape))
    log_probs = gaussian_log_prob(
        *(jnp.asarray(a, jnp.float32) for a in (x, mean, log_var)), event_ndims=event_ndims
    )
    per_element = stats.norm.logpdf(x, loc=mean, scale=np.exp(0.5 * log_var))
    expected = per_element.sum(axis=tuple(range(len(shape) - event_ndims, len(shape))))
    assert log_probs.shape == shape[: len(shape) - event_ndims]
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-5)


def test_gaussian_gradient_is_finite_at_extreme_values():
    x = jnp.array([0.0, 1e3, -1e3, 0.0])
    mean = jnp.zeros(4)
    log_var = jnp.array([-40.0, 40.0, 0.0, 60.0])
    gradient_fn = jax.grad(lambda m, lv: gaussian_log_prob(x, m, lv).sum(), argnums=(0, 1))
    gradients = jax.jit(gradient_fn)(mean, log_var)
    assert all(np.all(np.isfinite(gradient)) for gradient in gradients)


# ---------------------------------------------------------------- discretised logistic


def _logistic_mass(lower, upper, mean, scale):
    """Float64 numerical integral of the logistic density over [lower, upper] (may be inf).

    An infinite end is split off where the density is smooth and monotone, and a peak inside
    a finite range is passed to quad as a breakpoint, so narrow densities are not missed.
    """
    pdf = functools.partial(stats.logistic.pdf, loc=mean, scale=scale)
    quad = functools.partial(integrate.quad, epsabs=0.0, epsrel=1e-11, limit=200)
    if np.isinf(lower):
        split = min(upper, mean - 40.0 * scale)
        return quad(pdf, -np.inf, split)[0] + _logistic_mass(split, upper, mean, scale)
    if np.isinf(upper):
        split = max(lower, mean + 40.0 * scale)
        return _logistic_mass(lower, split, mean, scale) + quad(pdf, split, np.inf)[0]
    if lower >= upper:
        return 0.0
    points = [mean] if lower < mean < upper else None
    return quad(pdf, lower, upper, points=points)[0]


def _reference_log_prob(bin_index, mean, log_scale, num_bins):
    """log of the integrated logistic density over bin ``bin_index`` of the [-1, 1] grid."""
    x = 2.0 * bin_index / (num_bins - 1) - 1.0
    half_width = 1.0 / (num_bins - 1)
    lower = -np.inf if bin_index == 0 else x - half_width
    upper = np.inf if bin_index == num_bins - 1 else x + half_width
    return np.log(_logistic_mass(lower, upper, mean, np.exp(log_scale)))


def _grid_values(bin_indices, num_bins):
    return (2.0 * bin_indices / (num_bins - 1) - 1.0).astype(np.float32)


def _random_logistic_inputs(seed, shape, num_bins):
    rng = np.random.default_rng(seed)
    bin_indices = rng.integers(0, num_bins, shape)
    bin_indices.flat[:2] = (0, num_bins - 1)  # always include both edge bins
    mean = _float32(rng.uniform(-1.2, 1.2, shape))
    log_scale = _float32(rng.uniform(-5.0, 0.5, shape))
    return bin_indices, mean, log_scale


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_bins", (256, 4))
@pytest.mark.parametrize("shape", ((5,), (3, 4)))
def test_discretized_logistic_matches_numerical_integration(seed, num_bins, shape):
    bin_indices, mean, log_scale = _random_logistic_inputs(seed, shape, num_bins)
    log_probs = discretized_logistic_log_prob(
        _grid_values(bin_indices, num_bins), mean, log_scale, num_bins=num_bins
    )
    expected = np.vectorize(_reference_log_prob)(bin_indices, mean, log_scale, num_bins)
    assert log_probs.shape == shape
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_bins", (256, 4))
def test_discretized_logistic_bins_sum_to_one(num_bins):
    grid = np.linspace(-1.0, 1.0, num_bins, dtype=np.float32)[:, None]  # (num_bins, 1)
    mean = np.array([0.0, 0.5, -0.999, 1.0, 3.0, -0.3, 0.01, 0.2], np.float32)  # (P,)
    log_scale = np.array([0.0, -7.0, -3.0, -5.0, 1.0, 2.0, -10.0, 4.0], np.float32)  # (P,)
    log_probs = discretized_logistic_log_prob(grid, mean, log_scale, num_bins)
    assert log_probs.shape == (num_bins, mean.size)
    total = np.exp(np.asarray(log_probs, np.float64)).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, atol=2e-5)


# (bin index on a 256 grid, mean, log_scale): far tails on both sides, edge and interior bins.
EXTREME_CASES = (
    (128, 1.0, -7.0),
    (128, -1.0, -7.0),
    (0, 1.0, -7.0),
    (255, -1.0, -7.0),
    (3, 0.9, -6.0),
    (250, -0.9, -6.0),
    (0, 10.0, -3.0),
    (255, -10.0, -3.0),
    (100, 0.0, 7.0),
    (0, 0.0, 7.0),
)


def _extreme_case_arrays():
    """EXTREME_CASES as (bin_indices, mean, log_scale) arrays, each of shape (num_cases,)."""
    cases = np.array(EXTREME_CASES)  # (num_cases, 3)
    return cases[:, 0].astype(int), _float32(cases[:, 1]), _float32(cases[:, 2])


def _scipy_log_bin_mass(bin_index, mean, log_scale, num_bins=256):
    """Log bin mass from SciPy's log-CDF / log-survival, differenced in log space."""
    x = 2.0 * bin_index / (num_bins - 1) - 1.0
    half_width, scale = 1.0 / (num_bins - 1), np.exp(log_scale)
    log_cdf_upper = stats.logistic.logcdf(x + half_width, mean, scale)
    log_survival_lower = stats.logistic.logsf(x - half_width, mean, scale)
    if bin_index == 0:
        return log_cdf_upper
    if bin_index == num_bins - 1:
        return log_survival_lower
    if x > mean:  # right tail: difference of survival functions is more accurate there
        log_survival_upper = stats.logistic.logsf(x + half_width, mean, scale)
        return log_survival_lower + np.log1p(-np.exp(log_survival_upper - log_survival_lower))
    log_cdf_lower = stats.logistic.logcdf(x - half_width, mean, scale)
    return log_cdf_upper + np.log1p(-np.exp(log_cdf_lower - log_cdf_upper))


def test_discretized_logistic_is_finite_and_accurate_in_extreme_tails():
    bin_indices, mean, log_scale = _extreme_case_arrays()
    log_probs = discretized_logistic_log_prob(_grid_values(bin_indices, 256), mean, log_scale)
    assert np.all(np.isfinite(log_probs))
    assert np.min(log_probs) < -1000.0  # the cases do reach far below float32's exp range
    expected = np.vectorize(_scipy_log_bin_mass)(bin_indices, mean, log_scale)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-4, atol=1e-4)


def test_discretized_logistic_gradients_are_finite_at_extreme_values():
    bin_indices, mean, log_scale = _extreme_case_arrays()
    x = jnp.asarray(_grid_values(bin_indices, 256))

    def total_log_prob(mean, log_scale):
        return discretized_logistic_log_prob(x, mean, log_scale).sum()

    gradients = jax.jit(jax.grad(total_log_prob, argnums=(0, 1)))(
        jnp.asarray(mean, jnp.float32), jnp.asarray(log_scale, jnp.float32)
    )
    assert all(np.all(np.isfinite(gradient)) for gradient in gradients)


def test_discretized_logistic_event_ndims_and_broadcasting():
    rng = np.random.default_rng(4)
    bin_indices, mean, log_scale = _random_logistic_inputs(4, (2, 3, 3, 2), 256)  # (B,H,W,C)
    x = _grid_values(bin_indices, 256)
    per_image = discretized_logistic_log_prob(x, mean, log_scale, num_bins=256, event_ndims=3)
    per_element = discretized_logistic_log_prob(x, mean, log_scale)
    assert per_image.shape == (2,)
    np.testing.assert_allclose(per_image, per_element.sum(axis=(1, 2, 3)), rtol=1e-5)
    shared_scale = discretized_logistic_log_prob(x, mean, rng.normal())
    assert shared_scale.shape == x.shape


# ---------------------------------------------------------------- mixture


def _random_mixture_inputs(seed, shape, num_components, num_bins):
    rng = np.random.default_rng(seed)
    bin_indices = rng.integers(0, num_bins, shape)
    bin_indices.flat[:2] = (0, num_bins - 1)
    parameter_shape = (*shape, num_components)
    logit_probs = _float32(2.0 * rng.normal(size=parameter_shape))
    means = _float32(rng.uniform(-1.2, 1.2, parameter_shape))
    log_scales = _float32(rng.uniform(-5.0, 0.5, parameter_shape))
    return bin_indices, logit_probs, means, log_scales


def test_mixture_with_one_component_equals_single_logistic():
    bin_indices, logit_probs, means, log_scales = _random_mixture_inputs(0, (4, 6), 1, 256)
    x = _grid_values(bin_indices, 256)
    mixture = discretized_logistic_mixture_log_prob(x, logit_probs, means, log_scales)
    single = discretized_logistic_log_prob(x, means[..., 0], log_scales[..., 0])
    np.testing.assert_allclose(mixture, single, rtol=1e-6, atol=1e-6)


def test_mixture_of_identical_components_equals_single_logistic():
    bin_indices, logit_probs, means, log_scales = _random_mixture_inputs(1, (5,), 4, 256)
    x = _grid_values(bin_indices, 256)
    means = np.repeat(means[..., :1], 4, axis=-1)
    log_scales = np.repeat(log_scales[..., :1], 4, axis=-1)
    mixture = discretized_logistic_mixture_log_prob(x, logit_probs, means, log_scales)
    single = discretized_logistic_log_prob(x, means[..., 0], log_scales[..., 0])
    np.testing.assert_allclose(mixture, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("num_bins", (256, 4))
def test_mixture_matches_numerical_integration(seed, num_bins):
    shape, num_components = (2, 3), 3
    bin_indices, logit_probs, means, log_scales = _random_mixture_inputs(
        seed, shape, num_components, num_bins
    )
    log_probs = discretized_logistic_mixture_log_prob(
        _grid_values(bin_indices, num_bins),
        logit_probs,
        means,
        log_scales,
        num_bins=num_bins,
        event_ndims=1,
    )
    component_log_probs = np.vectorize(_reference_log_prob)(
        bin_indices[..., None], means, log_scales, num_bins
    )  # (2, 3, M)
    log_weights = logit_probs - special.logsumexp(logit_probs, axis=-1, keepdims=True)
    expected = special.logsumexp(log_weights + component_log_probs, axis=-1).sum(axis=-1)
    assert log_probs.shape == (2,)
    np.testing.assert_allclose(log_probs, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_bins", (256, 4))
def test_mixture_bins_sum_to_one(num_bins):
    _, logit_probs, means, log_scales = _random_mixture_inputs(3, (6,), 5, num_bins)
    grid = np.linspace(-1.0, 1.0, num_bins, dtype=np.float32)[:, None]  # (num_bins, 1)
    log_probs = discretized_logistic_mixture_log_prob(
        grid, logit_probs, means, log_scales, num_bins=num_bins
    )  # (num_bins, 6)
    total = np.exp(np.asarray(log_probs, np.float64)).sum(axis=0)
    np.testing.assert_allclose(total, 1.0, atol=2e-5)


def test_mixture_gradients_are_finite_at_extreme_values():
    x = _grid_values(np.array([0, 128, 255]), 256)
    logit_probs = jnp.array([[50.0, -50.0], [0.0, 0.0], [-80.0, 80.0]])
    means = jnp.array([[1.0, -1.0], [1.0, -1.0], [-1.0, 10.0]])
    log_scales = jnp.full((3, 2), -7.0)
    gradient_fn = jax.grad(
        lambda *p: discretized_logistic_mixture_log_prob(x, *p).sum(), argnums=(0, 1, 2)
    )
    gradients = jax.jit(gradient_fn)(logit_probs, means, log_scales)
    assert all(np.all(np.isfinite(gradient)) for gradient in gradients)


def test_mixture_rejects_mismatched_components():
    with pytest.raises(AssertionError):
        discretized_logistic_mixture_log_prob(
            jnp.zeros((4,)), jnp.zeros((4, 3)), jnp.zeros((4, 2)), jnp.zeros((4, 2))
        )


# ---------------------------------------------------------------- bits per dim


def test_bits_per_dim_known_values():
    num_dims = 28 * 28
    nll = jnp.array([1.5, 3.0]) * num_dims * math.log(2.0)
    np.testing.assert_allclose(bits_per_dim(nll, num_dims), [1.5, 3.0], rtol=1e-6)
    # A uniform distribution over 256 values per dimension costs exactly 8 bits per dimension.
    uniform_nll = 3072 * math.log(256.0)
    np.testing.assert_allclose(bits_per_dim(uniform_nll, 3072), 8.0, rtol=1e-6)
    with pytest.raises(ValueError):
        bits_per_dim(nll, 0)
