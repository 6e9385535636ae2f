"""Planar and radial flows: exact forward log-dets, the invertibility constraints at their
boundary, forward-only use in a Flow, and amortisation by a context.

Parameters are built in NumPy (`_random_params`, the tree `init` makes, which one test checks)
and every map runs through `_forward`, compiled once per layer and shape: the suite then
compiles a few dozen small programs instead of dispatching and compiling op by op.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.flows import planar
from genjax.flows.bijector import Chain, NoInverseError
from genjax.flows.flow import Flow
from tests.flows import checks

BATCH = 4
CONTEXT_DIMS = 3
SEEDS = (0, 1, 2)
DIMS = (2, 5)
LAYERS = {"planar": planar.Planar, "radial": planar.Radial}
BUILDERS = {"planar": planar.planar_flow, "radial": planar.radial_flow}
# raw values deep in the saturated region: planar w.u (w.u_hat = -1 to float32 precision) and
# radial beta_raw (beta = -alpha)
BOUNDARY_RAW = -30.0


@functools.partial(jax.jit, static_argnums=(0, 4))
def _compiled_apply(bijector, params, x, context, inverse):
    return bijector.apply(params, x, inverse=inverse, context=context)


def _forward(bijector, params, x, context=None, inverse=False):
    """`bijector.apply(params, x, inverse=inverse, context=context)`, compiled once per
    bijector, shapes and dtypes (always called the same way, so calls share the compilation)."""
    return _compiled_apply(bijector, params, x, context, inverse)


class _Compiled:
    """Stands in for `bijector` in `checks`, with `_forward` as its `apply`."""

    def __init__(self, bijector):
        self.bijector = bijector

    def apply(self, params, x, inverse=False, context=None):
        return _forward(self.bijector, params, x, context, inverse)


def _inputs(seed, num_dims, use_context, event_shape=None):
    """(x (B, *event), context (B, C) or None), float32 from NumPy; event (D,) unless given."""
    rng = np.random.default_rng([seed, 100])
    event_shape = event_shape or (num_dims,)
    x = jnp.asarray(rng.standard_normal((BATCH, *event_shape)).astype(np.float32))
    context = jnp.asarray(rng.standard_normal((BATCH, CONTEXT_DIMS)).astype(np.float32))
    return x, context if use_context else None


def _planar_params(num_dims, seed, use_context, w_dot_u=None):
    """Random Planar params (far from the identity); with `w_dot_u`, the raw w.u of every
    example is exactly that (with a context: w is the Dense bias alone, and u's kernel is
    orthogonal to w)."""
    rng = np.random.default_rng([seed, num_dims])
    u, w, b = rng.standard_normal(num_dims), rng.standard_normal(num_dims), rng.standard_normal(1)
    if w_dot_u is not None:
        u = u + (w_dot_u - w @ u) * w / (w @ w)
    if not use_context:
        return {"params": {"u": u, "w": w, "b": b}}
    kernel = 0.5 * rng.standard_normal((CONTEXT_DIMS, 2 * num_dims + 1))
    if w_dot_u is not None:
        kernel[:, :num_dims] -= np.outer(kernel[:, :num_dims] @ w, w) / (w @ w)
        kernel[:, num_dims : 2 * num_dims] = 0.0
    bias = np.concatenate([u, w, b])
    return {"params": {"conditioner": {"kernel": kernel, "bias": bias}}}


def _radial_params(num_dims, seed, use_context, beta_raw=None):
    """Random Radial params (far from the identity); `beta_raw` fixes the raw beta (of every
    example: with a context its kernel column is zeroed)."""
    rng = np.random.default_rng([seed, num_dims])
    z0, raw = rng.standard_normal(num_dims), rng.standard_normal(2)
    if beta_raw is not None:
        raw[1] = beta_raw
    if not use_context:
        return {"params": {"z0": z0, "alpha_raw": raw[:1], "beta_raw": raw[1:]}}
    kernel = 0.5 * rng.standard_normal((CONTEXT_DIMS, num_dims + 2))
    if beta_raw is not None:
        kernel[:, -1] = 0.0
    return {"params": {"conditioner": {"kernel": kernel, "bias": np.concatenate([z0, raw])}}}


PARAMS = {"planar": _planar_params, "radial": _radial_params}


def _random_params(name, num_dims, seed, use_context, boundary_raw=None, dtype=np.float32):
    """`PARAMS[name]` as `dtype` arrays (converted by NumPy: no conversion to compile)."""
    params = PARAMS[name](num_dims, seed, use_context, boundary_raw)
    return jax.tree.map(lambda leaf: jnp.asarray(np.asarray(leaf, dtype)), params)


# ----------------------------------------------------------------------------- log-dets


@pytest.mark.parametrize("use_context", [False, True])
@pytest.mark.parametrize("num_dims", DIMS)
@pytest.mark.parametrize("name", LAYERS)
def test_log_det_matches_jacobian(name, num_dims, use_context):
    """Three random parameter sets far from the identity, per layer, D and context."""
    layer = _Compiled(LAYERS[name]())
    for seed in SEEDS:
        x, context = _inputs(seed, num_dims, use_context)
        params = _random_params(name, num_dims, seed, use_context)
        checks.assert_log_det_matches_jacobian(layer, params, x, context)


@pytest.mark.parametrize("name", LAYERS)
def test_multi_axis_events_are_flattened(name):
    """(B, 1, 5) events map as their (B, 5) flattening does, reshaped back."""
    x, context = _inputs(0, 5, use_context=True)
    layer = LAYERS[name]()
    params = _random_params(name, 5, 0, use_context=True)
    y, log_det = _forward(layer, params, x.reshape(BATCH, 1, 5), context)
    y_flat, log_det_flat = _forward(layer, params, x, context)
    assert y.shape == (BATCH, 1, 5)
    np.testing.assert_array_equal(y.reshape(x.shape), y_flat)
    np.testing.assert_array_equal(log_det, log_det_flat)


@pytest.mark.parametrize("use_context", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_log_det_is_exact_and_stable_at_the_constraint_boundary(name, use_context):
    """At `BOUNDARY_RAW` the log-det still equals the Jacobian's (in float64, where slogdet
    itself is accurate), and the float32 log-det is finite and equals the float64 one, even
    where det df/dz is tiny."""
    layer = LAYERS[name]()
    num_dims = DIMS[use_context]
    for seed in SEEDS:
        x, context = _inputs(seed, num_dims, use_context)
        params = _random_params(name, num_dims, seed, use_context, BOUNDARY_RAW)
        _, log_det32 = _forward(layer, params, x, context)
        with jax.enable_x64(True):
            params64 = _random_params(name, num_dims, seed, use_context, BOUNDARY_RAW, np.float64)
            x64 = jnp.asarray(np.asarray(x, np.float64))
            context64 = None if context is None else jnp.asarray(np.asarray(context, np.float64))
            checks.assert_log_det_matches_jacobian(
                _Compiled(layer), params64, x64, context64, atol=1e-6
            )
            log_det64 = np.asarray(_forward(layer, params64, x64, context64)[1])
        assert np.all(np.isfinite(log_det32))
        np.testing.assert_allclose(log_det32, log_det64, atol=1e-4, rtol=1e-4)


# ----------------------------------------------------------------------------- constraints

EXTREME_RAW = (-1e4, -100.0, -30.0, -3.0, 0.0, 3.0, 30.0, 100.0, 1e4)


@jax.jit
def _planar_constraint(u, w, w_dot_u):
    """(`planar_u_hat(u, w)` (N, D), `planar_constraint_m(w_dot_u)` (N,))."""
    return planar.planar_u_hat(u, w), planar.planar_constraint_m(w_dot_u)


@pytest.mark.parametrize("num_dims", DIMS)
def test_planar_constraint_holds_for_extreme_raw_parameters(num_dims):
    """w.u_hat = m(w.u) >= -1 for raw w.u from -1e4 to 1e4, and u_hat - u is along w."""
    rng = np.random.default_rng(num_dims)
    w_dot_u = np.repeat(EXTREME_RAW, BATCH)[:, None]  # (N, 1)
    w = rng.standard_normal((w_dot_u.size, num_dims))
    u = rng.standard_normal(w.shape)
    u += (w_dot_u - np.sum(w * u, 1, keepdims=True)) * w / np.sum(w * w, 1, keepdims=True)
    u_hat, m = (
        np.asarray(values, np.float64)
        for values in _planar_constraint(*(v.astype(np.float32) for v in (u, w, w_dot_u[:, 0])))
    )
    w_dot_u_hat = np.sum(w * u_hat, axis=1)
    # float32 rounding of u_hat, relative to |u| |w| >= |w.u|
    tolerance = 1e-6 * (1.0 + np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1))
    assert np.all(w_dot_u_hat >= -1.0 - tolerance), w_dot_u_hat
    np.testing.assert_array_less(np.abs(w_dot_u_hat - m), tolerance)  # w.u_hat = m(w.u)
    change = u_hat - u
    across_w = change - np.sum(change * w, 1, keepdims=True) * w / np.sum(w * w, 1)[:, None]
    np.testing.assert_array_less(np.abs(across_w).max(axis=1), tolerance)

    m = m[::BATCH]  # at EXTREME_RAW
    assert np.all(m >= -1.0) and np.all(np.diff(m) >= 0) and m[EXTREME_RAW.index(0.0)] == 0.0
    reference = np.logaddexp(0, np.add(EXTREME_RAW, np.log(np.e - 1))) - 1
    np.testing.assert_allclose(m, reference, rtol=1e-6, atol=1e-6)


def test_planar_u_hat_is_accurate_for_small_and_zero_w():
    """u_hat divides m(w.u) - w.u by |w|; `planar_constraint_m` keeps its relative accuracy
    near 0, so u_hat stays accurate as |w| -> 0 (to 1e-6, where softplus(.) - 1 would be off
    by 1e-7 / |w|), and w = 0 gives u_hat = u."""
    rng = np.random.default_rng(1)
    scales = np.append(np.logspace(-1, -6, len(EXTREME_RAW) * BATCH - 1), 0.0)[:, None]
    w = (scales * rng.standard_normal((scales.size, 5))).astype(np.float32)
    u = rng.standard_normal(w.shape).astype(np.float32)
    u_hat = np.asarray(_planar_constraint(u, w, np.zeros(scales.size, np.float32))[0])
    np.testing.assert_array_equal(u_hat[-1], u[-1])
    w64, u64 = w[:-1].astype(np.float64), u[:-1].astype(np.float64)
    w_dot_u = np.sum(w64 * u64, axis=1, keepdims=True)
    m = np.log1p(-np.expm1(-1.0) * np.expm1(w_dot_u))  # = softplus(w.u + log(e - 1)) - 1
    reference = u64 + (m - w_dot_u) * w64 / np.sum(w64 * w64, axis=1, keepdims=True)
    np.testing.assert_allclose(u_hat[:-1], reference, atol=1e-6)


def test_radial_constraint_holds_for_extreme_raw_parameters():
    """alpha >= 0 (> 0 unless softplus underflows) and beta >= -alpha, exactly, on a grid of
    raw values from -1e4 to 1e4."""
    raw = np.asarray(EXTREME_RAW, np.float32)
    alpha_raw, beta_raw = (values.ravel() for values in np.meshgrid(raw, raw))
    alpha, beta = (np.asarray(v) for v in jax.jit(planar.radial_alpha_beta)(alpha_raw, beta_raw))
    assert np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))
    assert np.all(alpha >= 0.0) and np.all(alpha[alpha_raw > -80] > 0.0)
    assert np.all(beta >= -alpha)


@functools.partial(jax.jit, static_argnames="bijector")
def _jacobian_determinants(bijector, params, points):
    """det df/dz of a global-parameter layer at each of `points` (N, D), by jacfwd: (N,)."""

    def one(point):
        return bijector.apply(params, point[None])[0][0]

    return jnp.linalg.det(jax.vmap(jax.jacfwd(one))(points))


def _grid(center, half_width=3.0, num=41):
    """A (num^2, 2) float32 grid over center + [-half_width, half_width]^2."""
    axis = np.linspace(-half_width, half_width, num)
    points = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2) + center
    return points.astype(np.float32)


def _softplus(values):
    return np.logaddexp(0.0, values)


def _reference_log_dets(name, raw, points):
    """log |det J| in float64 NumPy, by slogdet of R&M's Jacobian (not of our closed form):

    planar J = I + h'(w.z + b) u_hat w^T, with u_hat from R&M Appendix A (and the shifted m);
    radial J = (1 + beta h) I + beta h'(r) (z - z0)(z - z0)^T / r.
    raw: a global-parameter tree (float32-representable values); points (N, D) -> (N,).
    """
    raw = {key: np.asarray(value, np.float32).astype(np.float64) for key, value in raw.items()}
    points = np.asarray(points, np.float32).astype(np.float64)
    eye = np.eye(points.shape[1])
    if name == "planar":
        u, w, b = raw["u"], raw["w"], raw["b"][0]
        m = _softplus(w @ u + np.log(np.e - 1)) - 1
        u_hat = u + (m - w @ u) * w / (w @ w)
        slopes = 1 - np.tanh(points @ w + b) ** 2  # h'(w.z + b), (N,)
        jacobians = eye + slopes[:, None, None] * np.outer(u_hat, w)
    else:
        alpha = _softplus(raw["alpha_raw"][0])
        beta = -alpha + _softplus(raw["beta_raw"][0])
        offsets = points - raw["z0"]
        r = np.linalg.norm(offsets, axis=1)[:, None, None]
        h = 1 / (alpha + r)
        outer = offsets[:, :, None] * offsets[:, None, :]
        jacobians = (1 + beta * h) * eye - beta * h**2 * outer / np.where(r > 0, r, 1.0)
    sign, log_abs_det = np.linalg.slogdet(jacobians)
    assert np.all(sign > 0)
    return log_abs_det


# float32 log-dets where the determinant is small, against the float64 reference. What error
# remains comes from the map's own conditioning (w.z + b or z - z0 rounded to float32), about
# 1e-4 here; the cancelling forms log1p(h' w.u_hat) and 1 + beta h exceed this tolerance at
# these points.
NEAR_DEGENERATE_ATOL = 1e-3


def test_planar_at_the_boundary_is_injective_with_accurate_log_dets():
    """D = 2, raw w.u = `BOUNDARY_RAW`: along w the map is non-decreasing (which makes it
    injective, R&M Appendix A), det df/dz >= 0 over a grid, and the log-det is accurate close
    to the line w.z + b = 0 where det -> 0; the same u used directly as u_hat (w.u_hat = -30,
    no constraint) folds the plane."""
    layer = planar.Planar()
    raw = _planar_params(2, 0, use_context=False, w_dot_u=BOUNDARY_RAW)["params"]
    u, w, b = raw["u"], raw["w"], raw["b"][0]
    params = _random_params("planar", 2, 0, False, BOUNDARY_RAW)
    w_unit = w / np.linalg.norm(w)
    start = np.array([0.3, -0.7])
    line = start + np.linspace(-4.0, 4.0, 2001)[:, None] * w_unit  # (N, 2), across w.z + b = 0
    activations = np.array([-1e-1, -3e-2, -1e-2, -3e-3, 3e-3, 1e-2, 3e-2, 1e-1])  # w.z + b
    near_zero = start + (activations - start @ w - b)[:, None] * w / (w @ w)
    grid = _grid(center=0.0)  # (M, 2)
    points = np.concatenate([line, near_zero, grid]).astype(np.float32)
    images, log_det = _forward(layer, params, points)
    along_w = np.asarray(images[: len(line)]) @ w_unit
    assert np.diff(along_w).min() > -1e-5, np.diff(along_w).min()
    assert np.all(np.isfinite(log_det))
    np.testing.assert_allclose(
        log_det, _reference_log_dets("planar", raw, points), atol=NEAR_DEGENERATE_ATOL, rtol=1e-5
    )
    assert np.asarray(_jacobian_determinants(layer, params, grid)).min() > -1e-5

    unconstrained = (line + np.tanh(line @ w + b)[:, None] * u) @ w_unit  # R&M's map with u_hat = u
    assert np.diff(unconstrained).min() < -0.01
    slopes = 1 - np.tanh(np.asarray(grid, np.float64) @ w + b) ** 2  # (M,)
    assert np.min(1 + slopes * (w @ u)) < -1.0  # its Jacobian determinant


def test_radial_at_the_boundary_is_injective_with_accurate_log_dets():
    """D = 2, beta_raw = `BOUNDARY_RAW` (beta = -alpha): along every ray from z0 the distance
    to z0 is non-decreasing and the direction kept (which makes the map injective, R&M
    Appendix A), det df/dz >= 0 over a grid, and the log-det is accurate close to z0, where
    det -> 0; with beta = -3 alpha the distance is not monotone."""
    layer = planar.Radial()
    raw = _radial_params(2, 0, use_context=False, beta_raw=BOUNDARY_RAW)["params"]
    z0, alpha = raw["z0"], _softplus(raw["alpha_raw"][0])
    params = _random_params("radial", 2, 0, False, BOUNDARY_RAW)
    radii = np.concatenate([[1e-5, 1e-4, 1e-3], np.linspace(0.0, 5.0, 2001)[1:]])
    angles = np.linspace(0.0, 2 * np.pi, 8, endpoint=False)
    directions = np.stack([np.cos(angles), np.sin(angles)], 1)  # (8, 2)
    rays = z0 + radii[None, :, None] * directions[:, None, :]  # (8, N, 2)
    points = np.concatenate([rays.reshape(-1, 2), _grid(center=z0)]).astype(np.float32)
    images, log_det = _forward(layer, params, points)
    offsets = np.asarray(images[: rays.size // 2]).reshape(rays.shape) - z0
    distances = np.linalg.norm(offsets, axis=2)  # (8, N)
    assert np.diff(distances, axis=1).min() > -1e-5
    along_ray = np.einsum("anj,aj->an", offsets, directions)
    np.testing.assert_allclose(along_ray, distances, atol=1e-4)  # the direction is kept
    assert np.all(np.isfinite(log_det))
    np.testing.assert_allclose(
        log_det, _reference_log_dets("radial", raw, points), atol=NEAR_DEGENERATE_ATOL, rtol=1e-5
    )
    grid = points[rays.size // 2 :]
    assert np.asarray(_jacobian_determinants(layer, params, grid)).min() > -1e-5

    unconstrained = radii * (1 - 3 * alpha / (alpha + radii))  # signed distance, beta = -3 alpha
    assert np.diff(unconstrained).min() < 0


# ----------------------------------------------------------------------------- forward only


@pytest.mark.parametrize("name", LAYERS)
def test_inverse_raises_no_inverse_error_naming_the_layer(name):
    """Directly, and from `Flow.log_prob` inside a Chain (named by its position)."""
    x, _ = _inputs(0, 2, use_context=False)
    layer = LAYERS[name]()
    class_name = LAYERS[name].__name__
    with pytest.raises(NoInverseError, match=f"^{class_name} has no closed-form inverse"):
        layer.apply({}, x, method=layer.inverse)
    flow = Flow(BUILDERS[name](2), event_shape=(2,))
    with pytest.raises(NoInverseError, match=rf"^{class_name} \('bijectors_1'\).*forward"):
        flow.apply({}, x, method=flow.log_prob)


def test_flow_sample_and_log_prob_matches_jacobian_of_the_composed_map():
    """A Flow over `planar_flow(3)` with a context (a VAE's flow posterior):
    x = f_3(f_2(f_1(z))) (applied layer by layer) and
    log q(x) = log N(z) - log |det d(f_3 o f_2 o f_1)/dz|, the latter by jacfwd. (Without a
    context the Chain passes None on; each layer is tested without one above.)"""
    num_dims, num_layers, use_context = 5, 3, True
    _, context = _inputs(0, num_dims, use_context)
    chain = planar.planar_flow(num_layers)
    assert [type(layer) for layer in chain.bijectors] == [planar.Planar] * num_layers
    layers = [_random_params("planar", num_dims, k, use_context) for k in range(num_layers)]
    chain_params = {"params": {f"bijectors_{k}": p["params"] for k, p in enumerate(layers)}}
    flow = Flow(chain, event_shape=(num_dims,))
    sample_key = jax.random.key(1)

    @jax.jit
    def sample_and_log_prob(params, key, context):
        """(x, log q(x)) from the flow, and the z (and log N(z)) it drew with `key`."""
        x, log_q = flow.apply(params, key, BATCH, context, method=flow.sample_and_log_prob)
        z = flow.base.sample(key, BATCH)  # the same draws
        return x, log_q, z, flow.base.log_prob(z)

    flow_params = {"params": {"bijector": chain_params["params"]}}
    x, log_q, z, base_log_prob = sample_and_log_prob(flow_params, sample_key, context)

    expected_x = z
    for layer_params in layers:
        expected_x = _forward(planar.Planar(), layer_params, expected_x, context)[0]
    np.testing.assert_allclose(x, expected_x, atol=1e-5)
    log_det = checks.jacobian_log_det(_Compiled(chain), chain_params, z, context)
    expected = base_log_prob - log_det
    np.testing.assert_allclose(log_q, expected, atol=checks.LOG_DET_ATOL, rtol=1e-4)


def test_builders_reject_empty_chains():
    for builder in BUILDERS.values():
        with pytest.raises(ValueError, match="num_layers"):
            builder(0)


# ----------------------------------------------------------------------------- amortisation


@pytest.mark.parametrize("name", LAYERS)
def test_context_sets_per_example_parameters(name):
    """The same z under the same context maps identically; under other contexts, not."""
    x, context = _inputs(0, 5, use_context=True)
    x = jnp.broadcast_to(x[:1], x.shape)  # one z, four times
    context = context.at[1].set(context[0])  # contexts c0, c0, c2, c3
    layer = LAYERS[name]()
    params = _random_params(name, 5, 0, use_context=True)
    y, log_det = _forward(layer, params, x, context)
    np.testing.assert_array_equal(y[1], y[0])
    np.testing.assert_array_equal(log_det[1], log_det[0])
    for i, j in ((0, 2), (0, 3), (2, 3)):
        assert np.abs(y[i] - y[j]).max() > 1e-3 and abs(log_det[i] - log_det[j]) > 1e-4
    np.testing.assert_array_equal(_forward(layer, params, x, context)[0], y)


# ----------------------------------------------------------------------------- initialisation


@pytest.mark.parametrize("use_context", [False, True])
def test_init_makes_the_documented_trees_near_but_not_at_the_identity(use_context):
    """`init` builds the trees `_random_params` mimics, and each new layer moves points and
    volumes a little (init_scale 0.1), but not by nothing."""
    num_dims = 5
    x, context = _inputs(0, num_dims, use_context)
    chain = Chain((planar.Planar(), planar.Radial()))  # one init for both layers
    params = jax.jit(chain.init)(jax.random.key(0), x, context=context)["params"]
    for index, name in enumerate(LAYERS):
        layer_params = {"params": params[f"bijectors_{index}"]}
        expected = _random_params(name, num_dims, 0, use_context)
        assert jax.tree.map(jnp.shape, layer_params) == jax.tree.map(jnp.shape, expected)
        y, log_det = _forward(LAYERS[name](), layer_params, x, context)
        change = np.abs(np.asarray(y - x)).max()
        assert 0.0 < change < 0.1, (name, change)
        assert 0.0 < np.abs(log_det).max() < 0.05 * num_dims, (name, log_det)
