"""Affine coupling layers, squeezing and multi-scale factor-out: RealNVP and Glow's building blocks.

RealNVP: Dinh, Sohl-Dickstein & Bengio (2017), "Density estimation using Real NVP"; Glow:
Kingma & Dhariwal (2018) reuse the affine coupling with a sigmoid scale, or NICE's additive
coupling (Dinh, Krueger & Bengio 2015).

Directions. Every class here follows the protocol of `genjax.flows.bijector`: `forward` is
`__call__(x, inverse=False)`, `inverse` is `__call__(x, inverse=True)`, and log_det is
log |det| of the map actually computed. In a `genjax.flows.flow.Flow` the forward direction maps
noise to data (sampling) and the inverse maps data to noise (density evaluation:
`Flow.log_prob` calls the bijector with `inverse=True`).

- `AffineCoupling.forward` computes the formula y_b = x_b * exp(s(x_a)) + t(x_a); its inverse is
  x_b = (y_b - t(y_a)) * exp(-s(y_a)). The papers write this formula in the data -> noise
  direction, so the builders `realnvp_image` and `realnvp_flat` put their couplings inside an
  `Invert`: in the returned flow the density direction computes exactly the papers' f (and, for
  `scale='sigmoid'`, multiplies by sigmoid(.) < 1 on the way to the noise, as Glow does) and
  sampling uses the closed-form inverse.
- `Squeeze.forward` is space-to-depth, (B, H, W, C) -> (B, H/2, W/2, 4C).
- `MultiScale.inverse` (data -> noise) applies its `transform`'s inverse, squeezes, factors out
  half of the channels and runs its `inner` flow's inverse on the other half;
  `MultiScale.forward` (noise -> data) undoes these steps in reverse order.

Everything is shape preserving except `Squeeze`, so a whole RealNVP is a bijector from
(B, H, W, C) to (B, H, W, C) and the flow's standard-normal base covers every factored-out
variable at once.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.flows.bijector import Bijector, Chain, Invert, event_sum, zero_log_det
from genjax.nn import precision

MASKS = ("checkerboard", "channel", "half", "alternate")
SCALES = ("tanh", "sigmoid")
COUPLINGS = ("affine", "additive")
IMAGE_MASKS = ("checkerboard", "channel")

# Glow's sigmoid scale: exp(s) = sigmoid(raw + SIGMOID_SHIFT), so a zero `raw` scales by 0.88.
SIGMOID_SHIFT = 2.0


# ----------------------------------------------------------------------------- conditioners


class ConvConditioner(nn.Module):
    """The image conditioner of a coupling: (B, H, W, C_in) -> (B, H, W, out_channels).

    `num_hidden_layers` 3x3 convolutions of `hidden_channels` with ReLU, then a 3x3 convolution
    whose kernel and bias are zero-initialised, so that a new coupling is the identity (Glow,
    Sec. 3.3). A small stand-in for RealNVP's residual networks. The convolutions compute in
    `dtype` (None: the inputs' and parameters' dtype); the output is float32.
    """

    hidden_channels: int
    num_hidden_layers: int
    out_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        for _ in range(self.num_hidden_layers):
            h = nn.relu(precision.conv(self.hidden_channels, (3, 3), dtype=self.dtype)(h))
        zeros = nn.initializers.zeros_init()
        out = precision.conv(
            self.out_channels, (3, 3), kernel_init=zeros, bias_init=zeros, dtype=self.dtype
        )(h)
        return out.astype(jnp.float32)


class MLPConditioner(nn.Module):
    """The flat-data conditioner of a coupling: (B, D_in) -> (B, out_features).

    `num_hidden_layers` dense layers of `hidden_features` with ReLU, then a zero-initialised
    dense output layer (a new coupling is the identity, as in Glow). The layers compute in
    `dtype` (None: the inputs' and parameters' dtype); the output is float32.
    """

    hidden_features: int
    num_hidden_layers: int
    out_features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        for _ in range(self.num_hidden_layers):
            h = nn.relu(precision.dense(self.hidden_features, dtype=self.dtype)(h))
        zeros = nn.initializers.zeros_init()
        out = precision.dense(
            self.out_features, kernel_init=zeros, bias_init=zeros, dtype=self.dtype
        )(h)
        return out.astype(jnp.float32)


# ----------------------------------------------------------------------------- masks


def checkerboard_mask(height: int, width: int, parity: bool) -> np.ndarray:
    """The (H, W, 1) boolean checkerboard of the entries a coupling keeps: pixel (i, j) is kept
    where i + j is even, or odd with `parity` (RealNVP, Fig. 3)."""
    rows, cols = np.indices((height, width))
    return ((rows + cols) % 2 == int(parity))[..., None]


def split_halves(x: jax.Array, parity: bool) -> tuple[jax.Array, jax.Array]:
    """Splits the last axis of x (..., K) into (kept, transformed) halves: the first K // 2
    entries are kept, or the others with `parity`."""
    first, second = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return (second, first) if parity else (first, second)


def merge_halves(kept: jax.Array, transformed: jax.Array, parity: bool) -> jax.Array:
    """The inverse of `split_halves`: concatenates the halves back in their original order."""
    halves = (transformed, kept) if parity else (kept, transformed)
    return jnp.concatenate(halves, axis=-1)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"AffineCoupling.{field}={value!r}; expected one of {allowed}")


def alternate_indices(num_dims: int, parity: bool) -> tuple[np.ndarray, np.ndarray]:
    """NICE's partition of a flattened event (Dinh et al. 2015, Sec. 5.1): the (kept,
    transformed) indices, the even components kept (the odd ones with `parity`)."""
    first = int(parity)
    return np.arange(first, num_dims, 2), np.arange(1 - first, num_dims, 2)


def _check_input(mask: str, x: jax.Array) -> None:
    """Image masks need (B, H, W, C) inputs, 'half' needs (B, D), 'alternate' any (B, ...);
    every mask but the checkerboard splits K >= 2 entries."""
    if mask == "alternate":
        if x.ndim < 2 or int(np.prod(x.shape[1:])) < 2:
            raise ValueError(
                f"AffineCoupling(mask='alternate') splits the flattened event in two; it needs "
                f"(B, ...) inputs with at least 2 entries per example, got shape {x.shape}"
            )
        return
    rank = 4 if mask in IMAGE_MASKS else 2
    if x.ndim != rank:
        raise ValueError(
            f"AffineCoupling(mask={mask!r}) needs inputs of rank {rank} "
            f"({'(B, H, W, C)' if rank == 4 else '(B, D)'}); got shape {x.shape}"
        )
    if mask != "checkerboard" and x.shape[-1] < 2:
        raise ValueError(
            f"AffineCoupling(mask={mask!r}) splits the last axis in two halves; it needs size "
            f">= 2, got shape {x.shape}"
        )


def affine(x: jax.Array, log_scale: jax.Array, shift: jax.Array, inverse: bool):
    """y = x * exp(log_scale) + shift and its log-det (B,), or the inverse map and its log-det."""
    if inverse:
        return (x - shift) * jnp.exp(-log_scale), -event_sum(log_scale)
    return x * jnp.exp(log_scale) + shift, event_sum(log_scale)


# ----------------------------------------------------------------------------- coupling


class AffineCoupling(Bijector):
    """The affine coupling layer of RealNVP (Dinh et al. 2017, Sec. 3.2-3.4) and Glow.

    The mask splits x into a kept part x_a and a transformed part x_b; then

        forward:  y_a = x_a,  y_b = x_b * exp(s(x_a)) + t(x_a),  log_det = sum of s over b,
        inverse:  x_a = y_a,  x_b = (y_b - t(y_a)) * exp(-s(y_a)),  log_det = -sum of s.

    Masks (the kept entries; `parity` swaps kept and transformed):
      'checkerboard': (B, H, W, C) images, the spatial checkerboard of `checkerboard_mask`; the
          conditioner sees the masked image x * mask and only the complementary entries change.
      'channel': (B, H, W, C) images, the first C // 2 channels are kept.
      'half': flat (B, D) data, the first D // 2 features are kept (2-D toy flows).
      'alternate': (B, ...) data of any shape, flattened; the even components are kept (NICE's
          partition, Dinh et al. 2015, Sec. 5.1), the odd ones with `parity`; MLP conditioner.

    Scales s = s(raw) of the conditioner's raw output:
      'tanh': s = scale_factor * tanh(raw) with a learnable per-channel (per-feature for the
          flat masks) `scale_factor`, initialised to 1: RealNVP's tanh stabilisation.
          |s| <= |scale_factor|, so it can expand or contract.
      'sigmoid': exp(s) = sigmoid(raw + 2) (Glow). s < 0, so the forward map contracts x_b.

    `coupling='additive'` is NICE's additive coupling (Dinh et al. 2015), Glow's other option:
    y_b = x_b + t(x_a), log_det = 0 (volume preserving); the conditioner outputs only t and
    `scale` is unused.

    The conditioner (`ConvConditioner` for image masks, `MLPConditioner` for 'half' and
    'alternate') outputs raw and t; its last layer is zero-initialised, so a new 'tanh' coupling
    is exactly the identity and a new 'sigmoid' one scales x_b by sigmoid(2) = 0.88 (exactly as
    Glow's code does).
    `hidden_channels` sizes the conv net, `hidden_features` the MLP, `dtype` is their compute
    dtype (bfloat16 for mixed precision; the coupling's own arithmetic and its log-det stay
    float32). `context` is ignored.
    """

    mask: str
    parity: bool = False
    scale: str = "tanh"
    coupling: str = "affine"
    hidden_channels: int = 32
    hidden_features: int = 64
    num_hidden_layers: int = 2
    dtype: Any = None

    def __post_init__(self):
        _check_choice("mask", self.mask, MASKS)
        _check_choice("scale", self.scale, SCALES)
        _check_choice("coupling", self.coupling, COUPLINGS)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        _check_input(self.mask, x)
        if self.mask == "checkerboard":
            keep = checkerboard_mask(x.shape[1], x.shape[2], self.parity)  # (H, W, 1)
            conditioner_input, num_transformed = x * keep, x.shape[-1]
        elif self.mask == "alternate":
            flat = jnp.asarray(x).reshape(x.shape[0], -1)
            kept_index, moved_index = alternate_indices(flat.shape[1], self.parity)
            conditioner_input, x_b = flat[:, kept_index], flat[:, moved_index]
            num_transformed = x_b.shape[-1]
        else:
            conditioner_input, x_b = split_halves(x, self.parity)
            num_transformed = x_b.shape[-1]

        additive = self.coupling == "additive"
        num_outputs = num_transformed if additive else 2 * num_transformed
        if self.mask in ("half", "alternate"):
            conditioner = MLPConditioner(
                self.hidden_features, self.num_hidden_layers, num_outputs, self.dtype
            )
        else:
            conditioner = ConvConditioner(
                self.hidden_channels, self.num_hidden_layers, num_outputs, self.dtype
            )
        log_scale, shift = self._log_scale_and_shift(conditioner(conditioner_input))

        if self.mask == "checkerboard":
            log_scale, shift = jnp.where(keep, 0.0, log_scale), jnp.where(keep, 0.0, shift)
            y, log_det = affine(x, log_scale, shift, inverse)
            return jnp.where(keep, x, y), log_det
        y_b, log_det = affine(x_b, log_scale, shift, inverse)
        if self.mask == "alternate":
            y = flat.at[:, moved_index].set(y_b)
            return y.reshape(x.shape), log_det
        return merge_halves(conditioner_input, y_b, self.parity), log_det

    def _log_scale_and_shift(self, out: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(s, t) from the conditioner's output (..., K) (K = 2 * transformed entries, or
        K = transformed entries for 'additive', whose s is 0)."""
        if self.coupling == "additive":
            return jnp.zeros_like(out), out
        raw, shift = jnp.split(out, 2, axis=-1)
        if self.scale == "tanh":
            scale_factor = self.param("scale_factor", nn.initializers.ones, (raw.shape[-1],))
            return scale_factor * jnp.tanh(raw), shift
        return jax.nn.log_sigmoid(raw + SIGMOID_SHIFT), shift


# ----------------------------------------------------------------------------- squeezing


def space_to_depth(x: jax.Array) -> jax.Array:
    """RealNVP's squeeze (Fig. 3): (B, H, W, C) -> (B, H/2, W/2, 4C), each 2x2 block of pixels
    stacked along the channels as y[:, i, j, (2 dy + dx) C + c] = x[:, 2i + dy, 2j + dx, c]."""
    if x.ndim != 4 or x.shape[1] % 2 or x.shape[2] % 2:
        raise ValueError(f"squeezing needs (B, H, W, C) with even H and W; got shape {x.shape}")
    batch, height, width, channels = x.shape
    blocks = x.reshape(batch, height // 2, 2, width // 2, 2, channels)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, height // 2, width // 2, 4 * channels)


def depth_to_space(x: jax.Array) -> jax.Array:
    """The inverse of `space_to_depth`: (B, H, W, 4C) -> (B, 2H, 2W, C)."""
    if x.ndim != 4 or x.shape[3] % 4:
        raise ValueError(
            f"unsqueezing needs (B, H, W, C) with C divisible by 4; got shape {x.shape}"
        )
    batch, height, width, channels = x.shape
    blocks = x.reshape(batch, height, width, 2, 2, channels // 4)
    return blocks.transpose(0, 1, 3, 2, 4, 5).reshape(batch, 2 * height, 2 * width, channels // 4)


class Squeeze(Bijector):
    """Space-to-depth as a bijector: forward (B, H, W, C) -> (B, H/2, W/2, 4C) by
    `space_to_depth`, inverse by `depth_to_space`; a permutation of the entries, log-det 0
    (RealNVP, Sec. 3.6). Raises ValueError for odd H or W."""

    def __call__(self, x, inverse=False, context=None):
        del context
        return (depth_to_space(x) if inverse else space_to_depth(x)), zero_log_det(x)


class Squeezed(Bijector):
    """`bijector` applied at half resolution: depth_to_space(bijector(space_to_depth(x))), in
    either direction, so (B, H, W, C) -> (B, H, W, C) with `bijector`'s log-det. Holds
    RealNVP's channel-wise couplings, which act on the squeezed (B, H/2, W/2, 4C) tensor."""

    bijector: Bijector

    def __call__(self, x, inverse=False, context=None):
        h, log_det = self.bijector(space_to_depth(x), inverse=inverse, context=context)
        return depth_to_space(h), log_det


class MultiScale(Bijector):
    """One scale of RealNVP's multi-scale architecture (Dinh et al. 2017, Sec. 3.6), shape
    preserving: (B, H, W, C) -> (B, H, W, C), H and W even.

    Data -> noise (`inverse`, what `Flow.log_prob` runs):
      1. h = transform.inverse(x)                 (B, H, W, C)
      2. h = space_to_depth(h), split its channels into the factored-out first half z_out and
         the kept second half                     2 x (B, H/2, W/2, 2C)
      3. z_in = inner.inverse(kept)               (identity when `inner` is None)
      4. z = depth_to_space(concat(z_out, z_in))  (B, H, W, C)
    Noise -> data (`forward`, sampling) undoes 4 to 1 with `inner.forward` and
    `transform.forward`. The log-det is the sum of `transform`'s and `inner`'s; the squeezes are
    permutations. z_out is final (it reaches the base distribution untouched), and writing it
    back into one array keeps the flow a single shape-preserving bijector whose standard-normal
    base covers every factored-out variable. Glow's level (squeeze, steps, split) is
    `MultiScale(Squeezed(steps), inner)`.

    `split_prior` (optional) gives z_out a prior conditioned on the kept half, as Glow's split
    does: a bijector called as `split_prior(z_out, inverse, context=kept)`, `kept` being the
    kept half on the data side (before `inner.inverse`, which is also what `inner.forward`
    returns). It maps z_out towards the noise after step 2, and back before step 4 of the
    forward pass. With `genjax.flows.glow.SplitPrior`, log N(z_out; mu(kept), sigma(kept)^2)
    is computed as the standard normal of (z_out - mu) / sigma plus that map's log-det.
    """

    transform: Bijector
    inner: Bijector | None = None
    split_prior: Bijector | None = None

    def __call__(self, x, inverse=False, context=None):
        if inverse:
            h, log_det = self.transform(x, inverse=True, context=context)
            chex.assert_equal_shape((h, x))
            return self._factor_out(h, log_det, inverse=True, context=context)
        h, log_det = self._factor_out(x, zero_log_det(x), inverse=False, context=context)
        y, transform_log_det = self.transform(h, inverse=False, context=context)
        chex.assert_equal_shape((y, x))
        return y, log_det + transform_log_det

    def _factor_out(self, x, log_det, inverse, context):
        """Squeezes x, runs `inner` on the second half of the channels (and `split_prior` on
        the first) and writes both halves back; adds their log-dets to log_det."""
        squeezed = space_to_depth(x)  # (B, H/2, W/2, 4C)
        factored, kept = jnp.split(squeezed, 2, axis=-1)
        if inverse:  # data -> noise: the prior reads the kept half before `inner` maps it
            factored, log_det = self._split_prior(factored, kept, log_det, inverse)
            kept, log_det = self._inner(kept, log_det, inverse, context)
        else:  # noise -> data: `inner` first, so the prior reads the same kept half
            kept, log_det = self._inner(kept, log_det, inverse, context)
            factored, log_det = self._split_prior(factored, kept, log_det, inverse)
        return depth_to_space(jnp.concatenate([factored, kept], axis=-1)), log_det

    def _inner(self, kept, log_det, inverse, context):
        """`inner` on the kept half (the identity when None), its log-det added."""
        if self.inner is None:
            return kept, log_det
        kept_out, inner_log_det = self.inner(kept, inverse=inverse, context=context)
        chex.assert_equal_shape((kept_out, kept))
        return kept_out, log_det + inner_log_det

    def _split_prior(self, factored, kept, log_det, inverse):
        """`split_prior` on the factored-out half given the kept half (identity when None)."""
        if self.split_prior is None:
            return factored, log_det
        factored_out, prior_log_det = self.split_prior(factored, inverse=inverse, context=kept)
        chex.assert_equal_shape((factored_out, factored))
        return factored_out, log_det + prior_log_det


# ----------------------------------------------------------------------------- builders


def _alternating_couplings(
    mask: str, num_couplings: int, **coupling_fields
) -> list[AffineCoupling]:
    """`num_couplings` couplings with `mask`, parity False, True, False, ..."""
    return [
        AffineCoupling(mask=mask, parity=index % 2 == 1, **coupling_fields)
        for index in range(num_couplings)
    ]


def realnvp_image(
    num_scales: int = 2,
    couplings_per_scale: int = 3,
    hidden_channels: int = 32,
    num_hidden_layers: int = 2,
    final_couplings: int = 4,
    scale: str = "tanh",
    dtype: Any = None,
    coupling: str = "affine",
) -> Bijector:
    """RealNVP's multi-scale flow for (B, H, W, C) images (Dinh et al. 2017, Sec. 3.6, 4.1),
    returned noise -> data: (B, H, W, C) -> (B, H, W, C); H and W must be divisible by
    2^(num_scales - 1).

    In the data -> noise direction, each of the first `num_scales - 1` scales applies
    `couplings_per_scale` checkerboard couplings (alternating parity), squeezes, applies
    `couplings_per_scale` channel couplings (alternating parity), and factors out half of the
    channels (`MultiScale`); the last scale applies `final_couplings` checkerboard couplings.
    The couplings compute the paper's y_b = x_b * exp(s) + t in the data -> noise direction
    (they sit inside `Invert`; see the module docstring); `scale` and `coupling` are
    `AffineCoupling`'s.

    Omitted from the paper: batch normalisation (it would make the bijector depend on batch
    statistics and carry running averages, breaking the pure (params, x) -> (y, log_det)
    protocol; Glow's ActNorm is the drop-in replacement), the logit preprocessing (chain
    `genjax.flows.bijector.Logit` in front), weight normalisation and the deep residual
    conditioners (small `ConvConditioner`s instead, sized for CPU).
    """
    if num_scales < 1 or couplings_per_scale < 1 or final_couplings < 1:
        raise ValueError(
            f"realnvp_image needs num_scales, couplings_per_scale and final_couplings >= 1; "
            f"got {num_scales}, {couplings_per_scale}, {final_couplings}"
        )
    fields = dict(
        hidden_channels=hidden_channels,
        num_hidden_layers=num_hidden_layers,
        scale=scale,
        coupling=coupling,
        dtype=dtype,
    )
    flow = Invert(Chain(_alternating_couplings("checkerboard", final_couplings, **fields)))
    for _ in range(num_scales - 1):
        channel_couplings = Chain(_alternating_couplings("channel", couplings_per_scale, **fields))
        encoder = Chain(
            [
                *_alternating_couplings("checkerboard", couplings_per_scale, **fields),
                Squeezed(channel_couplings),
            ]
        )
        flow = MultiScale(transform=Invert(encoder), inner=flow)
    return flow


def realnvp_flat(
    num_dims: int,
    num_couplings: int = 4,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    scale: str = "tanh",
    dtype: Any = None,
    coupling: str = "affine",
) -> Bijector:
    """RealNVP for flat (B, num_dims) data such as the 2-D toy densities (Dinh et al. 2017,
    Fig. 1), returned noise -> data: (B, D) -> (B, D).

    `num_couplings` 'half'-mask couplings of alternating parity with MLP conditioners; they
    compute the paper's y_b = x_b * exp(s) + t in the data -> noise direction (inside
    `Invert`); `scale` and `coupling` are `AffineCoupling`'s. Batch normalisation is omitted,
    as in `realnvp_image`.
    """
    if num_dims < 2 or num_couplings < 1:
        raise ValueError(
            f"realnvp_flat needs num_dims >= 2 (both halves non-empty) and num_couplings >= 1; "
            f"got num_dims={num_dims}, num_couplings={num_couplings}"
        )
    couplings = _alternating_couplings(
        "half",
        num_couplings,
        hidden_features=hidden_features,
        num_hidden_layers=num_hidden_layers,
        scale=scale,
        coupling=coupling,
        dtype=dtype,
    )
    return Invert(Chain(couplings))
