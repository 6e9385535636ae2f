"""Tests for genjax/objectives/estimators.py.

Values and input gradients are checked against NumPy / SciPy references. Unbiasedness is checked
on tiny models whose exact objective is computable (closed form, Gauss-Hermite quadrature or
enumeration), so ``jax.grad`` of the exact expression is the exact gradient: the mean of N
per-draw gradient estimates must lie within 4 standard errors of the mean (+ 1e-4 absolute, for
float32 rounding) of it, for every parameter. Two biased estimators (STL applied to the IWAE
bound; REINFORCE with a sample-dependent baseline) fail the same check, so it has power.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpy.polynomial.hermite_e import hermegauss
from scipy import special

from genjax.objectives import estimators, vi
from genjax.objectives.likelihoods import bernoulli_log_prob, gaussian_log_prob

sg = jax.lax.stop_gradient
NUM_STANDARD_ERRORS, ABSOLUTE_SLACK = 4.0, 1e-4


def _random_log_w(seed, shape, scale=3.0, offset=-50.0):
    """float32-representable log weights as float64, so references see the same inputs."""
    log_w = offset + scale * np.random.default_rng(seed).standard_normal(shape)
    return log_w.astype(np.float32).astype(np.float64)


def _numpy_iwae_bound(log_w, axis=0):
    return special.logsumexp(log_w, axis=axis) - np.log(log_w.shape[axis])


def _numpy_vimco_signals(log_w):
    """Double loop over examples and samples, float64: L_K - L_{-k} as in Mnih & Rezende."""
    num_samples, batch = log_w.shape
    signals = np.empty_like(log_w)
    for b in range(batch):
        column = log_w[:, b]
        bound = special.logsumexp(column) - np.log(num_samples)
        for k in range(num_samples):
            others = np.delete(column, k)
            replaced = column.copy()
            replaced[k] = others.mean()  # log of the geometric mean of the other weights
            signals[k, b] = bound - (special.logsumexp(replaced) - np.log(num_samples))
    return signals


# ------------------------------------------------------------------------ VIMCO signals, values

VIMCO_SHAPES_AND_AXES = (((2, 3), 0), ((5, 4), 0), ((3, 6), 1), ((8, 2), 1), ((4, 3, 2), 0))
# Jitted once per input shape, as in test_vi.py: much faster on CPU than eager op-by-op dispatch.
vimco_learning_signals = jax.jit(estimators.vimco_learning_signals, static_argnames="axis")
dreg_surrogate = jax.jit(estimators.dreg_surrogate, static_argnames="axis")
score_function_surrogate = jax.jit(
    estimators.score_function_surrogate, static_argnames=("objective", "axis")
)
vimco_surrogate = jax.jit(estimators.vimco_surrogate, static_argnames="axis")
learning_signal = jax.jit(estimators.learning_signal, static_argnames=("objective", "axis"))


@pytest.mark.parametrize("offset", (-50.0, -1e4))
@pytest.mark.parametrize("shape, axis", VIMCO_SHAPES_AND_AXES)
def test_vimco_learning_signals_match_numpy_double_loop(shape, axis, offset):
    log_w = _random_log_w(sum(shape), shape, offset=offset)
    signals = vimco_learning_signals(jnp.asarray(log_w, jnp.float32), axis=axis)
    assert signals.shape == shape
    # Reference on the (K, B) view: the sample axis first, the remaining axes flattened.
    log_w_2d = np.moveaxis(log_w, axis, 0).reshape(shape[axis], -1)
    expected = np.moveaxis(
        _numpy_vimco_signals(log_w_2d).reshape(np.moveaxis(log_w, axis, 0).shape), 0, axis
    )
    np.testing.assert_allclose(signals, expected, atol=2e-5, rtol=1e-5)


def test_vimco_learning_signals_of_equal_weights_are_zero():
    # All weights equal: the geometric mean equals every weight, so L_{-k} = L_K.
    np.testing.assert_allclose(vimco_learning_signals(jnp.full((4, 3), -7.5)), 0.0, atol=1e-6)


@pytest.mark.parametrize("seed", (0, 1))
def test_surrogate_values_are_the_bounds(seed):
    log_w = _random_log_w(seed, (6, 5))
    log_q = _random_log_w(seed + 10, (6, 5), offset=-3.0)
    baseline = np.linspace(-60.0, -40.0, 5)
    log_w32, log_q32 = jnp.asarray(log_w, jnp.float32), jnp.asarray(log_q, jnp.float32)
    iwae_reference, elbo_reference = _numpy_iwae_bound(log_w), log_w.mean(axis=0)
    values = {
        "dreg": dreg_surrogate(log_w32, log_w32),
        "score_iwae": score_function_surrogate(log_w32, log_q32, baseline),
        "score_elbo": score_function_surrogate(log_w32, log_q32, -50.0, "elbo"),
        "vimco": vimco_surrogate(log_w32, log_q32),
        "signal_iwae": learning_signal(log_w32),
        "signal_elbo": learning_signal(log_w32, objective="elbo"),
    }
    for name, value in values.items():
        expected = elbo_reference if name.endswith("elbo") else iwae_reference
        assert value.shape == (5,), name
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=name)


def _input_gradients(surrogate_fn, *inputs):
    """Gradients of sum_b surrogate_fn(*inputs)[b] with respect to every input (compiled once
    per call: far cheaper on CPU than op-by-op eager differentiation)."""
    summed = lambda *args: surrogate_fn(*args).sum()
    return jax.jit(jax.grad(summed, argnums=tuple(range(len(inputs)))))(*inputs)


def test_surrogate_gradients_wrt_inputs_are_the_documented_weights():
    log_w = _random_log_w(3, (5, 4), scale=1.5)
    log_q = _random_log_w(4, (5, 4), offset=-2.0)
    baseline = np.array([-49.0, -51.0, -50.0, -48.0])
    log_w32, log_q32 = jnp.asarray(log_w, jnp.float32), jnp.asarray(log_q, jnp.float32)
    weights = special.softmax(log_w, axis=0)  # (K, B)
    atol = 1e-5

    encoder, decoder = _input_gradients(estimators.dreg_surrogate, log_w32, log_w32)
    np.testing.assert_allclose(encoder, weights**2, atol=atol)
    np.testing.assert_allclose(decoder, weights, atol=atol)

    score_iwae = functools.partial(estimators.score_function_surrogate, baseline=baseline)
    direct, score = _input_gradients(score_iwae, log_w32, log_q32)
    np.testing.assert_allclose(direct, weights, atol=atol)
    expected_score = np.broadcast_to(_numpy_iwae_bound(log_w) - baseline, (5, 4))
    np.testing.assert_allclose(score, expected_score, atol=2e-5)

    score_elbo = functools.partial(
        estimators.score_function_surrogate, baseline=-50.0, objective="elbo"
    )
    direct, score = _input_gradients(score_elbo, log_w32, log_q32)
    np.testing.assert_allclose(direct, np.full((5, 4), 1 / 5), atol=atol)
    np.testing.assert_allclose(score, (log_w + 50.0) / 5, atol=2e-5)

    direct, score = _input_gradients(estimators.vimco_surrogate, log_w32, log_q32)
    np.testing.assert_allclose(direct, weights, atol=atol)
    np.testing.assert_allclose(score, _numpy_vimco_signals(log_w), atol=atol)

    signal_gradient = jax.grad(lambda lw: estimators.learning_signal(lw).sum())(log_w32)
    np.testing.assert_array_equal(signal_gradient, 0.0)


def _values_and_input_gradients(surrogate_fn, log_w, log_q):
    """(surrogate_fn(log_w, log_q), its summed gradients w.r.t. both inputs), one compile."""

    def values_and_gradients(log_w, log_q):
        summed = lambda *args: surrogate_fn(*args).sum()
        return surrogate_fn(log_w, log_q), jax.grad(summed, argnums=(0, 1))(log_w, log_q)

    return jax.jit(values_and_gradients)(log_w, log_q)


def test_sample_axis_one_gives_the_transposed_results():
    log_w = jnp.asarray(_random_log_w(5, (4, 3)), jnp.float32)
    log_q = jnp.asarray(_random_log_w(6, (4, 3), offset=-2.0), jnp.float32)
    baseline = jnp.array([-50.0, -49.0, -52.0])
    for surrogate_fn in (
        estimators.dreg_surrogate,
        functools.partial(estimators.score_function_surrogate, baseline=baseline),
        estimators.vimco_surrogate,
    ):
        value_0, gradients_0 = _values_and_input_gradients(surrogate_fn, log_w, log_q)
        value_1, gradients_1 = _values_and_input_gradients(
            functools.partial(surrogate_fn, axis=1), log_w.T, log_q.T
        )
        np.testing.assert_allclose(value_0, value_1, rtol=1e-6)
        for gradient_0, gradient_1 in zip(gradients_0, gradients_1, strict=True):
            np.testing.assert_allclose(gradient_0, gradient_1.T, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ errors


def test_vimco_refuses_a_single_sample():
    with pytest.raises(ValueError, match=r"K >= 2.*axis=0"):
        estimators.vimco_learning_signals(jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"K >= 2"):
        estimators.vimco_surrogate(jnp.zeros((3, 1)), jnp.zeros((3, 1)), axis=1)


def test_unknown_objective_is_refused_with_its_name():
    with pytest.raises(ValueError, match=r"objective='foo'.*'elbo', 'iwae'"):
        estimators.score_function_surrogate(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 0.0, "foo")
    with pytest.raises(ValueError, match=r"objective='foo'"):
        estimators.learning_signal(jnp.zeros((2, 3)), objective="foo")


@pytest.mark.parametrize(
    "estimator, objective, num_samples, message",
    [
        ("dreg", "elbo", 4, r"estimator='dreg' estimates the gradient of the IWAE bound, but "),
        ("vimco", "elbo", 4, r"objective='elbo'; use objective='iwae'"),
        ("vimco", "iwae", 1, r"'vimco' needs num_samples >= 2.*got 1"),
        ("fancy", "iwae", 2, r"estimator='fancy'; allowed: \('reparam'"),
        ("reparam", "foo", 2, r"objective='foo'; allowed: \('elbo', 'iwae'\)"),
    ],
)
def test_check_estimator_for_bound_refuses_by_name(estimator, objective, num_samples, message):
    with pytest.raises(ValueError, match=message):
        estimators.check_estimator_for_bound(estimator, objective, num_samples)


def test_check_estimator_for_bound_accepts_every_valid_pair():
    for estimator in estimators.ESTIMATORS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", estimators.BiasedEstimatorWarning)  # stl, tested
            estimators.check_estimator_for_bound(estimator, "iwae", 2)
    for estimator in ("reparam", "stl", "score"):
        estimators.check_estimator_for_bound(estimator, "elbo", 1)
    with pytest.raises(ValueError, match=r"config.estimator='dreg'.*config.model_config.obj"):
        estimators.check_estimator_for_bound(
            "dreg", "elbo", 1, "config.estimator", "config.model_config.objective"
        )


def test_shape_checks_at_the_boundary():
    with pytest.raises(AssertionError):
        estimators.vimco_surrogate(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
    with pytest.raises(AssertionError):
        estimators.dreg_surrogate(jnp.zeros((3, 4)), jnp.zeros((4, 3)))
    with pytest.raises(AssertionError):  # the baseline must broadcast to (B,) = (4,)
        estimators.score_function_surrogate(jnp.zeros((3, 4)), jnp.zeros((3, 4)), jnp.zeros(3))


def test_estimator_names():
    assert estimators.ESTIMATORS == ("reparam", "stl", "dreg", "score", "vimco")
    assert set(estimators.REPARAMETERIZED_ESTIMATORS) < set(estimators.ESTIMATORS)


# ------------------------------------------------------------------------ linear-Gaussian model
# p(z) = N(0, 1), p(x | z) = N(x; theta z + c, 1), q(z | x) = N(m, exp(2 s)), one scalar x.

X_OBSERVED = 1.2
GAUSSIAN_PARAMS = {"theta": 1.5, "c": -0.5, "m": 0.3, "s": -0.4}
ENCODER_NAMES = ("m", "s")


def _stopped(params, names):
    """``params`` with the entries ``names`` stop-gradiented."""
    return {name: sg(value) if name in names else value for name, value in params.items()}


def _gaussian_log_joint(params, z):
    log_prior = gaussian_log_prob(z, 0.0, 0.0)
    return log_prior + gaussian_log_prob(X_OBSERVED, params["theta"] * z + params["c"], 0.0)


def _gaussian_log_q(params, z):
    return gaussian_log_prob(z, params["m"], 2.0 * params["s"])


def _gaussian_log_w(params, z, q_params=None):
    q_params = params if q_params is None else q_params
    return _gaussian_log_joint(params, z) - _gaussian_log_q(q_params, z)


def _gaussian_sample(params, eps):
    return params["m"] + jnp.exp(params["s"]) * eps


def _exact_elbo(params):
    """Closed form E_q[log p(z) + log p(x | z)] + entropy of q."""
    theta, c, m, variance = params["theta"], params["c"], params["m"], jnp.exp(2 * params["s"])
    expected_log_prior = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (m**2 + variance)
    residual = X_OBSERVED - theta * m - c
    expected_log_likelihood = -0.5 * jnp.log(2 * jnp.pi) - 0.5 * (residual**2 + theta**2 * variance)
    entropy = 0.5 * jnp.log(2 * jnp.pi * jnp.e) + params["s"]
    return expected_log_prior + expected_log_likelihood + entropy


def _exact_iwae_bound_k2(params, num_nodes=60, estimator_fn=None):
    """E[log((w_1 + w_2) / 2)] by 2-D Gauss-Hermite quadrature over eps_1, eps_2 ~ N(0, 1).

    z_k = m + exp(s) eps_k, so the parameters enter the integrand and jax.grad of the sum is
    the exact gradient. (With 60 nodes the float64 value agrees with 120 nodes to 1e-12.)
    With ``estimator_fn(params, eps)`` -> (B,) in place of the reparameterized bound, jax.grad
    of the sum is instead the exact expectation of that estimator's gradient.
    """
    nodes, weights = hermegauss(num_nodes)
    weights = weights / np.sqrt(2 * np.pi)  # probabilists' Hermite: sum of weights = sqrt(2 pi)
    eps = np.stack(np.meshgrid(nodes, nodes, indexing="ij")).reshape(2, -1)  # (K=2, nodes^2)
    quadrature_weights = np.outer(weights, weights).reshape(-1)  # (nodes^2,)
    if estimator_fn is None:
        estimator_fn = functools.partial(_gaussian_reparam, bound_fn=vi.iwae_bound)
    return jnp.sum(quadrature_weights * estimator_fn(params, jnp.asarray(eps, jnp.float32)))


def _gaussian_reparam(params, eps, bound_fn):
    """Reparameterized: every parameter live. eps: (K, B)."""
    return bound_fn(_gaussian_log_w(params, _gaussian_sample(params, eps)))


def _gaussian_stl(params, eps, bound_fn):
    """Sticking the landing: z live, q's density evaluated with (m, s) stopped."""
    z = _gaussian_sample(params, eps)
    return bound_fn(_gaussian_log_w(params, z, q_params=_stopped(params, ENCODER_NAMES)))


