"""Observation log-likelihoods log p(x | params) for decoders, and the bits-per-dim conversion.

All functions are pure, broadcast ``x`` against the parameters with NumPy rules, compute a
log-probability per element and then sum over the last ``event_ndims`` axes of the
broadcast shape (``event_ndims=0`` keeps the element-wise values; for images of shape
(B, H, W, C) ``event_ndims=3`` gives one value per image, shape (B,)).
"""

import math

import chex
import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_event_axes(log_probs: jax.Array, event_ndims: int) -> jax.Array:
    """Sums ``log_probs`` over its last ``event_ndims`` axes: (..., *event) -> (...)."""
    if not 0 <= event_ndims <= log_probs.ndim:
        raise ValueError(f"event_ndims={event_ndims} must lie in [0, {log_probs.ndim}].")
    event_axes = tuple(range(log_probs.ndim - event_ndims, log_probs.ndim))
    return jnp.sum(log_probs, axis=event_axes)


def bernoulli_log_prob(x: jax.Array, logits: jax.Array, event_ndims: int = 0) -> jax.Array:
    """Bernoulli log-likelihood x log sigmoid(l) + (1 - x) log sigmoid(-l), i.e. minus the
    binary cross-entropy with logits.

    Continuous x in [0, 1] is allowed (the cross-entropy form used for grey-scale MNIST by
    Kingma & Welling 2014, appendix C.1). Since log sigmoid(-l) = log sigmoid(l) - l, it is
    computed as x l - softplus(l): one softplus per element, not two, and the value and its
    gradient x - sigmoid(l) stay finite for any finite logits.

    Args:
      x: observations in [0, 1], shape broadcastable with ``logits``, e.g. (B, H, W, C).
      logits: Bernoulli logits, e.g. (B, H, W, C) or (K, B, H, W, C).
      event_ndims: number of trailing axes to sum over.

    Returns:
      Log-probabilities in nats, the broadcast shape without its last ``event_ndims`` axes.
    """
    x, logits = jnp.asarray(x), jnp.asarray(logits)
    log_probs = x * logits - jax.nn.softplus(logits)
    return _sum_event_axes(log_probs, event_ndims)


def gaussian_log_prob(
    x: jax.Array, mean: jax.Array, log_var: jax.Array, event_ndims: int = 0
) -> jax.Array:
    """Diagonal Gaussian log-density log N(x; mean, exp(log_var)).

    -0.5 (log 2 pi + log_var + (x - mean)^2 / exp(log_var)), the Gaussian decoder of Kingma &
    Welling 2014, appendix C.2.

    Args:
      x: observations, shape broadcastable with ``mean`` and ``log_var``.
      mean: means.
      log_var: log variances.
      event_ndims: number of trailing axes to sum over.

    Returns:
      Log-densities in nats, the broadcast shape without its last ``event_ndims`` axes.
    """
    x, mean, log_var = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_var)
    squared_error = jnp.square(x - mean)
    log_probs = -0.5 * (_LOG_2PI + log_var + squared_error * jnp.exp(-log_var))
    return _sum_event_axes(log_probs, event_ndims)


def _log_sigmoid_difference(upper: jax.Array, lower: jax.Array, width: jax.Array) -> jax.Array:
    """log(sigmoid(upper) - sigmoid(lower)) for ``upper = lower + width``, ``width > 0``.

    Uses sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)): every factor is
    taken in log space, so nothing underflows in either tail, and ``width`` is passed in
    rather than recomputed as ``upper - lower`` to avoid cancellation.
    """
    return jax.nn.log_sigmoid(upper) + jax.nn.log_sigmoid(-lower) + jnp.log(-jnp.expm1(-width))


def _discretized_logistic_log_mass(
    x: jax.Array, mean: jax.Array, log_scale: jax.Array, num_bins: int
) -> jax.Array:
    """Element-wise log mass of the bin around ``x`` under Logistic(mean, exp(log_scale)).

    Bins are [x - h, x + h] with h = 1 / (num_bins - 1); the first and last bins extend to
    -inf and +inf. Shapes broadcast; the result has the broadcast shape.
    """
    if num_bins < 2:
        raise ValueError(f"num_bins={num_bins} must be at least 2.")
    half_width = 1.0 / (num_bins - 1)
    inv_scale = jnp.exp(-log_scale)
    centered = x - mean
    upper = inv_scale * (centered + half_width)  # standardised upper bin edge
    lower = inv_scale * (centered - half_width)  # standardised lower bin edge
    log_cdf_upper = jax.nn.log_sigmoid(upper)  # mass of (-inf, x + h]
    log_survival_lower = jax.nn.log_sigmoid(-lower)  # mass of [x - h, inf)
    log_interior_mass = _log_sigmoid_difference(upper, lower, 2.0 * half_width * inv_scale)
    is_first_bin = x < -1.0 + half_width
    is_last_bin = x > 1.0 - half_width
    return jnp.where(
        is_first_bin,
        log_cdf_upper,
        jnp.where(is_last_bin, log_survival_lower, log_interior_mass),
    )


