"""Generators and discriminators: MLPs for 2-D data, DCGAN for images; optional conditioning.

Every generator maps `(z (B, latent_size), labels (B,) int, train)` to samples `(B, *event)` in
model space; every discriminator maps `(x (B, *event), labels (B,), train)` to a
`DiscriminatorOutput`: one score per example (a logit for the minimax, non-saturating and
least-squares losses, a critic value for the Wasserstein and hinge losses) and, for AC-GAN,
class logits.

Conditioning (`conditioning`):
  none    labels are ignored.
  concat  Mirza & Osindero (2014): the one-hot label is concatenated to z in G and to the input
          of D (as constant feature maps for images).
  acgan   Odena et al. (2017): G takes the label as in `concat`; D does not see it and predicts
          it with a second head (`class_logits`).

Initialisation (`weight_init`):
  default  Flax's: LeCun-normal kernels, zero biases, batch norm scale 1 and offset 0.
  dcgan    Radford et al. (2016), sec. 4, "all weights were initialized from a zero-centered
           Normal distribution with standard deviation 0.02": every Dense / Conv /
           ConvTranspose kernel N(0, 0.02^2), biases 0; batch norm scales N(1, 0.02^2) and
           offsets 0, as the reference code (dcgan.torch, pytorch/examples' `weights_init`)
           does. Layer norm keeps scale 1.

Collections beside 'params': 'batch_stats' (batch norm) and 'spectral_stats' (the power
iteration vectors of spectral normalisation, Miyato et al. 2018). Batch norm statistics are
computed over the global batch (`axis_name`, the data-parallel mesh axis), so every device holds
the same running averages and a run on N devices normalises as a run on one.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.nn import precision

CONDITIONINGS = ("none", "concat", "acgan")
NORMS = ("none", "batch", "layer")
OUTPUT_ACTIVATIONS = ("tanh", "sigmoid", "linear")
WEIGHT_INITS = ("default", "dcgan")
DCGAN_INIT_STD = 0.02  # Radford et al. 2016, sec. 4
SPECTRAL_COLLECTION = "spectral_stats"
_LEAKY_SLOPE = 0.2  # Radford et al. 2016, sec. 3


class DiscriminatorOutput(NamedTuple):
    """`scores` (B,): the discriminator's logit or critic value; `class_logits` (B, K) for
    AC-GAN, else None."""

    scores: jax.Array
    class_logits: jax.Array | None


def _normal_around_one(stddev: float):
    """A Flax initializer drawing 1 + stddev * N(0, 1): DCGAN's batch norm scales."""

    def init(key, shape, dtype=jnp.float32):
        return (1.0 + stddev * jax.random.normal(key, shape)).astype(dtype)

    return init


def layer_init(weight_init: str) -> dict:
    """Keyword arguments for a Dense / Conv / ConvTranspose under `weight_init` (see the
    module docstring): none for 'default', a N(0, 0.02^2) kernel for 'dcgan'."""
    if weight_init == "dcgan":
        return {"kernel_init": nn.initializers.normal(DCGAN_INIT_STD)}
    if weight_init != "default":
        raise ValueError(f"weight_init={weight_init!r}; allowed: {WEIGHT_INITS}")
    return {}


def batch_norm_init(weight_init: str) -> dict:
    """Keyword arguments for a BatchNorm under `weight_init`: none for 'default', a
    N(1, 0.02^2) scale for 'dcgan'."""
    if weight_init == "dcgan":
        return {"scale_init": _normal_around_one(DCGAN_INIT_STD)}
    layer_init(weight_init)  # the same check of the name
    return {}


def _one_hot(labels: jax.Array, num_classes: int) -> jax.Array:
    return jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)


def _output_activation(x: jax.Array, name: str) -> jax.Array:
    if name == "tanh":
        return jnp.tanh(x)
    if name == "sigmoid":
        return jax.nn.sigmoid(x)
    return x


def _conditioned_latent(z, labels, conditioning: str, num_classes: int) -> jax.Array:
    """z, with the one-hot label appended when G is conditional: (B, latent [+ K])."""
    if conditioning == "none":
        return z
    return jnp.concatenate([z, _one_hot(labels, num_classes)], axis=-1)


