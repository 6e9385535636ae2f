"""The method protocol every model family implements, and the shared gradient step.

The trainer (`genjax.train.loop`) knows models only through this interface:

    model = Family(config, spec)                    # spec: genjax.data.DataSpec
    params, extras = model.init(key, example_x)    # example_x: (B, *example_shape)
    state, metrics = model.train_step(state, batch)           # per-device, pmean inside
    constants = model.evaluation_constants(state, key, final) # once per evaluation (log Z)
    outputs = model.eval_step(state, batch, keys, final)      # per-device, (B, ...) each
    summary = model.summarize(outputs, final, constants)      # host: NumPy -> JSON-able dict
    samples = model.sample(state, key, num)                   # (num, *example_shape)
    labels = model.sample_labels(num)                         # None, or (num,) for conditional
    filters = model.first_layer_filters(state)                # None, or (N, *example_shape)
    figures = model.figures(state, key, test_x, to_unit)      # {file name: writer(path)}
    codes = model.features(state, x)                          # None, or (B, F) for a probe

Per-device functions run inside `jax.shard_map` over the mesh axis 'data' (see
`genjax.core.parallel`); they see their slice of the batch and reduce with
`jax.lax.pmean(.., 'data')`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from genjax.core import optim
from genjax.core.parallel import DATA_AXIS, example_keys
from genjax.core.state import TrainState

# At most this many first-layer filters go into `filters.png` (a 10 x 10 grid).
MAX_FILTERS = 100
# {name: family class}: every imported `Model` subclass that sets `name` (see `Model`).
FAMILIES: dict[str, type] = {}


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Model(abc.ABC):
    """A model family as the trainer sees it.

    A subclass that sets `name` in its own body is a family: it registers itself under that
    name, the value of `config.model` that selects it (`genjax.models.get`); subclasses that
    leave it unset (shared bases, a test's variant of a family) register nothing.

    Class attributes:
      name: the family's `config.model` value; '' for a class that is not a family.
      main_metric: the metric shown on the progress bar.
      likelihood_model: True when `summarize(final=True)` reports a test NLL.
      evaluation_fields: `model_config` fields that affect evaluation only.
      sharded_extras: names of `state.extras` entries whose leading axis is the global batch
        and that are split over devices with it (persistent chains); the rest is replicated.
      init_batch_size: 0, or how many real training examples `init` needs as `example_x`
        (data-dependent initialisation, e.g. Glow's ActNorm); the trainer then passes the
        first `init_batch_size` preprocessed training examples instead of zeros.
      estimators: the values of `config.estimator` the family implements; ('reparam',) for
        families trained by their exact (or their own) gradient.
      train_batches_per_step: how many batches of `config.batch_size` one `train_step`
        consumes (a GAN's critic steps); the trainer passes them as one batch of
        `config.batch_size * train_batches_per_step` examples.
      compute_dtypes: the values of `config.compute_dtype` the family implements; a family
        listing 'bfloat16' computes its matrix products and convolutions in it while
        keeping the parameters, the optimizer state, the biases and every log density,
        free energy and log-det sum float32 (`genjax.nn.precision`).
    """

    name: str = ""
    main_metric: str = "train/loss"
    likelihood_model: bool = True
    # model_config fields that change only evaluation; a run may be resumed or re-evaluated
    # with other values (every other model_config field must match the saved run).
    evaluation_fields: tuple[str, ...] = ()
    sharded_extras: tuple[str, ...] = ()
    init_batch_size: int = 0
    train_batches_per_step: int = 1
    estimators: tuple[str, ...] = ("reparam",)
    compute_dtypes: tuple[str, ...] = ("float32",)
    # model_config fields added after runs were saved without them: {field: the value that
    # reproduces the old behaviour}, so those runs can still be resumed and re-evaluated.
    added_field_defaults: dict = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name")
        if not name:
            return
        known = FAMILIES.get(name)
        if known is not None and _where(known) != _where(cls):  # a module reloaded may re-register
            raise TypeError(
                f"{_where(cls)} and {_where(known)} both register the family name {name!r}; "
                "give one another `name`."
            )
        FAMILIES[name] = cls

    def __init__(self, config, spec):
        self.config = config
        self.spec = spec
        self.tx = self.make_optimizer()

    @classmethod
    def validate_config(cls, config) -> None:
        """Raises `ValueError` naming the field and allowed values for a bad family config."""

    def make_optimizer(self) -> optax.GradientTransformation:
        """The optimizer for `params`; families with several optimizers override this."""
        return optim.make_optimizer(self.config)

    @abc.abstractmethod
    def init(self, key: jax.Array, example_x: jax.Array) -> tuple[Any, dict]:
        """Returns (params, extras) for a new run."""

    def create_state(self, key: jax.Array, example_x: jax.Array) -> TrainState:
        """A step-0 `TrainState` for this model; the base key is stored in it."""
        init_key, run_key = jax.random.split(key)
        params, extras = self.init(init_key, example_x)
        return TrainState.create(params, self.tx, run_key, extras)

    @abc.abstractmethod
    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        """One update, per-device; metrics are scalars averaged over devices."""

    def evaluation_constants(self, state: TrainState, key: jax.Array, final: bool) -> dict:
        """Quantities computed once per evaluation, before the batches (a log partition
        function, say), fetched to the host and handed to `summarize`. Called outside any
        compiled program on the whole (global) state; the family compiles what it needs and
        may show a progress bar when `final`. The default has none.
        """
        del state, key, final
        return {}

    @abc.abstractmethod
    def eval_step(self, state: TrainState, batch: dict, keys: jax.Array, final: bool) -> dict:
        """Per-example evaluation outputs, each of shape (B, ...); `keys` (B,) one per example.

        `final=False` is the cheap monitoring evaluation run every `config.eval_every` steps;
        `final=True` is the full protocol behind `eval.json`.
        """

    @abc.abstractmethod
    def summarize(self, outputs: dict[str, np.ndarray], final: bool, constants: dict) -> dict:
        """Host-side: per-example outputs over the whole test split -> scalar metrics.

        `constants` is this evaluation's `evaluation_constants`, as NumPy.
        """

    @abc.abstractmethod
    def sample(self, state: TrainState, key: jax.Array, num: int) -> jax.Array:
        """`num` samples in data space, shape (num, *example_shape)."""

    def sample_labels(self, num: int) -> np.ndarray | None:
        """The class labels `sample(state, key, num)` conditions on, (num,) ints; None (the
        default) for an unconditional model."""
        del num
        return None

    def first_layer_filters(self, state: TrainState) -> np.ndarray | None:
        """The first layer's filters in data space, (N, *example_shape): each of up to
        `MAX_FILTERS` hidden units' incoming weights, which the trainer saves as
        `filters.png` at the end of training; None (the default) for none."""
        del state
        return None

    def figures(
        self, state: TrainState, key: jax.Array, test_x: jax.Array, to_unit: Callable
    ) -> dict[str, Callable[[str], None]]:
        """The family's own end-of-training figures: {file name: a function writing that PNG
        to the path it is given} (e.g. reconstructions next to their inputs). `test_x`
        (N, *example_shape) holds the first N test examples in model space; `to_unit` maps
        model space to the unit-interval data space for plotting. Called once on the host
        with the final state; the default has none."""
        del state, key, test_x, to_unit
        return {}

    def features(self, state: TrainState, x: jax.Array) -> jax.Array | None:
        """A representation of x (B, *example_shape) -> (B, F) (an autoencoder's code) that
        the final evaluation scores with a linear probe on labelled data
        (`genjax.evaluate.probe`, eval.json's `probe_accuracy` beside `probe_pixels_accuracy`);
        None (the default) for none."""
        del state, x
        return None

    def train_log_density(self, params, x: jax.Array, keys: jax.Array) -> jax.Array | None:
        """What the family's training objective is built from, for a batch x (B, *example_shape)
        with `keys` (B,): its log density, variational bound, importance log weights or negated
        free energy, (..., B), computed as the train step computes it (in `config.compute_dtype`
        where it multiplies matrices), and float32. None (the default) for a family without one
        (a GAN). `tests/train/test_mixed_precision.py` checks every family's under bfloat16."""
        del params, x, keys
        return None

    def log_density(self, state: TrainState, x: jax.Array) -> jax.Array | None:
        """Exact log p(x) in model space, (N, *example_shape) -> (N,), for density plots of
        2-D data; None (the default) when the family has no tractable density."""
        del state, x
        return None


class GradientModel(Model):
    """A family trained by descending one differentiable loss with one optimizer.

    Subclasses implement `loss`; `train_step` differentiates it, averages gradients and
    metrics over devices, and applies the optimizer.
    """

    main_metric = "train/loss"

    @abc.abstractmethod
    def loss(
        self, params, extras: dict, batch: dict, keys: jax.Array
    ) -> tuple[jax.Array, tuple[dict, dict]]:
        """Mean loss over this device's examples -> (loss, (metrics, new_extras)).

        `keys` (B,) holds one typed key per example (see `parallel.example_keys`).
        """

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        local_batch_size = batch["x"].shape[0]
        step_key = jax.random.fold_in(state.key, state.step)
        keys = example_keys(step_key, 0, local_batch_size)
        grad_fn = jax.value_and_grad(self.loss, has_aux=True)
        (loss, (metrics, extras)), grads = grad_fn(state.params, state.extras, batch, keys)
        grads = jax.lax.pmean(grads, DATA_AXIS)
        metrics = jax.lax.pmean({"train/loss": loss, **metrics}, DATA_AXIS)
        metrics["train/grad_norm"] = optax.global_norm(grads)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state, extras=extras
        )
        return new_state, metrics
