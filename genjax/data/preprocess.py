"""Preprocessing of whole batches: binarization, dequantization, rescaling, logit transform.

Pure functions on arrays. The random ones take an explicit `np.random.Generator` (or a seed),
never a global state. `to_symmetric`, `logit_transform` and `logit_transform_inverse` dispatch
on their input: NumPy in, NumPy out (the input pipeline stays on the host); JAX arrays or
tracers in, `jax.numpy` is used (they work inside `jax.jit` and under `jax.grad`).
"""

from __future__ import annotations

import math
from types import ModuleType

import jax
import jax.numpy as jnp
import numpy as np

# Bound on the number of one-ulp nudges `dequantize_uniform` needs to fix float32 rounding.
_MAX_BIN_NUDGES = 8


def _array_namespace(x) -> ModuleType:
    """`jax.numpy` for JAX arrays (including tracers), `numpy` for anything else."""
    return jnp if isinstance(x, jax.Array) else np


def binarize_dynamic(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fresh Bernoulli draw per call: b ~ Bernoulli(x), elementwise.

    Dynamic binarization of grey-level MNIST as in the VAE / IWAE literature (Salakhutdinov &
    Murray, 2008; Burda et al., 2016): every epoch sees a new binary sample.

    Args:
      x: intensities in [0, 1], any shape.
      rng: the source of randomness; each call advances it, so two calls differ.

    Returns:
      float32 array of x's shape with values in {0, 1}; P(b = 1) = x.
    """
    return (rng.random(np.shape(x)) < x).astype(np.float32)


def binarize_fixed(x: np.ndarray, seed: int) -> np.ndarray:
    """One seeded Bernoulli(x) draw over the whole array, the same for the same seed.

    Fixed (static) binarization: done once per split, so every epoch and every evaluation
    sees the same binary data (cf. the fixed binarized MNIST of Larochelle & Murray, 2011).

    Args:
      x: intensities in [0, 1], any shape (typically the whole split (N, ...)).
      seed: the seed of `np.random.default_rng`.

    Returns:
      float32 array of x's shape with values in {0, 1}.
    """
    return binarize_dynamic(x, np.random.default_rng(seed))


def dequantize_uniform(x_int: np.ndarray, num_levels: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform dequantization: y = (x_int + u) / num_levels with u ~ U[0, 1).

    Turns discrete levels {0, ..., num_levels - 1} into a continuous density on [0, 1), so a
    continuous model's log-likelihood lower-bounds the discrete one (Uria et al., 2013;
    Theis et al., 2016; used by RealNVP, Dinh et al., 2017).

    The float32 result is kept inside the bin of x_int: rounding to float32 could otherwise put
    (255 + u) / 256 at exactly 1.0. Values that rounding moved out of their bin are nudged by
    one float32 ulp at a time until floor(y * num_levels) == x_int holds both in exact
    arithmetic and in float32 arithmetic.

    Args:
      x_int: integer levels in [0, num_levels), any shape and integer dtype (e.g. uint8).
      num_levels: number of discrete levels (256 for 8-bit images).
      rng: the source of randomness.

    Returns:
      float32 array of x_int's shape, in [0, 1), with floor(y * num_levels) == x_int.
    """
    levels = np.asarray(x_int).astype(np.int64)
    noise = rng.random(levels.shape)  # float64 in [0, 1)
    y = ((levels + noise) / num_levels).astype(np.float32)
    return _nudge_into_bins(y, levels, num_levels)


def _bin_index(y: np.ndarray, num_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """floor(y * num_levels) computed exactly (float64) and in float32 arithmetic."""
    exact = np.floor(y.astype(np.float64) * num_levels)
    float32 = np.floor(y * np.float32(num_levels))
    return exact, float32


def _nudge_into_bins(y: np.ndarray, levels: np.ndarray, num_levels: int) -> np.ndarray:
    """Moves float32 values by single ulps until they fall in bin `levels` (see caller)."""
    for _ in range(_MAX_BIN_NUDGES):
        exact, float32 = _bin_index(y, num_levels)
        too_high = (exact > levels) | (float32 > levels)
        too_low = (exact < levels) | (float32 < levels)
        if not (too_high.any() or too_low.any()):
            return y
        y = np.where(too_high, np.nextafter(y, np.float32(0.0)), y)
        y = np.where(too_low, np.nextafter(y, np.float32(1.0)), y)
    raise AssertionError("dequantize_uniform: could not place values in their bins")


def to_symmetric(x):
    """Maps [0, 1] to [-1, 1]: 2 x - 1 (the log |det| is D log 2 for D dimensions).

    Args:
      x: NumPy or JAX array, any shape.

    Returns:
      array of x's shape and kind.
    """
    return 2.0 * x - 1.0


def logit_transform(x, alpha: float = 0.05):
    """RealNVP's logit transform y = logit(alpha + (1 - 2 alpha) x) and its log |det dy/dx|.

    Dinh et al. (2017), "Density estimation using Real NVP", Sec. 4.1 (alpha = 0.05), and
    Papamakarios et al. (2017), "Masked Autoregressive Flow" (lambda = 1e-6 for MNIST): the
    data are squeezed into [alpha, 1 - alpha] so that the logit stays finite at x = 0 and
    x = 1. With s = alpha + (1 - 2 alpha) x and 1 - s = alpha + (1 - 2 alpha)(1 - x),

        y = log s - log(1 - s),    dy/dx = (1 - 2 alpha) / (s (1 - s)),

    and the Jacobian is diagonal, so log |det| = sum over non-batch axes of
    log(1 - 2 alpha) - log s - log(1 - s). Both s and 1 - s are formed from x and 1 - x (not
    1 - s from s), so near x = 1 with a small alpha 1 - s keeps its relative precision: with
    alpha = 1e-6 and 1 - x of a few float32 ulps, `1 - s` rounded from s would be off by
    percents. NumPy inputs are computed in float64 and returned in their own dtype; JAX inputs
    in their own dtype.

    Args:
      x: values in [0, 1], shape (batch, ...); NumPy or JAX array.
      alpha: squeeze margin in (0, 0.5): 0.05 as in RealNVP, 1e-6 as in MAF.

    Returns:
      (y, log_det): y of x's shape and dtype; log_det of shape (batch,).
    """
    xp = _array_namespace(x)
    dtype = x.dtype
    if xp is np:
        x = np.asarray(x, np.float64)
    s = alpha + (1.0 - 2.0 * alpha) * x
    one_minus_s = alpha + (1.0 - 2.0 * alpha) * (1.0 - x)
    log_s, log_one_minus_s = xp.log(s), xp.log(one_minus_s)
    y = log_s - log_one_minus_s
    log_det_elementwise = math.log1p(-2.0 * alpha) - log_s - log_one_minus_s
    non_batch_axes = tuple(range(1, xp.ndim(x)))
    log_det = xp.sum(log_det_elementwise, axis=non_batch_axes)
    return y.astype(dtype), log_det.astype(dtype)


def logit_transform_inverse(y, alpha: float = 0.05):
    """Inverse of `logit_transform`: x = (sigmoid(y) - alpha) / (1 - 2 alpha).

    The sigmoid is written as (1 + tanh(y / 2)) / 2, which does not overflow for large |y|.

    Args:
      y: logit-space values, any shape; NumPy or JAX array.
      alpha: the alpha used in the forward transform.

    Returns:
      x of y's shape (in [0, 1] for y in the forward transform's range).
    """
    xp = _array_namespace(y)
    sigmoid = 0.5 * (1.0 + xp.tanh(0.5 * y))
    return (sigmoid - alpha) / (1.0 - 2.0 * alpha)
