"""Neural spline flows: the rational-quadratic spline against its defining properties and
autodiff, its closed-form inverse, the linear tails, and both layer forms' log-dets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.flows import spline
from tests.flows import checks

BOUND = 3.0
# Compiled once per shape: op-by-op dispatch of the spline's many small ops costs seconds.
rq_spline = jax.jit(spline.rational_quadratic_spline, static_argnames=("inverse", "tail_bound"))


def _raw(seed, shape, num_bins=5, scale=2.0):
    rng = np.random.default_rng(seed)
    draw = lambda size: jnp.asarray(scale * rng.normal(size=(*shape, size)), jnp.float32)  # noqa: E731
    return draw(num_bins), draw(num_bins), draw(num_bins - 1)


def _perturbed(params, seed=0, scale=0.3):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: leaf + scale * rng.normal(size=leaf.shape), params)


def test_the_spline_passes_through_its_knots_with_their_derivatives():
    """At each knot (x_k, y_k) the map takes y_k and its slope is d_k (1 at both ends)."""
    widths, heights, derivatives = _raw(0, (1,))
    knots_x, _ = spline._knots(widths, BOUND)
    knots_y, _ = spline._knots(heights, BOUND)
    inner = spline.MIN_DERIVATIVE + jax.nn.softplus(derivatives + spline.DERIVATIVE_OFFSET)
    slopes = np.concatenate([[1.0], np.asarray(inner)[0], [1.0]])

    def f(x):
        return rq_spline(x[None], widths, heights, derivatives)[0][0]

    # Nudged inside the interval so the boundary knots use the spline's own formula.
    positions = np.clip(np.asarray(knots_x)[0], -BOUND + 1e-4, BOUND - 1e-4)
    values = np.array([f(jnp.float32(x)) for x in positions])
    np.testing.assert_allclose(values, np.asarray(knots_y)[0], atol=2e-4)
    grads = np.array([jax.grad(f)(jnp.float32(x)) for x in np.asarray(knots_x)[0][1:-1]])
    np.testing.assert_allclose(grads, slopes[1:-1], rtol=1e-3)


def test_the_spline_is_monotone_with_autodiff_log_derivatives():
    widths, heights, derivatives = _raw(1, (400,))
    x = jnp.linspace(-BOUND - 1.0, BOUND + 1.0, 400)
    y, log_derivative = rq_spline(x, widths, heights, derivatives)

    def one(xi, w, h, d):
        return rq_spline(xi[None], w[None], h[None], d[None])[0][0]

    grads = jax.jit(jax.vmap(jax.grad(one)))(x, widths, heights, derivatives)
    np.testing.assert_allclose(log_derivative, np.log(np.asarray(grads)), atol=1e-4, rtol=1e-4)
    assert np.all(np.asarray(grads) > 0)


def test_the_closed_form_inverse_undoes_the_spline_to_float_precision():
    """Exact in float64 even for extreme parameters; in float32 exact in y, and in x up to
    float32's rounding of y divided by the slope (flat bins amplify it, as for any map)."""
    widths, heights, derivatives = _raw(2, (2000,), num_bins=8, scale=3.0)
    x = jax.random.uniform(jax.random.key(0), (2000,), minval=-4.0, maxval=4.0)
    with jax.enable_x64(True):
        raw64 = [np.asarray(raw, np.float64) for raw in (widths, heights, derivatives)]
        x64 = np.asarray(x, np.float64)
        y, log_derivative = rq_spline(x64, *raw64)
        back, inverse_log_derivative = rq_spline(y, *raw64, inverse=True)
        np.testing.assert_allclose(back, x64, atol=1e-9)
        np.testing.assert_allclose(inverse_log_derivative, -log_derivative, atol=1e-9)
    y, log_derivative = rq_spline(x, widths, heights, derivatives)
    back, _ = rq_spline(y, widths, heights, derivatives, inverse=True)
    again, _ = rq_spline(back, widths, heights, derivatives)
    np.testing.assert_allclose(again, y, atol=3e-5)
    slope = np.exp(np.asarray(log_derivative))
    assert np.all(np.abs(np.asarray(back - x)) <= 1e-5 + 3e-5 / slope)


def test_linear_tails_are_the_identity_and_zero_raw_outputs_give_the_identity():
    widths, heights, derivatives = _raw(3, (6,))
    x = jnp.array([-10.0, -3.5, -3.0, 3.0, 3.2, 50.0])
    for inverse in (False, True):
        y, log_derivative = rq_spline(x, widths, heights, derivatives, inverse=inverse)
        np.testing.assert_allclose(y, x, atol=1e-6)
        np.testing.assert_allclose(log_derivative, np.zeros(6), atol=1e-6)
    zeros = [jnp.zeros_like(raw) for raw in (widths, heights, derivatives)]
    inside = jnp.linspace(-2.9, 2.9, 6)
    y, log_derivative = rq_spline(inside, *zeros)
    np.testing.assert_allclose(y, inside, atol=1e-5)
    np.testing.assert_allclose(log_derivative, np.zeros(6), atol=1e-5)


