"""Mixed precision for the networks: products in the compute dtype, biases in float32.

`config.compute_dtype` reaches every network as a Flax `dtype`. With it, Flax casts a layer's
input, kernel and bias to that dtype, so the bias's gradient, a sum over every example and
position, is accumulated in bfloat16 too (on the CPU XLA does so, and the gradients of the
convolutional networks then differ from float32's by 8-15%). `promote_keep_bias` casts only
the input and the kernel: the product runs in the compute dtype and the bias is added in
float32, so its gradient is summed in float32; the next layer casts the float32 activations
back. `dense`, `conv` and `conv_transpose` are Flax's layers with it.

The energy models and NADE keep their parameters in plain dicts and have no Flax layers; the
same rule reaches them through `cast_matrices` (the weight matrices in the compute dtype, the
biases float32) and `product` (a matrix product in the weights' dtype): the bias added to a
product brings it back to float32, and every sampling probability, free energy and running sum
is computed from there in float32.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp


def promote_keep_bias(inputs, kernel, bias, dtype=None):
    """`flax.linen.dtypes.promote_dtype` for (inputs, kernel), the bias left as it is."""
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    return inputs, kernel, bias


# Flax's layers with `promote_keep_bias`; every network that takes `config.compute_dtype`
# builds its layers from these.
dense = functools.partial(nn.Dense, promote_dtype=promote_keep_bias)
conv = functools.partial(nn.Conv, promote_dtype=promote_keep_bias)
conv_transpose = functools.partial(nn.ConvTranspose, promote_dtype=promote_keep_bias)


def cast_matrices(params, dtype):
    """`params` with every matrix (2-D leaf: the weights) in `dtype`, other leaves unchanged.

    The cast is differentiable: the gradient of a float32 parameter is its matrix's gradient,
    computed in `dtype`, cast back to float32. With dtype float32 it returns `params` as they
    are.
    """
    dtype = jnp.dtype(dtype)
    return jax.tree.map(lambda leaf: leaf.astype(dtype) if leaf.ndim == 2 else leaf, params)


def product(x: jax.Array, weights: jax.Array) -> jax.Array:
    """x @ weights in the weights' dtype: `x` is cast to it, and so is the result.

    Add a float32 bias to the result (or multiply it by float32 values) and the sum is
    float32 again, as with `dense`.
    """
    return x.astype(weights.dtype) @ weights
