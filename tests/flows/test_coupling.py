"""Coupling layers, squeezing and multi-scale RealNVP: round trips, log-dets against the
Jacobian, the coupling's triangular structure, identity at initialisation, bad inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.flows.bijector import Chain, Invert
from genjax.flows.coupling import (
    AffineCoupling,
    MultiScale,
    Squeeze,
    realnvp_flat,
    realnvp_image,
)
from genjax.flows.flow import Flow
from tests.flows.checks import (
    assert_log_det_matches_jacobian,
    assert_round_trip,
    jacobian_log_det,
)

IMAGE_SHAPE = (2, 4, 4, 2)  # (B, H, W, C)
FLAT_SHAPE = (2, 4)  # (B, D)
SEEDS = (0, 1)
NOISE_SCALE = 0.1
SMALL = dict(hidden_channels=8, hidden_features=16, num_hidden_layers=1)


def _input(mask, seed):
    """A standard-normal batch shaped for `mask`."""
    shape = FLAT_SHAPE if mask == "half" else IMAGE_SHAPE
    return jax.random.normal(jax.random.key(100 + seed), shape)


def _perturbed_params(bijector, x, seed, noise_scale=NOISE_SCALE):
    """Initial parameters plus N(0, noise_scale^2) NumPy noise on every leaf, so that the
    zero-initialised last layers no longer make the map the identity."""
    params = bijector.init(jax.random.key(seed), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda p: p + noise_scale * rng.standard_normal(p.shape).astype(p.dtype), params
    )


def _kept_entries(mask, parity, shape):
    """Boolean (*event_shape) of the entries a coupling must leave unchanged, computed here
    independently of the library: checkerboard keeps (i + j) % 2 == parity, the split masks
    keep the first half of the last axis (the second with parity)."""
    if mask == "checkerboard":
        rows, cols = np.indices(shape[1:3])
        kept = (rows + cols) % 2 == int(parity)
        return np.broadcast_to(kept[..., None], shape[1:])
    first_half = np.arange(shape[-1]) < shape[-1] // 2
    return np.broadcast_to(first_half != parity, shape[1:])


def _assert_far_from_identity(bijector, params, x):
    y, _ = bijector.apply(params, x)
    assert np.abs(np.asarray(y - x)).max() > 0.05, "perturbation too small to test anything"


COUPLING_CASES = list(
    itertools.product(("checkerboard", "channel", "half"), (False, True), ("tanh", "sigmoid"))
)


@pytest.mark.parametrize("mask,parity,scale", COUPLING_CASES)
def test_coupling_round_trip_and_log_det(mask, parity, scale):
    coupling = AffineCoupling(mask=mask, parity=parity, scale=scale, **SMALL)
    for seed in SEEDS:
        x = _input(mask, seed)
        params = _perturbed_params(coupling, x, seed)
        _assert_far_from_identity(coupling, params, x)
        assert_round_trip(coupling, params, x)
        assert_log_det_matches_jacobian(coupling, params, x)


@pytest.mark.parametrize(
    "mask,parity", list(itertools.product(("checkerboard", "channel", "half"), (False, True)))
)
def test_coupling_is_triangular_and_keeps_its_half(mask, parity):
    """y_a == x_a exactly; y_b depends on x_b elementwise only (the Jacobian's b-by-b block is
    diagonal), which for the checkerboard means the conditioner sees only x * mask."""
    coupling = AffineCoupling(mask=mask, parity=parity, **SMALL)
    x = _input(mask, seed=0)
    params = _perturbed_params(coupling, x, seed=0)
    kept = _kept_entries(mask, parity, x.shape).reshape(-1)
    y, _ = coupling.apply(params, x)
    flat_x, flat_y = np.asarray(x).reshape(len(x), -1), np.asarray(y).reshape(len(x), -1)
    np.testing.assert_array_equal(flat_y[:, kept], flat_x[:, kept])
    assert np.all(flat_y[:, ~kept] != flat_x[:, ~kept])

    def flat_map(v):
        return coupling.apply(params, v.reshape(1, *x.shape[1:]))[0].reshape(-1)

    jacobian = np.asarray(jax.jacfwd(flat_map)(x[0].reshape(-1)))  # (D, D), rows: outputs
    block = jacobian[np.ix_(~kept, ~kept)]
    np.testing.assert_array_equal(block - np.diag(np.diag(block)), 0.0)
    np.testing.assert_array_equal(jacobian[kept], np.eye(kept.size)[kept])


@pytest.mark.parametrize(
    "mask,parity", [("checkerboard", False), ("channel", True), ("half", True)]
)
def test_fresh_coupling_is_identity_or_glow_contraction(mask, parity):
    """Zero-initialised last layer: a 'tanh' coupling is exactly the identity; a 'sigmoid' one
    scales the transformed half by sigmoid(2), as Glow's does."""
    x = _input(mask, seed=0)
    kept = _kept_entries(mask, parity, x.shape)
    tanh = AffineCoupling(mask=mask, parity=parity, scale="tanh", **SMALL)
    y, log_det = tanh.apply(tanh.init(jax.random.key(0), x), x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, 0.0)

    sigmoid = AffineCoupling(mask=mask, parity=parity, scale="sigmoid", **SMALL)
    y, log_det = sigmoid.apply(sigmoid.init(jax.random.key(0), x), x)
    contraction = 1 / (1 + np.exp(-2.0))
    np.testing.assert_allclose(y, np.where(kept, x, contraction * np.asarray(x)), rtol=1e-6)
    num_transformed = np.sum(~kept)
    np.testing.assert_allclose(log_det, num_transformed * np.log(contraction), rtol=1e-5)


