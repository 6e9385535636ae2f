"""Masked dense layers and MADE degrees: connectivity is exactly autoregressive."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.nn import masked


def _paths(masks) -> np.ndarray:
    """(D_in, D_out) number of paths from each input to each output through the masks."""
    paths = np.asarray(masks[0], np.float64)
    for mask in masks[1:]:
        paths = paths @ np.asarray(mask, np.float64)
    return paths


def test_input_degrees_follow_the_ordering():
    order = np.array([2, 0, 3, 1])
    degrees = masked.input_degrees(order)
    np.testing.assert_array_equal(degrees, [2, 4, 1, 3])  # dimension 2 comes first
    np.testing.assert_array_equal(masked.order_from_degrees(degrees), order)
    with pytest.raises(ValueError, match="permutation"):
        masked.input_degrees([0, 0, 1])


@pytest.mark.parametrize("mode", masked.DEGREE_MODES)
def test_hidden_degrees_lie_in_range(mode):
    degrees = masked.hidden_degrees(np.random.default_rng(0), 50, 2, 6, mode)
    assert degrees.shape == (50,) and degrees.dtype == np.int32
    assert degrees.min() >= 2 and degrees.max() <= 6
    if mode == "evenly_spaced":
        np.testing.assert_array_equal(np.unique(degrees), np.arange(2, 7))
    # D = 1: nothing to condition on, every unit gets the top degree.
    np.testing.assert_array_equal(masked.hidden_degrees(0, 3, 1, 0, mode), [0, 0, 0])


def test_seed_key_and_generator_give_reproducible_degrees():
    a = masked.made_degrees(jax.random.key(3), 6, (10, 10))
    b = masked.made_degrees(jax.random.key(3), 6, (10, 10))
    c = masked.made_degrees(jax.random.key(4), 6, (10, 10))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    np.testing.assert_array_equal(
        masked.made_degrees(7, 6, (10,))[1],
        masked.made_degrees(np.random.default_rng(7), 6, (10,))[1],
    )


def test_mask_matrix_against_definition():
    in_degrees = np.array([1, 2, 3])
    out_degrees = np.array([1, 3])
    hidden = np.asarray(masked.mask_matrix(in_degrees, out_degrees, strict=False))
    output = np.asarray(masked.mask_matrix(in_degrees, out_degrees, strict=True))
    np.testing.assert_array_equal(hidden, [[1, 1], [0, 1], [0, 1]])
    np.testing.assert_array_equal(output, [[0, 1], [0, 1], [0, 0]])


@pytest.mark.parametrize("hidden_sizes", [(), (12,), (12, 7)])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_outputs_per_input", [1, 3])
def test_made_masks_connect_only_earlier_inputs(hidden_sizes, seed, num_outputs_per_input):
    num_inputs = 6
    order = np.random.default_rng(seed).permutation(num_inputs)
    masks = masked.made_masks(seed, num_inputs, hidden_sizes, order, num_outputs_per_input)
    sizes = [num_inputs, *hidden_sizes, num_inputs * num_outputs_per_input]
    assert [m.shape for m in masks] == list(zip(sizes[:-1], sizes[1:], strict=True))
    paths = _paths(masks).reshape(num_inputs, num_inputs, num_outputs_per_input)
    degrees = masked.input_degrees(order)
    earlier = degrees[:, None] < degrees[None, :]  # [input, output]
    assert np.all(paths[~earlier] == 0)


def test_evenly_spaced_degrees_connect_every_earlier_input():
    """With H >= D - 1 evenly spaced degrees, output d sees all of x_<d (a full MADE)."""
    num_inputs = 7
    order = np.random.default_rng(5).permutation(num_inputs)
    masks = masked.made_masks(None, num_inputs, (6, 6), order, mode="evenly_spaced")
    degrees = masked.input_degrees(order)
    earlier = degrees[:, None] < degrees[None, :]
    assert np.all((_paths(masks) > 0) == earlier)


def test_masked_dense_applies_the_mask():
    mask = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    layer = masked.MaskedDense(3)
    x = jnp.array([[0.3, -1.2]])
    params = layer.init(jax.random.key(0), x, mask)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    np.testing.assert_allclose(layer.apply(params, x, mask), x @ (kernel * mask) + bias)
    jacobian = jax.jacfwd(lambda v: layer.apply(params, v, mask))(x[0])  # (out, in)
    np.testing.assert_array_equal(jacobian == 0, mask.T == 0)
    grads = jax.grad(lambda p: layer.apply(p, x, mask).sum())(params)["params"]["kernel"]
    assert np.all(grads[mask == 0] == 0)  # masked weights never move
    with pytest.raises(AssertionError):
        layer.apply(params, x, mask[:, :2])
