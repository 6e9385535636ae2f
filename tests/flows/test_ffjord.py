"""FFJORD: the integrated exact trace against slogdet of the end-to-end map's Jacobian,
Hutchinson's estimator's unbiasedness, the two gradient modes, and bad settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.flows.ffjord import FFJORD

X = jnp.array([[0.3, -1.2], [1.5, 0.4], [-0.7, 0.9]])


def _flow(**fields):
    bijector = FFJORD(hidden_features=16, num_hidden_layers=2, **fields)
    keys = {"params": jax.random.key(0), "hutchinson": jax.random.key(1)}
    params = jax.jit(bijector.init)(keys, X)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda leaf: leaf + 0.5 * rng.normal(size=leaf.shape), params)
    return bijector, params


@pytest.mark.slow
def test_a_fresh_flow_is_the_identity():
    bijector = FFJORD(hidden_features=8, num_hidden_layers=1)
    params = jax.jit(bijector.init)(jax.random.key(0), X)
    y, log_det = jax.jit(bijector.apply)(params, X)
    np.testing.assert_allclose(y, X, atol=1e-6)
    np.testing.assert_allclose(log_det, np.zeros(3), atol=1e-6)


# 15 s each here (compiling the Jacobian of a whole solve): in CI's slow set. The default set
# keeps Hutchinson's test, whose target is this exact log-det.
@pytest.mark.slow
@pytest.mark.parametrize("inverse", [False, True])
def test_integrated_exact_trace_is_the_log_det_of_the_end_to_end_jacobian(inverse):
    bijector, params = _flow()

    def end_to_end(v):
        return bijector.apply(params, v[None], inverse=inverse)[0][0]

    jacobians = jax.jit(jax.vmap(jax.jacrev(end_to_end)))(X)
    expected = np.linalg.slogdet(np.asarray(jacobians, np.float64))[1]
    _, log_det = bijector.apply(params, X, inverse=inverse)
    np.testing.assert_allclose(log_det, expected, atol=2e-4)
    assert np.abs(expected).max() > 0.1  # the perturbed flow does change volume


@pytest.mark.parametrize(
    "tolerance, atol",
    [
        pytest.param(1e-5, 5e-4, marks=pytest.mark.slow),
        pytest.param(1e-7, 2e-5, marks=pytest.mark.slow),
    ],
)
def test_inverse_undoes_forward_to_the_solver_tolerance_and_reports_its_steps(tolerance, atol):
    """The round trip's error is the solver's: it shrinks with rtol = atol; tighter
    tolerances take more steps."""
    bijector, params = _flow(rtol=tolerance, atol=tolerance)
    (y, log_det), sown = jax.jit(lambda p, x: bijector.apply(p, x, mutable=["intermediates"]))(
        params, X
    )
    back, inverse_log_det = jax.jit(lambda p, v: bijector.apply(p, v, inverse=True))(params, y)
    np.testing.assert_allclose(back, X, atol=atol)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=atol)
    (steps,) = sown["intermediates"]["ode_steps"]
    loose, _ = _flow(rtol=1e-3, atol=1e-3)
    _, loose_sown = loose.apply(params, X, mutable=["intermediates"])
    assert int(steps) > int(loose_sown["intermediates"]["ode_steps"][0]) > 0


@pytest.mark.parametrize(
    "estimator", ["rademacher", pytest.param("gaussian", marks=pytest.mark.slow)]
)
def test_hutchinson_log_det_is_unbiased_for_the_exact_one(estimator):
    exact, params = _flow()
    hutchinson = FFJORD(hidden_features=16, num_hidden_layers=2, trace_estimator=estimator)
    _, target = exact.apply(params, X[:1])
    copies = jnp.repeat(X[:1], 4000, axis=0)  # one probe per row
    _, estimates = hutchinson.apply(params, copies, rngs={"hutchinson": jax.random.key(5)})
    estimates = np.asarray(estimates, np.float64)
    assert estimates.std() > 1e-3  # the probes do vary the estimate
    stderr = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - float(target[0])) < 4 * stderr


@pytest.mark.slow
def test_adjoint_gradients_match_backpropagation_through_the_solver():
    discretize, params = _flow()
    adjoint = FFJORD(hidden_features=16, num_hidden_layers=2, gradient="adjoint")

    def loss(bijector, p):
        z, log_det = bijector.apply(p, X, inverse=True)
        return jnp.sum(z**2) - jnp.sum(log_det)

    direct = jax.grad(lambda p: loss(discretize, p))(params)
    continuous = jax.grad(lambda p: loss(adjoint, p))(params)
    for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(continuous), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(rtol=0.0), r"FFJORD.rtol=0.0 must be positive"),
        (dict(atol=-1e-5), r"FFJORD.atol=-1e-05 must be positive"),
        (dict(trace_estimator="skilling"), r"trace_estimator='skilling'; expected one of"),
        (dict(gradient="forward"), r"gradient='forward'; expected one of"),
    ],
)
def test_bad_settings_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message):
        FFJORD(**fields).init(jax.random.key(0), X)
