"""Tests for genjax/flows/glow.py: ActNorm, the invertible 1x1 convolution, the learned priors
and the Glow builders (Glow)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genjax.flows.bijector import Chain
from genjax.flows.coupling import MultiScale, Squeezed
from genjax.flows.flow import Flow
from genjax.flows.glow import (
    ActNorm,
    InvConv1x1,
    SplitPrior,
    TopPrior,
    glow_flat,
    glow_image,
    glow_steps,
    lu_factors,
    random_rotation,
)
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


# ----------------------------------------------------------------------------- learned priors

SPLIT_SHAPE, KEPT_SHAPE = (2, 3, 3, 2), (2, 3, 3, 3)  # factored half z, kept half h


def _gaussian_log_density(z, mean, log_sigma):
    """sum of log N(z; mean, exp(log_sigma)^2) over the event, float64 NumPy: (B,)."""
    z, mean, log_sigma = (np.asarray(a, np.float64) for a in (z, mean, log_sigma))
    terms = -0.5 * ((z - mean) / np.exp(log_sigma)) ** 2 - log_sigma - 0.5 * np.log(2 * np.pi)
    return terms.reshape(len(z), -1).sum(axis=1)


def _standard_normal_log_density(eps):
    return _gaussian_log_density(eps, np.zeros_like(eps), np.zeros_like(eps))


def _conv3x3_same(h, kernel, bias):
    """An independent float64 3x3 'SAME' cross-correlation: h (B, H, W, C_in), kernel
    (3, 3, C_in, C_out), bias (C_out,) -> (B, H, W, C_out)."""
    h, kernel = np.asarray(h, np.float64), np.asarray(kernel, np.float64)
    padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((*h.shape[:3], kernel.shape[-1]))
    for di in range(3):
        for dj in range(3):
            window = padded[:, di : di + h.shape[1], dj : dj + h.shape[2], :]
            out += np.einsum("bhwc,co->bhwo", window, kernel[di, dj])
    return out + np.asarray(bias, np.float64)


def test_top_prior_density_is_the_learned_gaussian():
    """log N(eps; 0, I) + the inverse's log-det == log N(z; mu, sigma^2) with the learned mu,
    log sigma (perturbed off zero); log-dets against the Jacobian, round trip."""
    prior = TopPrior()
    z = _batch(0, SPLIT_SHAPE, mean=0.5, std=2.0)
    variables = _perturbed_variables(prior, 0, z, scale=0.5)
    eps, log_det = prior.apply(variables, z, inverse=True)
    params = variables["params"]
    np.testing.assert_allclose(
        _standard_normal_log_density(eps) + np.asarray(log_det),
        _gaussian_log_density(z, params["mean"], params["log_scale"]),
        rtol=1e-5,
    )
    assert_round_trip(prior, variables, z)
    assert_log_det_matches_jacobian(prior, variables, z)
    assert_log_det_matches_jacobian(prior, variables, z, inverse=True)


def test_split_prior_density_is_the_gaussian_of_a_conv_of_the_kept_half():
    """mu, log sigma are the two halves of a 3x3 convolution of the kept half h (computed here
    independently in NumPy); the prior's log density is log N(z; mu, sigma^2)."""
    prior = SplitPrior()
    z, h = _batch(1, SPLIT_SHAPE, std=1.5), _batch(2, KEPT_SHAPE)
    variables = prior.init(jax.random.key(0), z, context=h)
    variables = jax.tree.map(
        lambda leaf: leaf + 0.2 * jax.random.normal(jax.random.key(5), leaf.shape), variables
    )
    eps, log_det = prior.apply(variables, z, inverse=True, context=h)
    (conv,) = jax.tree.leaves(variables["params"], is_leaf=lambda node: "kernel" in node)
    stats = _conv3x3_same(h, conv["kernel"], conv["bias"])
    mean, log_sigma = stats[..., :2], stats[..., 2:]
    np.testing.assert_allclose(
        _standard_normal_log_density(eps) + np.asarray(log_det),
        _gaussian_log_density(z, mean, log_sigma),
        rtol=1e-5,
    )
    assert_round_trip(prior, variables, z, context=h)
    assert_log_det_matches_jacobian(prior, variables, z, context=h)
    assert_log_det_matches_jacobian(prior, variables, z, context=h, inverse=True)
    with pytest.raises(ValueError, match="SplitPrior needs the kept half as context"):
        prior.apply(variables, z, inverse=True)


