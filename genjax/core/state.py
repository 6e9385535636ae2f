"""The train state: one pytree that holds everything a run needs to continue."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Step counter, parameters, optimizer state, base key and family extras.

    Attributes:
      step: int32 scalar, the number of updates applied so far.
      params: the model's parameters (a Flax variables pytree or a plain dict).
      opt_state: the optax state for `params`.
      rng: the run's base key as raw key data (uint32 (2,)); keys are derived from it with
        `fold_in` on the step and the example index, never reused.
      extras: family-specific state (persistent Gibbs chains, a second optimizer state,
        EMA weights, ...); an empty dict when the family has none.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    extras: dict

    @classmethod
    def create(
        cls, params, tx: optax.GradientTransformation, key: jax.Array, extras=None
    ) -> TrainState:
        """A step-0 state; `key` is a typed key (`jax.random.key(seed)`)."""
        return cls(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            rng=jax.random.key_data(key),
            extras=extras or {},
        )

    @property
    def key(self) -> jax.Array:
        """The base key as a typed key array."""
        return jax.random.wrap_key_data(self.rng)
