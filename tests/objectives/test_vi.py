"""Tests for genjax/objectives/vi.py against NumPy / SciPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from genjax.objectives import vi

SEEDS = (0, 1, 2)

# Jitted once per input shape: much faster on CPU than tracing every eager op per shape, and it
# checks that the functions compile with ``axis`` static.
elbo = jax.jit(vi.elbo, static_argnames="axis")
iwae_bound = jax.jit(vi.iwae_bound, static_argnames="axis")
gaussian_kl = jax.jit(vi.gaussian_kl)
importance_weights = jax.jit(vi.importance_weights, static_argnames="axis")
effective_sample_size = jax.jit(vi.effective_sample_size, static_argnames="axis")
# (shape, sample axis) pairs: the sample axis first, last, in the middle and negative.
SHAPES_AND_AXES = (((7,), 0), ((5, 3), 0), ((3, 5), 1), ((4, 6, 2), 1), ((2, 3, 8), -1))


def _random_log_w(seed, shape, scale=3.0, offset=-50.0):
    """float32-representable log weights as float64, so references see the same inputs."""
    log_w = offset + scale * np.random.default_rng(seed).standard_normal(shape)
    return log_w.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES)
def test_elbo_is_mean_over_sample_axis(seed, shape, axis):
    log_w = _random_log_w(seed, shape)
    bound = elbo(jnp.asarray(log_w, jnp.float32), axis=axis)
    expected = np.mean(log_w, axis=axis)
    assert bound.shape == expected.shape
    np.testing.assert_allclose(bound, expected, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES)
def test_iwae_bound_matches_scipy_logsumexp(seed, shape, axis):
    log_w = _random_log_w(seed, shape)
    bound = iwae_bound(jnp.asarray(log_w, jnp.float32), axis=axis)
    expected = special.logsumexp(log_w, axis=axis) - np.log(shape[axis])
    assert bound.shape == expected.shape
    np.testing.assert_allclose(bound, expected, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES)
def test_iwae_bound_is_at_least_elbo(seed, shape, axis):
    log_w = jnp.asarray(_random_log_w(seed, shape, scale=5.0), jnp.float32)
    gap = iwae_bound(log_w, axis) - elbo(log_w, axis)
    assert np.all(np.asarray(gap) >= -1e-4)
    assert np.all(np.asarray(gap) > 0.0)  # strict: the weights are not all equal


@pytest.mark.parametrize("seed", SEEDS)
def test_iwae_bound_equals_elbo_for_one_sample(seed):
    log_w = jnp.asarray(_random_log_w(seed, (1, 9)), jnp.float32)
    np.testing.assert_allclose(iwae_bound(log_w), elbo(log_w), rtol=1e-6)
    np.testing.assert_allclose(iwae_bound(log_w), log_w[0], rtol=1e-6)


def test_iwae_bound_is_stable_for_very_negative_log_weights():
    log_w = _random_log_w(0, (64, 4), scale=2.0, offset=-1e4)
    bound = iwae_bound(jnp.asarray(log_w, jnp.float32))
    assert np.all(np.isfinite(bound))
    expected = special.logsumexp(log_w, axis=0) - np.log(64)
    np.testing.assert_allclose(bound, expected, rtol=1e-6)
    # Naive log(mean(exp(log_w))) underflows to -inf in float32, which the bound must avoid.
    with np.errstate(divide="ignore"):
        naive = np.log(np.mean(np.exp(log_w.astype(np.float32)), axis=0))
    assert np.all(np.isneginf(naive))


def test_iwae_bound_gradient_is_finite_and_is_the_normalized_weights():
    log_w = jnp.asarray(_random_log_w(1, (16, 3), scale=30.0, offset=-1e4), jnp.float32)
    gradient = jax.jit(jax.grad(lambda lw: iwae_bound(lw).sum()))(log_w)
    assert np.all(np.isfinite(gradient))
    np.testing.assert_allclose(gradient, special.softmax(np.asarray(log_w), axis=0), atol=1e-6)


def _numpy_gaussian_kl(mean, log_var):
    """KL(N(m, s^2) || N(0, 1)) per dim as log(1 / s) + (s^2 + m^2) / 2 - 1 / 2, summed."""
    std = np.exp(0.5 * log_var)
    return np.sum(-np.log(std) + (std**2 + mean**2) / 2.0 - 0.5, axis=-1)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", ((4,), (3, 5), (2, 3, 6)))
def test_gaussian_kl_matches_numpy_closed_form(seed, shape):
    rng = np.random.default_rng(seed)
    mean, log_var = 2.0 * rng.standard_normal(shape), 2.0 * rng.standard_normal(shape)
    kl = gaussian_kl(jnp.asarray(mean, jnp.float32), jnp.asarray(log_var, jnp.float32))
    assert kl.shape == shape[:-1]
    np.testing.assert_allclose(kl, _numpy_gaussian_kl(mean, log_var), rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_gaussian_kl_matches_monte_carlo_estimate(seed):
    rng = np.random.default_rng(seed)
    num_samples, dims = 400_000, 3
    mean, log_var = rng.normal(size=dims), rng.normal(size=dims)
    std = np.exp(0.5 * log_var)
    z = mean + std * rng.standard_normal((num_samples, dims))  # z ~ q
    log_ratio = np.sum(
        stats.norm.logpdf(z, loc=mean, scale=std) - stats.norm.logpdf(z), axis=-1
    )  # (S,)
    standard_error = log_ratio.std() / np.sqrt(num_samples)
    kl = float(gaussian_kl(jnp.asarray(mean), jnp.asarray(log_var)))
    assert abs(kl - log_ratio.mean()) < 5.0 * standard_error


def test_gaussian_kl_is_zero_at_prior_and_positive_elsewhere():
    np.testing.assert_allclose(gaussian_kl(jnp.zeros((2, 5)), jnp.zeros((2, 5))), 0.0)
    rng = np.random.default_rng(3)
    kl = gaussian_kl(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)))
    assert np.all(np.asarray(kl) > 0.0)


def test_gaussian_kl_gradient_is_finite_at_extreme_values():
    mean = jnp.array([[0.0, 1e3, -1e3], [0.0, 0.0, 0.0]])
    log_var = jnp.array([[40.0, -40.0, 0.0], [-80.0, 80.0, 0.0]])
    gradient_fn = jax.grad(lambda m, lv: gaussian_kl(m, lv).sum(), argnums=(0, 1))
    gradients = jax.jit(gradient_fn)(mean, log_var)
    assert all(np.all(np.isfinite(gradient)) for gradient in gradients)


def test_gaussian_kl_rejects_mismatched_shapes():
    with pytest.raises(AssertionError):
        gaussian_kl(jnp.zeros((2, 3)), jnp.zeros((2, 4)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES)
def test_importance_weights_match_scipy_softmax(seed, shape, axis):
    log_w = _random_log_w(seed, shape, offset=-1e4)
    weights = importance_weights(jnp.asarray(log_w, jnp.float32), axis=axis)
    assert weights.shape == shape
    np.testing.assert_allclose(weights, special.softmax(log_w, axis=axis), atol=1e-6)
    np.testing.assert_allclose(np.sum(weights, axis=axis), 1.0, rtol=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape, axis", SHAPES_AND_AXES)
def test_effective_sample_size_matches_kish_formula(seed, shape, axis):
    log_w = _random_log_w(seed, shape, scale=1.5, offset=-1e4)
    ess = effective_sample_size(jnp.asarray(log_w, jnp.float32), axis=axis)
    w = np.exp(log_w - log_w.max())  # float64, unnormalised
    expected = np.sum(w, axis=axis) ** 2 / np.sum(w**2, axis=axis)
    assert ess.shape == expected.shape
    np.testing.assert_allclose(ess, expected, rtol=1e-4)
    assert np.all((np.asarray(ess) >= 1.0 - 1e-5) & (np.asarray(ess) <= shape[axis] + 1e-3))


def test_effective_sample_size_extremes():
    np.testing.assert_allclose(effective_sample_size(jnp.full((10, 2), -7.0)), 10.0, rtol=1e-5)
    one_dominant = jnp.array([0.0, -1e3, -1e3, -1e3])
    np.testing.assert_allclose(effective_sample_size(one_dominant), 1.0, rtol=1e-6)


def test_sample_axis_must_exist():
    with pytest.raises(AssertionError):
        iwae_bound(jnp.zeros((3, 4)), axis=2)