def discretized_logistic_log_prob(
    x: jax.Array,
    mean: jax.Array,
    log_scale: jax.Array,
    num_bins: int = 256,
    event_ndims: int = 0,
) -> jax.Array:
    """Discretised logistic log-likelihood of data on a grid of ``num_bins`` values in [-1, 1].

    P(x) = CDF((x + h - mean) / s) - CDF((x - h - mean) / s), h = 1 / (num_bins - 1),
    s = exp(log_scale), with the edge bins extended to -inf / +inf so the masses over the grid
    sum to 1 (Kingma et al. 2016, IAF, CIFAR-10 decoder; Salimans et al. 2017, PixelCNN++, eq. 2).

    Numerics: PixelCNN++ works with log-sigmoids (softplus) and falls back to the mid-bin
    density times the bin width when the CDF difference underflows. Here the interior bins use
    the exact identity log(sigmoid(a) - sigmoid(b)) = log sigmoid(a) + log sigmoid(-b) +
    log(1 - exp(b - a)), which cannot underflow, so no fallback (and none of its
    approximation error) is needed; values and gradients are finite in the far tails. Callers
    may still clamp ``log_scale`` from below (PixelCNN++ uses -7) to keep exp(-log_scale)
    finite.

    Args:
      x: data rescaled to [-1, 1] on the grid 2 i / (num_bins - 1) - 1, e.g. (B, H, W, C).
      mean: logistic locations, broadcastable with ``x``.
      log_scale: logistic log scales, broadcastable with ``x``.
      num_bins: number of grid values (256 for 8-bit images); at least 2.
      event_ndims: number of trailing axes to sum over.

    Returns:
      Log-probabilities in nats, the broadcast shape without its last ``event_ndims`` axes.
    """
    x, mean, log_scale = jnp.asarray(x), jnp.asarray(mean), jnp.asarray(log_scale)
    log_probs = _discretized_logistic_log_mass(x, mean, log_scale, num_bins)
    return _sum_event_axes(log_probs, event_ndims)


def discretized_logistic_mixture_log_prob(
    x: jax.Array,
    logit_probs: jax.Array,
    means: jax.Array,
    log_scales: jax.Array,
    num_bins: int = 256,
    event_ndims: int = 0,
) -> jax.Array:
    """Log-likelihood under a mixture of M discretised logistics (Salimans et al. 2017, eq. 2).

    log P(x) = logsumexp_m [log_softmax(logit_probs)_m + log P_m(x)], with P_m the
    discretised logistic of ``discretized_logistic_log_prob``. The parameters carry a trailing
    component axis that ``x`` lacks. (PixelCNN++'s autoregressive channel coupling of the
    means is left to the caller, who passes the already coupled means.)

    Args:
      x: data in [-1, 1], shape (...), e.g. (B, H, W, C).
      logit_probs: unnormalised mixture log-weights, shape (..., M) broadcastable with means.
      means: component locations, shape (..., M), e.g. (B, H, W, C, M).
      log_scales: component log scales, same shape as ``means``.
      num_bins: number of grid values; at least 2.
      event_ndims: number of trailing axes of ``x`` to sum over (the component axis is
        already reduced).

    Returns:
      Log-probabilities in nats, shape (...) without its last ``event_ndims`` axes.
    """
    x = jnp.asarray(x)
    logit_probs, means, log_scales = map(jnp.asarray, (logit_probs, means, log_scales))
    chex.assert_equal_shape([means, log_scales])
    chex.assert_axis_dimension(logit_probs, -1, means.shape[-1])
    component_log_probs = _discretized_logistic_log_mass(
        x[..., None], means, log_scales, num_bins
    )  # (..., M)
    log_mixture_weights = jax.nn.log_softmax(logit_probs, axis=-1)  # (..., M)
    log_probs = jax.nn.logsumexp(log_mixture_weights + component_log_probs, axis=-1)  # (...)
    return _sum_event_axes(log_probs, event_ndims)


def bits_per_dim(nll_nats: jax.Array, num_dims: int) -> jax.Array:
    """Converts a negative log-likelihood in nats to bits per dimension: nll / (D ln 2).

    The standard image-model metric (e.g. van den Oord et al. 2016, PixelRNN).
    For discrete likelihoods (Bernoulli, discretised logistic) the value is directly
    comparable across papers; a continuous density on rescaled data first needs the
    rescaling's log-Jacobian added to ``nll_nats``.

    Args:
      nll_nats: negative log-likelihood per example in nats, any shape, e.g. (B,).
      num_dims: number of dimensions D of one example, e.g. H * W * C.

    Returns:
      Bits per dimension, same shape as ``nll_nats``.
    """
    if num_dims <= 0:
        raise ValueError(f"num_dims={num_dims} must be positive.")
    return jnp.asarray(nll_nats) / (num_dims * math.log(2.0))
