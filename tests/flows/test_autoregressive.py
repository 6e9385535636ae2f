"""MAF and IAF: invertible, exact log-dets, autoregressive Jacobians, one compiled loop."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.flows import autoregressive
from genjax.flows.flow import Flow
from genjax.nn import masked
from tests.flows import checks

NUM_DIMS = 5
BATCH = 4
CONTEXT_DIMS = 3
HIDDEN = (8, 8)
SEEDS = (0, 1, 2)
LAYERS = {"maf": autoregressive.MAF, "iaf": autoregressive.IAF}
BUILDERS = {"maf": autoregressive.maf_flow, "iaf": autoregressive.iaf_flow}


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(bijector, inverse, params, x, context):
    """bijector's map in one direction, compiled once per (bijector, direction, shapes)."""
    return bijector.apply(params, x, inverse=inverse, context=context)


@functools.partial(jax.jit, static_argnums=0)
def _init(bijector, key, x, context):
    """Parameters, created in the direction in which every layer is one pass (cheaper)."""
    layers = getattr(bijector, "bijectors", (bijector,))
    inverse = not any(
        layer.conditioner_reads_noise for layer in layers if isinstance(layer, autoregressive.MAF)
    )
    return bijector.init(key, x, inverse=inverse, context=context)


class _Compiled:
    """`bijector` (optionally inverted) behind the `apply` that tests/flows/checks.py calls,
    compiled: equal bijectors share one compilation across seeds, which keeps the suite fast."""

    forward, inverse = "forward", "inverse"

    def __init__(self, bijector, inverted=False):
        self.bijector, self.inverted = bijector, inverted

    def apply(self, params, x, inverse=False, context=None, method=None):
        if method is not None:
            inverse = method == "inverse"
        return _apply(self.bijector, inverse != self.inverted, params, x, context)


def _inputs(seed, use_context, num_dims=NUM_DIMS):
    """(x (B, D), context (B, C) or None) from NumPy."""
    rng = np.random.default_rng([seed, 100])
    x = jnp.asarray(rng.standard_normal((BATCH, num_dims)), jnp.float32)
    context = jnp.asarray(rng.standard_normal((BATCH, CONTEXT_DIMS)), jnp.float32)
    return x, context if use_context else None


def _perturbed_params(bijector, seed, x, context, scale=0.3):
    """Initialised params plus N(0, scale^2) NumPy noise on every leaf: far from the identity."""
    params = _init(bijector, jax.random.key(seed), x, context)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: leaf + scale * jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype),
        params,
    )


