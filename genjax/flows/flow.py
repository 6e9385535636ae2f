"""A flow: a base distribution pushed through a bijector.

With z ~ base and x = f(z) (the bijector's forward direction),

    log p(x) = log p_base(f^{-1}(x)) + log |det d f^{-1}(x) / dx|,
    log p(x) = log p_base(z) - log |det d f(z) / dz|        at x = f(z).

`log_prob` uses the first line (it needs the inverse: RealNVP, Glow, MAF); `sample_and_log_prob`
the second (forward only: planar and radial flows, IAF), which is all a flow posterior needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.flows.bijector import Bijector


class StandardNormal:
    """N(0, I) over events of shape `event_shape`; not a module (it has no parameters)."""

    def __init__(self, event_shape: Sequence[int]):
        self.event_shape = tuple(int(size) for size in event_shape)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """z (B, *event_shape) -> (B,)."""
        chex.assert_shape(z, (None, *self.event_shape))
        flat = z.reshape(z.shape[0], -1)
        return -0.5 * jnp.sum(flat**2, axis=1) - 0.5 * flat.shape[1] * math.log(2 * math.pi)

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """(num, *event_shape) draws."""
        return jax.random.normal(key, (num, *self.event_shape))


class StandardLogistic(StandardNormal):
    """Independent standard logistics over events of shape `event_shape`, NICE's prior (Dinh
    et al. 2015, Sec. 3.4: its heavier tails give better-behaved gradients than a Gaussian's):
    log p(z) = sum_d -log(1 + e^z_d) - log(1 + e^-z_d)."""

    def log_prob(self, z: jax.Array) -> jax.Array:
        """z (B, *event_shape) -> (B,)."""
        chex.assert_shape(z, (None, *self.event_shape))
        flat = z.reshape(z.shape[0], -1)
        return jnp.sum(-jax.nn.softplus(flat) - jax.nn.softplus(-flat), axis=1)

    def sample(self, key: jax.Array, num: int) -> jax.Array:
        """(num, *event_shape) draws."""
        return jax.random.logistic(key, (num, *self.event_shape))


BASES = {"standard": StandardNormal, "logistic": StandardLogistic}


class Flow(nn.Module):
    """`bijector` (noise -> data) on top of a base distribution over `event_shape`: `base_name`
    'standard' (N(0, I), the default) or 'logistic' (NICE's), keys of BASES.

    Methods (call with `flow.apply(params, ..., method=flow.log_prob)` etc.):
      log_prob(x, context=None) -> (B,)
      sample(key, num, context=None) -> (num, *event_shape)
      sample_and_log_prob(key, num, context=None) -> (x, log_p)
    """

    bijector: Bijector
    event_shape: Sequence[int]
    base_name: str = "standard"

    @property
    def base(self) -> StandardNormal:
        if self.base_name not in BASES:
            raise ValueError(f"Flow.base_name={self.base_name!r}; expected one of {tuple(BASES)}")
        return BASES[self.base_name](self.event_shape)

    def __call__(self, x, context=None):
        """The same as `log_prob` (what `init` traces)."""
        return self.log_prob(x, context)

    def log_prob(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Exact log p(x) of x (B, *event_shape) -> (B,); needs the bijector's inverse."""
        z, log_det = self.bijector(x, inverse=True, context=context)
        return self.base.log_prob(z) + log_det

    def sample_and_log_prob(self, key, num: int, context: jax.Array | None = None):
        """`num` draws x = f(z) and their log p(x) = log p(z) - log |det df/dz|, (num, ...),
        (num,); uses only the forward direction."""
        z = self.base.sample(key, num)
        x, log_det = self.bijector(z, inverse=False, context=context)
        return x, self.base.log_prob(z) - log_det

    def sample(self, key, num: int, context: jax.Array | None = None) -> jax.Array:
        """`num` draws x = f(z), z ~ the base."""
        z = self.base.sample(key, num)
        return self.bijector(z, inverse=False, context=context)[0]