def _normalized(
    layer: nn.Module,
    x,
    norm: str,
    spectral_norm: bool,
    axis_name,
    train: bool,
    dtype=None,
    weight_init: str = "default",
):
    """`layer(x)` (a Dense or Conv), optionally spectrally normalised, then `norm`, computed in
    `dtype` (normalisation statistics stay float32), batch norm initialised by `weight_init`;
    called inside a compact `__call__`, so the layers belong to the calling module."""
    if spectral_norm:
        spectral = nn.SpectralNorm(layer, collection_name=SPECTRAL_COLLECTION, dtype=dtype)
        x = spectral(x, update_stats=train)
    else:
        x = layer(x)
    if norm == "batch":
        # The discriminator always normalises with the current batch's statistics (it is never
        # used in inference mode); they are taken over the global batch.
        x = nn.BatchNorm(
            use_running_average=False,
            momentum=0.9,
            axis_name=axis_name,
            dtype=dtype,
            **batch_norm_init(weight_init),
        )(x)
    elif norm == "layer":
        x = nn.LayerNorm(dtype=dtype)(x)
    return x


class MLPGenerator(nn.Module):
    """z -> `num_hidden_layers` x (Dense(hidden), ReLU) -> Dense(num_dims): 2-D toy data."""

    event_shape: tuple[int, ...]
    hidden_size: int = 128
    num_hidden_layers: int = 3
    conditioning: str = "none"
    num_classes: int = 1
    output_activation: str = "linear"
    axis_name: str | None = None  # unused; the same signature as DCGANGenerator
    dtype: Any = None  # the layers' compute dtype; the samples are float32
    weight_init: str = "default"  # a name of WEIGHT_INITS

    @nn.compact
    def __call__(self, z, labels, train: bool):
        del train
        chex.assert_rank(z, 2)
        dense = functools.partial(precision.dense, dtype=self.dtype, **layer_init(self.weight_init))
        h = _conditioned_latent(z, labels, self.conditioning, self.num_classes)
        for _ in range(self.num_hidden_layers):
            h = nn.relu(dense(self.hidden_size)(h))
        num_dims = 1
        for size in self.event_shape:
            num_dims *= size
        x = dense(num_dims)(h)
        x = _output_activation(x, self.output_activation).astype(jnp.float32)
        return x.reshape((z.shape[0], *self.event_shape))


class MLPDiscriminator(nn.Module):
    """x -> `num_hidden_layers` x (Dense(hidden), norm, LeakyReLU(0.2)) -> a score."""

    hidden_size: int = 128
    num_hidden_layers: int = 3
    conditioning: str = "none"
    num_classes: int = 1
    norm: str = "none"
    spectral_norm: bool = False
    axis_name: str | None = None
    dtype: Any = None  # the layers' compute dtype; the scores are float32
    weight_init: str = "default"  # a name of WEIGHT_INITS

    @nn.compact
    def __call__(self, x, labels, train: bool) -> DiscriminatorOutput:
        h = x.reshape((x.shape[0], -1))
        if self.conditioning == "concat":
            h = jnp.concatenate([h, _one_hot(labels, self.num_classes)], axis=-1)
        for _ in range(self.num_hidden_layers):
            layer = precision.dense(
                self.hidden_size, dtype=self.dtype, **layer_init(self.weight_init)
            )
            h = _normalized(
                layer,
                h,
                self.norm,
                self.spectral_norm,
                self.axis_name,
                train,
                self.dtype,
                self.weight_init,
            )
            h = nn.leaky_relu(h, _LEAKY_SLOPE)
        return _heads(
            h,
            self.conditioning,
            self.num_classes,
            self.spectral_norm,
            train,
            self.dtype,
            self.weight_init,
        )


def _heads(
    features, conditioning, num_classes, spectral_norm, train, dtype=None, weight_init="default"
) -> DiscriminatorOutput:
    """The score head (and AC-GAN's class head) on (B, F) features, computed in `dtype` and
    returned as float32, initialised by `weight_init`; called inside a compact `__call__`, so
    the layers belong to the calling module."""
    init = layer_init(weight_init)
    score_layer = precision.dense(1, dtype=dtype, name="score", **init)
    scores = _normalized(score_layer, features, "none", spectral_norm, None, train, dtype)
    class_logits = None
    if conditioning == "acgan":
        class_logits = precision.dense(num_classes, dtype=dtype, name="class_logits", **init)(
            features
        )
        class_logits = class_logits.astype(jnp.float32)
    return DiscriminatorOutput(scores[:, 0].astype(jnp.float32), class_logits)


def dcgan_num_upsamples(height: int, width: int) -> int:
    """How many stride-2 layers the DCGAN networks use for an image: the most (up to 3) that
    leave a whole base grid of at least 4 pixels a side (28 -> 7, 32 -> 4, 8 -> 4).

    Raises ValueError when no halving fits (odd sides, or sides under 8).
    """
    num = 0
    while num < 3 and height % 2 ** (num + 1) == 0 and width % 2 ** (num + 1) == 0:
        if min(height, width) // 2 ** (num + 1) < 4:
            break
        num += 1
    if num == 0:
        raise ValueError(
            f"the DCGAN networks halve the image at least once down to a grid of at least 4x4; "
            f"an image of {height}x{width} does not allow it (use architecture='mlp')."
        )
    return num


