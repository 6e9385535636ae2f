"""Autoencoder objectives: input corruption, reconstruction losses and code sparsity penalties.

Pure functions over arrays, batched over a leading axis B:

  corrupt(key, x, kind, level)            denoising corruption (Vincent et al. 2008, 2010)
  reconstruction_nll(x, output, ..)       -log p(x | decoder output), Bernoulli or Gaussian
  l1_penalty(codes)                       sum_j |h_j| per example
  kl_sparsity_penalty(codes, rho)         sum_j KL(rho || rho_hat_j) over the batch's mean
                                          activations rho_hat (Ng's sparse autoencoder notes)

The reconstruction loss is a negative log-likelihood: the Bernoulli form is the cross-entropy of
Vincent et al. (2008), the Gaussian form with a fixed scale sigma is the squared error
||x - x_hat||^2 / (2 sigma^2) plus the normaliser D/2 log(2 pi sigma^2), so both read in nats.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from genjax.objectives.likelihoods import bernoulli_log_prob, gaussian_log_prob

# Input corruptions of `corrupt`; 'none' leaves the input as it is (a plain autoencoder).
CORRUPTIONS = ("none", "masking", "salt_and_pepper", "gaussian")
# Decoder likelihoods of `reconstruction_nll`.
RECONSTRUCTIONS = ("bernoulli", "gaussian")


def corrupt(key: jax.Array, x: jax.Array, kind: str, level: float | jax.Array) -> jax.Array:
    """A corrupted copy x_tilde ~ C(x_tilde | x) of a batch, the same shape as `x`.

    kinds (each element independently; `level` in [0, 1]):
      'none': x itself.
      'masking': set to 0 with probability `level` (masking noise, Vincent et al. 2008).
      'salt_and_pepper': with probability `level` set to 0 or 1, each with probability 1/2
        (Vincent et al. 2010, section 4.1; the MNIST corruption of Bengio et al. 2013).
      'gaussian': x + level * N(0, 1) (additive isotropic Gaussian noise; level is the std).
    """
    if kind not in CORRUPTIONS:
        raise ValueError(f"corruption kind={kind!r}; allowed: {CORRUPTIONS}")
    if kind == "none":
        return x
    if kind == "gaussian":
        return x + level * jax.random.normal(key, x.shape, x.dtype)
    hit_key, value_key = jax.random.split(key)
    hit = jax.random.bernoulli(hit_key, level, x.shape)
    if kind == "masking":
        return jnp.where(hit, jnp.zeros_like(x), x)
    salt = jax.random.bernoulli(value_key, 0.5, x.shape).astype(x.dtype)
    return jnp.where(hit, salt, x)


def reconstruction_nll(
    x: jax.Array, output: jax.Array, likelihood: str, gaussian_scale: float = 1.0
) -> jax.Array:
    """-log p(x | output) per example: (B, *event) x2 -> (B,), in nats.

    Args:
      x: the clean targets, (B, *event).
      output: the decoder's output of the same shape: Bernoulli logits, or the Gaussian mean.
      likelihood: 'bernoulli' (cross-entropy; x in [0, 1]) or 'gaussian' (fixed scale).
      gaussian_scale: sigma of the Gaussian likelihood.
    """
    chex.assert_equal_shape((x, output))
    event_ndims = x.ndim - 1
    if likelihood == "bernoulli":
        return -bernoulli_log_prob(x, output, event_ndims)
    if likelihood == "gaussian":
        log_var = jnp.full((), 2.0 * math.log(gaussian_scale), output.dtype)
        return -gaussian_log_prob(x, output, log_var, event_ndims)
    raise ValueError(f"likelihood={likelihood!r}; allowed: {RECONSTRUCTIONS}")


def squared_error(x: jax.Array, output: jax.Array) -> jax.Array:
    """||x - output||^2 per example: (B, *event) x2 -> (B,)."""
    chex.assert_equal_shape((x, output))
    return jnp.sum(jnp.reshape((x - output) ** 2, (x.shape[0], -1)), axis=1)


def l1_penalty(codes: jax.Array) -> jax.Array:
    """sum_j |h_j| per example: codes (B, H) -> (B,)."""
    chex.assert_rank(codes, 2)
    return jnp.sum(jnp.abs(codes), axis=1)


def kl_sparsity_penalty(codes: jax.Array, target: float, eps: float = 1e-6) -> jax.Array:
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j)), rho_hat_j the unit's mean activation.

    The sparse autoencoder's penalty (Ng, "Sparse autoencoder", CS294A notes, 2011): each
    sigmoid unit's average activation over the batch, rho_hat_j = mean_b h_bj, is pulled toward
    the small target rho. rho_hat is clipped into [eps, 1 - eps].

    Args:
      codes: sigmoid activations in [0, 1], (B, H).
      target: rho in (0, 1).

    Returns:
      The scalar penalty for the batch.
    """
    chex.assert_rank(codes, 2)
    rho_hat = jnp.clip(jnp.mean(codes, axis=0), eps, 1.0 - eps)
    rho = target
    kl = rho * jnp.log(rho / rho_hat) + (1.0 - rho) * jnp.log((1.0 - rho) / (1.0 - rho_hat))
    return jnp.sum(kl)
