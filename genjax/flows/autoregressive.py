"""Affine autoregressive flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al. 2016).

Both are one layer: with noise v and data y (flattened to (B, D)),

    y_d = v_d * exp(alpha_d) + mu_d,        v_d = (y_d - mu_d) * exp(-alpha_d),

where (mu_d, alpha_d) come from a MADE conditioner (Germain et al. 2015; masks from
`genjax.nn.masked`) that sees only the dimensions before d in its ordering.
The two flows differ in which side the conditioner reads:

- MAF reads the data y: the density direction (y -> v, `inverse`) is one network pass, the
  sampling direction (v -> y, `forward`) is D sequential passes;
- IAF reads the noise v: sampling (`forward`) is one pass, density (`inverse`) is sequential.

Following `genjax.flows.flow.Flow`, `forward` is always noise -> data, with
log |det dy/dv| = sum_d alpha_d, and `inverse` is data -> noise, with -sum_d alpha_d.

The sequential direction solves w = g(w) for the side w the conditioner reads (g is the
affine map above with (mu, alpha) computed from w) by D iterations of w <- g(w) from w = 0
inside one `jax.lax.fori_loop`: after iteration k every dimension of degree <= k is exact, so
after D iterations all are, and the traced program does not grow with D.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.flows.bijector import Bijector, Chain, Permute, reverse_permutation
from genjax.nn import masked, precision

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh}


def soft_clamp(values: jax.Array, bound: float) -> jax.Array:
    """bound * tanh(values / bound): smooth, the identity near 0, and inside (-bound, bound)."""
    return bound * jnp.tanh(values / bound)


class MADEConditioner(nn.Module):
    """A masked MLP (Germain et al. 2015): x (B, D) [, context (B, C)] -> (B, D, K).

    Output [:, d, :] depends only on the inputs of lower degree than input d under `order`
    (`masked.made_masks`, output unit d * K + k). The masks are constants rebuilt from the
    fields at trace time, not parameters.

    The optional context enters through an unmasked `nn.Dense` added to the first masked
    layer's pre-activation (Kingma et al. 2016 feed the encoder's h into the autoregressive
    network this way): a context path reaches every unit but never adds a path from x_i to
    output d, so the autoregressive property in x is kept. With hidden layers, the first
    dimension of the ordering sees no hidden unit (all have degree >= 1), so its (mu, alpha)
    are biases that do not depend on the context either. The last masked layer (and the
    context projection, when it feeds that layer directly) is zero-initialised, so a new
    conditioner outputs zeros.

    Attributes:
      hidden_sizes: widths of the masked hidden layers; () gives a linear conditioner.
      num_outputs_per_input: K.
      activation: 'relu' | 'tanh'.
      order: (D,) permutation of 0..D-1, order[k] the k-th dimension; None is 0..D-1.
      degree_mode: 'evenly_spaced' (every hidden degree occurs: with widths >= D - 1,
        output d sees all of x_<d) | 'random' (Germain et al., drawn from `mask_seed`).
      mask_seed: seed of the 'random' hidden degrees.
      dtype: the layers' compute dtype (None: the inputs' and parameters'); the output is
        float32.
    """

    hidden_sizes: Sequence[int] = (32, 32)
    num_outputs_per_input: int = 2
    activation: str = "relu"
    order: Sequence[int] | None = None
    degree_mode: str = "evenly_spaced"
    mask_seed: int = 0
    dtype: Any = None

    def masks(self, num_dims: int) -> list[jax.Array]:
        """The (in, out) masks of the layers for D = `num_dims` inputs."""
        if self.order is not None and len(self.order) != num_dims:
            raise ValueError(f"order has {len(self.order)} entries for {num_dims} dimensions")
        return masked.made_masks(
            self.mask_seed,
            num_dims,
            tuple(self.hidden_sizes),
            self.order,
            self.num_outputs_per_input,
            self.degree_mode,
        )

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """x: (B, D); context: (B, C) or None. Returns (B, D, K)."""
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}; allowed: {tuple(ACTIVATIONS)}")
        chex.assert_rank(x, 2)
        batch_size, num_dims = x.shape
        sizes = [*self.hidden_sizes, num_dims * self.num_outputs_per_input]
        output_layer = len(sizes) - 1
        h = x
        for layer, (size, mask) in enumerate(zip(sizes, self.masks(num_dims), strict=True)):
            is_output = layer == output_layer
            init = nn.initializers.zeros_init() if is_output else nn.initializers.lecun_normal()
            layer_module = masked.MaskedDense(
                size, kernel_init=init, dtype=self.dtype, name=f"masked_{layer}"
            )
            h = layer_module(h, mask)
            if layer == 0 and context is not None:
                chex.assert_shape(context, (batch_size, None))
                projection = precision.dense(
                    size, use_bias=False, kernel_init=init, dtype=self.dtype, name="context"
                )
                h = h + projection(context)
            if not is_output:
                h = ACTIVATIONS[self.activation](h)
        return h.astype(jnp.float32).reshape(batch_size, num_dims, self.num_outputs_per_input)


def _scale_up(noise, shift, log_scale):
    """Noise -> data: v * exp(alpha) + mu."""
    return noise * jnp.exp(log_scale) + shift


def _scale_down(data, shift, log_scale):
    """Data -> noise: (y - mu) * exp(-alpha)."""
    return (data - shift) * jnp.exp(-log_scale)


class MAF(Bijector):
    """Masked autoregressive flow layer (Papamakarios, Pavlakou & Murray 2017), on (B, *event).

    The event is flattened to D dimensions. With the conditioner reading the data x:

      inverse (density, data x -> noise u), one pass:
        u_d = (x_d - mu_d(x_<d)) * exp(-alpha_d(x_<d)),   log |det du/dx| = -sum_d alpha_d;
      forward (sampling, noise u -> data x), D passes in one `fori_loop`:
        x_d = u_d * exp(alpha_d(x_<d)) + mu_d(x_<d),      log |det dx/du| = +sum_d alpha_d.

    alpha is soft-clamped, alpha = max_log_scale * tanh(raw / max_log_scale), so every scale
    lies in (exp(-max_log_scale), exp(max_log_scale)): no step of the sequential direction
    can blow up or collapse a dimension, and near 0 the clamp is the identity. The final
    masked layer is zero-initialised, so a new layer is the identity map. A (B, C) `context`
    makes it conditional (see `MADEConditioner`); initialise with a context to use one.

    Attributes:
      hidden_sizes, activation, order, degree_mode, mask_seed: of the `MADEConditioner`
        ("natural" order when `order` is None).
      max_log_scale: the soft-clamp bound on |alpha|.
      dtype: the conditioner's compute dtype; the layer's own arithmetic and log-det stay
        float32.
    """

    hidden_sizes: Sequence[int] = (32, 32)
    activation: str = "relu"
    order: Sequence[int] | None = None
    degree_mode: str = "evenly_spaced"
    mask_seed: int = 0
    max_log_scale: float = 3.0
    dtype: Any = None

    # Which side the conditioner reads: the data (MAF) or the noise (IAF).
    conditioner_reads_noise: ClassVar[bool] = False

    def setup(self):
        if self.max_log_scale <= 0:
            raise ValueError(f"max_log_scale={self.max_log_scale!r} must be positive")
        self.conditioner = MADEConditioner(
            self.hidden_sizes,
            2,
            self.activation,
            self.order,
            self.degree_mode,
            self.mask_seed,
            self.dtype,
        )

    def shift_and_log_scale(self, values: jax.Array, context: jax.Array | None = None):
        """(mu, alpha), each (B, D), from the (B, D) side the conditioner reads; alpha clamped."""
        out = self.conditioner(values, context)  # (B, D, 2)
        return out[..., 0], soft_clamp(out[..., 1], self.max_log_scale)

    def __call__(self, x, inverse=False, context=None):
        """x (B, *event) -> (y (B, *event), log_det (B,)); see the class docstring."""
        flat = x.reshape(x.shape[0], -1)  # (B, D)
        affine = _scale_down if inverse else _scale_up
        if inverse != self.conditioner_reads_noise:  # the conditioner reads the input: one pass
            shift, log_scale = self.shift_and_log_scale(flat, context)
            out = affine(flat, shift, log_scale)
        else:
            out, log_scale = self._solve_sequentially(flat, affine, context)
        log_det = jnp.sum(log_scale, axis=1)  # (B,)
        return out.reshape(x.shape), -log_det if inverse else log_det

    def _solve_sequentially(self, given, affine, context):
        """w = affine(given, mu(w), alpha(w)) by D iterations from 0: (w, alpha), (B, D) each."""

        def step(_, carry):
            solution, _ = carry
            shift, log_scale = self.shift_and_log_scale(solution, context)
            return affine(given, shift, log_scale), log_scale

        if self.is_initializing():  # parameters cannot be created inside the loop's trace
            self.shift_and_log_scale(given, context)
        start = (jnp.zeros_like(given), jnp.zeros_like(given))
        return jax.lax.fori_loop(0, given.shape[1], step, start)


class IAF(MAF):
    """Inverse autoregressive flow layer (Kingma, Salimans et al. 2016), on (B, *event).

    The MAF layer with the conditioner reading the noise z instead of the data. Kingma et al.'s
    affine form z_t = mu_t + sigma_t * z_{t-1}, with sigma = exp(alpha) (not their LSTM-style
    gated update sigma * z + (1 - sigma) * m):

      forward (sampling, noise z -> data x), one pass:
        x_d = z_d * exp(alpha_d(z_<d)) + mu_d(z_<d),      log |det dx/dz| = +sum_d alpha_d;
      inverse (density, x -> z), D passes in one `fori_loop`, log-det -sum_d alpha_d.

    `context` (B, C) is Kingma et al.'s encoder output h, added to the first hidden layer's
    pre-activation. Same fields, clamp and initialisation as `MAF`.
    """

    conditioner_reads_noise: ClassVar[bool] = True


def _autoregressive_chain(layer_class, num_dims, num_layers, hidden_sizes, **layer_kwargs):
    """`num_layers` layers with a reversal of the D dimensions between consecutive ones."""
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be at least 1")
    bijectors = []
    for index in range(num_layers):
        if index > 0:
            bijectors.append(Permute(reverse_permutation(num_dims)))
        bijectors.append(layer_class(hidden_sizes=tuple(hidden_sizes), **layer_kwargs))
    return Chain(tuple(bijectors))


def maf_flow(
    num_dims: int,
    num_layers: int = 2,
    hidden_sizes: Sequence[int] = (32, 32),
    activation: str = "relu",
    max_log_scale: float = 3.0,
    degree_mode: str = "evenly_spaced",
    dtype: Any = None,
) -> Chain:
    """A stack of `num_layers` MAF layers (Papamakarios et al. 2017) on D = `num_dims`
    flattened dimensions, with `Permute(reverse_permutation(D))` between consecutive layers.

    Every layer has the natural order; the reversal makes consecutive layers condition in
    opposite orders. Forward is noise -> data, as `Flow` expects. Events (B, *event) with
    prod(event) = D.
    """
    return _autoregressive_chain(
        MAF,
        num_dims,
        num_layers,
        hidden_sizes,
        activation=activation,
        max_log_scale=max_log_scale,
        degree_mode=degree_mode,
        dtype=dtype,
    )


def iaf_flow(
    num_dims: int,
    num_layers: int = 2,
    hidden_sizes: Sequence[int] = (32, 32),
    activation: str = "relu",
    max_log_scale: float = 3.0,
    degree_mode: str = "evenly_spaced",
    dtype: Any = None,
) -> Chain:
    """A stack of `num_layers` IAF layers (Kingma et al. 2016) on D = `num_dims` flattened
    dimensions, reversed between consecutive layers; the same layout as `maf_flow`. Sampling
    (forward) and its log-det are one pass per layer: a VAE's flow posterior
    (`Flow.sample_and_log_prob`, with the encoder's h as `context`).
    """
    return _autoregressive_chain(
        IAF,
        num_dims,
        num_layers,
        hidden_sizes,
        activation=activation,
        max_log_scale=max_log_scale,
        degree_mode=degree_mode,
        dtype=dtype,
    )