def _gaussian_dreg(params, eps):
    z = _gaussian_sample(params, eps)
    log_w_encoder = _gaussian_log_w(_stopped(params, tuple(params)), z)  # through z only
    decoder_only = _stopped(params, ENCODER_NAMES)
    log_w_decoder = _gaussian_log_w(decoder_only, sg(z))  # theta, c only
    return estimators.dreg_surrogate(log_w_encoder, log_w_decoder)


def _gaussian_score(params, eps, objective, baseline=-2.0):
    z = sg(_gaussian_sample(params, eps))
    log_w, log_q = _gaussian_log_w(params, z), _gaussian_log_q(params, z)
    return estimators.score_function_surrogate(log_w, log_q, baseline, objective)


def _gaussian_vimco(params, eps):
    z = sg(_gaussian_sample(params, eps))
    return estimators.vimco_surrogate(_gaussian_log_w(params, z), _gaussian_log_q(params, z))


@functools.partial(jax.jit, static_argnums=0)
def _gradient_draws(estimator_fn, params, noise):
    """One gradient estimate per draw: noise (N, K, 1) -> (N, num_params), params flattened."""
    flat_params, unravel = ravel_pytree(params)
    per_draw = jax.grad(lambda flat, draw: estimator_fn(unravel(flat), draw).sum())
    return jax.vmap(per_draw, in_axes=(None, 0))(flat_params, noise)


