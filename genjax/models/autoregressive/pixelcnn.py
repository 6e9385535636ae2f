"""PixelCNN and Gated PixelCNN: autoregressive image models with an exact likelihood.

Both factorise an image of shape (H, W, C) over its sub-pixels in raster order, row by row, left
to right, and within a pixel channel by channel (R before G before B):

    log p(x) = sum_{i, j, c} log p(x_{i,j,c} | x_{<(i,j)}, x_{(i,j),<c}).

PixelCNN (van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks",
sections 3.4-3.5, figures 2 and 5): a stack of masked convolutions. The first layer uses mask A
(the centre tap sees only the channels before the output's channel); every later layer uses mask
B (the centre tap also sees the output's own channel group); residual blocks
1x1 -> k x k -> 1x1 as in figure 5. Stacking k x k masked convolutions leaves a blind spot: the
pixels above and to the right of the receptive field's diagonal are never seen (van den Oord et
al. 2016b, figure 1).

Gated PixelCNN (van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves & Kavukcuoglu 2016,
"Conditional Image Generation with PixelCNN Decoders", section 2, figure 2): a vertical stack
that sees the rows above (its features at row i cover the input rows <= i and reach the
horizontal stack shifted down by one row) and a horizontal stack that sees the pixels to the
left in the current row; the vertical-to-horizontal connection, gated activations
tanh(W_f * x) * sigmoid(W_g * x), a residual connection in the horizontal stack, and no blind
spot. With `class_conditional`, a learned embedding of the label is added to every gate's
inputs (equation 4, the V^T h terms).

Channel masking (PixelRNN section 3.4): every feature map of a layer belongs to one of C channel
groups (contiguous blocks, `channel_groups`); at the centre tap a kernel connects input group
g_in to output group g_out only if g_in < g_out (mask A) or g_in <= g_out (mask B). The outputs
for channel c come from group c, so they see the earlier channels of the same pixel only.

Output heads (`model_config.likelihood`), all over discrete data:
  bernoulli         one logit per sub-pixel (binarized data).
  categorical       a softmax over the L = `spec.num_levels` intensity levels per sub-pixel
                    (PixelRNN section 2.2); levels = round(x * (L - 1)) for x in [0, 1].
  logistic_mixture  a mixture of `num_mixtures` discretised logistics per sub-pixel
                    (Salimans et al. 2017, PixelCNN++, equation 2) on the L-level grid in
                    [-1, 1]; the channel dependence comes from the masking, not from PixelCNN++'s
                    linear coupling of the means.

The log-likelihood is the probability mass of the discrete data, so the batch's `log_det` (the
Jacobian of a rescaling to [-1, 1]) is not added: relabelling a discrete set does not change the
mass of its points. Dequantization and the logit transform make the data continuous and are
refused.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import log_mean_exp, summarize_log_likelihood
from genjax.models import checks
from genjax.models.base import GradientModel
from genjax.nn import precision

ARCHITECTURES = ("gated", "pixelcnn")
LIKELIHOODS = ("bernoulli", "categorical", "logistic_mixture")
# PixelCNN++ clamps the logistic log scales from below.
MIN_LOG_SCALE = -7.0


# ----------------------------------------------------------------------------- masks


def channel_groups(num_features: int, num_channels: int) -> np.ndarray:
    """The channel group of each of `num_features` feature maps: contiguous blocks, (F,) ints.

    With F = C the groups are the data channels themselves; with F = C * P the blocks are the P
    outputs per channel of an output layer reshaped to (..., C, P).
    """
    return np.arange(num_features) * num_channels // num_features


def autoregressive_mask(
    kernel_size: tuple[int, int],
    centre: tuple[int, int],
    in_groups: np.ndarray,
    out_groups: np.ndarray,
    mask_type: str,
) -> np.ndarray:
    """The 0/1 kernel mask of a masked convolution (PixelRNN section 3.4, figure 2 right).

    The output at pixel (i, j) is aligned with kernel tap `centre`: taps in rows above the
    centre and to the left of it in the centre row are kept; the centre tap connects input
    group g_in to output group g_out iff g_in < g_out (mask 'A') or g_in <= g_out (mask 'B');
    everything after the centre is zero.

    Args:
      kernel_size: (kh, kw).
      centre: (ci, cj), the tap aligned with the output pixel.
      in_groups: (C_in,) channel group of each input feature.
      out_groups: (C_out,) channel group of each output feature.
      mask_type: 'A' or 'B'.

    Returns:
      float32 mask of shape (kh, kw, C_in, C_out).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type={mask_type!r}; allowed: ('A', 'B')")
    (kh, kw), (ci, cj) = kernel_size, centre
    mask = np.zeros((kh, kw, len(in_groups), len(out_groups)), np.float32)
    mask[:ci] = 1.0
    mask[ci, :cj] = 1.0
    g_in, g_out = np.asarray(in_groups)[:, None], np.asarray(out_groups)[None, :]
    mask[ci, cj] = g_in < g_out if mask_type == "A" else g_in <= g_out
    return mask


