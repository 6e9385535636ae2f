"""Neural spline flows: monotone rational-quadratic splines (Durkan, Bekasov, Murray &
Papamakarios 2019), in coupling and autoregressive form.

Each transformed dimension goes through a monotone rational-quadratic spline on [-B, B]
(`tail_bound`) with K bins, and through the identity outside it ("linear tails", Sec. 3.1):
the spline's derivatives at -B and B are fixed to 1, so the map and its derivative are
continuous at the boundaries. The K widths and K heights are a softmax of the conditioner's
raw outputs (each at least `MIN_BIN_SIZE` of the interval), the K - 1 inner knot derivatives a
softplus of them (at least `MIN_DERIVATIVE`). Within bin k, with xi = (x - x_k) / w_k,
s_k = h_k / w_k and knot derivatives d_k, d_{k+1} (the paper's eq. 4-6):

    y = y_k + h_k (s_k xi^2 + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))
    dy/dx = s_k^2 (d_{k+1} xi^2 + 2 s_k xi (1 - xi) + d_k (1 - xi)^2)
            / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))^2

and the inverse solves the quadratic for xi in closed form (eq. 29-32, the root that is
numerically stable). The inner derivatives are offset so that a zero raw output gives
d = 1, and with equal bins that is the identity map: a layer whose conditioner's last layer is
zero-initialised starts as the identity, as the other flows here do.

Directions follow `genjax.flows.bijector`: the builders return noise -> data bijectors whose
density direction computes the paper's spline f (data -> noise) in one pass.
"""

from __future__ import annotations

from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.flows.autoregressive import MADEConditioner
from genjax.flows.bijector import Bijector, Chain, Invert, Permute, reverse_permutation
from genjax.flows.coupling import MLPConditioner, alternate_indices

MIN_BIN_SIZE = 1e-3
MIN_DERIVATIVE = 1e-3
# softplus(DERIVATIVE_OFFSET) + MIN_DERIVATIVE = 1: a zero raw derivative is a slope of 1.
DERIVATIVE_OFFSET = float(np.log(np.expm1(1.0 - MIN_DERIVATIVE)))
FORMS = ("coupling", "autoregressive")


def num_spline_params(num_bins: int) -> int:
    """Raw outputs per transformed dimension: K widths, K heights, K - 1 inner derivatives."""
    return 3 * num_bins - 1


def _knots(raw: jax.Array, bound: float) -> tuple[jax.Array, jax.Array]:
    """(K + 1 knot positions on [-bound, bound], K bin sizes) from (..., K) raw sizes."""
    num_bins = raw.shape[-1]
    fractions = MIN_BIN_SIZE + (1.0 - MIN_BIN_SIZE * num_bins) * jax.nn.softmax(raw, axis=-1)
    cumulative = jnp.cumsum(fractions, axis=-1)
    zeros = jnp.zeros_like(cumulative[..., :1])
    knots = 2.0 * bound * jnp.concatenate([zeros, cumulative], axis=-1) - bound
    knots = knots.at[..., 0].set(-bound).at[..., -1].set(bound)  # exact ends despite rounding
    return knots, knots[..., 1:] - knots[..., :-1]


def _select(values: jax.Array, index: jax.Array) -> jax.Array:
    """values[..., index] per element: (..., N), (...) int -> (...)."""
    return jnp.take_along_axis(values, index[..., None], axis=-1)[..., 0]


