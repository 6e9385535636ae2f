"""Greedy layer-wise training inside one trainer run: stages by step, one optimizer each.

Deep belief nets (Hinton, Osindero & Teh 2006) and deep Boltzmann machines (Salakhutdinov &
Hinton 2009) are trained one layer at a time, each layer on a fixed representation of the data
made by the layers below. Here the stages share one run of `config.num_steps` updates:
`config.model_config.stage_steps` holds one length per stage, summing to `config.num_steps`,
and stage s runs updates `sum(stage_steps[:s])` to `sum(stage_steps[:s + 1]) - 1`.

Each stage has

  - its own optax state (`TrainState.opt_state` is a tuple with one entry per stage), built by
    `genjax.core.optim.make_optimizer` with `num_steps` set to the stage's length: Adam's
    moments and bias correction, and the learning-rate schedule, start afresh at each stage
    and the schedule spans the stage;
  - a set of top-level parameter keys it trains (`Stage.trained`). Updates to every other key
    are zero (`optax.multi_transform` with `optax.set_to_zero`), so clipping and weight decay
    never see, and never move, parameters that the stage does not train.

`StagedModel.train_step` picks the stage from `state.step` with `jax.lax.switch`: one compiled
program for the whole run, no recompilation at stage boundaries, and a checkpoint can be
resumed anywhere, mid-stage included.
"""

from __future__ import annotations

import abc
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.core import optim
from genjax.core.parallel import DATA_AXIS, example_keys
from genjax.core.state import TrainState
from genjax.models.base import Model

STAGE_METRIC = "train/stage"


class Stage(NamedTuple):
    """One training stage: a name for messages and the top-level parameter keys it trains."""

    name: str
    trained: tuple[str, ...]


def check_stage_steps(config, stages: tuple[Stage, ...]) -> tuple[int, ...]:
    """`config.model_config.stage_steps` as a tuple of ints, checked against the stages.

    Raises:
      ValueError: naming `config.model_config.stage_steps` (and `config.num_steps`) unless it
        holds one positive integer per stage and sums to `config.num_steps`.
    """
    steps = config.model_config.stage_steps
    names = tuple(stage.name for stage in stages)
    valid = isinstance(steps, tuple | list) and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in steps
    )
    if not valid or len(steps) != len(stages):
        raise ValueError(
            f"config.model_config.stage_steps={steps!r} must hold {len(stages)} positive "
            f"integers, the number of updates of each stage {names}."
        )
    if sum(steps) != config.num_steps:
        raise ValueError(
            f"config.model_config.stage_steps={tuple(steps)} sums to {sum(steps)}, but "
            f"config.num_steps={config.num_steps}: the stages must split the run exactly."
        )
    return tuple(int(n) for n in steps)


def stage_starts(stage_steps: tuple[int, ...]) -> tuple[int, ...]:
    """The first update of each stage: (0, stage_steps[0], stage_steps[0] + stage_steps[1], ..)."""
    return tuple(int(start) for start in np.cumsum((0, *stage_steps[:-1])))


def stage_index(step: jax.Array, stage_steps: tuple[int, ...]) -> jax.Array:
    """The stage of the update that follows `step` updates: int32 scalar in [0, num_stages).

    Steps past the last stage's end stay in the last stage.
    """
    later_starts = jnp.asarray(stage_starts(stage_steps)[1:], jnp.int32)
    return jnp.sum(step >= later_starts).astype(jnp.int32)


def stage_optimizer(
    config, stage: Stage, num_steps: int, weight_decay_mask=None
) -> optax.GradientTransformation:
    """`optim.make_optimizer` for one stage of `num_steps` updates, on its parameters only.

    The optimizer is built from a copy of `config` whose `num_steps` is the stage's length (so
    schedules span the stage) and is applied to the top-level keys in `stage.trained`; every
    other parameter gets a zero update and no optimizer state. `weight_decay_mask` (see
    `optim.make_optimizer`) limits weight decay within the stage's parameters.
    """
    stage_config = config.copy_and_resolve_references()
    stage_config.num_steps = num_steps
    trained = set(stage.trained)

    def labels(params):
        return {key: "trained" if key in trained else "frozen" for key in params}

    transforms = {
        "trained": optim.make_optimizer(stage_config, weight_decay_mask=weight_decay_mask),
        "frozen": optax.set_to_zero(),
    }
    return optax.multi_transform(transforms, labels)