def _assert_invertible_with_exact_log_dets(bijector, params, x, context):
    """Round trips starting from either side, and both log-dets against jacfwd."""
    for inverted in (False, True):
        checks.assert_round_trip(_Compiled(bijector, inverted), params, x, context)
    for inverse in (False, True):
        checks.assert_log_det_matches_jacobian(
            _Compiled(bijector), params, x, context, inverse=inverse
        )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _example_jacobians(bijector, inverse, params, x, context):
    """(B, D_out, D_in) Jacobians of each example's map, from one jacfwd of the batch."""

    def flat_map(flat):
        out, _ = bijector.apply(params, flat.reshape(x.shape), inverse=inverse, context=context)
        return out.reshape(-1)

    jac = jax.jacfwd(flat_map)(x.reshape(-1)).reshape(BATCH, NUM_DIMS, BATCH, NUM_DIMS)
    return jnp.stack([jac[b, :, b, :] for b in range(BATCH)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("use_context", [False, True])
@pytest.mark.parametrize("name", LAYERS)
def test_layer_round_trips_with_exact_log_dets(name, use_context, seed):
    x, context = _inputs(seed, use_context)
    layer = LAYERS[name](hidden_sizes=HIDDEN)
    params = _perturbed_params(layer, seed, x, context)
    _assert_invertible_with_exact_log_dets(layer, params, x, context)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", BUILDERS)
def test_builder_chains_round_trip_with_exact_log_dets(name, seed):
    x, context = _inputs(seed, use_context=False)
    chain = BUILDERS[name](NUM_DIMS, num_layers=2, hidden_sizes=HIDDEN)
    layer_name = LAYERS[name].__name__
    assert [type(b).__name__ for b in chain.bijectors] == [layer_name, "Permute", layer_name]
    assert chain.bijectors[1].permutation == (4, 3, 2, 1, 0)
    params = _perturbed_params(chain, seed, x, context)
    _assert_invertible_with_exact_log_dets(chain, params, x, context)


@pytest.mark.parametrize("name", LAYERS)
def test_new_layer_is_the_identity(name):
    x, context = _inputs(0, use_context=True)
    layer = LAYERS[name](hidden_sizes=HIDDEN)
    params = _init(layer, jax.random.key(0), x, context)
    for inverse in (False, True):
        y, log_det = _apply(layer, inverse, params, x, context)
        np.testing.assert_array_equal(y, x)
        np.testing.assert_array_equal(log_det, np.zeros(BATCH))


@pytest.mark.parametrize(
    "ordering, use_context", [("natural", False), ("natural", True), ("random", True)]
)
@pytest.mark.parametrize("name", LAYERS)
def test_one_pass_jacobian_is_triangular_under_the_ordering(name, ordering, use_context):
    """MAF's density map du/dx and IAF's sampling map dx/dz: entry [d, i] is exactly 0 unless
    input i comes no later than d in the ordering, and the diagonal is exp(-+alpha_d(x)).

    With a context too: it shifts every unit but must add no path between dimensions.
    """
    seed = 7
    x, context = _inputs(seed, use_context)
    if ordering == "natural":
        order, extra = None, {}
    else:
        order = tuple(int(i) for i in np.random.default_rng(seed).permutation(NUM_DIMS))
        extra = {"activation": "tanh", "degree_mode": "random", "mask_seed": seed}
    layer = LAYERS[name](hidden_sizes=HIDDEN, order=order, **extra)
    inverse = not layer.conditioner_reads_noise  # the direction in which it reads its input
    params = _perturbed_params(layer, seed, x, context)
    jac = np.asarray(_example_jacobians(layer, inverse, params, x, context))  # (B, D_out, D_in)

    degrees = masked.input_degrees(np.arange(NUM_DIMS) if order is None else order)
    allowed = degrees[None, :] <= degrees[:, None]  # [output, input]
    assert np.all(jac[:, ~allowed] == 0.0)
    assert np.any(jac[:, allowed & ~np.eye(NUM_DIMS, dtype=bool)] != 0.0)  # not diagonal

    _, alpha = layer.apply(params, x, context, method=layer.shift_and_log_scale)  # (B, D)
    expected = np.exp(-alpha if inverse else alpha)
    np.testing.assert_allclose(np.diagonal(jac, axis1=1, axis2=2), expected, rtol=1e-5)


def _primitive_counts(jaxpr) -> dict[str, int]:
    """Equations per primitive in a closed jaxpr, sub-jaxprs (loop bodies) included."""
    counts = {}
    for eqn in jaxpr.eqns:
        counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
        for sub in jax.core.jaxprs_in_params(eqn.params):
            for key, value in _primitive_counts(sub).items():
                counts[key] = counts.get(key, 0) + value
    return counts


def _traced(layer_class, num_dims, inverse):
    layer = layer_class(hidden_sizes=HIDDEN)
    x = jnp.zeros((BATCH, num_dims))
    params = jax.eval_shape(layer.init, jax.random.key(0), x)
    closed = jax.make_jaxpr(lambda p, v: layer.apply(p, v, inverse=inverse))(params, x)
    return _primitive_counts(closed.jaxpr)


def test_sequential_direction_is_one_loop_and_does_not_grow_with_dims():
    loops = {"scan", "while"}
    small, large = _traced(autoregressive.MAF, 4, False), _traced(autoregressive.MAF, 12, False)
    assert sum(small.get(p, 0) for p in loops) == 1
    assert small == large
    # The one-pass directions have no loop: MAF's density, IAF's sampling.
    assert not loops & set(_traced(autoregressive.MAF, 4, True))
    assert not loops & set(_traced(autoregressive.IAF, 4, False))
    assert sum(_traced(autoregressive.IAF, 4, True).get(p, 0) for p in loops) == 1


@pytest.mark.parametrize("name", LAYERS)
def test_context_changes_the_output(name):
    x, context = _inputs(3, use_context=True)
    layer = LAYERS[name](hidden_sizes=HIDDEN)
    params = _perturbed_params(layer, 3, x, context)
    for inverse in (False, True):
        y, log_det = _apply(layer, inverse, params, x, context)
        y_other, log_det_other = _apply(layer, inverse, params, x, context + 1.0)
        # The first dimension's (mu, alpha) are biases: no hidden unit reaches it.
        assert np.all(np.abs(np.asarray(y - y_other))[:, 1:] > 1e-4)
        assert np.all(np.abs(np.asarray(log_det - log_det_other)) > 1e-4)


def test_events_are_flattened():
    """A (B, 1, D) event gives the (B, D) result, reshaped."""
    x, context = _inputs(4, use_context=True)
    layer = autoregressive.MAF(hidden_sizes=HIDDEN)
    params = _perturbed_params(layer, 4, x, context)
    for inverse in (False, True):
        y, log_det = _apply(layer, inverse, params, x, context)
        y_event, log_det_event = _apply(layer, inverse, params, x[:, None], context)
        assert y_event.shape == (BATCH, 1, NUM_DIMS)
        np.testing.assert_allclose(y_event[:, 0], y, atol=1e-6)
        np.testing.assert_allclose(log_det_event, log_det, atol=1e-6)


def test_iaf_flow_posterior_density_agrees_with_sampling():
    """As a VAE's conditional flow posterior: log_prob (IAF's sequential inverse) of a draw
    equals what sample_and_log_prob (one pass per layer) reported for it."""
    _, context = _inputs(5, use_context=True)
    chain = autoregressive.iaf_flow(NUM_DIMS, num_layers=2, hidden_sizes=HIDDEN)
    flow = Flow(chain, (NUM_DIMS,))
    chain_params = _perturbed_params(chain, 5, jnp.zeros((BATCH, NUM_DIMS)), context)
    params = {"params": {"bijector": chain_params["params"]}}
    sample = jax.jit(
        lambda p, key, c: flow.apply(p, key, BATCH, c, method=flow.sample_and_log_prob)
    )
    x, log_p = sample(params, jax.random.key(5), context)
    log_p_density = jax.jit(lambda p, v, c: flow.apply(p, v, c, method=flow.log_prob))(
        params, x, context
    )
    np.testing.assert_allclose(log_p_density, log_p, atol=1e-3, rtol=1e-4)


def test_bad_arguments_are_rejected():
    x, _ = _inputs(0, use_context=False)
    with pytest.raises(ValueError, match="order has 3 entries"):
        autoregressive.MAF(order=(0, 1, 2)).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="activation"):
        autoregressive.IAF(activation="gelu").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="max_log_scale"):
        autoregressive.MAF(max_log_scale=0.0).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="num_layers"):
        autoregressive.maf_flow(NUM_DIMS, num_layers=0)
