"""NICE: the odd / even additive coupling, the diagonal scaling layer, the logistic prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genjax.flows.coupling import AffineCoupling, alternate_indices
from genjax.flows.flow import Flow, StandardLogistic
from genjax.flows.nice import DiagonalScale, nice_flat
from tests.flows import checks


def _perturbed(params, seed=0, scale=0.3):
    """Params moved off their identity initialisation (zero last layers, zero scales)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + scale * rng.normal(size=leaf.shape), params)


@pytest.mark.parametrize(
    "shape, coupling",
    [
        ((3, 5), "additive"),
        pytest.param((2, 4, 4, 1), "additive", marks=pytest.mark.slow),
        pytest.param((3, 6), "additive", marks=pytest.mark.slow),
        pytest.param((3, 5), "affine", marks=pytest.mark.slow),
        pytest.param((2, 4, 4, 1), "affine", marks=pytest.mark.slow),
    ],
)
def test_nice_round_trip_and_log_det_against_the_jacobian(shape, coupling):
    bijector = nice_flat(3, hidden_features=8, num_hidden_layers=2, coupling=coupling)
    x = jax.random.normal(jax.random.key(1), shape)
    params = _perturbed(bijector.init(jax.random.key(0), x))
    y = checks.assert_round_trip(bijector, params, x)
    assert y.shape == x.shape
    checks.assert_log_det_matches_jacobian(bijector, params, x)
    checks.assert_log_det_matches_jacobian(bijector, params, y, inverse=True)


def test_additive_nice_changes_volume_only_through_its_scaling_layer():
    """With additive couplings the log-det is sum(S), the same for every input."""
    bijector = nice_flat(4, hidden_features=8, num_hidden_layers=2)
    x = jax.random.normal(jax.random.key(2), (5, 7))
    params = _perturbed(bijector.init(jax.random.key(0), x))
    scales = [
        leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(params)
        if "log_scale" in jax.tree_util.keystr(path)
    ]
    assert len(scales) == 1 and scales[0].shape == (7,)
    _, log_det = bijector.apply(params, x, inverse=True)  # the paper's f: data -> noise
    np.testing.assert_allclose(log_det, np.full(5, float(np.sum(scales[0]))), rtol=1e-5)


@pytest.mark.parametrize("parity", [False, True])
def test_alternate_mask_keeps_one_parity_and_shifts_the_other_by_a_function_of_it(parity):
    layer = AffineCoupling(
        mask="alternate", parity=parity, coupling="additive", hidden_features=8, num_hidden_layers=1
    )
    x = jax.random.normal(jax.random.key(3), (4, 3, 3, 1))  # 9 components, flattened
    params = _perturbed(layer.init(jax.random.key(0), x))
    y, log_det = layer.apply(params, x)
    np.testing.assert_array_equal(log_det, np.zeros(4))
    kept, moved = alternate_indices(9, parity)
    np.testing.assert_array_equal(kept, np.arange(int(parity), 9, 2))
    flat_x, flat_y = np.asarray(x).reshape(4, 9), np.asarray(y).reshape(4, 9)
    np.testing.assert_array_equal(flat_y[:, kept], flat_x[:, kept])
    assert np.abs(flat_y[:, moved] - flat_x[:, moved]).min() > 0  # the others do move
    # The shift depends on the kept components only: changing a moved one moves it alone.
    bumped = flat_x.copy()
    bumped[:, moved[0]] += 1.0
    y_bumped, _ = layer.apply(params, jnp.asarray(bumped.reshape(x.shape)))
    difference = np.asarray(y_bumped).reshape(4, 9) - flat_y
    expected = np.zeros((4, 9))
    expected[:, moved[0]] = 1.0
    np.testing.assert_allclose(difference, expected, atol=1e-6)


def test_diagonal_scale_is_the_identity_when_fresh_and_scales_by_exp_s():
    x = jax.random.normal(jax.random.key(4), (3, 2, 2))
    layer = DiagonalScale()
    params = layer.init(jax.random.key(0), x)
    y, log_det = layer.apply(params, x)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(log_det, np.zeros(3))
    s = np.array([[0.5, -1.0], [0.0, 2.0]], np.float32)
    y, log_det = layer.apply({"params": {"log_scale": s}}, x)
    np.testing.assert_allclose(y, np.asarray(x) * np.exp(s), rtol=1e-6)
    np.testing.assert_allclose(log_det, np.full(3, 1.5), rtol=1e-6)


def test_logistic_base_matches_scipy_and_samples_with_its_moments():
    base = StandardLogistic((3, 2))
    z = np.random.default_rng(0).normal(scale=3.0, size=(4, 3, 2)).astype(np.float32)
    expected = stats.logistic.logpdf(z.astype(np.float64)).reshape(4, -1).sum(axis=1)
    np.testing.assert_allclose(base.log_prob(jnp.asarray(z)), expected, rtol=1e-5)
    draws = np.asarray(base.sample(jax.random.key(0), 20_000))
    assert draws.shape == (20_000, 3, 2)
    # Mean 0 and variance pi^2 / 3, within about five standard errors.
    assert abs(draws.mean()) < 5 * np.sqrt(np.pi**2 / 3 / draws.size)
    assert abs(draws.var() - np.pi**2 / 3) < 0.1


def test_flow_with_a_logistic_base_is_normalised_on_a_grid():
    """A perturbed 2-D NICE under the logistic prior integrates to one (Riemann sum)."""
    flow = Flow(nice_flat(4, hidden_features=16, num_hidden_layers=2), (2,), "logistic")
    params = _perturbed(flow.init(jax.random.key(0), jnp.zeros((1, 2))), scale=0.2)
    axis = np.linspace(-30.0, 30.0, 601)
    grid = np.stack(np.meshgrid(axis, axis), axis=-1).reshape(-1, 2).astype(np.float32)
    log_p = np.asarray(flow.apply(params, grid, method=Flow.log_prob), np.float64)
    np.testing.assert_allclose(np.exp(log_p).sum() * (axis[1] - axis[0]) ** 2, 1.0, atol=0.01)


def test_unknown_base_and_bad_sizes_are_refused_by_name():
    flow = Flow(nice_flat(1, hidden_features=4, num_hidden_layers=1), (2,), "laplace")
    with pytest.raises(ValueError, match=r"Flow.base_name='laplace'.*\('standard', 'logistic'\)"):
        flow.init(jax.random.key(0), jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="nice_flat needs num_couplings"):
        nice_flat(0)
    layer = AffineCoupling(mask="alternate", coupling="additive")
    with pytest.raises(ValueError, match="at least 2 entries"):
        layer.init(jax.random.key(0), jnp.zeros((2, 1)))
