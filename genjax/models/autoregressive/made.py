"""MADE: the masked autoencoder for distribution estimation (Germain et al. 2015).

An MLP whose weights are masked (`genjax.nn.masked`) so that output d sees
only the inputs before d in an ordering; its outputs are the logits of p(x_d = 1 | x_<d) and
log p(x) = sum_d log Bernoulli(x_d; sigmoid(logit_d)) is exact, in one forward pass.

Connectivity- and order-agnostic training (Germain et al.): `num_masks` mask sets (hidden
degrees, and with `order_agnostic` also input orderings) are drawn once from `config.seed`;
they are constants of the model object, not parameters. Update t uses mask set t mod
`num_masks` (the counter lives in `state.extras['mask_index']`, so it is checkpointed and
identical on every device), and all sets share one set of weights.

Evaluation is exact. With `num_eval_masks` = K > 1 the ensemble of the first K training mask
sets is evaluated as a mixture, log p(x) = log (1/K) sum_k p_k(x) (Germain et al.'s ensemble),
never by averaging logits; `eval.json` reports both it and the first mask set's NLL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import ensemble_outputs, summarize_ensemble
from genjax.models import checks
from genjax.models.base import GradientModel
from genjax.nn import masked

ACTIVATIONS = {"relu": nn.relu, "tanh": nn.tanh, "sigmoid": nn.sigmoid}


class MADENetwork(nn.Module):
    """Masked MLP: (..., D) inputs -> (..., D, K) outputs, K = `num_outputs_per_input`.

    Output [..., d, :] depends only on inputs of lower degree than input d under the masks
    passed in (see `masked.made_masks`, whose output-unit layout d * K + k this follows).
    """

    hidden_sizes: Sequence[int]
    num_outputs_per_input: int = 1
    activation: str = "relu"
    dtype: Any = None  # the layers' compute dtype (config.compute_dtype); outputs are float32

    @nn.compact
    def __call__(self, x: jax.Array, masks: Sequence[jax.Array]) -> jax.Array:
        """x: (..., D); masks: (D, H_1), ..., (H_L, D * K). Returns (..., D, K), float32."""
        chex.assert_equal(len(masks), len(self.hidden_sizes) + 1)
        num_inputs = x.shape[-1]
        h = x
        for size, mask in zip(self.hidden_sizes, masks[:-1], strict=True):
            h = ACTIVATIONS[self.activation](masked.MaskedDense(size, dtype=self.dtype)(h, mask))
        out = masked.MaskedDense(num_inputs * self.num_outputs_per_input, dtype=self.dtype)(
            h, masks[-1]
        )
        out = out.astype(jnp.float32)
        return out.reshape((*x.shape[:-1], num_inputs, self.num_outputs_per_input))


def mask_set_degrees(
    seed: int,
    num_inputs: int,
    hidden_sizes: Sequence[int],
    num_sets: int,
    order_agnostic: bool,
    mode: str = "random",
) -> list[np.ndarray]:
    """Degrees of `num_sets` MADE connectivities, stacked per layer.

    Set i is drawn from `np.random.default_rng([seed, i])` alone, so the first K sets do not
    depend on `num_sets`. Without `order_agnostic` every set keeps the natural order.

    Returns:
      per layer (inputs, hidden..., outputs), an int32 array (num_sets, layer_size).
    """
    sets = []
    for index in range(num_sets):
        rng = np.random.default_rng([seed, index])
        order = rng.permutation(num_inputs) if order_agnostic else None
        sets.append(masked.made_degrees(rng, num_inputs, hidden_sizes, order, 1, mode))
    return [np.stack(layer) for layer in zip(*sets, strict=True)]


class MADE(GradientModel):
    """The MADE family for binary data (`config.model = 'made'`).

    model_config fields:
      hidden_sizes: widths of the masked hidden layers, e.g. (500,).
      activation: 'relu' | 'tanh' | 'sigmoid'.
      num_masks: mask sets cycled through in training (1: plain MADE).
      order_agnostic: each mask set also has its own random input ordering.
      degrees: 'random' (Germain et al.) | 'evenly_spaced' hidden-unit degrees.
      num_eval_masks: K <= num_masks; evaluation uses the ensemble of the first K sets.
    """

    name = "made"
    main_metric = "train/loss"
    evaluation_fields = ("num_eval_masks",)
    compute_dtypes = ("float32", "bfloat16")

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(mc, {"activation": tuple(ACTIVATIONS), "degrees": masked.DEGREE_MODES})
        checks.check_sizes(
            mc, "hidden_sizes", meaning="one per masked hidden layer", allow_empty=True
        )
        checks.check_positive_ints(mc, ("num_masks", "num_eval_masks"))
        checks.check_bools(mc, ("order_agnostic",))
        if mc.num_eval_masks > mc.num_masks:
            raise ValueError(
                f"config.model_config.num_eval_masks={mc.num_eval_masks} must be at most "
                f"config.model_config.num_masks={mc.num_masks} (only trained mask sets are "
                "evaluated)."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        checks.require_binary(spec, "config.model='made' (Bernoulli conditionals)")
        mc = config.model_config
        self.num_inputs = spec.num_dims
        self.hidden_sizes = tuple(int(size) for size in mc.hidden_sizes)
        self.network = MADENetwork(
            self.hidden_sizes, 1, mc.activation, dtype=jnp.dtype(config.compute_dtype)
        )
        # Constants of the model (never trained): per layer (num_masks, layer_size) degrees.
        self.degrees = mask_set_degrees(
            config.seed,
            self.num_inputs,
            self.hidden_sizes,
            mc.num_masks,
            mc.order_agnostic,
            mc.degrees,
        )
        self.orders = np.stack([masked.order_from_degrees(d) for d in self.degrees[0]])

    def masks(self, mask_index) -> list[jax.Array]:
        """The masks of mask set `mask_index` (an int or a traced int32 scalar)."""
        return masked.masks_from_degrees([jnp.asarray(d)[mask_index] for d in self.degrees])

    def logits(self, params, x: jax.Array, mask_index) -> jax.Array:
        """Logits of p(x_d = 1 | x_<d) under one mask set: x (B, *shape) -> (B, D)."""
        x_flat = x.reshape((x.shape[0], self.num_inputs))
        return self.network.apply(params, x_flat, self.masks(mask_index))[..., 0]

    def log_prob(self, params, x: jax.Array, mask_index) -> jax.Array:
        """Exact log p(x) under one mask set, (B, *shape) -> (B,)."""
        logits = self.logits(params, x, mask_index)
        return objectives.bernoulli_log_prob(x.reshape(logits.shape), logits, event_ndims=1)

    def train_log_density(self, params, x, keys):
        """log p(x) under the first mask set, (B,)."""
        del keys
        return self.log_prob(params, x, 0)

    def member_log_probs(self, params, x: jax.Array, num_members: int) -> jax.Array:
        """log p_k(x) for the first `num_members` mask sets, (K, B), one set at a time."""
        return jax.lax.map(lambda k: self.log_prob(params, x, k), jnp.arange(num_members))

    def init(self, key, example_x):
        x_flat = jnp.zeros((example_x.shape[0], self.num_inputs))
        params = self.network.init(key, x_flat, self.masks(0))
        return params, {"mask_index": jnp.zeros((), jnp.int32)}

    def loss(self, params, extras, batch, keys):
        del keys  # deterministic given the mask set
        mask_index = extras["mask_index"]
        log_p = self.log_prob(params, batch["x"], mask_index) + batch["log_det"]  # (B,)
        nll = -log_p.mean()
        metrics = {"train/bits_per_dim": objectives.bits_per_dim(nll, self.num_inputs)}
        next_index = (mask_index + 1) % self.config.model_config.num_masks
        return nll, (metrics, {**extras, "mask_index": next_index})

    def eval_step(self, state, batch, keys, final):
        del keys, final  # exact: the monitor and the final evaluation agree
        num_members = self.config.model_config.num_eval_masks
        members = self.member_log_probs(state.params, batch["x"], num_members)  # (K, B)
        return ensemble_outputs(members, batch["log_det"])

    def summarize(self, outputs, final, constants):
        del constants
        return summarize_ensemble(
            outputs, final, self.num_inputs, self.config.model_config.num_eval_masks, "mask"
        )

    def sample(self, state, key, num):
        """Ancestral sampling with mask set 0: D network passes in one `fori_loop`."""
        order = jnp.asarray(self.orders[0])

        def step(position, x):
            dim = order[position]
            logits = self.logits(state.params, x, 0)  # (num, D)
            probs = jax.nn.sigmoid(logits[:, dim])
            bits = jax.random.bernoulli(jax.random.fold_in(key, position), probs)
            return x.at[:, dim].set(bits.astype(x.dtype))

        x = jax.lax.fori_loop(0, self.num_inputs, step, jnp.zeros((num, self.num_inputs)))
        return x.reshape((num, *self.spec.example_shape))
