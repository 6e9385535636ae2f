"""Planar and radial flows (Rezende & Mohamed 2015, "Variational Inference with Normalizing
Flows", Sec. 4.1 and Appendix A).

On events flattened to (B, D):

    planar:  f(z) = z + u_hat h(w.z + b),               h = tanh,
    radial:  f(z) = z + beta h(alpha, r) (z - z0),      h = 1 / (alpha + r),  r = |z - z0|.

Both are invertible only under a constraint on their parameters, which is built into the
parameterisation (Appendix A), so any raw parameter values give an invertible layer:

    planar:  w.u_hat >= -1, via u_hat = u + (m(w.u) - w.u) w / |w|^2;
    radial:  alpha > 0 and beta >= -alpha, via alpha = softplus(alpha_raw),
             beta = -alpha + softplus(beta_raw).

Neither inverse has a closed form, so `inverse` raises `NoInverseError`: the layers are meant
for the forward direction (noise -> data), e.g. a VAE's flow posterior through
`Flow.sample_and_log_prob`, whose log q(x) = log N(z) - sum_k log |det df_k/dz|.

Amortisation (as in R&M's VAEs, where the inference network outputs the flow parameters): with a
(B, C) `context` one `nn.Dense` (named 'conditioner') maps it to every raw parameter of the
layer, one set per example; without one they are global learned parameters. A layer must be
called the same way (with or without context) as at `init`.
"""

from __future__ import annotations

import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.flows.bijector import Bijector, Chain, NoInverseError
from genjax.nn import precision

# softplus^{-1}(1) = log(e - 1): the shift that puts m(0) at 0 (see `planar_constraint_m`).
_SOFTPLUS_INVERSE_OF_ONE = math.log(math.e - 1.0)
# Above this, softplus(a + log(e - 1)) - 1 has no cancellation and expm1(a) could overflow.
_M_SWITCH = 30.0


def planar_constraint_m(a: jax.Array) -> jax.Array:
    """m(a) = -1 + softplus(a + log(e - 1)), elementwise: a bijection R -> (-1, inf).

    R&M's Appendix A uses m(a) = -1 + softplus(a). The shift by softplus^{-1}(1) changes only
    where the raw u lands, not the set of reachable flows (both m are bijections onto
    (-1, inf), so w.u_hat ranges over the same values): with it m(0) = 0, so small random u, w
    give u_hat ~ u and a layer near the identity. With the paper's m, m(0) = log 2 - 1 and
    u_hat ~ -0.31 w / |w|^2 for small u, w: a contraction by 0.69 along w at initialisation
    and gradients of order 1 / |w|^2.

    Computed as log1p((1 - 1/e) expm1(a)) for a < 30, which keeps its relative accuracy near
    a = 0 (u_hat divides m(a) - a by |w|, so an absolute error there would be amplified when
    w is small), and as softplus(a + log(e - 1)) - 1 above.
    """
    capped = jnp.minimum(a, _M_SWITCH)  # keeps expm1 and its gradient finite in both branches
    small = jnp.log1p(-jnp.expm1(-1.0) * jnp.expm1(capped))
    large = jax.nn.softplus(a + _SOFTPLUS_INVERSE_OF_ONE) - 1.0
    return jnp.where(a < _M_SWITCH, small, large)


def planar_u_hat(u: jax.Array, w: jax.Array) -> jax.Array:
    """R&M's Appendix A constraint: u_hat = u + (m(w.u) - w.u) w / |w|^2, so w.u_hat = m(w.u)
    > -1 and the planar map is invertible. u, w: (..., D) -> u_hat (..., D).

    m is `planar_constraint_m`. |w|^2 is floored at the float's smallest normal number only so
    that w = 0 gives u_hat = u (then m(0) - 0 = 0) instead of 0/0.
    """
    w_dot_u = jnp.sum(w * u, axis=-1, keepdims=True)  # (..., 1)
    w_norm_sq = jnp.sum(w * w, axis=-1, keepdims=True)
    w_norm_sq = jnp.maximum(w_norm_sq, jnp.finfo(w.dtype).tiny)
    return u + (planar_constraint_m(w_dot_u) - w_dot_u) * w / w_norm_sq


def radial_alpha_beta(alpha_raw: jax.Array, beta_raw: jax.Array):
    """R&M's Appendix A radial constraint: alpha = softplus(alpha_raw) > 0 and
    beta = -alpha + softplus(beta_raw) >= -alpha. Same shapes in and out."""
    alpha = jax.nn.softplus(alpha_raw)
    return alpha, -alpha + jax.nn.softplus(beta_raw)


