"""Mixed precision for the networks: products in the compute dtype, biases in float32.

`config.compute_dtype` reaches every network as a Flax `dtype`. With it, Flax casts a layer's
input, kernel and bias to that dtype, so the bias's gradient, a sum over every example and
position, is accumulated in bfloat16 too (on the CPU XLA does so, and the gradients of the
convolutional networks then differ from float32's by 8-15%). `promote_keep_bias` casts only
the input and the kernel: the product runs in the compute dtype and the bias is added in
float32, so its gradient is summed in float32; the next layer casts the float32 activations
back. `dense`, `conv` and `conv_transpose` are Flax's layers with it.
"""

from __future__ import annotations

import functools

import flax.linen as nn


def promote_keep_bias(inputs, kernel, bias, dtype=None):
    """`flax.linen.dtypes.promote_dtype` for (inputs, kernel), the bias left as it is."""
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel, dtype=dtype)
    return inputs, kernel, bias


# Flax's layers with `promote_keep_bias`; every network that takes `config.compute_dtype`
# builds its layers from these.
dense = functools.partial(nn.Dense, promote_dtype=promote_keep_bias)
conv = functools.partial(nn.Conv, promote_dtype=promote_keep_bias)
conv_transpose = functools.partial(nn.ConvTranspose, promote_dtype=promote_keep_bias)