@functools.partial(jax.jit, static_argnums=0)
def _exact_gradient(objective_fn, params):
    flat_params, unravel = ravel_pytree(params)
    return jax.grad(lambda flat: objective_fn(unravel(flat)))(flat_params)


def _within_standard_errors(draws, exact):
    """Per component: |mean - exact| <= 4 standard errors of the mean + 1e-4."""
    draws, exact = np.asarray(draws, np.float64), np.asarray(exact, np.float64)
    mean = draws.mean(axis=0)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
    return np.abs(mean - exact) <= NUM_STANDARD_ERRORS * standard_error + ABSOLUTE_SLACK


def _assert_unbiased(draws, exact, name):
    draws, exact = np.asarray(draws), np.asarray(exact)
    assert np.all(np.isfinite(draws)), name
    ok = _within_standard_errors(draws, exact)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
    assert np.all(ok), f"{name}: mean {draws.mean(0)} exact {exact} s.e. {standard_error}"


def _gaussian_params(values=GAUSSIAN_PARAMS):
    return {name: jnp.asarray(value, jnp.float32) for name, value in values.items()}


# Module-level estimators and one draw shape per K, so each compiled program is reused by every
# test that needs it (compilation dominates the run time on CPU; 200_000 draws run in ~0.1 s).
GAUSSIAN_ESTIMATORS = {
    "reparam_elbo": functools.partial(_gaussian_reparam, bound_fn=vi.elbo),
    "stl_elbo": functools.partial(_gaussian_stl, bound_fn=vi.elbo),
    "score_elbo": functools.partial(_gaussian_score, objective="elbo"),
    "reparam_iwae": functools.partial(_gaussian_reparam, bound_fn=vi.iwae_bound),
    "stl_iwae": functools.partial(_gaussian_stl, bound_fn=vi.iwae_bound),
    "dreg": _gaussian_dreg,
    "score_iwae": functools.partial(_gaussian_score, objective="iwae"),
    "vimco": _gaussian_vimco,
}
NUM_GAUSSIAN_DRAWS = 200_000
ENCODER, DECODER = np.array([1, 2]), np.array([0, 3])  # ravel order: c, m, s, theta