def _no_inverse_error(layer: nn.Module) -> NoInverseError:
    """The error `inverse` raises, naming the layer."""
    name = type(layer).__name__
    where = f" ({layer.name!r})" if layer.name else ""
    return NoInverseError(
        f"{name}{where} has no closed-form inverse: its constraint makes it invertible, but "
        "inverting it needs a numerical root search per example, which it does not do. It is "
        "meant for the forward direction only (noise -> data), e.g. as a VAE's flow posterior "
        "through `Flow.sample_and_log_prob`, not through `inverse` or `Flow.log_prob`."
    )


def _raw_parameters(
    layer: nn.Module,
    sizes: dict[str, int],
    num_dims: int,
    init_scale: float,
    context: jax.Array | None,
    batch_size: int,
    dtype=None,
) -> dict[str, jax.Array]:
    """The layer's raw parameters, each (B, size) (per example, from `context`) or (1, size)
    (global, broadcast over the batch), float32. Called from `layer`'s compact `__call__`.

    Global: `layer.param(name)` ~ N(0, init_scale^2 / D) per entry, so a D-vector has norm
    about init_scale. Per example: one `nn.Dense` named 'conditioner', context (B, C) ->
    (B, sum(sizes)), split in the order of `sizes`; its kernel has variance init_scale^2 / (D C)
    and its bias the same N(0, init_scale^2 / D), so for a unit-variance context the outputs
    start at the global scale. The conditioner computes in `dtype` (a network, like a MAF's;
    `genjax.nn.precision`), its outputs cast to float32 for the layer's own arithmetic.
    """
    std = init_scale / math.sqrt(num_dims)
    if context is None:
        init = nn.initializers.normal(std)
        return {name: layer.param(name, init, (size,))[None] for name, size in sizes.items()}
    chex.assert_shape(context, (batch_size, None))
    conditioner = precision.dense(
        sum(sizes.values()),
        kernel_init=nn.initializers.variance_scaling(std**2, "fan_in", "normal"),
        bias_init=nn.initializers.normal(std),
        dtype=dtype,
        name="conditioner",
    )
    outputs = conditioner(context).astype(jnp.float32)  # (B, sum(sizes))
    raw, start = {}, 0
    for name, size in sizes.items():
        raw[name] = outputs[:, start : start + size]
        start += size
    return raw


class Planar(Bijector):
    """Planar flow layer (Rezende & Mohamed 2015, Sec. 4.1), forward only.

    forward: z (B, *event) -> f(z) = z + u_hat tanh(w.z + b) on the flattened event (B, D),
    reshaped back, and log |det df/dz| = log |1 + u_hat.psi(z)|, psi = tanh'(w.z + b) w, (B,).

    u_hat = `planar_u_hat(u, w)`, so w.u_hat = m(w.u) > -1 (`planar_constraint_m`) and the
    map is invertible for any u, w, b. The determinant is evaluated as

        1 + (1 - t^2) w.u_hat = t^2 + (1 - t^2) softplus(w.u + log(e - 1)),   t = tanh(w.z + b),

    a sum of two non-negative terms, so it keeps its relative accuracy all the way to the
    constraint boundary, and its log is accurate to float rounding without a floor. (The
    direct `log1p((1 - t^2) w.u_hat)` cancels there: once w.u_hat rounds to -1 the argument is
    -(1 - t^2), and t^2 below the float epsilon is lost.) It is zero, and log_det -inf, only
    when w.z + b == 0 exactly and softplus underflows (w.u below about -100 in float32), the
    edge of invertibility itself.

    Parameters: global u (D,), w (D,), b (1,) ~ N(0, init_scale^2 / D); with a (B, C)
    `context`, per-example u, w (B, D), b (B, 1) from one `nn.Dense(2 D + 1)` of the context
    (amortised). A new layer is close to, not exactly, the identity.

    Attributes:
      init_scale: about the norm of the initial u and w.
      dtype: the amortised conditioner's compute dtype (None: float32); the layer's own
        arithmetic and log-det stay float32.
    """

    init_scale: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        """x (B, *event) [, context (B, C)] -> (f(x) (B, *event), log_det (B,))."""
        if inverse:
            raise _no_inverse_error(self)
        batch_size = x.shape[0]
        z = x.reshape(batch_size, -1)  # (B, D)
        num_dims = z.shape[1]
        sizes = {"u": num_dims, "w": num_dims, "b": 1}
        raw = _raw_parameters(
            self, sizes, num_dims, self.init_scale, context, batch_size, self.dtype
        )
        u, w, b = raw["u"], raw["w"], raw["b"][:, 0]  # (B|1, D), (B|1, D), (B|1,)
        u_hat = planar_u_hat(u, w)  # (B|1, D)
        t = jnp.tanh(jnp.sum(w * z, axis=1) + b)  # (B,)
        y = z + u_hat * t[:, None]  # (B, D)
        softplus_m = jax.nn.softplus(jnp.sum(w * u, axis=1) + _SOFTPLUS_INVERSE_OF_ONE)  # 1 + m
        log_det = jnp.log(t**2 + (1.0 - t**2) * softplus_m)  # (B,)
        return y.reshape(x.shape), log_det