@pytest.mark.parametrize(
    "form, shape",
    [
        # Compiling the Jacobian of a whole flow takes 10-20 s here: CI's slow set runs these.
        pytest.param("coupling", (2, 3), marks=pytest.mark.slow),
        pytest.param("autoregressive", (2, 3), marks=pytest.mark.slow),
        pytest.param("autoregressive", (3, 5), marks=pytest.mark.slow),
        pytest.param("coupling", (2, 3, 3, 1), marks=pytest.mark.slow),
        pytest.param("autoregressive", (2, 3, 3, 1), marks=pytest.mark.slow),
        pytest.param("coupling", (3, 2), marks=pytest.mark.slow),
    ],
)
def test_nsf_round_trip_and_log_det_against_the_jacobian(form, shape):
    num_dims = int(np.prod(shape[1:]))
    # Three layers: the reversals between autoregressive layers cancel, so a fresh flow is the
    # identity.
    bijector = spline.nsf_flow(num_dims, 3, form, hidden_features=8, num_bins=4)
    x = 1.5 * jax.random.normal(jax.random.key(1), shape)
    params = jax.jit(bijector.init)(jax.random.key(0), x)  # op by op, init takes ~10 s
    fresh, _ = jax.jit(bijector.apply)(params, x)
    np.testing.assert_allclose(fresh, x, atol=1e-5)  # a new flow is the identity
    params = _perturbed(params)
    y = checks.assert_round_trip(bijector, params, x)
    checks.assert_log_det_matches_jacobian(bijector, params, x)
    checks.assert_log_det_matches_jacobian(bijector, params, y, inverse=True)


def test_a_coupling_layer_splines_one_parity_and_sums_their_log_derivatives():
    """The layer's output and log-det are the elementwise spline's on the moved half, with the
    raw parameters its conditioner computes from the kept half."""
    layer = spline.SplineCoupling(num_bins=4, hidden_features=8, num_hidden_layers=1)
    x = 1.5 * jax.random.normal(jax.random.key(3), (4, 5))
    params = _perturbed(jax.jit(layer.init)(jax.random.key(0), x))
    y, log_det = jax.jit(layer.apply)(params, x)
    kept, moved = np.arange(0, 5, 2), np.arange(1, 5, 2)
    np.testing.assert_array_equal(np.asarray(y)[:, kept], np.asarray(x)[:, kept])
    conditioner = spline.MLPConditioner(8, 1, len(moved) * spline.num_spline_params(4))
    raw = conditioner.apply({"params": params["params"]["MLPConditioner_0"]}, x[:, kept])
    raw = raw.reshape(4, len(moved), -1)
    expected, log_derivative = rq_spline(
        x[:, moved], raw[..., :4], raw[..., 4:8], raw[..., 8:], tail_bound=layer.tail_bound
    )
    np.testing.assert_allclose(np.asarray(y)[:, moved], expected, atol=1e-6)
    np.testing.assert_allclose(log_det, np.sum(log_derivative, axis=1), atol=1e-5)
    assert np.abs(np.asarray(y)[:, moved] - np.asarray(x)[:, moved]).max() > 1e-3


def test_autoregressive_output_d_depends_only_on_inputs_before_d():
    layer = spline.SplineAutoregressive((16,), num_bins=4)
    x = jax.random.normal(jax.random.key(2), (1, 5))
    params = _perturbed(jax.jit(layer.init)(jax.random.key(0), x))
    jacobian = jax.jit(jax.jacfwd(lambda v: layer.apply(params, v[None], inverse=True)[0][0]))(x[0])
    np.testing.assert_array_equal(np.triu(np.asarray(jacobian), k=1), np.zeros((5, 5)))
    assert np.all(np.diag(np.asarray(jacobian)) > 0)


def test_bad_spline_settings_are_refused_by_name():
    x = jnp.zeros((2, 4))
    with pytest.raises(ValueError, match="num_bins=1 must be at least 2"):
        spline.SplineCoupling(num_bins=1).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="tail_bound=0.0 must be positive"):
        spline.SplineCoupling(tail_bound=0.0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"form='flat'; expected one of \('coupling'"):
        spline.nsf_flow(4, form="flat")
