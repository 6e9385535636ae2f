"""What the energy-model families share: config checks, the training defaults of Hinton's (2010)
practical guide (weight decay on the weights only, visible biases from the data's means), log Z
for evaluation, the NLL summary."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.evaluate import ais
from genjax.evaluate.likelihood import summarize_log_likelihood
from genjax.models import checks
from genjax.models.base import MAX_FILTERS
from genjax.models.energy import rbm

# model_config fields of every energy family that only change evaluation.
EVALUATION_FIELDS = (
    "ais_chains",
    "ais_betas",
    "monitor_ais_chains",
    "monitor_ais_betas",
    "exact_max_units",
    "sample_gibbs_steps",
)


VISIBLE_BIAS_INITS = ("data_mean", "zeros")
# Training examples whose mean sets the initial visible biases (all of a smaller train split).
VISIBLE_MEAN_EXAMPLES = 10_000
# model_config fields added after runs were saved: the values that reproduce those runs.
ADDED_FIELD_DEFAULTS = {"weight_decay_biases": True, "visible_bias_init": "zeros"}


def check_shared_fields(mc) -> None:
    """The fields every energy family shares: initial weight scale and visible biases, weight
    decay's reach, AIS and sampling."""
    checks.check_choice(mc, "visible_bias_init", VISIBLE_BIAS_INITS)
    checks.check_bools(mc, ("weight_decay_biases",))
    if not mc.weight_scale > 0:
        raise ValueError(f"config.model_config.weight_scale={mc.weight_scale!r} must be > 0.")
    checks.check_positive_ints(
        mc,
        (
            "ais_chains",
            "ais_betas",
            "monitor_ais_chains",
            "monitor_ais_betas",
            "sample_gibbs_steps",
        ),
    )
    for field in ("ais_betas", "monitor_ais_betas"):
        if mc[field] < 3:
            raise ValueError(f"config.model_config.{field}={mc[field]} must be at least 3.")
    if not 0 <= mc.exact_max_units <= rbm.MAX_EXACT_UNITS:
        raise ValueError(
            f"config.model_config.exact_max_units={mc.exact_max_units!r} must be in "
            f"[0, {rbm.MAX_EXACT_UNITS}] (0 always uses AIS)."
        )


def is_weight(path) -> bool:
    """Whether a parameter's pytree path names a weight matrix: its last dict key starts with
    'W' ('W' of an RBM or a DBN layer, 'W1' and 'W2' of a DBM); biases and log sigma do not."""
    last = path[-1] if path else None
    return isinstance(last, jax.tree_util.DictKey) and str(last.key).startswith("W")


def weights_only(params):
    """The optax weight-decay mask of Hinton's (2010) guide, section 10: True on the weight
    matrices, False on biases and log sigma. A pytree of bools shaped like `params` (entries
    that optax has masked out, `optax.MaskedNode`, stay as they are)."""
    return jax.tree_util.tree_map_with_path(lambda path, _: is_weight(path), params)


def weight_decay_mask(mc):
    """The `weight_decay_mask` for `optim.make_optimizer`: `weights_only`, or None (decay
    every parameter) when `config.model_config.weight_decay_biases`."""
    return None if mc.weight_decay_biases else weights_only


def visible_bias_from_data(x: jax.Array, gaussian: bool = False) -> jax.Array:
    """Initial visible biases from training examples x (N, ...) flattened to (N, V): (V,).

    Bernoulli visibles: log(p / (1 - p)) with p the pixel means, smoothed away from 0 and 1
    by `rbm.base_rates_from_mean` (Hinton 2010, section 8: with zero weights the model then
    matches the data's pixel means; the AIS base-rate RBM of the same means). Gaussian visibles:
    the mean itself, the mean of v when the weights are zero.
    """
    mean = jnp.mean(jnp.reshape(x, (x.shape[0], -1)), axis=0)  # (V,)
    return mean if gaussian else rbm.base_rates_from_mean(mean)


def visible_mean_examples(mc) -> int:
    """The family's `init_batch_size`: VISIBLE_MEAN_EXAMPLES with `visible_bias_init =
    'data_mean'` (the trainer then passes real training examples to `init`), else 0."""
    return VISIBLE_MEAN_EXAMPLES if mc.visible_bias_init == "data_mean" else 0


def first_layer_filters(weights, example_shape: tuple) -> np.ndarray | None:
    """Hidden units' incoming weights as images: (V, H) -> (min(H, MAX_FILTERS), *example_shape),
    filter j = weights[:, j] reshaped; None when the examples are not images (rank < 2, e.g.
    2-D toy points)."""
    if len(example_shape) < 2:
        return None
    weights = np.asarray(jax.device_get(weights))
    num_filters = min(weights.shape[1], MAX_FILTERS)
    return weights[:, :num_filters].T.reshape((num_filters, *example_shape))


def enumerated_units(params: dict) -> int:
    """How many units `rbm.log_partition_exact` would enumerate for these parameters."""
    num_visible, num_hidden = params["W"].shape
    return num_hidden if rbm.is_gaussian(params) else min(num_visible, num_hidden)


def rbm_log_partition(
    params: dict, key, mc, final: bool, base_visible_bias=None, progress: bool = False
) -> dict:
    """log Z of an RBM for evaluation: exact when small enough, else AIS.

    Final evaluations use `ais_chains` x `ais_betas`; monitoring uses the cheap
    `monitor_ais_*` settings. Returns {'log_z', 'log_z_stderr', 'exact', 'ais_chains',
    'ais_betas'} (the AIS fields are 0 when exact).
    """
    if enumerated_units(params) <= mc.exact_max_units:
        log_z = jax.jit(rbm.log_partition_exact)(params)
        return {"log_z": log_z, "log_z_stderr": 0.0, "exact": True, "ais_chains": 0, "ais_betas": 0}
    chains = mc.ais_chains if final else mc.monitor_ais_chains
    num_betas = mc.ais_betas if final else mc.monitor_ais_betas
    result = rbm.ais_log_partition(
        params, key, chains, ais.default_betas(num_betas), base_visible_bias, progress=progress
    )
    return {
        "log_z": result.log_z,
        "log_z_stderr": result.stderr,
        "exact": False,
        "ais_chains": chains,
        "ais_betas": num_betas,
    }


def summarize_nll(
    log_likelihood: np.ndarray, num_dims: int, constants: dict, bound: str | None = None
) -> dict:
    """The `eval.json` NLL fields from per-example log p(v) and the log Z that went into it.

    `test_nll_stderr` is the spread over test examples; the log Z estimate's own standard
    error is `log_z_stderr` (it shifts every example alike). With `bound` set, the per-example
    values are lower bounds on log p(v) (DBN, DBM) and the estimator name says so.
    """
    estimator = "exact" if bool(constants["exact"]) else "ais"
    if bound:
        estimator = f"{bound} ({estimator} log Z)"
    summary = summarize_log_likelihood(log_likelihood, num_dims, estimator)
    summary.update(
        log_z=float(constants["log_z"]),
        log_z_stderr=float(constants["log_z_stderr"]),
        ais_chains=int(constants["ais_chains"]),
        ais_betas=int(constants["ais_betas"]),
    )
    return summary
