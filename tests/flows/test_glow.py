"""Tests for genjax/flows/glow.py: ActNorm and the invertible 1x1 convolution (Glow)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.flows.flow import Flow
from genjax.flows.glow import ActNorm, InvConv1x1, lu_factors, random_rotation
from tests.flows.checks import assert_log_det_matches_jacobian, assert_round_trip

SEEDS = (0, 1, 2)
# An image batch (B, H, W, C) and a flat batch (B, D), which is one position of D channels.
SHAPES = ((2, 3, 3, 4), (3, 5))
LAYERS = {
    "actnorm": lambda seed: ActNorm(),
    "conv": lambda seed: InvConv1x1(lu=False, seed=seed),
    "conv_lu": lambda seed: InvConv1x1(lu=True, seed=seed),
}


def _batch(seed, shape, mean=0.0, std=1.0):
    """A Gaussian (B, ..., C) batch with the given per-channel mean and std, float32."""
    return mean + std * jax.random.normal(jax.random.key(seed), shape)


def _perturbed_variables(layer, seed, x, scale=0.1):
    """`layer.init` on x, then every parameter moved by scale * N(0, 1): away from the
    orthogonal / data-dependent starting point, where special structure could hide bugs."""
    variables = layer.init(jax.random.key(seed), x)
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    moved = [
        leaf + scale * jax.random.normal(key, leaf.shape)
        for leaf, key in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, moved)


def _kernel_from_lu(params, seed, num_channels):
    """The NumPy float64 reference W = P L (U + diag(sign_s exp(log_s))) of LU parameters."""
    factors = lu_factors(seed, num_channels)
    params = jax.tree.map(lambda leaf: np.asarray(leaf, np.float64), params)
    lower = np.tril(params["lower"], k=-1) + np.eye(num_channels)
    upper = np.triu(params["upper"], k=1) + np.diag(factors.sign_s * np.exp(params["log_s"]))
    return factors.permutation @ lower @ upper


def _per_channel_stats(values):
    """Mean and std (C,) over every axis but the last, in float64."""
    values = np.asarray(values, np.float64)
    axes = tuple(range(values.ndim - 1))
    return values.mean(axis=axes), values.std(axis=axes)


# ----------------------------------------------------------------------------- shared invariants


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip_and_inverse_log_det_is_minus_forward(name, shape, seed):
    layer = LAYERS[name](seed)
    x = _batch(seed, shape)
    variables = _perturbed_variables(layer, seed, x)
    assert_round_trip(layer, variables, x)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_log_det_matches_jacobian_both_directions(name, shape, seed):
    layer = LAYERS[name](seed)
    x = _batch(seed, shape)
    variables = _perturbed_variables(layer, seed, x)
    assert_log_det_matches_jacobian(layer, variables, x)
    assert_log_det_matches_jacobian(layer, variables, x, inverse=True)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_rank_one_inputs_are_refused(name):
    with pytest.raises(ValueError, match=r"\(B, \.\.\., C\) inputs of rank >= 2"):
        LAYERS[name](0).init(jax.random.key(0), jnp.ones((4,)))


# ----------------------------------------------------------------------------- 1x1 convolution


@pytest.mark.parametrize("seed", SEEDS)
def test_lu_factors_reconstruct_the_random_rotation(seed):
    rotation = random_rotation(seed, 5)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(5), atol=1e-12)
    factors = lu_factors(seed, 5)
    np.testing.assert_array_equal(np.diag(factors.lower), np.ones(5))
    np.testing.assert_array_equal(factors.lower, np.tril(factors.lower))
    np.testing.assert_array_equal(factors.upper, np.triu(factors.upper, k=1))
    np.testing.assert_array_equal(np.abs(factors.sign_s), np.ones(5))
    np.testing.assert_array_equal(np.sort(factors.permutation.argmax(axis=0)), np.arange(5))
    diagonal = np.diag(factors.sign_s * np.exp(factors.log_s))
    kernel = factors.permutation @ factors.lower @ (factors.upper + diagonal)
    np.testing.assert_allclose(kernel, rotation, atol=1e-12)
    np.testing.assert_allclose(factors.log_s.sum(), 0.0, atol=1e-12)  # |det| of a rotation


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_lu_and_plain_start_from_the_same_rotation(shape, seed):
    x = _batch(seed, shape)
    outputs = []
    for lu in (False, True):
        layer = InvConv1x1(lu=lu, seed=seed)
        outputs.append(layer.apply(layer.init(jax.random.key(seed), x), x))
    (plain_y, plain_log_det), (lu_y, lu_log_det) = outputs
    np.testing.assert_allclose(lu_y, plain_y, atol=1e-5)
    np.testing.assert_allclose(plain_log_det, np.zeros(shape[0]), atol=1e-4)
    np.testing.assert_allclose(lu_log_det, plain_log_det, atol=1e-4)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_lu_map_equals_plain_map_with_the_reconstructed_kernel(shape, seed):
    """Moved LU parameters and the plain layer with W = P L (U + diag) give one map, and the
    LU log-det (positions * sum(log_s)) equals the plain slogdet."""
    x = _batch(seed, shape)
    lu_layer = InvConv1x1(lu=True, seed=seed)
    lu_variables = _perturbed_variables(lu_layer, seed, x, scale=0.3)
    kernel = _kernel_from_lu(lu_variables["params"], seed, shape[-1])
    plain_variables = {"params": {"kernel": jnp.asarray(kernel, jnp.float32)}}
    lu_y, lu_log_det = lu_layer.apply(lu_variables, x)
    plain_y, plain_log_det = InvConv1x1(lu=False).apply(plain_variables, x)
    np.testing.assert_allclose(lu_y, plain_y, atol=1e-5)
    np.testing.assert_allclose(lu_y, np.einsum("...k,ck->...c", x, kernel), atol=1e-5)
    positions = np.prod(shape[1:-1])
    expected_log_det = positions * np.sum(np.asarray(lu_variables["params"]["log_s"]))
    np.testing.assert_allclose(lu_log_det, np.full(shape[0], expected_log_det), rtol=1e-5)
    np.testing.assert_allclose(plain_log_det, lu_log_det, atol=1e-4, rtol=1e-5)


def test_lu_permutation_and_signs_are_not_variables_and_survive_training():
    """Only L, U and log_s are in 'params'; a few optimizer steps on the WHOLE variables tree
    (as a trainer that passes `init`'s output to optax does) keep P and sign(det W)."""
    seed, x = 1, _batch(1, (2, 3, 3, 4))
    layer = InvConv1x1(lu=True, seed=seed)
    variables = layer.init(jax.random.key(seed), x)
    assert set(variables) == {"params"}
    assert set(variables["params"]) == {"lower", "upper", "log_s"}

    def negative_log_likelihood(variables):
        y, log_det = layer.apply(variables, x)
        return jnp.mean(0.5 * jnp.sum(y**2, axis=(1, 2, 3)) - log_det)

    optimizer = optax.adam(0.1)

    @jax.jit
    def step(variables, opt_state):
        grads = jax.grad(negative_log_likelihood)(variables)
        updates, opt_state = optimizer.update(grads, opt_state)
        return optax.apply_updates(variables, updates), opt_state

    trained, opt_state = variables, optimizer.init(variables)
    for _ in range(5):
        trained, opt_state = step(trained, opt_state)
    assert not np.allclose(trained["params"]["log_s"], variables["params"]["log_s"])
    kernel = _kernel_from_lu(trained["params"], seed, 4)
    np.testing.assert_allclose(
        layer.apply(trained, x)[0], np.einsum("...k,ck->...c", x, kernel), atol=1e-5
    )
    factors = lu_factors(seed, 4)
    assert np.sign(np.linalg.det(kernel)) == np.sign(np.linalg.det(random_rotation(seed, 4)))
    assert np.sign(np.linalg.det(kernel)) == np.linalg.det(factors.permutation) * np.prod(
        factors.sign_s
    )


# ----------------------------------------------------------------------------- actnorm


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("inverse", (False, True))
def test_actnorm_init_standardises_the_data_side(inverse, shape, seed):
    """Initialised on data with per-channel mean 3 and std 5 through either direction, the
    output of that direction has per-channel mean 0 and std 1; in the inverse direction
    (y = data) bias and scale are the data's mean and std."""
    data = _batch(seed, shape, mean=3.0, std=5.0)
    layer = ActNorm()
    variables = layer.init(jax.random.key(seed), data, inverse=inverse)
    standardised, _ = layer.apply(variables, data, inverse=inverse)
    mean, std = _per_channel_stats(standardised)
    np.testing.assert_allclose(mean, np.zeros(shape[-1]), atol=1e-5)
    np.testing.assert_allclose(std, np.ones(shape[-1]), atol=1e-5)
    data_mean, data_std = _per_channel_stats(data)
    params = variables["params"]
    expected_scale = data_std if inverse else 1.0 / data_std
    np.testing.assert_allclose(np.exp(params["log_scale"]), expected_scale, rtol=1e-5)
    if inverse:
        np.testing.assert_allclose(params["bias"], data_mean, rtol=1e-5)


def test_actnorm_in_a_flow_is_initialised_through_the_inverse_on_data():
    data = _batch(0, SHAPES[0], mean=3.0, std=5.0)
    flow = Flow(bijector=ActNorm(), event_shape=data.shape[1:])
    variables = flow.init(jax.random.key(0), data)
    latent, _ = ActNorm().apply({"params": variables["params"]["bijector"]}, data, inverse=True)
    mean, std = _per_channel_stats(latent)
    np.testing.assert_allclose(mean, np.zeros(SHAPES[0][-1]), atol=1e-5)
    np.testing.assert_allclose(std, np.ones(SHAPES[0][-1]), atol=1e-5)


def test_actnorm_apply_does_not_reinitialise():
    layer = ActNorm()
    variables = layer.init(jax.random.key(0), _batch(0, (2, 3, 3, 4), mean=3.0, std=5.0))
    later = _batch(1, (2, 3, 3, 4), mean=-7.0, std=0.5)
    (y, log_det), mutated = layer.apply(variables, later, mutable=True)
    jax.tree.map(np.testing.assert_array_equal, mutated, variables)
    params = variables["params"]
    np.testing.assert_allclose(y, later * jnp.exp(params["log_scale"]) + params["bias"], rtol=1e-6)
    np.testing.assert_allclose(log_det, np.full(2, 9 * np.sum(params["log_scale"])), rtol=1e-6)
    assert np.all(np.abs(_per_channel_stats(y)[0]) > 1.0)  # the later batch is not standardised


@pytest.mark.parametrize("inverse", (False, True))
def test_actnorm_constant_channels_get_unit_scale(inverse):
    """An all-zeros init batch gives the identity, not a scale of 1 / epsilon; a constant
    channel among varying ones gets unit scale and loses only its mean."""
    layer = ActNorm()
    zeros = jnp.zeros((2, 3, 3, 4))
    params = layer.init(jax.random.key(0), zeros, inverse=inverse)["params"]
    np.testing.assert_array_equal(params["log_scale"], np.zeros(4))
    np.testing.assert_array_equal(params["bias"], np.zeros(4))

    data = _batch(0, (2, 3, 3, 4), mean=3.0, std=5.0).at[..., 1].set(2.5)
    variables = layer.init(jax.random.key(0), data, inverse=inverse)
    assert variables["params"]["log_scale"][1] == 0.0
    standardised, log_det = layer.apply(variables, data, inverse=inverse)
    np.testing.assert_allclose(standardised[..., 1], 0.0, atol=1e-6)
    assert np.all(np.isfinite(log_det))


def test_actnorm_init_under_jit_matches_eager():
    data = _batch(0, (2, 3, 3, 4), mean=3.0, std=5.0)
    layer = ActNorm()
    eager = layer.init(jax.random.key(0), data, inverse=True)
    jitted = jax.jit(layer.init, static_argnames="inverse")(jax.random.key(0), data, inverse=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), jitted, eager)
