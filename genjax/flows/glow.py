"""Glow: activation normalisation, the invertible 1x1 convolution, the learned priors, and the
Glow flows.

Kingma & Dhariwal 2018, "Glow: Generative Flow with Invertible 1x1 Convolutions", Sec. 3.1
(actnorm) and Sec. 3.2 (invertible 1x1 convolution, plain and LU-decomposed). Both act on the
last (channel) axis of (B, ..., C) inputs, the same way at every position: images
(B, H, W, C), sequences (B, T, C) and flat vectors (B, D), which are one position of D channels.
Their log-dets are therefore (number of positions) times a per-position term. The coupling
layer that completes a Glow step lives in `genjax.flows.coupling`; `glow_image` and
`glow_flat` assemble the steps into flows.

Glow's learned priors (its code's `learntop` top prior and `split2d_prior`) are written as
bijectors in front of the standard-normal base: a Gaussian prior N(z; mu, sigma^2) is the
standard normal of eps = (z - mu) / sigma plus that map's log-det -sum log sigma, which is the
same log-density. `TopPrior` has learned mu and log sigma; `SplitPrior` computes them from
the kept half of a multi-scale split (`genjax.flows.coupling.MultiScale.split_prior`). Both
start at mu = 0, log sigma = 0: the standard normal.

Both follow the bijector protocol of `genjax.flows.bijector`, and in a `Flow` the forward
direction maps noise to data.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from genjax.flows.bijector import Bijector, Chain, Invert
from genjax.flows.coupling import (
    COUPLINGS,
    SCALES,
    AffineCoupling,
    ConvConditioner,
    MultiScale,
    Squeezed,
    affine,
)

PRIORS = ("standard", "learned")


def _check_channels_last(x: jax.Array, layer: str) -> None:
    """Raises `ValueError` unless x is (B, ..., C), i.e. of rank at least 2."""
    if x.ndim < 2:
        raise ValueError(f"{layer} needs (B, ..., C) inputs of rank >= 2, got shape {x.shape}")


def _num_positions(x: jax.Array) -> int:
    """The number of positions per example of x (B, ..., C): the product of the middle axes."""
    return math.prod(x.shape[1:-1])


def _per_example(log_det_per_position: jax.Array, x: jax.Array) -> jax.Array:
    """A per-position scalar log-det -> the (B,) log-det of the map applied at every position."""
    log_det = _num_positions(x) * log_det_per_position
    return jnp.broadcast_to(log_det, x.shape[:1]).astype(x.dtype)


# ----------------------------------------------------------------------------- actnorm


def standardizing_affine(
    data: jax.Array, inverse: bool, epsilon: float = 1e-6
) -> tuple[jax.Array, jax.Array]:
    """ActNorm's data-dependent initial (log_scale, bias), both (C,), from a (B, ..., C) batch.

    With mean m and (population, ddof=0) standard deviation s of `data` per channel (over every
    axis but the last),

    - `inverse=True` (the data enters the inverse map x = (y - bias) / scale, as in a `Flow`):
      bias = m, log_scale = log s, so the inverse output is standardised;
    - `inverse=False` (the data enters the forward map y = scale * x + bias):
      log_scale = -log s, bias = -m / s, so the forward output is standardised.

    A channel with s <= epsilon (constant over the batch, e.g. an all-zeros example batch) would
    get a scale of order 1 / epsilon; it gets s = 1 instead, so only its mean is removed.
    """
    reduce_axes = tuple(range(data.ndim - 1))
    mean = jnp.mean(data, axis=reduce_axes)  # (C,)
    std = jnp.std(data, axis=reduce_axes)  # (C,)
    log_std = jnp.log(jnp.where(std > epsilon, std, 1.0))
    if inverse:
        return log_std, mean
    return -log_std, -mean * jnp.exp(-log_std)


class ActNorm(Bijector):
    """Activation normalisation (Glow Sec. 3.1): y = exp(log_scale) * x + bias per channel.

    x and y are (B, ..., C); `log_scale` and `bias` are (C,) parameters shared by every
    position, and log |det dy/dx| = (positions per example) * sum(log_scale), (B,).

    Data-dependent initialisation: under `init`, the parameters are set from the batch flowing
    through (`standardizing_affine`) so that the DATA-side activations have zero mean and unit
    variance per channel. In a `Flow` the data enters through the inverse direction, so
    `Flow.init(key, data)` makes the inverse output (y - bias) / scale standardised; a bare
    `ActNorm().init(key, x)` (forward direction) makes the forward output standardised.
    Afterwards the parameters are ordinary trainable parameters: `apply` never re-initialises
    them, whatever batch it sees.

    The init batch must therefore be real data (a few hundred examples in Glow), not the
    all-zeros example batch often used to build parameter shapes. A channel whose init-batch
    standard deviation is at most `epsilon` gets unit scale (only its mean is removed), so an
    all-zeros batch yields the identity map rather than a scale of 1 / epsilon. The statistics
    are those of the batch `init` sees: under data parallelism, initialise on one host batch
    outside `shard_map`.

    Attributes:
      epsilon: standard deviations at or below it count as zero (see above).
    """

    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        _check_channels_last(x, "ActNorm")
        if self.is_initializing():
            init_log_scale, init_bias = standardizing_affine(x, inverse, self.epsilon)
        else:  # the parameters exist: only their shapes matter to Flax here
            init_log_scale = init_bias = jnp.zeros(x.shape[-1:], x.dtype)
        log_scale = self.param("log_scale", lambda _key: init_log_scale)  # (C,)
        bias = self.param("bias", lambda _key: init_bias)  # (C,)
        log_det = _per_example(jnp.sum(log_scale), x)  # (B,)
        if inverse:
            return (x - bias) * jnp.exp(-log_scale), -log_det
        return x * jnp.exp(log_scale) + bias, log_det


# ----------------------------------------------------------------------------- 1x1 convolution


def random_rotation(seed: int, num_channels: int) -> np.ndarray:
    """A fixed random orthogonal (C, C) float64 matrix, Haar-distributed: the QR decomposition of
    a Gaussian matrix from `np.random.default_rng(seed)`, with the signs of R's diagonal moved
    into Q. Its determinant is +1 or -1."""
    gaussian = np.random.default_rng(seed).standard_normal((num_channels, num_channels))
    q, r = np.linalg.qr(gaussian)
    return q * np.sign(np.diag(r))


class LUFactors(NamedTuple):
    """W = permutation @ lower @ (upper + diag(sign_s * exp(log_s))), all float64 NumPy.

    permutation, lower (unit lower triangular) and upper (strictly upper triangular) are
    (C, C); sign_s and log_s are (C,).
    """

    permutation: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    sign_s: np.ndarray
    log_s: np.ndarray


@functools.lru_cache(maxsize=64)
def lu_factors(seed: int, num_channels: int) -> LUFactors:
    """The Glow Sec. 3.2 factors of `random_rotation(seed, num_channels)`, by
    `scipy.linalg.lu` (W = P L U, s = diag(U)). Cached, and read-only."""
    permutation, lower, upper = scipy.linalg.lu(random_rotation(seed, num_channels))
    s = np.diag(upper)
    factors = LUFactors(permutation, lower, np.triu(upper, k=1), np.sign(s), np.log(np.abs(s)))
    for array in factors:
        array.setflags(write=False)
    return factors


def _constant(value) -> Callable[[jax.Array], jax.Array]:
    """A Flax initialiser that returns the float32 array of `value`, whatever the key."""
    return lambda _key: jnp.asarray(value, jnp.float32)


class InvConv1x1(Bijector):
    """The invertible 1x1 convolution (Glow Sec. 3.2): y = W x at every position.

    x and y are (B, ..., C) (flat (B, D) inputs are one position of D channels); W is (C, C) and
    acts on the channel vector, y[..., c] = sum_k W[c, k] x[..., k]. log |det dy/dx| =
    (positions per example) * log |det W|, (B,). W starts as the random rotation
    `random_rotation(seed, C)` (log-det 0) in both parametrisations, so layers of one flow need
    different seeds (as `random_permutation` does for `Permute`); the flax init key is unused.

    Parametrisations (trainable parameters in 'params'):

    - `lu=False`: 'kernel' (C, C) is W; log |det W| by `jnp.linalg.slogdet` and the inverse by
      `jnp.linalg.inv`, O(C^3) per call.
    - `lu=True`: W = P L (U + diag(sign_s * exp(log_s))) with L unit lower triangular and U
      strictly upper triangular; log |det W| = sum(log_s), O(C) per call, and the inverse by
      triangular solves. Parameters 'lower' and 'upper' (C, C), of which only the strictly
      lower and strictly upper parts are used (the rest gets zero gradient), and 'log_s' (C,),
      initialised from `lu_factors(seed, C)`. The permutation P and the signs sign_s are not
      trained; they are NumPy constants recomputed from (seed, C) by `lu_factors`, not
      variables, so they are in no collection an optimizer or a checkpoint could touch and
      callers need no `mutable=` or extra collections in `init`/`apply`.

    Attributes:
      lu: use the LU-decomposed parametrisation.
      seed: seeds the initial rotation (and, with `lu`, the fixed P and sign_s).
    """

    lu: bool = False
    seed: int = 0

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        _check_channels_last(x, "InvConv1x1")
        if self.lu:
            kernel, kernel_inverse, log_abs_det = self._lu_kernel(x.shape[-1])
        else:
            kernel, kernel_inverse, log_abs_det = self._plain_kernel(x.shape[-1])
        log_det = _per_example(log_abs_det, x)  # (B,)
        if inverse:
            return jnp.einsum("...k,ck->...c", x, kernel_inverse), -log_det
        return jnp.einsum("...k,ck->...c", x, kernel), log_det

    def _plain_kernel(self, num_channels: int):
        """(W, W^{-1}, log |det W|) with W the 'kernel' parameter."""
        kernel = self.param("kernel", _constant(random_rotation(self.seed, num_channels)))
        return kernel, jnp.linalg.inv(kernel), jnp.linalg.slogdet(kernel)[1]

    def _lu_kernel(self, num_channels: int):
        """(W, W^{-1}, log |det W|) from the LU parameters and the constants P, sign_s."""
        factors = lu_factors(self.seed, num_channels)
        lower = self.param("lower", _constant(factors.lower - np.eye(num_channels)))
        upper = self.param("upper", _constant(factors.upper))
        log_s = self.param("log_s", _constant(factors.log_s))  # (C,)
        permutation = jnp.asarray(factors.permutation, jnp.float32)
        lower = jnp.tril(lower, k=-1) + jnp.eye(num_channels)
        upper = jnp.triu(upper, k=1) + jnp.diag(jnp.asarray(factors.sign_s) * jnp.exp(log_s))
        kernel = permutation @ lower @ upper
        # W^{-1} = upper^{-1} lower^{-1} P^T, by two triangular solves.
        lower_inverse_pt = jax.scipy.linalg.solve_triangular(
            lower, permutation.T, lower=True, unit_diagonal=True
        )
        kernel_inverse = jax.scipy.linalg.solve_triangular(upper, lower_inverse_pt, lower=False)
        return kernel, kernel_inverse, jnp.sum(log_s)


# ----------------------------------------------------------------------------- learned priors


class TopPrior(Bijector):
    """Glow's learned top prior N(z; mu, exp(log_sigma)^2) as a bijector: forward (noise ->
    data) z = eps * exp(log_sigma) + mu, log-det sum(log_sigma), (B,); inverse
    eps = (z - mu) * exp(-log_sigma), log-det -sum(log_sigma).

    `mu` and `log_sigma` are parameters of the event's shape (x.shape[1:]), zero-initialised,
    so a new prior is the standard normal. Glow's code (`learntop`) obtains them from a
    zero-initialised 3x3 convolution of a zero input with an edge-padding channel, i.e. per
    channel with separate values at the borders; a parameter per position and channel covers
    that. Unconditional here (Glow can add a class embedding). `context` is ignored.
    """

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        mean = self.param("mean", nn.initializers.zeros_init(), x.shape[1:])
        log_scale = self.param("log_scale", nn.initializers.zeros_init(), x.shape[1:])
        return affine(x, jnp.broadcast_to(log_scale, x.shape), mean, inverse)


class SplitPrior(Bijector):
    """Glow's split prior (`split2d_prior`) for the factored-out half z of a multi-scale level,
    as a bijector conditioned on the kept half h = `context` (B, H, W, C_h):

        (mu, log_sigma) = conv3x3(h),   z ~ N(mu, exp(log_sigma)^2) elementwise,

    forward (noise -> data) z = eps * exp(log_sigma) + mu with log-det sum(log_sigma), inverse
    eps = (z - mu) * exp(-log_sigma) with log-det -sum(log_sigma), (B,). z is (B, H, W, C).
    The convolution (a `ConvConditioner` without hidden layers, computing in `dtype`) is
    zero-initialised, so a new prior is the standard normal, as in Glow. Glow's code also
    rescales the convolution's output by exp(3 * a learned per-channel log-scale); omitted.
    """

    dtype: Any = None

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        if context is None or context.shape[:-1] != x.shape[:-1]:
            raise ValueError(
                "SplitPrior needs the kept half as context, (B, H, W, C_h) matching the "
                f"factored half {x.shape} except in channels; got "
                f"{None if context is None else context.shape}"
            )
        conv = ConvConditioner(
            hidden_channels=0, num_hidden_layers=0, out_channels=2 * x.shape[-1], dtype=self.dtype
        )
        stats = conv(context)  # (B, H, W, 2C)
        mean, log_scale = jnp.split(stats, 2, axis=-1)  # (B, H, W, C) each
        return affine(x, log_scale, mean, inverse)


# ----------------------------------------------------------------------------- builders


def check_glow_options(scale: str, coupling: str, prior: str) -> None:
    """Raises ValueError naming the option unless each is one of SCALES, COUPLINGS, PRIORS."""
    for name, value, allowed in (
        ("scale", scale, SCALES),
        ("coupling", coupling, COUPLINGS),
        ("prior", prior, PRIORS),
    ):
        if value not in allowed:
            raise ValueError(f"Glow {name}={value!r}; expected one of {allowed}")


def glow_steps(
    num_steps: int,
    mask: str,
    lu: bool,
    seed: int,
    scale: str = "sigmoid",
    coupling: str = "affine",
    **coupling_fields,
) -> Bijector:
    """`num_steps` Glow steps, returned noise -> data. In the data -> noise direction each
    step is ActNorm -> invertible 1x1 convolution -> coupling (Kingma & Dhariwal 2018, Sec. 3,
    Table 1): `coupling='affine'` with `scale` ('sigmoid' is Glow's; 'tanh' RealNVP's, which
    can also expand) or 'additive' (NICE's); couplings alternate parity, and each 1x1
    convolution gets its own seed (`seed + index`)."""
    steps = []
    for index in range(num_steps):
        steps += [
            ActNorm(),
            InvConv1x1(lu=lu, seed=seed + index),
            AffineCoupling(
                mask=mask,
                parity=index % 2 == 1,
                scale=scale,
                coupling=coupling,
                **coupling_fields,
            ),
        ]
    return Invert(Chain(steps))


def glow_image(
    num_scales: int = 2,
    steps_per_scale: int = 4,
    hidden_channels: int = 32,
    num_hidden_layers: int = 2,
    lu: bool = True,
    dtype: Any = None,
    scale: str = "sigmoid",
    coupling: str = "affine",
    prior: str = "standard",
) -> Bijector:
    """Glow's multi-scale flow for (B, H, W, C) images (Kingma & Dhariwal 2018, Fig. 2),
    returned noise -> data; H and W must be divisible by 2^num_scales.

    Data -> noise, per level: squeeze, `steps_per_scale` steps on the squeezed tensor with
    channel-split couplings (`scale`, `coupling`: see `glow_steps`), then (except at the last
    level) factor out half of the channels (`MultiScale`). With `prior='learned'` each
    factored-out half gets Glow's `SplitPrior` given the kept half, and the last level's output
    a `TopPrior`; with 'standard' every latent is N(0, 1). Sized for CPU by default; the
    paper's conditioners are 512 channels wide.
    """
    check_glow_options(scale, coupling, prior)
    if num_scales < 1 or steps_per_scale < 1:
        raise ValueError(
            f"glow_image needs num_scales and steps_per_scale >= 1; got {num_scales}, "
            f"{steps_per_scale}"
        )
    fields = dict(
        hidden_channels=hidden_channels,
        num_hidden_layers=num_hidden_layers,
        dtype=dtype,
        scale=scale,
        coupling=coupling,
    )
    learned = prior == "learned"
    seed = 1000 * num_scales
    top = glow_steps(steps_per_scale, "channel", lu, seed, **fields)
    flow = Squeezed(Chain([TopPrior(), top]) if learned else top)
    for level in range(num_scales - 1):
        steps = glow_steps(steps_per_scale, "channel", lu, 1000 * level, **fields)
        split_prior = SplitPrior(dtype=dtype) if learned else None
        flow = MultiScale(transform=Squeezed(steps), inner=flow, split_prior=split_prior)
    return flow


def glow_flat(
    num_dims: int,
    num_steps: int = 8,
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    lu: bool = True,
    dtype: Any = None,
    scale: str = "sigmoid",
    coupling: str = "affine",
    prior: str = "standard",
) -> Bijector:
    """Glow steps on flat (B, num_dims) data (ActNorm, 1x1 convolution as a learned
    num_dims x num_dims rotation, 'half'-mask couplings with `scale` and `coupling`), returned
    noise -> data; `prior='learned'` puts a `TopPrior` under them (there are no splits)."""
    check_glow_options(scale, coupling, prior)
    if num_dims < 2 or num_steps < 1:
        raise ValueError(
            f"glow_flat needs num_dims >= 2 and num_steps >= 1; got {num_dims}, {num_steps}"
        )
    fields = dict(
        hidden_features=hidden_features,
        num_hidden_layers=num_hidden_layers,
        dtype=dtype,
        scale=scale,
        coupling=coupling,
    )
    steps = glow_steps(num_steps, "half", lu, 0, **fields)
    return Chain([TopPrior(), steps]) if prior == "learned" else steps
