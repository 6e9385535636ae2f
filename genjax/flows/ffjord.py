"""Continuous normalizing flows: FFJORD (Chen, Rubanova, Bettencourt & Duvenaud 2018; Grathwohl,
Chen, Bettencourt, Sutskever & Duvenaud 2019), solved with `diffrax`.

The map is the flow of an ODE dz/dt = f(z, t) over t in [0, T], f a small network; by the
instantaneous change of variables (Chen et al. 2018, Thm. 1) the log-det of the time-T map is
the integrated trace, log |det dz(T)/dz(0)| = int_0^T tr(df/dz(z(t), t)) dt, solved jointly
with z as one augmented ODE by an adaptive Dormand-Prince 5(4) solver (`rtol`, `atol`).

- trace_estimator 'exact': tr(df/dz) from the full Jacobian (D forward-mode passes), for small
  D such as the 2-D toy densities;
- 'gaussian' / 'rademacher': Hutchinson's estimator eps^T (df/dz) eps with one eps ~ N(0, I)
  or uniform on {-1, 1}^D per example, held fixed over the solve (Grathwohl et al. 2019,
  Sec. 3.1); unbiased for the trace, hence for log p(x). It draws from the 'hutchinson' RNG
  stream: apply with `rngs={'hutchinson': key}`.
- gradient 'discretize': backpropagate through the solver's steps ("discretise then
  optimise", diffrax's `DirectAdjoint`; its default `RecursiveCheckpointAdjoint` fails to
  differentiate inside the trainer's `shard_map` with jax 0.10.2 and equinox 0.13.8:
  "Closure-converted function called with different dynamic arguments"); 'adjoint': the
  continuous adjoint ODE solved backwards (`BacksolveAdjoint`, Chen et al.'s method, O(1)
  memory).

Directions follow `genjax.flows.bijector`: `forward` (noise -> data) integrates from t = 0 to
T, `inverse` (data -> noise) from T back to 0; each returns the integrated trace along its own
direction, so the two log-dets are negatives of each other up to the solver's tolerance. The
number of solver steps of the last call is sown as 'ode_steps' in the 'intermediates'
collection (apply with `mutable=['intermediates']` to read it).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from genjax.flows.bijector import Bijector
from genjax.nn import precision

TRACE_ESTIMATORS = ("exact", "gaussian", "rademacher")
GRADIENTS = ("discretize", "adjoint")
# The flow family's model_config fields for FFJORD, with their defaults.
CONFIG_DEFAULTS = {
    "trace_estimator": "exact",
    "ode_gradient": "discretize",
    "ode_rtol": 1e-5,
    "ode_atol": 1e-5,
    "ode_time": 1.0,
    "ode_max_steps": 1000,
}


class Dynamics(nn.Module):
    """f(z, t) for one example: z (D,), t () -> (D,). `num_hidden_layers` tanh layers of
    `hidden_features`, each fed [h, t] (FFJORD's concatenated time); the output layer is
    zero-initialised, so a new flow is the identity map. Computes in `dtype` (None: float32),
    returns float32."""

    hidden_features: int
    num_hidden_layers: int
    num_dims: int
    dtype: Any = None

    @nn.compact
    def __call__(self, z: jax.Array, t: jax.Array) -> jax.Array:
        h = z
        time = jnp.reshape(t, (1,)).astype(z.dtype)
        for _ in range(self.num_hidden_layers):
            layer = precision.dense(self.hidden_features, dtype=self.dtype)
            h = jnp.tanh(layer(jnp.concatenate([h, time])))
        zeros = nn.initializers.zeros_init()
        out = precision.dense(self.num_dims, kernel_init=zeros, bias_init=zeros, dtype=self.dtype)
        return out(jnp.concatenate([h, time.astype(h.dtype)])).astype(jnp.float32)


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"FFJORD.{field}={value!r}; expected one of {allowed}")


class FFJORD(Bijector):
    """A continuous normalizing flow on (B, ...) events, flattened to D; see the module
    docstring. `context` is ignored."""

    hidden_features: int = 64
    num_hidden_layers: int = 3
    time: float = 1.0
    trace_estimator: str = "exact"
    gradient: str = "discretize"
    rtol: float = 1e-5
    atol: float = 1e-5
    max_steps: int = 1000
    dtype: Any = None

    def _check(self) -> None:
        _check_choice("trace_estimator", self.trace_estimator, TRACE_ESTIMATORS)
        _check_choice("gradient", self.gradient, GRADIENTS)
        for field in ("rtol", "atol", "time"):
            if not getattr(self, field) > 0:
                raise ValueError(f"FFJORD.{field}={getattr(self, field)!r} must be positive")

    @nn.compact
    def __call__(self, x, inverse=False, context=None):
        del context
        self._check()
        flat = jnp.asarray(x, jnp.float32).reshape(x.shape[0], -1)
        dynamics = Dynamics(self.hidden_features, self.num_hidden_layers, flat.shape[1], self.dtype)
        dynamics = dynamics.clone(parent=None)  # applied inside the solver as a pure function
        params = self.param(
            "dynamics",
            lambda key: dynamics.init(key, flat[0], jnp.zeros(()))["params"],
        )
        probes = self._probes(flat)
        t0, t1 = (self.time, 0.0) if inverse else (0.0, self.time)
        out, log_det, steps = integrate(
            lambda z, t, p: dynamics.apply({"params": p}, z, t),
            params,
            flat,
            probes,
            t0,
            t1,
            self.trace_estimator,
            self.gradient,
            self.rtol,
            self.atol,
            self.max_steps,
        )
        self.sow("intermediates", "ode_steps", steps)
        return out.reshape(x.shape).astype(x.dtype), log_det

    def _probes(self, flat: jax.Array) -> jax.Array:
        """Hutchinson's eps (B, D), one per example (zeros for the exact trace, unused)."""
        if self.trace_estimator == "exact":
            return jnp.zeros_like(flat)
        key = self.make_rng("hutchinson")
        if self.trace_estimator == "gaussian":
            return jax.random.normal(key, flat.shape)
        return jax.random.rademacher(key, flat.shape).astype(flat.dtype)


def _divergence(field, params, z, t, probe, estimator: str):
    """(f(z, t), tr(df/dz) or its Hutchinson estimate) for one example z (D,)."""
    if estimator == "exact":
        value = field(z, t, params)
        jacobian = jax.jacfwd(lambda v: field(v, t, params))(z)
        return value, jnp.trace(jacobian)
    value, jacobian_probe = jax.jvp(lambda v: field(v, t, params), (z,), (probe,))
    return value, jnp.dot(probe, jacobian_probe)


def integrate(
    field,
    params,
    z0: jax.Array,
    probes: jax.Array,
    t0: float,
    t1: float,
    trace_estimator: str = "exact",
    gradient: str = "discretize",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 1000,
):
    """Solves dz/dt = field(z, t, params), d(delta)/dt = tr(d field / dz) from t0 to t1 for a
    batch z0 (B, D) with Dopri5 and a PID step-size controller: returns (z(t1) (B, D),
    delta(t1) (B,), the solver's step count). delta(t1) is log |det dz(t1)/dz(t0)|."""
    # Imported here, not at the top: diffrax and equinox add ~0.6 s to every process that
    # imports the model registry, and only FFJORD needs them.
    import diffrax

    def vector_field(t, state, args):
        z, _ = state
        weights, eps = args
        divergence = jax.vmap(_divergence, in_axes=(None, None, 0, None, 0, None))
        dz, trace = divergence(field, weights, z, t, eps, trace_estimator)
        return dz, trace

    adjoint = (
        diffrax.BacksolveAdjoint(solver=diffrax.Dopri5())
        if gradient == "adjoint"
        else diffrax.DirectAdjoint()
    )
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        diffrax.Dopri5(),
        t0=t0,
        t1=t1,
        dt0=None,
        y0=(z0, jnp.zeros(z0.shape[:1], z0.dtype)),
        args=(params, probes),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        adjoint=adjoint,
        max_steps=max_steps,
    )
    z1, delta = solution.ys
    return z1[-1], delta[-1], solution.stats["num_steps"]