class StagedModel(Model):
    """A family trained in stages, each descending its own surrogate loss with its own optimizer.

    Subclasses implement `stages_for(config)`, `stage_loss` and the rest of `Model` (init,
    evaluation, sampling), and list in `stage_metrics` every metric any stage reports; a stage
    that does not report one gets 0 there, so that all `jax.lax.switch` branches return the
    same structure. Every step also reports `train/loss`, `train/grad_norm` (over the stage's
    trained parameters) and `train/stage` (the stage index).

    `self.tx` is a tuple: one `optax.GradientTransformation` per stage.
    """

    stage_metrics: tuple[str, ...] = ()

    @classmethod
    @abc.abstractmethod
    def stages_for(cls, config) -> tuple[Stage, ...]:
        """The stages of a run of `config`, in training order."""

    @classmethod
    def stage_steps_for(cls, config, stages: tuple[Stage, ...]) -> tuple[int, ...]:
        """The stages' lengths: `config.model_config.stage_steps`, checked
        (`check_stage_steps`); a family whose stage count varies may override this (one stage:
        `(config.num_steps,)`)."""
        return check_stage_steps(config, stages)

    @classmethod
    def validate_config(cls, config) -> None:
        """Checks the stages' lengths; subclasses call this after their checks."""
        cls.stage_steps_for(config, cls.stages_for(config))

    def __init__(self, config, spec):
        self.stages = self.stages_for(config)
        self.stage_steps = self.stage_steps_for(config, self.stages)
        super().__init__(config, spec)

    def weight_decay_mask(self):
        """The optax mask of the parameters `config.weight_decay` reaches; None (the default)
        for all of them."""
        return None

    def make_optimizer(self) -> tuple[optax.GradientTransformation, ...]:
        """One optimizer per stage (see `stage_optimizer`)."""
        return tuple(
            stage_optimizer(self.config, stage, num_steps, self.weight_decay_mask())
            for stage, num_steps in zip(self.stages, self.stage_steps, strict=True)
        )

    def create_state(self, key: jax.Array, example_x: jax.Array) -> TrainState:
        """A step-0 state whose `opt_state` holds every stage's fresh optimizer state."""
        init_key, run_key = jax.random.split(key)
        params, extras = self.init(init_key, example_x)
        state = TrainState.create(params, optax.identity(), run_key, extras)
        return state.replace(opt_state=tuple(tx.init(params) for tx in self.tx))

    @abc.abstractmethod
    def stage_loss(
        self, stage: int, params, extras: dict, batch: dict, keys: jax.Array, step: jax.Array
    ) -> tuple[jax.Array, tuple[dict, dict]]:
        """Stage `stage`'s mean surrogate loss over this device's examples.

        Args:
          stage: the stage index (a Python int: each stage traces its own branch).
          params: all parameters (updates reach only the stage's trained keys).
          extras: `state.extras`.
          batch: this device's batch; `batch["x"]` is (B, *example_shape).
          keys: (B,) one typed key per example (see `parallel.example_keys`).
          step: the int32 number of updates applied so far.

        Returns:
          (loss, (metrics, new_extras)); metrics are scalars named in `stage_metrics`.
        """

    def _stage_update(self, stage: int, state: TrainState, batch: dict, keys: jax.Array):
        """One update of stage `stage`: a `jax.lax.switch` branch of `train_step`."""
        loss_fn = functools.partial(self.stage_loss, stage)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (metrics, extras)), grads = grad_fn(
            state.params, state.extras, batch, keys, state.step
        )
        grads = jax.lax.pmean(grads, DATA_AXIS)
        metrics = jax.lax.pmean({"train/loss": loss, **metrics}, DATA_AXIS)
        updates, stage_opt_state = self.tx[stage].update(
            grads, state.opt_state[stage], state.params
        )
        params = optax.apply_updates(state.params, updates)
        opt_state = (*state.opt_state[:stage], stage_opt_state, *state.opt_state[stage + 1 :])
        trained_grads = {key: grads[key] for key in self.stages[stage].trained}
        metrics["train/grad_norm"] = optax.global_norm(trained_grads)
        return params, opt_state, extras, self._complete_metrics(stage, metrics)

    def _complete_metrics(self, stage: int, metrics: dict) -> dict:
        """`metrics` with every name in `stage_metrics` (absent ones 0) and `train/stage`."""
        unknown = set(metrics) - {"train/loss", "train/grad_norm", *self.stage_metrics}
        if unknown:
            raise ValueError(
                f"stage {self.stages[stage].name!r} reports {sorted(unknown)}, which "
                f"{type(self).__name__}.stage_metrics does not list."
            )
        complete = {name: jnp.zeros((), jnp.float32) for name in self.stage_metrics}
        complete.update({name: jnp.asarray(value, jnp.float32) for name, value in metrics.items()})
        complete[STAGE_METRIC] = jnp.asarray(stage, jnp.float32)
        return complete

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One update of the stage that `state.step` falls in; per-device, pmean inside."""
        local_batch_size = batch["x"].shape[0]
        keys = example_keys(jax.random.fold_in(state.key, state.step), 0, local_batch_size)
        branches = [
            functools.partial(self._stage_update, stage) for stage in range(len(self.stages))
        ]
        stage = stage_index(state.step, self.stage_steps)
        params, opt_state, extras, metrics = jax.lax.switch(stage, branches, state, batch, keys)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, extras=extras
        )
        return new_state, metrics