def _gaussian_draws(name, params, num_importance_samples, seed):
    """N = 200_000 per-draw gradient estimates, shape (N, 4), ordered c, m, s, theta."""
    shape = (NUM_GAUSSIAN_DRAWS, num_importance_samples, 1)  # (N, K, B=1)
    noise = jax.random.normal(jax.random.key(seed), shape)
    return np.asarray(_gradient_draws(GAUSSIAN_ESTIMATORS[name], params, noise))


@pytest.mark.parametrize("name", ("reparam_elbo", "stl_elbo", "score_elbo"))
def test_elbo_estimators_are_unbiased_on_linear_gaussian(name):
    """K = 1, N = 200_000 draws, all four parameters; exact gradient of the closed-form ELBO."""
    params = _gaussian_params()
    draws = _gaussian_draws(name, params, num_importance_samples=1, seed=0)
    _assert_unbiased(draws, _exact_gradient(_exact_elbo, params), name)


@pytest.mark.parametrize("name", ("reparam_iwae", "dreg", "score_iwae", "vimco"))
def test_iwae_estimators_are_unbiased_on_linear_gaussian(name):
    """K = 2, N = 200_000 draws; exact gradient through the Gauss-Hermite quadrature."""
    params = _gaussian_params()
    draws = _gaussian_draws(name, params, num_importance_samples=2, seed=1)
    _assert_unbiased(draws, _exact_gradient(_exact_iwae_bound_k2, params), name)