@pytest.mark.parametrize("prior", [TopPrior(), SplitPrior()])
def test_learned_priors_start_as_the_standard_normal(prior):
    """Zero initialisation: the map is the identity with log-det 0, i.e. N(0, I)."""
    z, h = _batch(3, SPLIT_SHAPE, std=3.0), _batch(4, KEPT_SHAPE)
    variables = prior.init(jax.random.key(1), z, context=h)
    eps, log_det = prior.apply(variables, z, inverse=True, context=h)
    np.testing.assert_array_equal(eps, z)
    np.testing.assert_array_equal(log_det, 0.0)


def test_multiscale_with_split_prior_at_init_equals_the_standard_prior_flow():
    """The same level with and without the split prior, sharing the transform's and inner's
    parameters: at zero init the log-densities agree exactly; perturbed, they differ."""
    fields = dict(hidden_channels=8, num_hidden_layers=1)

    def level(split_prior):
        return MultiScale(
            transform=Squeezed(glow_steps(1, "channel", True, 0, **fields)),
            inner=Squeezed(glow_steps(1, "channel", True, 7, **fields)),
            split_prior=split_prior,
        )

    x = _batch(5, (3, 8, 8, 1))
    learned, standard = Flow(level(SplitPrior()), (8, 8, 1)), Flow(level(None), (8, 8, 1))
    variables = learned.init(jax.random.key(2), x)
    shared = {"params": {"bijector": dict(variables["params"]["bijector"])}}
    del shared["params"]["bijector"]["split_prior"]
    np.testing.assert_array_equal(learned.apply(variables, x), standard.apply(shared, x))
    moved = jax.tree.map(lambda leaf: leaf + 0.1, variables)
    assert np.abs(np.asarray(learned.apply(moved, x) - learned.apply(variables, x))).min() > 0


@pytest.mark.slow
@pytest.mark.parametrize("coupling,scale", [("affine", "tanh"), ("additive", "sigmoid")])
def test_glow_image_with_learned_priors_round_trips_and_matches_the_jacobian(coupling, scale):
    """The whole two-level Glow with split and top priors (perturbed off init): the round trip,
    and Flow.log_prob == log N(z) + slogdet of the data -> noise Jacobian."""
    bijector = glow_image(
        2, 1, 4, num_hidden_layers=1, scale=scale, coupling=coupling, prior="learned"
    )
    x = _batch(6, (2, 4, 4, 1))
    variables = _perturbed_variables(bijector, 6, x, scale=0.05)
    assert "split_prior" in variables["params"]
    assert_round_trip(bijector, variables, x, atol=1e-3)
    assert_log_det_matches_jacobian(bijector, variables, x, inverse=True)
    assert_log_det_matches_jacobian(bijector, variables, x)


def test_glow_flat_learned_prior_starts_at_the_standard_flow():
    """glow_flat(prior='learned') is Chain([TopPrior, steps]): at init, the same density as
    the steps alone with the same parameters."""
    x = _batch(7, (5, 4))
    learned = Flow(glow_flat(4, 2, 8, num_hidden_layers=1, prior="learned"), (4,))
    standard = Flow(glow_flat(4, 2, 8, num_hidden_layers=1), (4,))
    variables = learned.init(jax.random.key(3), x)
    assert isinstance(learned.bijector, Chain)
    steps_only = {"params": {"bijector": variables["params"]["bijector"]["bijectors_1"]}}
    np.testing.assert_allclose(learned.apply(variables, x), standard.apply(steps_only, x))


@pytest.mark.parametrize("field,value", [("scale", "exp"), ("coupling", "nice"), ("prior", "flow")])
def test_glow_builders_refuse_unknown_options_by_name(field, value):
    with pytest.raises(ValueError, match=rf"Glow {field}='{value}'; expected one of"):
        glow_image(**{field: value})