def rational_quadratic_spline(
    x: jax.Array,
    raw_widths: jax.Array,
    raw_heights: jax.Array,
    raw_derivatives: jax.Array,
    inverse: bool = False,
    tail_bound: float = 3.0,
) -> tuple[jax.Array, jax.Array]:
    """The monotone rational-quadratic spline with linear tails, elementwise.

    x: (...); raw_widths, raw_heights: (..., K); raw_derivatives: (..., K - 1). Returns
    (y, log |dy/dx|) for the forward spline, or (x', log |dx'/dy|) of the inverse map with
    `inverse`, both shaped like x. Outside [-tail_bound, tail_bound] the map is the identity
    with log-derivative 0.
    """
    num_bins = raw_widths.shape[-1]
    chex.assert_shape(raw_heights, (*x.shape, num_bins))
    chex.assert_shape(raw_derivatives, (*x.shape, num_bins - 1))
    knots_x, widths = _knots(raw_widths, tail_bound)
    knots_y, heights = _knots(raw_heights, tail_bound)
    inner = MIN_DERIVATIVE + jax.nn.softplus(raw_derivatives + DERIVATIVE_OFFSET)
    ones = jnp.ones_like(inner[..., :1])
    derivatives = jnp.concatenate([ones, inner, ones], axis=-1)  # (..., K + 1)

    inside = jnp.abs(x) < tail_bound
    value = jnp.clip(x, -tail_bound, tail_bound)  # the tails never reach the spline's maths
    knots_in = knots_y if inverse else knots_x
    bin_index = jnp.clip(jnp.sum(value[..., None] >= knots_in[..., 1:-1], axis=-1), 0, num_bins - 1)
    x_k, w_k = _select(knots_x, bin_index), _select(widths, bin_index)
    y_k, h_k = _select(knots_y, bin_index), _select(heights, bin_index)
    d_k, d_next = _select(derivatives, bin_index), _select(derivatives, bin_index + 1)
    slope = h_k / w_k
    curvature = d_next + d_k - 2.0 * slope

    if inverse:
        offset = value - y_k
        a = h_k * (slope - d_k) + offset * curvature
        b = h_k * d_k - offset * curvature
        c = -slope * offset
        discriminant = jnp.maximum(b**2 - 4.0 * a * c, 0.0)
        xi = jnp.clip((2.0 * c) / (-b - jnp.sqrt(discriminant)), 0.0, 1.0)
        out = x_k + xi * w_k
    else:
        xi = (value - x_k) / w_k  # in [0, 1]: value lies in bin k (no clip: exact slopes at knots)
        spread = xi * (1.0 - xi)
        out = y_k + h_k * (slope * xi**2 + d_k * spread) / (slope + curvature * spread)
    spread = xi * (1.0 - xi)
    denominator = slope + curvature * spread
    numerator = slope**2 * (d_next * xi**2 + 2.0 * slope * spread + d_k * (1.0 - xi) ** 2)
    log_derivative = jnp.log(numerator) - 2.0 * jnp.log(denominator)
    if inverse:
        log_derivative = -log_derivative
    return jnp.where(inside, out, x), jnp.where(inside, log_derivative, 0.0)


def _split_raw(raw: jax.Array, num_bins: int):
    """(..., 3K - 1) -> widths (..., K), heights (..., K), derivatives (..., K - 1)."""
    return raw[..., :num_bins], raw[..., num_bins : 2 * num_bins], raw[..., 2 * num_bins :]


def _spline(values, raw, num_bins, inverse, tail_bound):
    """The spline of `values` (B, D) with raw parameters (B, D, 3K - 1): (out, log_det (B,))."""
    out, log_derivative = rational_quadratic_spline(
        values, *_split_raw(raw, num_bins), inverse=inverse, tail_bound=tail_bound
    )
    return out, jnp.sum(log_derivative, axis=-1)


def _check_spline_fields(num_bins: int, tail_bound: float) -> None:
    if num_bins < 2:
        raise ValueError(f"num_bins={num_bins!r} must be at least 2")
    if not tail_bound > 0:
        raise ValueError(f"tail_bound={tail_bound!r} must be positive")