def test_unbiasedness_check_rejects_stl_on_the_iwae_bound():
    """Negative control: STL applied to the IWAE bound is biased (Tucker et al. 2019, Sec. 3),
    and the same check, with the same N = 200_000 draws, rejects its encoder gradient."""
    params = _gaussian_params()
    draws = _gaussian_draws("stl_iwae", params, num_importance_samples=2, seed=1)
    accepted = _within_standard_errors(draws, _exact_gradient(_exact_iwae_bound_k2, params))
    assert accepted.tolist() == [True, False, False, True]  # c, m, s, theta


def test_stl_is_biased_for_the_iwae_bound_and_unbiased_for_k1():
    """Roeder et al.'s STL on the IWAE bound (Tucker et al. 2019): with K = 2 the mean of
    200_000 draws of its encoder gradient misses the exact gradient by > 20 standard errors
    (observed: 463 for m, 65 for s; the mean gradient of m is 1.33 against the exact 0.79),
    yet lies within 4 of STL's own expectation, computed exactly by the same quadrature with
    q's parameters stopped, so the gap is the estimator's bias, not the check's noise. With
    K = 1 the IWAE bound is the ELBO and the same estimator is unbiased. The bound check warns
    for K = 2 only."""
    params = _gaussian_params()
    stl_iwae = GAUSSIAN_ESTIMATORS["stl_iwae"]
    draws = _gaussian_draws("stl_iwae", params, num_importance_samples=2, seed=7)
    standard_error = draws.std(axis=0, ddof=1) / np.sqrt(draws.shape[0])
    exact = np.asarray(_exact_gradient(_exact_iwae_bound_k2, params))
    errors_in_standard_errors = np.abs(draws.mean(axis=0) - exact) / standard_error
    assert np.all(errors_in_standard_errors[ENCODER] > 20.0), errors_in_standard_errors
    _assert_unbiased(draws[:, DECODER], exact[DECODER], "stl decoder")  # w~_k: unbiased
    stl_expectation = _exact_gradient(
        functools.partial(_exact_iwae_bound_k2, estimator_fn=stl_iwae), params
    )
    _assert_unbiased(draws, stl_expectation, "stl against its own expectation")

    draws_k1 = _gaussian_draws("stl_iwae", params, num_importance_samples=1, seed=7)
    _assert_unbiased(draws_k1, _exact_gradient(_exact_elbo, params), "stl, K = 1")

    with pytest.warns(estimators.BiasedEstimatorWarning, match=r"BIASED.*IWAE.*'dreg'"):
        estimators.check_estimator_for_bound("stl", "iwae", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning where STL is unbiased
        estimators.check_estimator_for_bound("stl", "iwae", 1)
        estimators.check_estimator_for_bound("stl", "elbo", 5)


def _posterior_params():
    """q equal to the exact posterior N(theta (x - c) / (theta^2 + 1), 1 / (theta^2 + 1))."""
    theta, c = GAUSSIAN_PARAMS["theta"], GAUSSIAN_PARAMS["c"]
    precision = theta**2 + 1.0
    posterior = {"m": theta * (X_OBSERVED - c) / precision, "s": -0.5 * np.log(precision)}
    return _gaussian_params({**GAUSSIAN_PARAMS, **posterior})


def test_stl_encoder_gradient_vanishes_at_the_posterior():
    """200_000 draws at q = posterior: every STL encoder gradient has |g| < 1e-5, while the
    reparameterized one keeps its score term -grad log q, whose std is sqrt(theta^2 + 1) for m
    and sqrt(2) for s (checked to 5 %)."""
    params = _posterior_params()
    stl = _gaussian_draws("stl_elbo", params, num_importance_samples=1, seed=2)
    reparam = _gaussian_draws("reparam_elbo", params, num_importance_samples=1, seed=2)
    assert np.max(np.abs(stl[:, ENCODER])) < 1e-5
    reparam_std = np.std(reparam[:, ENCODER], axis=0)
    np.testing.assert_allclose(reparam_std, [np.sqrt(1.5**2 + 1.0), np.sqrt(2.0)], rtol=0.05)


def test_dreg_matches_stl_for_one_sample_and_reparam_decoder_for_two():
    """Per draw (200_000 draws, rtol = atol = 1e-5): with K = 1 DReG's whole gradient is STL's;
    with K = 2 DReG's decoder gradient is the reparameterized IWAE one,
    sum_k w~_k grad_theta log w_k."""
    params = _gaussian_params()
    dreg = _gaussian_draws("dreg", params, num_importance_samples=1, seed=3)
    stl = _gaussian_draws("stl_elbo", params, num_importance_samples=1, seed=3)
    np.testing.assert_allclose(dreg, stl, rtol=1e-5, atol=1e-5)

    dreg = _gaussian_draws("dreg", params, num_importance_samples=2, seed=4)
    reparam = _gaussian_draws("reparam_iwae", params, num_importance_samples=2, seed=4)
    np.testing.assert_allclose(dreg[:, DECODER], reparam[:, DECODER], rtol=1e-5, atol=1e-5)
    assert not np.allclose(dreg[:, ENCODER], reparam[:, ENCODER], rtol=0.1)


def test_encoder_gradient_variances_on_linear_gaussian_k2():
    """200_000 draws at K = 2 (fixed seed; the margins are wide): DReG's encoder gradient has
    far less variance than the reparameterized one, which has less than REINFORCE with a
    constant baseline; VIMCO's per-sample baselines also beat that REINFORCE."""
    params = _gaussian_params()
    variance = {
        name: np.var(_gaussian_draws(name, params, 2, seed=5)[:, ENCODER], axis=0)
        for name in ("reparam_iwae", "dreg", "score_iwae", "vimco")
    }
    # Observed (m, s): reparam (2.7, 1.7), dreg (0.13, 0.15), score (7.6, 4.8), vimco (3.0, 2.4).
    assert np.all(variance["dreg"] < 0.2 * variance["reparam_iwae"]), variance
    assert np.all(variance["reparam_iwae"] < 0.7 * variance["score_iwae"]), variance
    assert np.all(variance["vimco"] < 0.7 * variance["score_iwae"]), variance


# ------------------------------------------------------------------------ Bernoulli latents
# z in {0, 1}^2, q(z_j) = Bernoulli(sigmoid(phi_j)), p(z_j) = Bernoulli(sigmoid(prior_logits_j)),
# p(x | z) = Bernoulli(logits W z + c) over 3 binary dimensions of a fixed x.

X_BINARY = jnp.array([1.0, 0.0, 1.0])
BERNOULLI_PARAMS = {
    "phi": jnp.array([0.4, -0.8]),
    "prior_logits": jnp.array([-0.3, 0.5]),
    "weights": jnp.array([[1.5, -2.0], [0.7, 1.2], [-1.0, 0.8]]),
    "bias": jnp.array([0.2, -0.4, 0.1]),
}
NUM_BERNOULLI_SAMPLES = 3


def _bernoulli_log_w_and_log_q(params, z):
    """z: (..., 2) -> log w and log q, shape (...)."""
    log_prior = bernoulli_log_prob(z, params["prior_logits"], event_ndims=1)
    logits = z @ params["weights"].T + params["bias"]  # (..., 3)
    log_q = bernoulli_log_prob(z, params["phi"], event_ndims=1)
    return log_prior + bernoulli_log_prob(X_BINARY, logits, event_ndims=1) - log_q, log_q


def _exact_bernoulli_iwae_bound(params):
    """Sum over all 4^K joint configurations of prod_k q(z_k) log (1/K) sum_k w_k."""
    single = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])  # (4, 2)
    index = np.stack(
        np.meshgrid(*[np.arange(4)] * NUM_BERNOULLI_SAMPLES, indexing="ij"), -1
    ).reshape(-1, NUM_BERNOULLI_SAMPLES)  # (4^K, K)
    log_w, log_q = _bernoulli_log_w_and_log_q(params, single[index])  # (4^K, K) each
    probabilities = jnp.exp(jnp.sum(log_q, axis=1))  # (4^K,)
    return jnp.sum(probabilities * vi.iwae_bound(log_w, axis=1))