class MaskedConv(nn.Module):
    """A convolution with an `autoregressive_mask`ed kernel, 'same' size, stride 1.

    Input (B, H, W, C_in) -> (B, H, W, features); the `num_channels` data channels define the
    channel groups of both sides (`channel_groups`). With a `dtype` the input, masked kernel
    and bias are cast to it and the convolution is computed in it (parameters stay float32).
    """

    features: int
    kernel_size: tuple[int, int]
    centre: tuple[int, int]
    mask_type: str
    num_channels: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        (kh, kw), (ci, cj) = self.kernel_size, self.centre
        in_features = x.shape[-1]
        mask = autoregressive_mask(
            self.kernel_size,
            self.centre,
            channel_groups(in_features, self.num_channels),
            channel_groups(self.features, self.num_channels),
            self.mask_type,
        )
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (kh, kw, in_features, self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel, bias = precision.promote_keep_bias(x, kernel * mask, bias, dtype=self.dtype)
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(1, 1),
            padding=((ci, kh - 1 - ci), (cj, kw - 1 - cj)),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y + bias


def square_masked_conv(features, kernel_size, mask_type, num_channels, dtype=None) -> MaskedConv:
    """A k x k masked convolution centred on the output pixel (PixelCNN's layers)."""
    return MaskedConv(
        features,
        (kernel_size, kernel_size),
        (kernel_size // 2,) * 2,
        mask_type,
        num_channels,
        dtype,
    )


def pointwise_conv(features, num_channels, dtype=None) -> MaskedConv:
    """A 1x1 convolution with mask B: it never mixes a channel group into an earlier one."""
    return MaskedConv(features, (1, 1), (0, 0), "B", num_channels, dtype)


# ----------------------------------------------------------------------------- networks


class OutputHead(nn.Module):
    """Features (B, H, W, F) -> per-sub-pixel distribution parameters (B, H, W, C, P).

    ReLU -> 1x1 -> ReLU -> 1x1, both mask B (PixelRNN figure 5, the two output layers),
    computed in `dtype`; the parameters are returned float32.
    """

    hidden_features: int
    num_channels: int
    params_per_channel: int
    dtype: Any = None

    @nn.compact
    def __call__(self, h):
        h = pointwise_conv(self.hidden_features, self.num_channels, self.dtype)(nn.relu(h))
        out = pointwise_conv(
            self.num_channels * self.params_per_channel, self.num_channels, self.dtype
        )(nn.relu(h))
        out = out.astype(jnp.float32)
        return out.reshape((*out.shape[:-1], self.num_channels, self.params_per_channel))


class PixelCNNNetwork(nn.Module):
    """PixelCNN (PixelRNN paper, section 3.5): mask-A conv, residual blocks, output head.

    Input (B, H, W, C) in [-1, 1] -> distribution parameters (B, H, W, C, P). Each residual
    block is ReLU -> 1x1 (F -> F/2) -> ReLU -> k x k (F/2) -> ReLU -> 1x1 (F/2 -> F), added to
    its input (figure 5); all mask B.
    """

    features: int
    num_layers: int
    kernel_size: int
    first_kernel_size: int
    output_features: int
    params_per_channel: int
    dtype: Any = None  # the layers' compute dtype; the output is float32

    @nn.compact
    def __call__(self, x, labels=None):
        del labels  # unconditional (validated)
        num_channels, dtype = x.shape[-1], self.dtype
        h = square_masked_conv(self.features, self.first_kernel_size, "A", num_channels, dtype)(x)
        for _ in range(self.num_layers):
            y = pointwise_conv(self.features // 2, num_channels, dtype)(nn.relu(h))
            y = square_masked_conv(self.features // 2, self.kernel_size, "B", num_channels, dtype)(
                nn.relu(y)
            )
            h = h + pointwise_conv(self.features, num_channels, dtype)(nn.relu(y))
        head = OutputHead(self.output_features, num_channels, self.params_per_channel, dtype)
        return head(h)


def gate(y: jax.Array) -> jax.Array:
    """tanh(f) * sigmoid(g) over interleaved pairs: (..., 2F) -> (..., F).

    Feature k of the result uses inputs 2k (f) and 2k + 1 (g); with F a multiple of C both lie
    in channel group k * C // F, the group of output feature k.
    """
    pairs = y.reshape((*y.shape[:-1], -1, 2))
    return jnp.tanh(pairs[..., 0]) * jax.nn.sigmoid(pairs[..., 1])


def shift_down(v: jax.Array) -> jax.Array:
    """Moves every row down by one, zeros on top: (B, H, W, F), row i gets row i - 1."""
    return jnp.pad(v, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]


class GatedLayer(nn.Module):
    """One Gated PixelCNN layer (van den Oord et al. 2016b, figure 2).

    v: (B, H, W, F_v) vertical-stack input, covering rows <= i at row i.
    h: (B, H, W, F_h) horizontal-stack input, covering the sub-pixels before (i, j, group).
    cond: (B, 2F) label embedding added to both gates' inputs, or None.
    Returns (v', h'), each (B, H, W, F). The first layer (mask A, no residual) reads the image.
    """

    features: int
    kernel_size: int
    first: bool
    num_channels: int
    dtype: Any = None  # the layers' compute dtype

    @nn.compact
    def __call__(self, v, h, cond=None):
        k, width, dtype = self.kernel_size, 2 * self.features, self.dtype
        # Vertical stack: rows i - k//2 .. i, columns j - k//2 .. j + k//2.
        v_pre = precision.conv(
            width, (k // 2 + 1, k), padding=((k // 2, 0), (k // 2, k // 2)), dtype=dtype
        )(v)
        # Horizontal stack: columns j - k//2 .. j of row i, the centre tap channel-masked.
        mask_type = "A" if self.first else "B"
        h_pre = MaskedConv(
            width, (1, k // 2 + 1), (0, k // 2), mask_type, self.num_channels, dtype
        )(h)
        h_pre = h_pre + precision.dense(width, dtype=dtype)(
            shift_down(v_pre)
        )  # vertical -> horizontal
        if cond is not None:
            v_pre = (
                v_pre + precision.dense(width, use_bias=False, dtype=dtype)(cond)[:, None, None, :]
            )
            h_pre = (
                h_pre + precision.dense(width, use_bias=False, dtype=dtype)(cond)[:, None, None, :]
            )
        h_out = pointwise_conv(self.features, self.num_channels, dtype)(gate(h_pre))
        if not self.first:
            h_out = h + h_out  # residual connection of the horizontal stack
        return gate(v_pre), h_out


class GatedPixelCNNNetwork(nn.Module):
    """Gated PixelCNN: `num_layers` gated layers (the first k1 x k1) and the output head.

    Input (B, H, W, C) in [-1, 1] and labels (B,) int or None -> parameters (B, H, W, C, P).
    """

    features: int
    num_layers: int
    kernel_size: int
    first_kernel_size: int
    output_features: int
    params_per_channel: int
    num_classes: int | None = None
    dtype: Any = None  # the layers' compute dtype; the output is float32

    @nn.compact
    def __call__(self, x, labels=None):
        num_channels = x.shape[-1]
        cond = None
        if self.num_classes is not None:
            cond = nn.Embed(self.num_classes, self.features, dtype=self.dtype)(labels)  # (B, F)
        v = h = x
        for layer in range(self.num_layers):
            kernel_size = self.first_kernel_size if layer == 0 else self.kernel_size
            gated = GatedLayer(self.features, kernel_size, layer == 0, num_channels, self.dtype)
            v, h = gated(v, h, cond)
        head = OutputHead(self.output_features, num_channels, self.params_per_channel, self.dtype)
        return head(h)


# ----------------------------------------------------------------------------- output heads


def params_per_channel(likelihood: str, num_levels: int, num_mixtures: int) -> int:
    """P, the number of distribution parameters per sub-pixel of a head."""
    return {"bernoulli": 1, "categorical": num_levels, "logistic_mixture": 3 * num_mixtures}[
        likelihood
    ]


def levels_to_symmetric(levels: jax.Array, num_levels: int) -> jax.Array:
    """Integer levels 0 .. L-1 -> the grid 2 l / (L - 1) - 1 in [-1, 1] (float32)."""
    return 2.0 * levels.astype(jnp.float32) / (num_levels - 1) - 1.0


def _split_mixture(outputs: jax.Array):
    """(..., 3M) -> mixture logits, means, log scales (clamped at MIN_LOG_SCALE), (..., M)."""
    logit_probs, means, log_scales = jnp.split(outputs, 3, axis=-1)
    return logit_probs, means, jnp.maximum(log_scales, MIN_LOG_SCALE)


def head_log_prob(
    likelihood: str, outputs: jax.Array, levels: jax.Array, num_levels: int
) -> jax.Array:
    """log p(x_{i,j,c} = level | its context) for every sub-pixel.

    Args:
      likelihood: 'bernoulli' | 'categorical' | 'logistic_mixture'.
      outputs: (..., P) distribution parameters from the network.
      levels: (...) integer levels in [0, num_levels).
      num_levels: L (2 for binary data).

    Returns:
      (...) log-probabilities in nats.
    """
    if likelihood == "bernoulli":
        return objectives.bernoulli_log_prob(levels.astype(jnp.float32), outputs[..., 0])
    if likelihood == "categorical":
        log_probs = jax.nn.log_softmax(outputs, axis=-1)
        return jnp.take_along_axis(log_probs, levels[..., None], axis=-1)[..., 0]
    logit_probs, means, log_scales = _split_mixture(outputs)
    x = levels_to_symmetric(levels, num_levels)
    return objectives.discretized_logistic_mixture_log_prob(
        x, logit_probs, means, log_scales, num_bins=num_levels
    )


def head_sample(likelihood: str, outputs: jax.Array, key: jax.Array, num_levels: int) -> jax.Array:
    """One level drawn from the distribution of `head_log_prob`: outputs (P,) -> int32 ().

    The logistic mixture draws a component, then a logistic variate, and returns the grid bin
    that contains it (edge bins extend to +-inf), which is exactly the discretised mass.
    """
    if likelihood == "bernoulli":
        return jax.random.bernoulli(key, jax.nn.sigmoid(outputs[0])).astype(jnp.int32)
    if likelihood == "categorical":
        return jax.random.categorical(key, outputs).astype(jnp.int32)
    logit_probs, means, log_scales = _split_mixture(outputs)
    component_key, logistic_key = jax.random.split(key)
    component = jax.random.categorical(component_key, logit_probs)
    y = means[component] + jnp.exp(log_scales[component]) * jax.random.logistic(logistic_key)
    level = jnp.round((y + 1.0) / 2.0 * (num_levels - 1))
    return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)


# ----------------------------------------------------------------------------- the family


class PixelCNN(GradientModel):
    """PixelCNN and Gated PixelCNN (`config.model = 'pixelcnn'`); exact log-likelihood.

    model_config fields:
      architecture: 'gated' (Gated PixelCNN) | 'pixelcnn' (mask A/B PixelCNN, residual blocks).
      likelihood: 'bernoulli' | 'categorical' | 'logistic_mixture' (see the module docstring).
      num_layers: gated layers, or residual blocks after the first mask-A layer.
      features: feature maps per stack (gated) or per residual stream (pixelcnn); a multiple
        of 2 C.
      kernel_size: k of the later layers (odd; gated: vertical (k//2 + 1) x k, horizontal
        1 x (k//2 + 1)).
      first_kernel_size: k of the first layer (7 in both papers; odd).
      output_features: width of the 1x1 output layers; a multiple of C.
      num_mixtures: logistic components per sub-pixel ('logistic_mixture').
      class_conditional: add a label embedding to the gates (gated only); samples then cycle
        through the classes.
    """

    name = "pixelcnn"
    main_metric = "train/loss"
    compute_dtypes = ("float32", "bfloat16")

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(mc, {"architecture": ARCHITECTURES, "likelihood": LIKELIHOODS})
        checks.check_positive_ints(
            mc,
            (
                "num_layers",
                "features",
                "output_features",
                "num_mixtures",
                "kernel_size",
                "first_kernel_size",
            ),
        )
        for field in ("kernel_size", "first_kernel_size"):
            if mc[field] < 3 or mc[field] % 2 == 0:
                raise ValueError(
                    f"config.model_config.{field}={mc[field]!r}; allowed: odd integers >= 3."
                )
        checks.check_bools(mc, ("class_conditional",))
        if mc.class_conditional and mc.architecture != "gated":
            raise ValueError(
                "config.model_config.class_conditional=True needs "
                f"config.model_config.architecture='gated' (got {mc.architecture!r})."
            )
        if config.preprocess.dequantize or config.preprocess.logit_alpha:
            raise ValueError(
                "PixelCNN models discrete data: config.preprocess.dequantize="
                f"{config.preprocess.dequantize!r} and config.preprocess.logit_alpha="
                f"{config.preprocess.logit_alpha!r}; allowed: False and 0.0."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        self._check_spec(mc, spec)
        self.num_levels = 2 if spec.binarized else int(spec.num_levels)
        self.low, self.high = (float(v) for v in spec.value_range)
        self.num_classes = int(spec.num_classes) if mc.class_conditional else None
        network_cls = GatedPixelCNNNetwork if mc.architecture == "gated" else PixelCNNNetwork
        conditioning = {"num_classes": self.num_classes} if mc.architecture == "gated" else {}
        self.network = network_cls(
            features=mc.features,
            num_layers=mc.num_layers,
            kernel_size=mc.kernel_size,
            first_kernel_size=mc.first_kernel_size,
            output_features=mc.output_features,
            params_per_channel=params_per_channel(mc.likelihood, self.num_levels, mc.num_mixtures),
            dtype=jnp.dtype(config.compute_dtype),
            **conditioning,
        )

    @staticmethod
    def _check_spec(mc, spec) -> None:
        """Data the model can describe: discrete (H, W, C) images; widths fit C groups."""
        if (
            not spec.is_image
            or spec.num_levels is None
            or not np.all(np.isfinite(spec.value_range))
        ):
            raise ValueError(
                f"PixelCNN needs discrete images of shape (H, W, C); config.dataset="
                f"{spec.name!r} has examples of shape {spec.example_shape}, "
                f"num_levels={spec.num_levels}, value range {spec.value_range}."
            )
        if mc.likelihood == "bernoulli":
            checks.require_binary(
                spec,
                "config.model_config.likelihood='bernoulli'",
                "likelihood='categorical' or 'logistic_mixture'",
            )
        if mc.class_conditional and not spec.num_classes:
            raise ValueError(
                f"config.model_config.class_conditional=True needs labels; {spec.name!r} has none."
            )
        num_channels = spec.example_shape[-1]
        for field, multiple in (("features", 2 * num_channels), ("output_features", num_channels)):
            if mc[field] % multiple:
                raise ValueError(
                    f"config.model_config.{field}={mc[field]} must be a multiple of {multiple} "
                    f"for {num_channels}-channel images (one group of feature maps per channel)."
                )

    # ------------------------------------------------------------------ data <-> levels

    def to_levels(self, x: jax.Array) -> jax.Array:
        """Model-space data (B, H, W, C) -> int32 levels 0 .. L-1 (round(unit x * (L - 1)))."""
        unit = (x - self.low) / (self.high - self.low)
        return jnp.round(unit * (self.num_levels - 1)).astype(jnp.int32)

    def from_levels(self, levels: jax.Array) -> jax.Array:
        """int levels -> model-space values (the inverse of `to_levels` on the grid)."""
        unit = levels.astype(jnp.float32) / (self.num_levels - 1)
        return self.low + (self.high - self.low) * unit

    def _labels(self, batch: dict) -> jax.Array | None:
        return batch["label"] if self.num_classes is not None else None

    # ------------------------------------------------------------------ likelihood

    def init(self, key, example_x):
        labels = jnp.zeros(example_x.shape[:1], jnp.int32) if self.num_classes else None
        levels = self.to_levels(jnp.asarray(example_x))
        return self.network.init(key, levels_to_symmetric(levels, self.num_levels), labels), {}

    def distribution_params(self, params, levels, labels=None) -> jax.Array:
        """Per-sub-pixel distribution parameters (B, H, W, C, P) given integer levels."""
        outputs = self.network.apply(params, levels_to_symmetric(levels, self.num_levels), labels)
        chex.assert_shape(outputs, (*levels.shape, None))
        return outputs

    def log_prob_terms(self, params, x, labels=None) -> jax.Array:
        """log p(x_{i,j,c} | context) for every sub-pixel of x (B, H, W, C) -> (B, H, W, C)."""
        levels = self.to_levels(x)
        outputs = self.distribution_params(params, levels, labels)
        return head_log_prob(self.config.model_config.likelihood, outputs, levels, self.num_levels)

    def log_prob(self, params, x, labels=None) -> jax.Array:
        """Exact log p(x) in nats of the discrete images x (B, H, W, C) -> (B,)."""
        log_p = self.log_prob_terms(params, x, labels).sum(axis=(1, 2, 3))
        chex.assert_shape(log_p, x.shape[:1])
        return log_p

    def train_log_density(self, params, x, keys):
        """log p(x) (B,), given class 0 for a class-conditional model."""
        del keys
        labels = None if self.num_classes is None else jnp.zeros(x.shape[0], jnp.int32)
        return self.log_prob(params, x, labels)

    def loss(self, params, extras, batch, keys):
        del keys  # deterministic: the exact likelihood needs no sampling
        nll = -self.log_prob(params, batch["x"], self._labels(batch)).mean()
        metrics = {"train/bits_per_dim": objectives.bits_per_dim(nll, self.spec.num_dims)}
        return nll, (metrics, extras)

    def marginal_log_prob(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """A class-conditional model's exact log p(x) = log (1/K) sum_y p(x | y) under a uniform
        label prior, with the (K, B) log p(x | y) it sums; one label at a time."""
        per_label = jax.lax.map(
            lambda label: self.log_prob(params, x, jnp.full(x.shape[:1], label)),
            jnp.arange(self.num_classes),
        )
        return log_mean_exp(per_label), per_label

    def eval_step(self, state, batch, keys, final):
        """Exact log p(x); a class-conditional model also gives log p(x | y) of the true label."""
        del keys, final  # one exact evaluation serves both
        if self.num_classes is None:
            return {"log_likelihood": self.log_prob(state.params, batch["x"])}
        marginal, per_label = self.marginal_log_prob(state.params, batch["x"])
        conditional = jnp.take_along_axis(per_label, batch["label"][None], axis=0)[0]
        return {"log_likelihood": marginal, "conditional_log_likelihood": conditional}

    def summarize(self, outputs, final, constants):
        """`test_nll_nats` is always -log p(x), comparable with unconditional models; a
        class-conditional model adds `conditional_nll_nats` etc., -log p(x | y)."""
        del constants
        num_dims = self.spec.num_dims
        summary = summarize_log_likelihood(outputs["log_likelihood"], num_dims, "exact")
        if "conditional_log_likelihood" in outputs:
            conditional = summarize_log_likelihood(
                outputs["conditional_log_likelihood"], num_dims, "exact"
            )
            for field in ("test_nll_nats", "test_nll_stderr", "test_bits_per_dim"):
                summary[f"conditional_{field.removeprefix('test_')}"] = conditional[field]
            summary["label_prior"] = "uniform"
        if final:
            return summary
        monitor = {"nll": summary["test_nll_nats"], "bits_per_dim": summary["test_bits_per_dim"]}
        if "conditional_nll_nats" in summary:
            monitor["conditional_nll"] = summary["conditional_nll_nats"]
        return monitor

    # ------------------------------------------------------------------ sampling

    def sample(self, state, key, num):
        labels = jnp.arange(num) % self.num_classes if self.num_classes else None
        return self.sample_images(state.params, key, num, labels)

    def sample_images(self, params, key, num: int, labels=None) -> jax.Array:
        """Ancestral sampling, sub-pixel by sub-pixel in raster and channel order.

        One `jax.lax.fori_loop` over the H * W * C positions re-runs the network on the canvas
        and draws position t for every image; positions >= t hold placeholders the masks hide.
        Image n draws position t from `fold_in(fold_in(key, n), t)`, so it does not depend on
        `num` or on the other images.

        Args:
          params: network parameters.
          key: typed key.
          num: number of images.
          labels: (num,) int class labels for a class-conditional model, else None.

        Returns:
          (num, H, W, C) images in model space.
        """
        height, width, channels = self.spec.example_shape
        likelihood = self.config.model_config.likelihood
        draw = jax.vmap(
            functools.partial(head_sample, likelihood, num_levels=self.num_levels)
        )  # (num, P), (num,) keys -> (num,)
        image_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(num))

        def body(position, levels):
            row, rest = jnp.divmod(position, width * channels)
            col, channel = jnp.divmod(rest, channels)
            outputs = self.distribution_params(params, levels, labels)  # (num, H, W, C, P)
            keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(image_keys, position)
            drawn = draw(outputs[:, row, col, channel], keys)  # (num,)
            return levels.at[:, row, col, channel].set(drawn)

        levels = jnp.zeros((num, height, width, channels), jnp.int32)
        levels = jax.lax.fori_loop(0, height * width * channels, body, levels)
        return self.from_levels(levels)