def test_squeeze_is_a_layout_permutation_with_exact_inverse():
    squeeze = Squeeze()
    x = jax.random.normal(jax.random.key(0), IMAGE_SHAPE)
    y, log_det = squeeze.apply({}, x)
    assert y.shape == (2, 2, 2, 8)
    np.testing.assert_array_equal(log_det, 0.0)
    np.testing.assert_array_equal(np.sort(np.ravel(y)), np.sort(np.ravel(x)))
    channels = x.shape[-1]
    for dy, dx in itertools.product(range(2), range(2)):
        offset = (2 * dy + dx) * channels
        np.testing.assert_array_equal(y[..., offset : offset + channels], x[:, dy::2, dx::2])
    x_back, inverse_log_det = squeeze.apply({}, y, inverse=True)
    np.testing.assert_array_equal(x_back, x)
    np.testing.assert_array_equal(inverse_log_det, 0.0)
    assert_log_det_matches_jacobian(squeeze, {}, x)


@pytest.mark.parametrize("shape", [(2, 3, 4, 2), (2, 4, 5, 2), (2, 4, 4)])
def test_squeeze_rejects_odd_sizes_and_wrong_rank(shape):
    with pytest.raises(ValueError, match="even H and W"):
        Squeeze().apply({}, jnp.zeros(shape))


def test_unsqueeze_rejects_channels_not_divisible_by_four():
    with pytest.raises(ValueError, match="divisible by 4"):
        Squeeze().apply({}, jnp.zeros((2, 2, 2, 6)), inverse=True)


def _multiscale():
    """A two-scale flow: checkerboard couplings at (4, 4, 2), then `inner` at (2, 2, 4)."""
    transform = Invert(Chain([AffineCoupling("checkerboard", p, **SMALL) for p in (False, True)]))
    inner = Invert(Chain([AffineCoupling("checkerboard", p, **SMALL) for p in (False, True)]))
    return MultiScale(transform=transform, inner=inner)


