"""Autoencoder objectives against NumPy, and the corruptions against their definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.objectives import autoencoding


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_reconstruction_nll_matches_numpy_cross_entropy_and_gaussian():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 2, 2, 1)).astype(np.float32)
    output = rng.normal(size=(3, 2, 2, 1)).astype(np.float32)
    p = _sigmoid(output.astype(np.float64))
    cross_entropy = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(
        autoencoding.reconstruction_nll(x, output, "bernoulli"), cross_entropy, rtol=1e-5
    )
    sigma = 0.3
    squared = ((x - output).astype(np.float64) ** 2).reshape(3, -1).sum(axis=1)
    gaussian = squared / (2 * sigma**2) + 4 * 0.5 * np.log(2 * np.pi * sigma**2)
    np.testing.assert_allclose(
        autoencoding.reconstruction_nll(x, output, "gaussian", sigma), gaussian, rtol=1e-5
    )
    np.testing.assert_allclose(autoencoding.squared_error(x, output), squared, rtol=1e-5)
    with pytest.raises(ValueError, match=r"likelihood='poisson'; allowed: \('bernoulli'"):
        autoencoding.reconstruction_nll(x, output, "poisson")


def test_sparsity_penalties_match_numpy():
    rng = np.random.default_rng(1)
    codes = rng.uniform(0.01, 0.99, size=(50, 7))
    np.testing.assert_allclose(
        autoencoding.l1_penalty(jnp.asarray(codes - 0.5)),
        np.abs(codes - 0.5).sum(axis=1),
        rtol=1e-5,
    )
    rho, rho_hat = 0.05, codes.mean(axis=0)
    kl = np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))
    np.testing.assert_allclose(
        autoencoding.kl_sparsity_penalty(jnp.asarray(codes), rho), kl, rtol=1e-5
    )
    at_target = np.full((4, 3), rho)
    assert float(autoencoding.kl_sparsity_penalty(jnp.asarray(at_target), rho)) == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("kind", ["masking", "salt_and_pepper"])
def test_binary_corruptions_hit_each_pixel_with_the_level(kind):
    level = 0.3
    x = jnp.ones((20_000, 10))
    corrupted = np.asarray(autoencoding.corrupt(jax.random.key(0), x, kind, level))
    changed = np.mean(corrupted != 1.0)
    # masking zeroes a `level` share; salt-and-pepper sets it to 0 or 1, so half stay 1
    expected = level if kind == "masking" else level / 2
    assert changed == pytest.approx(expected, abs=4 * np.sqrt(expected / x.size) + 1e-3)
    assert set(np.unique(corrupted)) <= {0.0, 1.0}
    zeros = jnp.zeros((20_000, 10))
    salted = np.mean(np.asarray(autoencoding.corrupt(jax.random.key(1), zeros, kind, level)))
    assert salted == pytest.approx(0.0 if kind == "masking" else level / 2, abs=5e-3)


def test_gaussian_corruption_adds_noise_of_std_level_and_none_is_the_identity():
    x = jnp.full((50_000,), 0.5)
    noisy = np.asarray(autoencoding.corrupt(jax.random.key(0), x, "gaussian", 0.2))
    assert noisy.mean() == pytest.approx(0.5, abs=0.01)
    assert noisy.std() == pytest.approx(0.2, rel=0.02)
    assert autoencoding.corrupt(jax.random.key(0), x, "none", 0.7) is x
    with pytest.raises(ValueError, match=r"kind='blur'; allowed: \('none', 'masking'"):
        autoencoding.corrupt(jax.random.key(0), x, "blur", 0.1)