class SplineCoupling(Bijector):
    """The rational-quadratic coupling layer (RQ-NSF (C), Durkan et al. 2019, Sec. 3.2).

    The event (B, ...) is flattened and split by `mask` ('half': the first D // 2 kept, for
    (B, D) data; 'alternate': NICE's even / odd partition, any shape; `parity` swaps); the kept
    half x_a conditions, through an MLP whose last layer is zero-initialised, the splines of
    the transformed half: y_b = RQS(x_b; theta(x_a)), y_a = x_a. `forward` is the spline,
    `inverse` its closed-form inverse; log-dets are the sums of the log-derivatives.
    `context` is ignored.
    """

    mask: str = "alternate"
    parity: bool = False
    num_bins: int = 8
    tail_bound: float = 3.0
    hidden_features: int = 64
    num_hidden_layers: int = 2
    dtype: Any = None

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        _check_spline_fields(self.num_bins, self.tail_bound)
        if self.mask not in ("half", "alternate"):
            raise ValueError(f"SplineCoupling.mask={self.mask!r}; expected 'half' or 'alternate'")
        flat = jnp.asarray(x).reshape(x.shape[0], -1)
        num_dims = flat.shape[1]
        if num_dims < 2:
            raise ValueError(f"SplineCoupling needs at least 2 entries per example, got {x.shape}")
        if self.mask == "alternate":
            kept_index, moved_index = alternate_indices(num_dims, self.parity)
        else:
            half = np.arange(num_dims)
            first, second = half[: num_dims // 2], half[num_dims // 2 :]
            kept_index, moved_index = (second, first) if self.parity else (first, second)
        per_dim = num_spline_params(self.num_bins)
        conditioner = MLPConditioner(
            self.hidden_features, self.num_hidden_layers, len(moved_index) * per_dim, self.dtype
        )
        raw = conditioner(flat[:, kept_index]).reshape(x.shape[0], len(moved_index), per_dim)
        moved, log_det = _spline(flat[:, moved_index], raw, self.num_bins, inverse, self.tail_bound)
        return flat.at[:, moved_index].set(moved).reshape(x.shape), log_det


class SplineAutoregressive(Bijector):
    """The rational-quadratic autoregressive layer (RQ-NSF (AR), Durkan et al. 2019): the
    spline of x_d conditioned on x_<d by a MADE (`MADEConditioner`, 3K - 1 outputs per
    dimension, last layer zero-initialised), on (B, ...) flattened to (B, D).

    As MAF: `inverse` (density, data -> noise) is one conditioner pass, u_d = RQS(x_d;
    theta(x_<d)); `forward` (sampling) solves for x by D passes inside one `fori_loop` (after
    pass k every dimension of degree <= k is exact). `context` (B, C) conditions the MADE.
    """

    hidden_sizes: tuple[int, ...] = (64, 64)
    num_bins: int = 8
    tail_bound: float = 3.0
    dtype: Any = None

    def setup(self):
        _check_spline_fields(self.num_bins, self.tail_bound)
        self.conditioner = MADEConditioner(
            tuple(self.hidden_sizes), num_spline_params(self.num_bins), dtype=self.dtype
        )

    def __call__(self, x, inverse=False, context=None):
        """x (B, *event) -> (y, log_det (B,)); see the class docstring."""
        flat = x.reshape(x.shape[0], -1)  # (B, D)
        if inverse:  # data -> noise: the conditioner reads its input, one pass
            raw = self.conditioner(flat, context)
            out, log_det = _spline(flat, raw, self.num_bins, False, self.tail_bound)
            return out.reshape(x.shape), log_det

        def step(_, carry):  # noise -> data: x <- RQS^-1(u; theta(x)), exact after D passes
            solution, _ = carry
            raw = self.conditioner(solution, context)
            return _spline(flat, raw, self.num_bins, True, self.tail_bound)

        if self.is_initializing():  # parameters cannot be created inside the loop's trace
            self.conditioner(flat, context)
        start = (jnp.zeros_like(flat), jnp.zeros(flat.shape[:1], flat.dtype))
        solution, log_det = jax.lax.fori_loop(0, flat.shape[1], step, start)
        return solution.reshape(x.shape), log_det


def nsf_flow(
    num_dims: int,
    num_layers: int = 4,
    form: str = "coupling",
    hidden_features: int = 64,
    num_hidden_layers: int = 2,
    num_bins: int = 8,
    tail_bound: float = 3.0,
    dtype: Any = None,
) -> Bijector:
    """A neural spline flow on (B, ...) events of D = `num_dims` entries, noise -> data.

    form='coupling': `num_layers` `SplineCoupling`s over the alternating even / odd partition
    (any event shape, flattened), inside `Invert` so the density direction computes the
    splines; 'autoregressive': `num_layers` `SplineAutoregressive` layers with MADEs of
    `num_hidden_layers` x `hidden_features` and the dimensions reversed between layers.
    The paper's image models (multi-scale Glow-style architectures with 1x1 convolutions) and
    its LU-linear layers between tabular couplings are not built here.
    """
    if form not in FORMS:
        raise ValueError(f"nsf_flow form={form!r}; expected one of {FORMS}")
    if num_layers < 1 or num_dims < 2:
        raise ValueError(
            f"nsf_flow needs num_layers >= 1 and num_dims >= 2; got {num_layers}, {num_dims}"
        )
    spline = dict(num_bins=num_bins, tail_bound=tail_bound, dtype=dtype)
    if form == "coupling":
        return Invert(
            Chain(
                [
                    SplineCoupling(
                        parity=index % 2 == 1,
                        hidden_features=hidden_features,
                        num_hidden_layers=num_hidden_layers,
                        **spline,
                    )
                    for index in range(num_layers)
                ]
            )
        )
    layers: list[Bijector] = []
    for index in range(num_layers):
        if index > 0:
            layers.append(Permute(reverse_permutation(num_dims)))
        layers.append(SplineAutoregressive((hidden_features,) * num_hidden_layers, **spline))
    return Chain(layers)
