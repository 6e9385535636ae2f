"""Latent tools: interpolation paths, grids, and vector arithmetic on a known generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.models.gan import latent


def test_interpolations_start_and_end_at_the_given_points():
    z0, z1 = jax.random.normal(jax.random.key(0), (2, 16))
    for method in latent.INTERPOLATIONS:
        path = latent.interpolate(z0, z1, 5, method)
        assert path.shape == (5, 16)
        np.testing.assert_allclose(path[0], z0, atol=1e-5)
        np.testing.assert_allclose(path[-1], z1, atol=1e-5)
    linear = latent.interpolate(z0, z1, 5, "linear")
    np.testing.assert_allclose(linear[2], (z0 + z1) / 2, atol=1e-6)
    # slerp: the norm moves linearly from |z0| to |z1| and the angle to z0 grows linearly.
    slerp = latent.interpolate(z0, z1, 5, "slerp")
    norms = jnp.linalg.norm(slerp, axis=-1)
    np.testing.assert_allclose(norms, jnp.linspace(norms[0], norms[-1], 5), rtol=1e-5)
    cosines = slerp @ z0 / (norms * jnp.linalg.norm(z0))
    angles = jnp.arccos(jnp.clip(cosines, -1, 1))
    np.testing.assert_allclose(angles, jnp.linspace(0, angles[-1], 5), atol=1e-3)
    with pytest.raises(ValueError, match="allowed"):
        latent.interpolate(z0, z1, 3, "cubic")


def test_interpolation_grid_keeps_one_label_per_row():
    seen = {}

    def generate(z, labels):
        seen["labels"] = labels
        return np.zeros((len(z), 4, 4, 1))

    grid = latent.interpolation_grid(generate, jax.random.key(1), 8, 3, 5, num_classes=10)
    assert grid.shape == (15, 4, 4, 1)
    np.testing.assert_array_equal(seen["labels"], np.repeat([0, 1, 2], 5))


def _known_generator(z, labels):
    """Images whose ink is sigmoid(z_0) and whose class is 1 when z_1 > 0, else 0 (drawn as a
    bright pixel in one of two places), so the arithmetic has a known answer."""
    del labels
    z = np.asarray(z)
    images = np.zeros((len(z), 4, 4, 1))
    images[..., 0] = (1 / (1 + np.exp(-z[:, 0])))[:, None, None] * 0.5
    images[z[:, 1] > 0, 0, 0, 0] = 1.0
    images[z[:, 1] <= 0, 3, 3, 0] = 1.0
    return images


def _known_classifier(images):
    return (images[:, 0, 0, 0] == 1.0).astype(int)


def test_vector_arithmetic_moves_ink_onto_the_other_class():
    result = latent.vector_arithmetic(
        _known_generator, _known_classifier, jax.random.key(2), 6, class_a=0, class_b=1
    )
    assert result["results"].shape == (8, 4, 4, 1)
    assert result["results_read_as_b"] == 1.0
    assert result["ink_results"] > result["ink_light_b"] + 0.1
    assert set(result["groups"]) == {"heavy_a", "light_a", "light_b", "heavy_b"}


def test_vector_arithmetic_names_a_class_the_generator_never_draws():
    with pytest.raises(ValueError, match="class 5"):
        latent.vector_arithmetic(
            _known_generator, _known_classifier, jax.random.key(2), 6, class_a=5, class_b=1
        )
