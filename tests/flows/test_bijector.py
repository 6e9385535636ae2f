"""The protocol's own bijectors: elementwise maps, permutations, Chain, Invert, and Flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.data import preprocess
from genjax.flows.bijector import (
    Chain,
    Invert,
    Logit,
    Permute,
    ScaleShift,
    Sigmoid,
    random_permutation,
    reverse_permutation,
)
from genjax.flows.flow import Flow, StandardNormal
from tests.flows import checks

SHAPE = (3, 2, 2)  # (B, *event)


def _unit_interval(seed):
    return jax.random.uniform(jax.random.key(seed), SHAPE, minval=0.02, maxval=0.98)


def _bijectors():
    return {
        "scale_shift": ScaleShift(2.0, -1.0),
        "negative_scale": ScaleShift(-0.5, 0.3),
        "logit": Logit(0.05),
        "plain_logit": Logit(0.0),
        "sigmoid": Sigmoid(),
        "reverse": Permute(reverse_permutation(4)),
        "random_permutation": Permute(random_permutation(3, 4)),
        "inverted_logit": Invert(Logit(0.05)),
        "chain": Chain(
            [ScaleShift(0.8, 0.1), Logit(0.05), Permute(random_permutation(0, 4)), Sigmoid()]
        ),
    }


@pytest.mark.parametrize("name", list(_bijectors()))
@pytest.mark.parametrize("seed", [0, 1])
def test_round_trip_and_log_det_against_the_jacobian(name, seed):
    bijector = _bijectors()[name]
    x = _unit_interval(seed)
    if name in ("sigmoid", "inverted_logit"):
        x = 4.0 * x - 2.0  # defined on all of R
    params = bijector.init(jax.random.key(0), x)
    checks.assert_round_trip(bijector, params, x)
    checks.assert_log_det_matches_jacobian(bijector, params, x)
    y, _ = bijector.apply(params, x, method=bijector.forward)
    checks.assert_log_det_matches_jacobian(bijector, params, y, inverse=True)


def test_chain_sums_its_layers_log_dets_and_inverts_in_reverse_order():
    layers = [ScaleShift(3.0), Logit(0.05), ScaleShift(0.5, 1.0)]
    x = _unit_interval(2)
    chain = Chain(layers)
    params = chain.init(jax.random.key(0), x)
    x = x / 4.0  # 3 x stays inside the logit's (0, 1)
    y, log_det = chain.apply(params, x, method=chain.forward)
    step1 = 3.0 * x  # the layers in order, by hand
    step2, ld2 = preprocess.logit_transform(step1, 0.05)
    step3 = 0.5 * step2 + 1.0
    expected = x[0].size * (np.log(3.0) + np.log(0.5)) + ld2
    np.testing.assert_allclose(y, step3, rtol=1e-6)
    np.testing.assert_allclose(log_det, expected, rtol=1e-5)
    x_back, inverse_log_det = chain.apply(params, y, method=chain.inverse)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(inverse_log_det, -expected, rtol=1e-5)


def test_invert_swaps_directions_and_sigmoid_inverts_the_logit():
    x = _unit_interval(3)
    logit, inverted = Logit(0.0), Invert(Logit(0.0))
    y, forward_log_det = logit.apply({}, x, method=logit.forward)
    x_back, inverse_log_det = inverted.apply({}, y, method=inverted.forward)
    np.testing.assert_allclose(x_back, x, atol=1e-5)
    np.testing.assert_allclose(inverse_log_det, -forward_log_det, rtol=1e-5)
    sigmoid = Sigmoid()
    np.testing.assert_allclose(sigmoid.apply({}, y, method=sigmoid.forward)[0], x, atol=1e-5)


def test_logit_is_the_pipelines_preprocessing():
    x = _unit_interval(4)
    y, log_det = Logit(0.05).apply({}, x)
    expected_y, expected_log_det = preprocess.logit_transform(np.asarray(x), 0.05)
    # The pipeline computes NumPy inputs in float64, the bijector in float32: y near 0 agrees
    # to float32 rounding in absolute terms.
    np.testing.assert_allclose(y, expected_y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-5)


def test_bad_parameters_are_refused():
    x = _unit_interval(0)
    with pytest.raises(ValueError, match="ScaleShift.scale must be non-zero"):
        ScaleShift(0.0).apply({}, x)
    with pytest.raises(ValueError, match=r"Logit.alpha=0.5 must be in \[0, 0.5\)"):
        Logit(0.5).apply({}, x)


def test_flow_log_prob_is_base_density_plus_inverse_log_det_and_matches_sampling():
    bijector = Chain([ScaleShift(2.0, 1.0), Permute(reverse_permutation(4))])
    flow = Flow(bijector, SHAPE[1:])
    x = jax.random.normal(jax.random.key(5), SHAPE)
    params = flow.init(jax.random.key(0), x)
    z = (x.reshape(3, -1)[:, ::-1].reshape(SHAPE) - 1.0) / 2.0
    base = StandardNormal(SHAPE[1:])
    expected = base.log_prob(z) - 4 * np.log(2.0)
    np.testing.assert_allclose(flow.apply(params, x, method=Flow.log_prob), expected, rtol=1e-5)
    samples, log_q = flow.apply(params, jax.random.key(1), 7, method=Flow.sample_and_log_prob)
    np.testing.assert_allclose(log_q, flow.apply(params, samples, method=Flow.log_prob), rtol=1e-5)
    assert samples.shape == (7, *SHAPE[1:])
    np.testing.assert_allclose(
        base.log_prob(jnp.zeros((1, *SHAPE[1:]))), -0.5 * 4 * np.log(2 * np.pi), rtol=1e-6
    )
