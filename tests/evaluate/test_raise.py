"""RAISE (reverse AIS) on tiny RBMs against exact enumeration in float64 NumPy."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.evaluate import ais
from genjax.models.energy import rbm

NUM_VISIBLE, NUM_HIDDEN = 4, 3


def _random_rbm(seed, scale=1.5):
    keys = jax.random.split(jax.random.key(seed), 3)
    return {
        "W": scale * jax.random.normal(keys[0], (NUM_VISIBLE, NUM_HIDDEN)),
        "b_v": jax.random.normal(keys[1], (NUM_VISIBLE,)),
        "b_h": jax.random.normal(keys[2], (NUM_HIDDEN,)),
    }


def _states(num_units):
    return np.array(list(itertools.product([0.0, 1.0], repeat=num_units)))


def _numpy_params(params, base_bias, beta):
    """The tempered RBM p_base^(1-beta) p^beta written out: W, b_h scaled, b_v mixed."""
    W, b_v, b_h = (np.asarray(params[k], np.float64) for k in ("W", "b_v", "b_h"))
    return beta * W, (1 - beta) * base_bias + beta * b_v, beta * b_h


def _gibbs_matrix(W, b_v, b_h):
    """T(v -> v') = sum_h p(h | v) p(v' | h) over all 2^V visible states: (2^V, 2^V)."""
    vs, hs = _states(NUM_VISIBLE), _states(NUM_HIDDEN)
    sigmoid = lambda x: 1 / (1 + np.exp(-x))
    q = sigmoid(vs @ W + b_h)  # (2^V, H)
    p_h_given_v = np.prod(np.where(hs[None] == 1, q[:, None], 1 - q[:, None]), -1)  # (2^V, 2^H)
    r = sigmoid(hs @ W.T + b_v)  # (2^H, V)
    p_v_given_h = np.prod(np.where(vs[None] == 1, r[:, None], 1 - r[:, None]), -1)  # (2^H, 2^V)
    return p_h_given_v @ p_v_given_h


def _exact_marginal(params):
    vs, hs = _states(NUM_VISIBLE), _states(NUM_HIDDEN)
    W, b_v, b_h = (np.asarray(params[k], np.float64) for k in ("W", "b_v", "b_h"))
    log_p = np.logaddexp.reduce((vs @ b_v)[:, None] + (hs @ b_h)[None] + vs @ W @ hs.T, axis=1)
    return np.exp(log_p - np.logaddexp.reduce(log_p))


def _annealing_model(params, base_bias, betas):
    """p_ann(v): the law of forward AIS's last state, x_0 ~ p_base, x_k ~ T_{beta_k}(x_{k-1})."""
    vs = _states(NUM_VISIBLE)
    p_base = 1 / (1 + np.exp(-base_bias))
    p = np.prod(np.where(vs == 1, p_base, 1 - p_base), -1)  # (2^V,)
    for beta in betas[1:]:
        p = p @ _gibbs_matrix(*_numpy_params(params, base_bias, float(beta)))
    return p


def _raise(params, base_bias, betas, num_chains, seed=0):
    """RAISE from every visible state, `num_chains` chains each, compiled."""
    run = jax.jit(
        lambda p, key, v, bias: rbm.raise_log_likelihood(p, key, v, num_chains, betas, bias)
    )
    v = jnp.asarray(_states(NUM_VISIBLE), jnp.float32)
    return run(params, jax.random.key(seed), v, jnp.asarray(base_bias, jnp.float32))


def test_raise_weights_are_unbiased_for_the_annealing_model():
    """E[w] = p_ann(v) exactly (not p(v): with 3 betas the two differ far beyond the error)."""
    params = _random_rbm(0, scale=3.0)
    base_bias = np.linspace(-1.0, 1.0, NUM_VISIBLE)
    betas = np.array([0.0, 0.3, 0.7, 1.0], np.float32)
    result = _raise(params, base_bias, betas, num_chains=20_000)
    assert result.log_weights.shape == (2**NUM_VISIBLE, 20_000)
    weights = np.exp(np.asarray(result.log_weights, np.float64))  # (16, C)
    mean, stderr = weights.mean(1), weights.std(1, ddof=1) / np.sqrt(weights.shape[1])
    p_ann = _annealing_model(params, base_bias, betas)
    np.testing.assert_allclose(p_ann.sum(), 1.0, rtol=1e-9)
    assert np.all(np.abs(mean - p_ann) < 4 * stderr + 1e-7), (mean, p_ann, stderr)
    p = _exact_marginal(params)
    assert np.max(np.abs(p_ann - p) / stderr) > 20  # the test tells p_ann from p
    # The reported per-example estimate is log mean w, its stderr the delta-method one.
    np.testing.assert_allclose(np.exp(result.log_likelihood), mean, rtol=1e-4)
    np.testing.assert_allclose(result.stderr, stderr / mean, rtol=1e-3)


@pytest.mark.slow  # long: moved out of the default suite's 10 minutes
def test_raise_is_conservative_and_tightens_with_more_betas():
    """Averaged over v ~ p, E[log p_hat(v)] <= E[log p(v)], the gap closing as K grows."""
    params = _random_rbm(1)
    base_bias = np.zeros(NUM_VISIBLE)
    p = _exact_marginal(params)
    exact = np.sum(p * np.log(p))  # E_p log p(v)
    gaps = []
    for num_betas in (5, 50, 2_000):
        result = _raise(params, base_bias, ais.default_betas(num_betas), num_chains=500)
        per_chain = np.asarray(result.log_weights, np.float64)  # one-chain estimates (16, 500)
        estimate = np.sum(p * per_chain.mean(1))
        stderr = np.sqrt(np.sum(p**2 * per_chain.var(1, ddof=1) / per_chain.shape[1]))
        assert estimate < exact + 3 * stderr, (num_betas, estimate, exact, stderr)
        gaps.append(exact - estimate)
    assert gaps[0] > gaps[1] > gaps[2] > -0.01, gaps
    assert gaps[0] > 0.3 and gaps[2] < 0.02, gaps  # measured: about 1.3, 0.16, 0.003
