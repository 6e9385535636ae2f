"""The bijector protocol: invertible maps that carry their log-det-Jacobian.

Every bijector is a Flax Linen module whose one compact method is

    __call__(x, inverse=False, context=None) -> (y, log_det)

and which therefore offers `forward(x)` and `inverse(y)`:

- `forward(x) -> (y, log_det)` with log_det = log |det dy/dx|;
- `inverse(y) -> (x, log_det)` with log_det = log |det dx/dy|, the log-det of the inverse map,
  so `inverse(forward(x)[0])[1] == -forward(x)[1]`.

Arrays are batched: x is (B, *event_shape) and `log_det` is (B,), summed over the event axes.
`context` is an optional (B, C) conditioning input (a VAE encoder's features for a flow
posterior); bijectors that are not conditional ignore it. `Chain` composes bijectors and sums
their log-dets, `Invert` swaps the two directions (distrax `bijectors/bijector.py`, `chain.py`).

Call them with Flax's `method=` argument or from inside another module:

    y, log_det = bijector.apply(params, x, method=bijector.forward)
    x, log_det = bijector.apply(params, y, method=bijector.inverse)

Convention for flows (`genjax.flows.flow.Flow`): the forward direction maps base noise to data
(sampling), the inverse maps data to noise (density evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.data import preprocess


class NoInverseError(NotImplementedError):
    """Raised by bijectors whose inverse has no closed form (planar, radial)."""


def event_sum(values: jax.Array) -> jax.Array:
    """Sums (B, ...) over every axis but the first: the (B,) log-det of an elementwise map."""
    return values.reshape(values.shape[0], -1).sum(axis=1)


def zero_log_det(x: jax.Array) -> jax.Array:
    """The (B,) zero log-det of a volume-preserving map of x (B, ...)."""
    return jnp.zeros(x.shape[:1], x.dtype)


class Bijector(nn.Module):
    """Base class. Subclasses implement `__call__(x, inverse=False, context=None)`."""

    def forward(self, x: jax.Array, context: jax.Array | None = None):
        """x (B, ...) -> (y, log |det dy/dx| (B,))."""
        return self(x, inverse=False, context=context)

    def inverse(self, y: jax.Array, context: jax.Array | None = None):
        """y (B, ...) -> (x, log |det dx/dy| (B,)), the log-det of the inverse map."""
        return self(y, inverse=True, context=context)


class Chain(Bijector):
    """Composition: `forward` applies `bijectors` in order, `inverse` in reverse order, and
    the log-dets add up."""

    bijectors: Sequence[Bijector]

    def __call__(self, x, inverse=False, context=None):
        log_det = zero_log_det(x)
        layers = reversed(self.bijectors) if inverse else self.bijectors
        for layer in layers:
            x, layer_log_det = layer(x, inverse=inverse, context=context)
            chex.assert_shape(layer_log_det, log_det.shape)
            log_det = log_det + layer_log_det
        return x, log_det


class Invert(Bijector):
    """The inverse bijector: its forward is `bijector`'s inverse and vice versa (IAF is an
    inverted MAF; the sigmoid is an inverted logit)."""

    bijector: Bijector

    def __call__(self, x, inverse=False, context=None):
        return self.bijector(x, inverse=not inverse, context=context)


# ----------------------------------------------------------------------------- elementwise


class ScaleShift(Bijector):
    """The fixed affine map y = scale * x + shift, elementwise (e.g. [0, 1] -> [-1, 1] with
    scale 2, shift -1). log |det| = D log |scale|."""

    scale: float
    shift: float = 0.0

    def __call__(self, x, inverse=False, context=None):
        del context
        if self.scale == 0:
            raise ValueError("ScaleShift.scale must be non-zero (the map must be invertible)")
        num_dims = int(np.prod(x.shape[1:]))
        log_det = jnp.full(x.shape[:1], num_dims * np.log(abs(self.scale)), x.dtype)
        if inverse:
            return (x - self.shift) / self.scale, -log_det
        return self.scale * x + self.shift, log_det


class Logit(Bijector):
    """RealNVP's logit preprocessing y = logit(alpha + (1 - 2 alpha) x) on [0, 1] data
    (Dinh et al. 2017, Sec. 4.1); the same formula as `genjax.data.preprocess.logit_transform`,
    which it calls. `alpha = 0` is the plain logit."""

    alpha: float = 0.05

    def __call__(self, x, inverse=False, context=None):
        del context
        if not 0.0 <= self.alpha < 0.5:
            raise ValueError(f"Logit.alpha={self.alpha!r} must be in [0, 0.5)")
        if not inverse:
            return preprocess.logit_transform(x, self.alpha)
        x_unit = preprocess.logit_transform_inverse(x, self.alpha)
        _, forward_log_det = preprocess.logit_transform(x_unit, self.alpha)
        return x_unit, -forward_log_det


class Sigmoid(Bijector):
    """The logistic sigmoid, R -> (0, 1): the inverse of the plain logit."""

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        return Logit(alpha=0.0)(x, inverse=not inverse, context=context)


# ----------------------------------------------------------------------------- permutations


class Permute(Bijector):
    """y = x[..., permutation] over the flattened event, a volume-preserving map (log-det 0).

    The permutation is a constant (NumPy), not a parameter; see `reverse_permutation` and
    `random_permutation`.
    """

    permutation: tuple[int, ...]

    def __call__(self, x, inverse=False, context=None):
        del context
        permutation = np.asarray(self.permutation)
        flat = x.reshape(x.shape[0], -1)
        chex.assert_shape(flat, (None, permutation.size))
        order = np.argsort(permutation) if inverse else permutation
        return flat[:, order].reshape(x.shape), zero_log_det(x)


def reverse_permutation(num_dims: int) -> tuple[int, ...]:
    """The reversal D-1, ..., 0 (used between MAF layers and RealNVP couplings)."""
    return tuple(range(num_dims - 1, -1, -1))


def random_permutation(seed: int, num_dims: int) -> tuple[int, ...]:
    """A fixed random permutation drawn from `np.random.default_rng(seed)`."""
    return tuple(int(i) for i in np.random.default_rng(seed).permutation(num_dims))
