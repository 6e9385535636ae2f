"""The invariants every bijector test asserts, in one place (imported by tests/flows/test_*)."""

import jax
import jax.numpy as jnp
import numpy as np

# float32 round trips and log-dets are compared at these tolerances unless a test says otherwise.
ROUND_TRIP_ATOL = 1e-4
LOG_DET_ATOL = 1e-3


def jacobian_log_det(bijector, params, x, context=None, inverse=False) -> np.ndarray:
    """log |det J| of the flattened map, one example at a time, by `jax.jacfwd`: (B,)."""

    def one(example, example_context):
        ctx = None if example_context is None else example_context[None]

        def flat_map(v):
            out, _ = bijector.apply(
                params, v.reshape(1, *x.shape[1:]), inverse=inverse, context=ctx
            )
            return out.reshape(-1)

        jac = jax.jacfwd(flat_map)(example.reshape(-1))
        return jnp.linalg.slogdet(jac)[1]

    # One compiled, vmapped program: op-by-op dispatch of each example's Jacobian cost
    # seconds per test.
    if context is None:
        return np.asarray(jax.jit(jax.vmap(lambda example: one(example, None)))(x))
    return np.asarray(jax.jit(jax.vmap(one))(x, context))


def assert_log_det_matches_jacobian(
    bijector, params, x, context=None, inverse=False, atol=LOG_DET_ATOL
):
    """The bijector's own log-det equals slogdet of its autodiff Jacobian, and it is (B,)."""
    _, log_det = bijector.apply(params, x, inverse=inverse, context=context)
    assert log_det.shape == x.shape[:1], log_det.shape
    np.testing.assert_allclose(
        log_det, jacobian_log_det(bijector, params, x, context, inverse), atol=atol, rtol=1e-4
    )


def assert_round_trip(bijector, params, x, context=None, atol=ROUND_TRIP_ATOL):
    """inverse(forward(x)) == x, and the inverse's log-det is minus the forward's."""
    forward = jax.jit(lambda p, v, c: bijector.apply(p, v, method=bijector.forward, context=c))
    inverse = jax.jit(lambda p, v, c: bijector.apply(p, v, method=bijector.inverse, context=c))
    y, forward_log_det = forward(params, x, context)
    x_back, inverse_log_det = inverse(params, y, context)
    np.testing.assert_allclose(x_back, x, atol=atol)
    np.testing.assert_allclose(inverse_log_det, -forward_log_det, atol=LOG_DET_ATOL, rtol=1e-4)
    return y