def test_multiscale_round_trip_log_det_and_shape():
    multiscale = _multiscale()
    for seed in SEEDS:
        x = _input("checkerboard", seed)
        params = _perturbed_params(multiscale, x, seed)
        _assert_far_from_identity(multiscale, params, x)
        assert assert_round_trip(multiscale, params, x).shape == x.shape
        assert_log_det_matches_jacobian(multiscale, params, x)
        assert_log_det_matches_jacobian(multiscale, params, x, inverse=True)


def test_multiscale_factors_out_half_and_runs_inner_on_the_rest():
    """Data -> noise: z = unsqueeze(concat(h_out, inner^-1(h_kept))) with
    (h_out, h_kept) = squeeze(transform^-1(x)), and the log-dets add up."""
    multiscale = _multiscale()
    x = _input("checkerboard", seed=0)
    params = _perturbed_params(multiscale, x, seed=0)["params"]
    z, log_det = multiscale.apply({"params": params}, x, inverse=True)

    transform, inner = multiscale.transform, multiscale.inner
    h, transform_log_det = transform.apply({"params": params["transform"]}, x, inverse=True)
    h_out, h_kept = np.split(np.asarray(Squeeze().apply({}, h)[0]), 2, axis=-1)
    z_in, inner_log_det = inner.apply({"params": params["inner"]}, h_kept, inverse=True)
    squeezed_z = np.asarray(Squeeze().apply({}, z)[0])  # (B, 2, 2, 8)
    np.testing.assert_array_equal(squeezed_z[..., :4], h_out)
    np.testing.assert_allclose(squeezed_z[..., 4:], z_in, atol=1e-6)
    np.testing.assert_allclose(log_det, transform_log_det + inner_log_det, atol=1e-5)


def test_multiscale_without_inner_is_its_transform():
    multiscale = MultiScale(transform=AffineCoupling("channel", **SMALL))
    x = _input("channel", seed=1)
    params = _perturbed_params(multiscale, x, seed=1)
    y, log_det = multiscale.apply(params, x)
    y_transform, transform_log_det = multiscale.transform.apply(
        {"params": params["params"]["transform"]}, x
    )
    np.testing.assert_array_equal(y, y_transform)
    np.testing.assert_array_equal(log_det, transform_log_det)


def test_realnvp_image_is_identity_when_fresh_and_invertible_when_perturbed():
    """Two scales on (2, 4, 4, 2): 3 checkerboard + 3 channel couplings, then 4 checkerboard."""
    flow = realnvp_image(num_scales=2, hidden_channels=8, num_hidden_layers=1)
    x = _input("checkerboard", seed=0)
    fresh = flow.init(jax.random.key(0), x)
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(fresh)]
    assert sum(path.endswith("['scale_factor']") for path in paths) == 3 + 3 + 4
    y, log_det = flow.apply(fresh, x, inverse=True)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, 0.0)

    params = _perturbed_params(flow, x, seed=0)
    _assert_far_from_identity(flow, params, x)
    assert assert_round_trip(flow, params, x).shape == x.shape
    assert_log_det_matches_jacobian(flow, params, x)
    assert_log_det_matches_jacobian(flow, params, x, inverse=True)


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
def test_realnvp_flat_round_trip_and_exact_log_prob(scale):
    """D = 4: round trip, log-det against the Jacobian, Flow.log_prob equals
    log N(f^-1(x); 0, I) + slogdet of the Jacobian of f^-1, and the density direction computes
    the papers' coupling (with 'sigmoid' it contracts, as Glow's encoder: log-det < 0)."""
    bijector = realnvp_flat(
        num_dims=4, num_couplings=4, hidden_features=16, num_hidden_layers=1, scale=scale
    )
    flow = Flow(bijector=bijector, event_shape=(4,))
    for seed in SEEDS:
        x = _input("half", seed)
        params = _perturbed_params(bijector, x, seed)
        _assert_far_from_identity(bijector, params, x)
        assert_round_trip(bijector, params, x)
        assert_log_det_matches_jacobian(bijector, params, x)
        z, density_log_det = bijector.apply(params, x, inverse=True)
        if scale == "sigmoid":
            assert np.all(np.asarray(density_log_det) < 0)
        log_base = -0.5 * np.sum(np.asarray(z) ** 2, axis=1) - 0.5 * 4 * np.log(2 * np.pi)
        expected = log_base + jacobian_log_det(bijector, params, x, inverse=True)
        log_p = flow.apply({"params": {"bijector": params["params"]}}, x, method=flow.log_prob)
        np.testing.assert_allclose(log_p, expected, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: AffineCoupling(mask="diagonal"), r"mask='diagonal'.*'checkerboard', 'channel'"),
        (lambda: AffineCoupling(mask="half", scale="exp"), r"scale='exp'.*'tanh', 'sigmoid'"),
        (lambda: realnvp_image(scale="exp"), r"AffineCoupling\.scale='exp'.*'tanh'"),
        (lambda: realnvp_flat(4, scale="exp"), r"AffineCoupling\.scale='exp'.*'tanh'"),
    ],
)
def test_unknown_mask_or_scale_names_the_field_and_choices(build, match):
    with pytest.raises(ValueError, match=match):
        build()


