"""Masked dense layers and the degree bookkeeping of MADE (Germain et al. 2015).

Every unit carries a *degree*: input d has degree m(d) in 1..D (its position in the ordering),
a hidden unit k has degree m(k) in [min degree of the layer below, D - 1], and output d has the
degree of input d. A hidden weight from unit i to unit j is kept iff m(j) >= m(i); an output
weight iff m(out) > m(i), strictly. Every path from input i to output d then has m(i) < m(d):
output d depends only on the inputs earlier in the ordering, so its value can be read as the
parameters of p(x_d | x_<d).

Masks are data, not parameters: `MaskedDense` takes its mask at call time, so one set of
weights can be applied under several connectivities and orderings (connectivity- and
order-agnostic training) and the mask can even be selected inside `jax.jit`. Masks are
`(in, out)` like a Flax `Dense` kernel; degrees are int32 vectors.

Used by `genjax.models.autoregressive.made` (and, later, MAF / IAF flows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.nn import precision

DEGREE_MODES = ("random", "evenly_spaced")


def as_generator(key_or_rng) -> np.random.Generator:
    """A NumPy `Generator` from a seed (int), a `Generator`, or a JAX key (typed or raw).

    Masks are built on the host, once; a JAX key is turned into a seed from its key data.
    """
    if isinstance(key_or_rng, np.random.Generator):
        return key_or_rng
    if isinstance(key_or_rng, int | np.integer):
        return np.random.default_rng(int(key_or_rng))
    if isinstance(key_or_rng, jax.Array):
        if jnp.issubdtype(key_or_rng.dtype, jax.dtypes.prng_key):
            key_or_rng = jax.random.key_data(key_or_rng)
        return np.random.default_rng(np.asarray(key_or_rng, np.uint32).ravel().tolist())
    raise TypeError(f"expected a seed, a NumPy Generator or a JAX key, got {type(key_or_rng)}")


def input_degrees(order: Sequence[int] | np.ndarray) -> np.ndarray:
    """Degrees of the D inputs for an ordering: m(order[k]) = k + 1.

    Args:
      order: (D,) a permutation of 0..D-1; order[k] is the dimension generated k-th.

    Returns:
      (D,) int32 degrees in 1..D.
    """
    order = np.asarray(order)
    num_inputs = order.shape[0]
    if order.ndim != 1 or not np.array_equal(np.sort(order), np.arange(num_inputs)):
        raise ValueError(f"order must be a permutation of 0..{num_inputs - 1}, got {order}")
    degrees = np.empty(num_inputs, np.int32)
    degrees[order] = np.arange(1, num_inputs + 1)
    return degrees


def order_from_degrees(degrees: np.ndarray) -> np.ndarray:
    """The ordering whose `input_degrees` are `degrees`: (D,) -> (D,), inverse of it."""
    return np.argsort(np.asarray(degrees), kind="stable").astype(np.int32)


def hidden_degrees(
    key_or_rng, num_hidden: int, min_degree: int, max_degree: int, mode: str = "random"
) -> np.ndarray:
    """Degrees of one hidden layer, each in [min_degree, max_degree].

    'random' draws them uniformly, as Germain et al. (2015) do: m(k) ~ U{min_{k'}
    m^{l-1}(k'), ..., D - 1}; 'evenly_spaced' cycles through the range so that every degree
    occurs (as evenly as `num_hidden` allows) and `key_or_rng` is ignored. When
    max_degree < min_degree (D = 1, nothing to condition on) every unit gets max_degree.

    Returns:
      (num_hidden,) int32.
    """
    if mode not in DEGREE_MODES:
        raise ValueError(f"degree mode {mode!r}; allowed: {DEGREE_MODES}")
    min_degree = min(min_degree, max_degree)
    if mode == "evenly_spaced":
        span = max_degree - min_degree + 1
        return (min_degree + np.arange(num_hidden) % span).astype(np.int32)
    rng = as_generator(key_or_rng)
    return rng.integers(min_degree, max_degree + 1, size=num_hidden).astype(np.int32)


def mask_matrix(in_degrees: jax.Array, out_degrees: jax.Array, strict: bool) -> jax.Array:
    """The (in, out) 0/1 mask of a masked layer: out >= in (hidden), out > in (strict, output).

    Works on concrete or traced degrees, so masks may be rebuilt inside `jax.jit` from a
    selected set of degrees.

    Args:
      in_degrees: (I,) degrees of the layer's inputs.
      out_degrees: (O,) degrees of its outputs.
      strict: True for the output layer, False for hidden layers (Germain et al. 2015).

    Returns:
      (I, O) float32.
    """
    in_degrees, out_degrees = jnp.asarray(in_degrees), jnp.asarray(out_degrees)
    chex.assert_rank([in_degrees, out_degrees], 1)
    if strict:
        allowed = out_degrees[None, :] > in_degrees[:, None]
    else:
        allowed = out_degrees[None, :] >= in_degrees[:, None]
    return allowed.astype(jnp.float32)


def made_degrees(
    key_or_rng,
    num_inputs: int,
    hidden_sizes: Sequence[int],
    order: Sequence[int] | np.ndarray | None = None,
    num_outputs_per_input: int = 1,
    mode: str = "random",
) -> list[np.ndarray]:
    """Degrees of every layer of a MADE: [inputs (D,), hidden_1 (H_1,), ..., outputs (D*K,)].

    Output unit d * K + k (k < K = `num_outputs_per_input`) has the degree of input d, so
    reshaping the outputs to (..., D, K) puts the K parameters of p(x_d | x_<d) on the last
    axis.

    Args:
      key_or_rng: seed, NumPy Generator or JAX key for the random hidden degrees (unused,
        may be None, with 'evenly_spaced').
      num_inputs: D.
      hidden_sizes: widths of the hidden layers.
      order: (D,) ordering; None is the natural order 0..D-1.
      num_outputs_per_input: K.
      mode: 'random' | 'evenly_spaced' hidden degrees (see `hidden_degrees`).
    """
    rng = as_generator(key_or_rng) if mode == "random" else None
    order = np.arange(num_inputs) if order is None else np.asarray(order)
    degrees = [input_degrees(order)]
    for size in hidden_sizes:
        degrees.append(hidden_degrees(rng, size, int(degrees[-1].min()), num_inputs - 1, mode))
    degrees.append(np.repeat(degrees[0], num_outputs_per_input).astype(np.int32))
    return degrees


def masks_from_degrees(degrees: Sequence[jax.Array]) -> list[jax.Array]:
    """Per-layer (in, out) masks from per-layer degrees: hidden layers non-strict, last strict."""
    last = len(degrees) - 2
    return [
        mask_matrix(degrees[layer], degrees[layer + 1], strict=layer == last)
        for layer in range(len(degrees) - 1)
    ]


def made_masks(
    key_or_rng,
    num_inputs: int,
    hidden_sizes: Sequence[int],
    order: Sequence[int] | np.ndarray | None = None,
    num_outputs_per_input: int = 1,
    mode: str = "random",
) -> list[jax.Array]:
    """The masks of a MADE with one ordering and connectivity (Germain et al. 2015).

    Returns:
      len(hidden_sizes) + 1 float32 masks: (D, H_1), (H_1, H_2), ..., (H_L, D * K); with no
      hidden layer, the single strict (D, D * K) mask.
    """
    degrees = made_degrees(key_or_rng, num_inputs, hidden_sizes, order, num_outputs_per_input, mode)
    return masks_from_degrees(degrees)


class MaskedDense(nn.Module):
    """A dense layer whose kernel is multiplied by a fixed 0/1 mask: y = x @ (W * M) + b.

    The mask is a call argument (not a parameter), shape (in, out) like the kernel. With a
    `dtype` (bfloat16, say) the input and the masked kernel are cast to it and the product is
    computed in it; the bias is added in float32 (`genjax.nn.precision`), and the
    parameters stay float32.
    """

    features: int
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """x: (..., in), mask: (in, out = features) -> (..., out)."""
        chex.assert_shape(mask, (x.shape[-1], self.features))
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = None
        if self.use_bias:
            bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = precision.promote_keep_bias(x, kernel * mask, bias, dtype=self.dtype)
        y = x @ kernel
        return y if bias is None else y + bias