def _safe_norm(values: jax.Array) -> jax.Array:
    """|values| over the last axis, (B, D) -> (B,), with a zero (not NaN) gradient at 0."""
    squared = jnp.sum(values**2, axis=-1)
    positive = squared > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1.0)), 0.0)


class Radial(Bijector):
    """Radial flow layer (Rezende & Mohamed 2015, Sec. 4.1), forward only.

    forward: z (B, *event) -> f(z) = z + beta h(alpha, r) (z - z0) on the flattened event
    (B, D), h = 1 / (alpha + r), r = |z - z0|, reshaped back, with

        log |det df/dz| = (D - 1) log(1 + beta h) + log(1 + beta h + beta h'(alpha, r) r),

    (B,). alpha, beta = `radial_alpha_beta(alpha_raw, beta_raw)`, so beta >= -alpha and the
    map is invertible for any raw values. With s = softplus(beta_raw) = alpha + beta the two
    factors are evaluated as

        1 + beta h = (r + s) / (alpha + r),
        1 + beta h + beta h' r = (r (r + 2 alpha) + alpha s) / (alpha + r)^2,

    sums of non-negative terms, accurate at the constraint boundary (beta -> -alpha). r is
    computed with a gradient-safe norm, so f and its Jacobian are finite at z = z0 too.

    Parameters: global z0 (D,), alpha_raw (1,), beta_raw (1,) ~ N(0, init_scale^2 / D) (so
    alpha ~ log 2 and beta ~ 0); with a (B, C) `context`, per-example z0 (B, D),
    alpha_raw, beta_raw (B, 1) from one `nn.Dense(D + 2)` of the context (amortised). A new
    layer is close to, not exactly, the identity.

    Attributes:
      init_scale: about the norm of the initial z0, and the scale of the raw alpha, beta.
      dtype: as `Planar`'s.
    """

    init_scale: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        """x (B, *event) [, context (B, C)] -> (f(x) (B, *event), log_det (B,))."""
        if inverse:
            raise _no_inverse_error(self)
        batch_size = x.shape[0]
        z = x.reshape(batch_size, -1)  # (B, D)
        num_dims = z.shape[1]
        sizes = {"z0": num_dims, "alpha_raw": 1, "beta_raw": 1}
        raw = _raw_parameters(
            self, sizes, num_dims, self.init_scale, context, batch_size, self.dtype
        )
        alpha, beta = radial_alpha_beta(raw["alpha_raw"][:, 0], raw["beta_raw"][:, 0])  # (B|1,)
        alpha_plus_beta = jax.nn.softplus(raw["beta_raw"][:, 0])  # s, without cancellation
        offset = z - raw["z0"]  # (B, D)
        r = _safe_norm(offset)  # (B,)
        y = z + (beta / (alpha + r))[:, None] * offset
        log_alpha_plus_r = jnp.log(alpha + r)
        log_radial_factor = jnp.log(r * (r + 2.0 * alpha) + alpha * alpha_plus_beta)
        log_det = (num_dims - 1) * (jnp.log(r + alpha_plus_beta) - log_alpha_plus_r) + (
            log_radial_factor - 2.0 * log_alpha_plus_r
        )
        return y.reshape(x.shape), log_det


def planar_flow(num_layers: int, init_scale: float = 0.1, dtype=None) -> Chain:
    """K = `num_layers` `Planar` layers in a `Chain` (R&M 2015's planar flow of length K),
    forward only: f_K o ... o f_1 on (B, *event), log-dets summed to (B,). Every layer sees the
    same `context`, if any, through its own conditioner (computing in `dtype`)."""
    return _layer_chain(Planar, num_layers, init_scale, dtype)


def radial_flow(num_layers: int, init_scale: float = 0.1, dtype=None) -> Chain:
    """K = `num_layers` `Radial` layers in a `Chain` (R&M 2015's radial flow of length K);
    the same layout as `planar_flow`."""
    return _layer_chain(Radial, num_layers, init_scale, dtype)


def _layer_chain(layer_class, num_layers: int, init_scale: float, dtype) -> Chain:
    """`num_layers` fresh `layer_class(init_scale, dtype)` layers in a `Chain`."""
    if num_layers < 1:
        raise ValueError(f"num_layers={num_layers} must be at least 1")
    layers = (layer_class(init_scale=init_scale, dtype=dtype) for _ in range(num_layers))
    return Chain(tuple(layers))