class DCGANGenerator(nn.Module):
    """Radford et al. (2016), fig. 1: a projection of z to a small grid, then stride-2
    transposed convolutions (no pooling, no upsampling layers), batch norm and ReLU in every
    layer but the output, and tanh (or sigmoid) on the output.

    Channels halve at each upsampling and end at `base_channels`: for 28x28 images with
    base_channels=64, z -> 7x7x128 -> 14x14x64 -> 28x28xC.
    """

    event_shape: tuple[int, int, int]
    base_channels: int = 64
    conditioning: str = "none"
    num_classes: int = 1
    output_activation: str = "tanh"
    axis_name: str | None = None
    dtype: Any = None  # the layers' compute dtype; the samples are float32
    weight_init: str = "default"  # a name of WEIGHT_INITS
    # The running averages' decay; 0 makes them the last training batch's statistics (how
    # GAN.standing_statistics reads each batch's).
    batch_norm_momentum: float = 0.9

    @nn.compact
    def __call__(self, z, labels, train: bool):
        chex.assert_rank(z, 2)
        height, width, channels = self.event_shape
        num_up = dcgan_num_upsamples(height, width)
        base_h, base_w = height // 2**num_up, width // 2**num_up
        batch_norm = functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=self.batch_norm_momentum,
            axis_name=self.axis_name,
            dtype=self.dtype,
            **batch_norm_init(self.weight_init),
        )
        deconv = functools.partial(
            precision.conv_transpose,
            kernel_size=(4, 4),
            strides=(2, 2),
            padding="SAME",
            dtype=self.dtype,
            **layer_init(self.weight_init),
        )
        h = _conditioned_latent(z, labels, self.conditioning, self.num_classes)
        features = self.base_channels * 2 ** (num_up - 1)
        dense = precision.dense(
            base_h * base_w * features, dtype=self.dtype, **layer_init(self.weight_init)
        )
        h = dense(h)
        h = nn.relu(batch_norm()(h))
        h = h.reshape((z.shape[0], base_h, base_w, features))  # (B, h0, w0, C0)
        for level in range(num_up - 1):
            h = deconv(self.base_channels * 2 ** (num_up - 2 - level))(h)
            h = nn.relu(batch_norm()(h))
        x = deconv(channels)(h)
        x = _output_activation(x, self.output_activation).astype(jnp.float32)
        chex.assert_shape(x, (z.shape[0], height, width, channels))
        return x


class DCGANDiscriminator(nn.Module):
    """Radford et al. (2016): stride-2 convolutions (no pooling), LeakyReLU(0.2), no
    normalisation on the first layer and `norm` on the others ('batch' as in the paper;
    'layer' for WGAN-GP, whose penalty is per example, Gulrajani et al. 2017, sec. 4), then a
    linear score. Channels double at each layer from `base_channels`.
    """

    base_channels: int = 64
    conditioning: str = "none"
    num_classes: int = 1
    norm: str = "batch"
    spectral_norm: bool = False
    axis_name: str | None = None
    dtype: Any = None  # the layers' compute dtype; the scores are float32
    weight_init: str = "default"  # a name of WEIGHT_INITS

    @nn.compact
    def __call__(self, x, labels, train: bool) -> DiscriminatorOutput:
        chex.assert_rank(x, 4)
        batch, height, width, _ = x.shape
        h = x
        if self.conditioning == "concat":  # the label as K constant feature maps
            maps = jnp.broadcast_to(
                _one_hot(labels, self.num_classes)[:, None, None, :],
                (batch, height, width, self.num_classes),
            )
            h = jnp.concatenate([h, maps], axis=-1)
        for level in range(dcgan_num_upsamples(height, width)):
            conv = precision.conv(
                self.base_channels * 2**level,
                (4, 4),
                strides=(2, 2),
                padding="SAME",
                dtype=self.dtype,
                **layer_init(self.weight_init),
            )
            norm = "none" if level == 0 else self.norm
            h = _normalized(
                conv,
                h,
                norm,
                self.spectral_norm,
                self.axis_name,
                train,
                self.dtype,
                self.weight_init,
            )
            h = nn.leaky_relu(h, _LEAKY_SLOPE)
        h = h.reshape((batch, -1))
        return _heads(
            h,
            self.conditioning,
            self.num_classes,
            self.spectral_norm,
            train,
            self.dtype,
            self.weight_init,
        )
