"""Variational bounds and importance-sampling diagnostics over arrays of log weights.

Every function here is pure and works on plain arrays. The common input is a tensor of log
importance weights

    log_w[k, b] = log p(x_b, z_k) - log q(z_k | x_b),    z_k ~ q(z | x_b),

with the sample axis (``k``, size K) given by ``axis`` and any other axes treated as batch.
"""

import math

import chex
import jax
import jax.numpy as jnp


def _check_sample_axis(log_w: jax.Array, axis: int) -> None:
    """Asserts that ``log_w`` has a non-empty sample axis ``axis``."""
    chex.assert_axis_dimension_gt(log_w, axis, 0)


def elbo(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """Monte Carlo evidence lower bound: the mean of the log weights over the sample axis.

    ELBO(x) = E_q[log p(x, z) - log q(z | x)] <= log p(x) (Kingma & Welling 2014, eq. 3).

    Args:
      log_w: log importance weights, e.g. shape (K, B), sample axis ``axis``.
      axis: the sample axis.

    Returns:
      The bound, shape of ``log_w`` with ``axis`` removed, e.g. (B,).
    """
    log_w = jnp.asarray(log_w)
    _check_sample_axis(log_w, axis)
    return jnp.mean(log_w, axis=axis)


def iwae_bound(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """Importance-weighted bound log (1/K) sum_k exp(log_w_k), computed stably.

    Burda, Grosse & Salakhutdinov 2016 ("Importance Weighted Autoencoders"), eq. 8. It is at
    least the ELBO (Jensen) and equals it for K = 1; computed as logsumexp(log_w) - log K, so
    it stays finite for log weights far from zero (e.g. -1e4).

    Args:
      log_w: log importance weights, e.g. shape (K, B), sample axis ``axis``.
      axis: the sample axis.

    Returns:
      The bound, shape of ``log_w`` with ``axis`` removed, e.g. (B,).
    """
    log_w = jnp.asarray(log_w)
    _check_sample_axis(log_w, axis)
    num_importance_samples = log_w.shape[axis]
    return jax.nn.logsumexp(log_w, axis=axis) - math.log(num_importance_samples)


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL( N(mean, diag exp(log_var)) || N(0, I) ), summed over the last axis.

    Closed form 0.5 * sum_j (exp(log_var_j) + mean_j^2 - 1 - log_var_j) from Kingma & Welling
    2014 ("Auto-Encoding Variational Bayes"), appendix B.

    Args:
      mean: posterior means, shape (..., D).
      log_var: posterior log variances, same shape as ``mean``.

    Returns:
      The KL divergence in nats, shape (...).
    """
    mean, log_var = jnp.asarray(mean), jnp.asarray(log_var)
    chex.assert_equal_shape([mean, log_var])
    chex.assert_axis_dimension_gt(mean, -1, 0)
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var, axis=-1)


def importance_weights(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """Self-normalised importance weights softmax(log_w) along the sample axis.

    w_k = exp(log_w_k) / sum_j exp(log_w_j); these weight the samples in the IWAE gradient
    (Burda et al. 2016, eq. 14) and in self-normalised importance sampling.

    Args:
      log_w: log importance weights, e.g. shape (K, B), sample axis ``axis``.
      axis: the sample axis.

    Returns:
      Weights of the same shape as ``log_w``, non-negative and summing to 1 along ``axis``.
    """
    log_w = jnp.asarray(log_w)
    _check_sample_axis(log_w, axis)
    return jax.nn.softmax(log_w, axis=axis)


def effective_sample_size(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """Kish effective sample size (sum_k w_k)^2 / sum_k w_k^2 of the importance weights.

    Ranges from 1 (one weight dominates) to K (all weights equal); Kish 1965, as used for
    importance sampling by Kong, Liu & Wong 1994. Computed as 1 / sum_k w_k^2 from the
    normalised weights (``importance_weights``), which is invariant to a common offset of the
    log weights and so keeps float32 precision even for log weights around -1e4.

    Args:
      log_w: log importance weights, e.g. shape (K, B), sample axis ``axis``.
      axis: the sample axis.

    Returns:
      The effective sample size, shape of ``log_w`` with ``axis`` removed, e.g. (B,).
    """
    normalized_weights = importance_weights(log_w, axis=axis)  # same shape as log_w
    return 1.0 / jnp.sum(jnp.square(normalized_weights), axis=axis)