def _bernoulli_inputs(params, uniforms):
    """uniforms (K, 1, 2) -> stopped samples z ~ q and (log w, log q), each (K, 1)."""
    z = sg((uniforms < jax.nn.sigmoid(params["phi"])).astype(jnp.float32))
    return _bernoulli_log_w_and_log_q(params, z)


def _bernoulli_score(params, uniforms):
    log_w, log_q = _bernoulli_inputs(params, uniforms)
    return estimators.score_function_surrogate(log_w, log_q, baseline=-4.0, objective="iwae")


def _bernoulli_vimco(params, uniforms):
    return estimators.vimco_surrogate(*_bernoulli_inputs(params, uniforms))


@pytest.mark.parametrize(
    "name, estimator_fn", (("score", _bernoulli_score), ("vimco", _bernoulli_vimco))
)
def test_discrete_estimators_are_unbiased_on_bernoulli_latents(name, estimator_fn):
    """K = 3, N = 200_000 draws, all 13 parameters; exact gradient by enumerating 4^3 configs."""
    uniforms = jax.random.uniform(jax.random.key(6), (200_000, NUM_BERNOULLI_SAMPLES, 1, 2))
    draws = _gradient_draws(estimator_fn, BERNOULLI_PARAMS, uniforms)
    exact = _exact_gradient(_exact_bernoulli_iwae_bound, BERNOULLI_PARAMS)
    _assert_unbiased(draws, exact, name)


def test_unbiasedness_check_rejects_a_sample_dependent_baseline():
    """Negative control: with the bound itself as the baseline (it depends on z_{1:K}) the score
    term vanishes and the estimator is biased; the same check (N = 200_000) rejects the
    gradients of the encoder logits phi and leaves the decoder ones, which do not use it."""

    def biased_score(params, uniforms):
        log_w, log_q = _bernoulli_inputs(params, uniforms)
        baseline = estimators.learning_signal(log_w)  # sample-dependent: not a valid baseline
        return estimators.score_function_surrogate(log_w, log_q, baseline, objective="iwae")

    uniforms = jax.random.uniform(jax.random.key(6), (200_000, NUM_BERNOULLI_SAMPLES, 1, 2))
    draws = _gradient_draws(biased_score, BERNOULLI_PARAMS, uniforms)
    exact = _exact_gradient(_exact_bernoulli_iwae_bound, BERNOULLI_PARAMS)
    accepted = _within_standard_errors(draws, exact)
    # ravel order: bias (3), phi (2), prior_logits (2), weights (6)
    np.testing.assert_array_equal(accepted, [True] * 3 + [False] * 2 + [True] * 8)