@pytest.mark.parametrize(
    "mask,shape,match",
    [
        ("half", (2, 4, 4, 2), "rank 2"),
        ("checkerboard", (2, 4), "rank 4"),
        ("channel", (2, 4, 4, 1), "size >= 2"),
    ],
)
def test_coupling_rejects_inputs_of_the_wrong_shape(mask, shape, match):
    coupling = AffineCoupling(mask=mask, **SMALL)
    with pytest.raises(ValueError, match=match):
        coupling.init(jax.random.key(0), jnp.zeros(shape))


def test_builders_reject_bad_sizes():
    with pytest.raises(ValueError, match="num_scales"):
        realnvp_image(num_scales=0)
    with pytest.raises(ValueError, match="num_dims >= 2"):
        realnvp_flat(num_dims=1)
    with pytest.raises(ValueError, match="even H and W"):
        flow = realnvp_image(num_scales=2, hidden_channels=4, num_hidden_layers=1)
        flow.init(jax.random.key(0), jnp.zeros((1, 3, 3, 2)))


# ----------------------------------------------------------------------------- additive coupling


@pytest.mark.parametrize(
    "mask,parity", [("checkerboard", True), ("channel", False), ("half", True)]
)
def test_additive_coupling_shifts_by_a_function_of_the_kept_half(mask, parity):
    """NICE's additive coupling: y_b = x_b + t(x_a), so moving x_b by delta moves y_b by exactly
    delta (unit diagonal), kept entries pass through, log-det 0 in both directions (checked
    against the Jacobian), and the inverse round-trips."""
    coupling = AffineCoupling(mask=mask, parity=parity, coupling="additive", **SMALL)
    x = _input(mask, seed=3)
    kept = _kept_entries(mask, parity, x.shape)
    params = _perturbed_params(coupling, x, seed=3)
    _assert_far_from_identity(coupling, params, x)
    assert not any(
        "scale_factor" in str(path) for path in jax.tree_util.tree_leaves_with_path(params)
    )
    y, log_det = coupling.apply(params, x)
    np.testing.assert_array_equal(log_det, 0.0)
    delta = np.where(kept, 0.0, 0.37).astype(np.float32)
    y_moved, _ = coupling.apply(params, x + delta)
    np.testing.assert_allclose(y_moved - y, np.broadcast_to(delta, x.shape), atol=1e-5)
    np.testing.assert_array_equal(np.where(kept, y, 0.0), np.where(kept, x, 0.0))
    assert_round_trip(coupling, params, x)
    assert_log_det_matches_jacobian(coupling, params, x)
    assert_log_det_matches_jacobian(coupling, params, x, inverse=True)


def test_coupling_refuses_an_unknown_coupling_by_name():
    with pytest.raises(ValueError, match=r"AffineCoupling.coupling='nice'; expected one of"):
        AffineCoupling(mask="half", coupling="nice")
