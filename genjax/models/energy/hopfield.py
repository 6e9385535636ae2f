"""Hopfield networks: Hebbian storage, asynchronous dynamics and the capacity experiment.

A Hopfield (1982) network of N binary units s_i in {-1, +1} with symmetric weights W (zero
diagonal) and bias b has the energy

    E(s) = -1/2 s^T W s - b . s,

and its asynchronous dynamics update one unit at a time, s_i <- sign(sum_j W_ij s_j + b_i),
keeping s_i when that local field is exactly 0. Each single-unit update changes the energy by
-(s_i' - s_i) h_i <= 0, so the dynamics descend E and stop in a fixed point. Storing P random
patterns xi^mu with the Hebbian rule W = (1/N) sum_mu xi^mu xi^mu^T makes them (near) fixed
points while the load alpha = P / N stays below alpha_c ~ 0.138 (Amit, Gutfreund & Sompolinsky
1985, "Storing infinite numbers of patterns in a spin-glass model of neural networks", PRL 55);
beyond it retrieval breaks down abruptly.

Everything here is a pure function over arrays; states are float32 arrays of -1 and +1.
`genjax.workbench.hopfield.run_experiment` measures the capacity curve and a retrieval demo on
real digit prototypes (configs/hopfield.py, experiments/hopfield.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from genjax.core import util
from genjax.data import pipeline

ORDER_MODES = ("fixed", "random")
# Amit, Gutfreund & Sompolinsky (1985): the storage capacity of the Hebbian network, P / N.
THEORETICAL_CAPACITY = 0.138
# A load counts as "retrieved" while at least this fraction of probes end on their pattern.
CAPACITY_THRESHOLD = 0.5
# Fields of `config.model_config` that `run_experiment` reads.
MODEL_CONFIG_FIELDS = (
    "num_neurons",
    "loads",
    "num_trials",
    "flip_fraction",
    "max_sweeps",
    "order",
    "num_digit_patterns",
)


# ----------------------------------------------------------------------------- the network


def hebbian_weights(patterns: jax.Array) -> jax.Array:
    """Hebbian weights W = (1/N) sum_mu xi^mu xi^mu^T with a zero diagonal (Hopfield 1982).

    Args:
      patterns: (P, N) patterns xi^mu in {-1, +1}.

    Returns:
      (N, N) symmetric weights with W_ii = 0.
    """
    chex.assert_rank(patterns, 2)
    num_units = patterns.shape[1]
    patterns = jnp.asarray(patterns, jnp.float32)
    weights = patterns.T @ patterns / num_units  # (N, N)
    return jnp.fill_diagonal(weights, 0.0, inplace=False)


def energy(weights: jax.Array, state: jax.Array, bias: jax.Array | None = None) -> jax.Array:
    """The Hopfield (1982) energy E(s) = -1/2 s^T W s - b . s.

    Args:
      weights: (N, N) weights.
      state: (..., N) states.
      bias: optional (N,) bias b (default 0).

    Returns:
      (...) energies.
    """
    chex.assert_rank(weights, 2)
    chex.assert_axis_dimension(state, -1, weights.shape[0])
    pair_term = -0.5 * jnp.einsum("...i,ij,...j->...", state, weights, state)
    if bias is None:
        return pair_term
    chex.assert_shape(bias, (weights.shape[0],))
    return pair_term - state @ bias


def _bias_or_zeros(bias: jax.Array | None, num_units: int) -> jax.Array:
    """`bias` as float32 (N,), zeros when None."""
    if bias is None:
        return jnp.zeros((num_units,), jnp.float32)
    chex.assert_shape(bias, (num_units,))
    return jnp.asarray(bias, jnp.float32)


def _update_unit(weights: jax.Array, bias: jax.Array, state: jax.Array, unit) -> jax.Array:
    """s_unit <- sign(sum_j W_unit,j s_j + b_unit) in every (..., N) state; kept on a 0 field."""
    field = state @ weights[unit] + bias[unit]  # (...)
    current = state[..., unit]
    new_value = jnp.where(field > 0, 1.0, jnp.where(field < 0, -1.0, current))
    return state.at[..., unit].set(new_value.astype(state.dtype))


def async_sweep(
    weights: jax.Array,
    state: jax.Array,
    order: jax.Array,
    bias: jax.Array | None = None,
    return_energies: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """One asynchronous sweep: units order[0], order[1], ... in turn (Hopfield 1982).

    Each unit sees the updates made before it in the same sweep; a unit whose local field
    sum_j W_ij s_j + b_i is exactly 0 keeps its value. A batch of states is updated in the
    same order, each state independently.

    Args:
      weights: (N, N) weights (symmetric with a zero diagonal for the energy to descend).
      state: (..., N) states in {-1, +1}.
      order: (N,) int permutation of range(N), the update order.
      bias: optional (N,) bias.
      return_energies: also return E(s) after every single-unit update.

    Returns:
      (state (..., N), energies (N, ...) or None): energies[t] is the energy right after the
      update of unit order[t].
    """
    weights, state = jnp.asarray(weights, jnp.float32), jnp.asarray(state, jnp.float32)
    num_units = state.shape[-1]
    chex.assert_shape(weights, (num_units, num_units))
    chex.assert_shape(order, (num_units,))
    bias = _bias_or_zeros(bias, num_units)

    def step(current, unit):
        current = _update_unit(weights, bias, current, unit)
        return current, (energy(weights, current, bias) if return_energies else None)

    return jax.lax.scan(step, state, order)


def _check_order_mode(order: str) -> None:
    if order not in ORDER_MODES:
        raise ValueError(f"order={order!r}; allowed: {ORDER_MODES}")


def _sweep_order(order: str, num_units: int, key: jax.Array | None, sweep_index) -> jax.Array:
    """The (N,) update order of sweep `sweep_index`: range(N), or a permutation per sweep."""
    if order == "fixed":
        return jnp.arange(num_units)
    return jax.random.permutation(jax.random.fold_in(key, sweep_index), num_units)


def sweep_orders(order: str, num_units: int, num_sweeps: int, key: jax.Array | None = None):
    """The update orders that `run_async` and `retrieve` use, one row per sweep.

    Args:
      order: 'fixed' (0, 1, ..., N-1 every sweep) or 'random' (a fresh uniform permutation
        per sweep, from `fold_in(key, sweep_index)`).
      num_units: N.
      num_sweeps: number of sweeps S.
      key: PRNG key, required for 'random'.

    Returns:
      (S, N) int32, each row a permutation of range(N).
    """
    _check_order_mode(order)
    if order == "random" and key is None:
        raise ValueError("order='random' needs a PRNG key.")
    sweeps = jnp.arange(num_sweeps)
    return jax.vmap(lambda index: _sweep_order(order, num_units, key, index))(sweeps)


def run_async(
    weights: jax.Array,
    state: jax.Array,
    order: str,
    num_sweeps: int,
    key: jax.Array | None = None,
    bias: jax.Array | None = None,
    return_energies: bool = False,
) -> tuple[jax.Array, jax.Array | None]:
    """`num_sweeps` asynchronous sweeps in the orders of `sweep_orders(order, N, ...)`.

    Args:
      weights: (N, N) weights.
      state: (..., N) initial states in {-1, +1}.
      order: 'fixed' or 'random' (see `sweep_orders`).
      num_sweeps: number of full sweeps S.
      key: PRNG key, required for 'random'.
      bias: optional (N,) bias.
      return_energies: also return the energy after every single-unit update.

    Returns:
      (state (..., N), energies (S, N, ...) or None): energies[k, t] is the energy after the
      t-th update of sweep k.
    """
    orders = sweep_orders(order, state.shape[-1], num_sweeps, key)  # (S, N)

    def sweep(current, sweep_order):
        return async_sweep(weights, current, sweep_order, bias, return_energies)

    return jax.lax.scan(sweep, state, orders)


@functools.partial(jax.jit, static_argnames=("order",))
def retrieve(
    weights: jax.Array,
    probes: jax.Array,
    key: jax.Array,
    max_sweeps: int,
    order: str = "random",
    bias: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Runs every probe's asynchronous dynamics to a fixed point (Hopfield 1982).

    Each probe is swept until a full sweep changes none of its units, or for at most
    `max_sweeps` sweeps. Sweep k updates all probes in the order
    `sweep_orders(order, N, max_sweeps, key)[k]` (one order for the batch: it is independent
    of the probes, and one shared order runs ~10x faster than per-probe gathers). A probe
    whose sweep changed nothing is a fixed point, so later sweeps of the batch leave it as is.

    Args:
      weights: (N, N) weights.
      probes: (B, N) initial states in {-1, +1}.
      key: PRNG key (unused for 'fixed').
      max_sweeps: the most sweeps per probe.
      order: 'fixed' or 'random'.
      bias: optional (N,) bias.

    Returns:
      (states (B, N), num_sweeps (B,) int32): the final states, and the sweeps run per probe,
      counting the last one that changed nothing (a probe that is already a fixed point uses
      1 sweep; a probe that used `max_sweeps` may not have converged).
    """
    _check_order_mode(order)
    chex.assert_rank(probes, 2)
    num_probes, num_units = probes.shape
    chex.assert_shape(weights, (num_units, num_units))

    def not_done(carry):
        _, active, _, sweep_index = carry
        return jnp.any(active) & (sweep_index < max_sweeps)

    def sweep(carry):
        states, active, num_sweeps, sweep_index = carry  # active (B,): changed in its last sweep
        sweep_order = _sweep_order(order, num_units, key, sweep_index)
        new_states, _ = async_sweep(weights, states, sweep_order, bias)  # (B, N)
        changed = jnp.any(new_states != states, axis=-1)  # (B,)
        return new_states, active & changed, num_sweeps + active, sweep_index + 1

    initial = (
        jnp.asarray(probes, jnp.float32),
        jnp.ones((num_probes,), bool),
        jnp.zeros((num_probes,), jnp.int32),
        jnp.array(0, jnp.int32),
    )
    states, _, num_sweeps, _ = jax.lax.while_loop(not_done, sweep, initial)
    return states, num_sweeps


# ------------------------------------------------------------------- patterns and probes


def random_patterns(key: jax.Array, num_patterns: int, num_units: int) -> jax.Array:
    """Independent uniform patterns in {-1, +1}, float32 (P, N)."""
    return jax.random.rademacher(key, (num_patterns, num_units), dtype=jnp.float32)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def num_flipped_units(num_units: int, flip_fraction: float) -> int:
    """round(flip_fraction * N), halves rounded up: the units `corrupt` flips per pattern."""
    return _round_half_up(flip_fraction * num_units)


def num_patterns_for_load(load: float, num_units: int) -> int:
    """P = max(1, round(alpha N)) patterns for the load alpha = P / N."""
    return max(1, _round_half_up(load * num_units))


@functools.partial(jax.jit, static_argnames=("flip_fraction",))
def corrupt(key: jax.Array, patterns: jax.Array, flip_fraction: float) -> jax.Array:
    """Flips exactly round(flip_fraction * N) distinct, uniformly chosen units of each pattern.

    Args:
      key: PRNG key.
      patterns: (..., N) patterns in {-1, +1}.
      flip_fraction: a Python float in [0, 1].

    Returns:
      (..., N) corrupted copies, same dtype; each row differs from its pattern in exactly
      `num_flipped_units(N, flip_fraction)` places.
    """
    num_flips = num_flipped_units(patterns.shape[-1], flip_fraction)
    scores = jax.random.uniform(key, patterns.shape)  # (..., N)
    _, flipped = jax.lax.top_k(scores, num_flips)  # (..., k) distinct, uniformly chosen units
    flip = jnp.zeros(patterns.shape, bool)
    flip = jnp.put_along_axis(flip, flipped, True, axis=-1, inplace=False)  # (..., N)
    return jnp.where(flip, -patterns, patterns)


def overlap(a: jax.Array, b: jax.Array) -> jax.Array:
    """The overlap m = (1/N) sum_i a_i b_i of states in {-1, +1}; 1 when equal, -1 when opposite.

    Args:
      a, b: (..., N) states; the leading axes broadcast against each other.

    Returns:
      (...) overlaps.
    """
    chex.assert_axis_dimension(b, -1, a.shape[-1])
    return jnp.mean(a * b, axis=-1)


# ------------------------------------------------------------------------ capacity curve


def _masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `values` over the entries where `mask` is True."""
    return jnp.sum(jnp.where(mask, values, 0.0)) / jnp.sum(mask)


@functools.partial(
    jax.jit, static_argnames=("num_neurons", "max_patterns", "flip_fraction", "order")
)
def _capacity_trials(
    trial_keys, order_key, num_patterns, num_neurons, max_patterns, flip_fraction, max_sweeps, order
):
    """Per trial: store `num_patterns` random patterns, retrieve each from a corrupted probe.

    Compiled once for every load: the patterns live in (max_patterns, N) arrays whose rows
    beyond `num_patterns` (traced) are zero. Zero rows add nothing to the Hebbian weights and
    their all-zero probes are fixed points (every field is 0), so they cost one sweep and are
    left out of the averages. The trials share the update orders (from `order_key`), which are
    independent of the patterns; that keeps the unit index unbatched under `vmap`.

    Returns (retrieval_rate, mean_overlap, mean_sweeps), each (T,) for the T trial keys.
    """
    stored = jnp.arange(max_patterns) < num_patterns  # (P_max,)

    def trial(key):
        pattern_key, corrupt_key = jax.random.split(key)
        patterns = random_patterns(pattern_key, max_patterns, num_neurons) * stored[:, None]
        probes = corrupt(corrupt_key, patterns, flip_fraction)  # (P_max, N)
        final, sweeps = retrieve(hebbian_weights(patterns), probes, order_key, max_sweeps, order)
        exact = jnp.all(final == patterns, axis=-1)  # (P_max,)
        overlaps = overlap(final, patterns)  # (P_max,)
        return tuple(_masked_mean(value, stored) for value in (exact, overlaps, sweeps))

    return jax.vmap(trial)(trial_keys)


def _summarize_trials(rates: np.ndarray, overlaps: np.ndarray, sweeps: np.ndarray) -> dict:
    """Means over the (T,) trials of one load, and the standard error of the retrieval rate."""
    num_trials = len(rates)
    stderr = rates.std(ddof=1) / np.sqrt(num_trials) if num_trials > 1 else np.nan
    return dict(
        retrieval_rate=rates.mean(),
        retrieval_rate_stderr=stderr,
        mean_overlap=overlaps.mean(),
        mean_sweeps=sweeps.mean(),
    )


def capacity_curve(
    key: jax.Array,
    num_neurons: int,
    loads: Sequence[float],
    num_trials: int,
    flip_fraction: float,
    max_sweeps: int,
    order: str = "random",
    progress_bar: bool = False,
) -> dict[str, np.ndarray]:
    """Retrieval against the load alpha = P / N (Amit, Gutfreund & Sompolinsky 1985).

    For each load, `num_trials` times: store P = max(1, round(alpha N)) random patterns with
    the Hebbian rule, corrupt every stored pattern by `flip_fraction` and run `retrieve`. A
    probe is retrieved when its final state equals its pattern exactly.

    Args:
      key: PRNG key; load l uses `fold_in(key, l)`, so loads are independent.
      num_neurons: N.
      loads: L values of alpha.
      num_trials: T independent pattern sets per load.
      flip_fraction: fraction of units flipped in every probe.
      max_sweeps: the most sweeps per probe.
      order: 'fixed' or 'random' update order.
      progress_bar: show a tqdm bar over the loads.

    Returns:
      NumPy arrays of shape (L,): 'loads', 'patterns' (P, int), 'retrieval_rate' (fraction of
      probes retrieved exactly, averaged over trials), 'retrieval_rate_stderr' (standard error
      over trials, NaN for one trial), 'mean_overlap' (mean final overlap with the stored
      pattern) and 'mean_sweeps' (sweeps per probe, see `retrieve`).
    """
    _check_order_mode(order)
    loads = np.asarray(loads, np.float64)
    patterns = np.array([num_patterns_for_load(float(load), num_neurons) for load in loads])
    rows = []
    for load_index in tqdm(range(len(loads)), desc="loads", disable=not progress_bar):
        trials_key, order_key = jax.random.split(jax.random.fold_in(key, load_index))
        trial_keys = jax.random.split(trials_key, num_trials)  # (T,)
        per_trial = _capacity_trials(
            trial_keys,
            order_key,
            jnp.int32(patterns[load_index]),
            num_neurons,
            int(patterns.max()),
            float(flip_fraction),
            max_sweeps,
            order,
        )
        rows.append(_summarize_trials(*jax.device_get(per_trial)))  # (T,) arrays each
    columns = {name: np.array([row[name] for row in rows], np.float64) for name in rows[0]}
    return {"loads": loads, "patterns": patterns.astype(np.int64), **columns}


def empirical_capacity(
    loads: Sequence[float], retrieval_rate: Sequence[float], threshold: float = CAPACITY_THRESHOLD
) -> float:
    """The load where the retrieval rate first falls below `threshold`, linearly interpolated.

    Args:
      loads: (L,) increasing loads.
      retrieval_rate: (L,) retrieval rates at those loads.
      threshold: the rate that counts as retrieval (0.5: half the probes).

    Returns:
      The interpolated crossing between the last load at or above the threshold and the next
      one below it; the largest load when the rate never falls below (a lower bound); NaN when
      it is below already at the smallest load.
    """
    loads = np.asarray(loads, np.float64)
    rates = np.asarray(retrieval_rate, np.float64)
    below = np.flatnonzero(rates < threshold)
    if below.size == 0:
        return float(loads[-1])
    first_below = int(below[0])
    if first_below == 0:
        return math.nan
    load_low, load_high = loads[first_below - 1], loads[first_below]
    rate_low, rate_high = rates[first_below - 1], rates[first_below]
    return float(
        load_low + (rate_low - threshold) / (rate_low - rate_high) * (load_high - load_low)
    )


# ---------------------------------------------------------------------- digit prototypes


def digit_prototypes(dataset: pipeline.Dataset, split: str, batch_size: int) -> np.ndarray:
    """One +-1 prototype per class: the class-mean image thresholded at 0.5.

    Args:
      dataset: a `Dataset` whose 'x' are plain intensities in [0, 1] with class labels.
      split: 'train' or 'test'.
      batch_size: batch size of the pass over the split.

    Returns:
      float32 (C, N) prototypes in {-1, +1}, N = prod(example_shape); pixels with class mean
      >= 0.5 are +1.
    """
    num_classes = dataset.spec.num_classes
    pixel_sums = np.zeros((num_classes, dataset.spec.num_dims))
    counts = np.zeros((num_classes,))
    for batch in dataset.eval_batches(split, batch_size):
        keep = batch["mask"] > 0
        images = batch["x"][keep].reshape(int(keep.sum()), -1)  # (B', N)
        one_hot = np.eye(num_classes)[batch["label"][keep]]  # (B', C)
        pixel_sums += one_hot.T @ images
        counts += one_hot.sum(axis=0)
    means = pixel_sums / np.maximum(counts, 1)[:, None]  # (C, N)
    return np.where(means >= 0.5, 1.0, -1.0).astype(np.float32)


def digit_retrieval(
    key: jax.Array, prototypes: np.ndarray, flip_fraction: float, max_sweeps: int, order: str
) -> dict[str, np.ndarray]:
    """Stores `prototypes` in one Hebbian network and retrieves each from a corrupted copy.

    Args:
      key: PRNG key.
      prototypes: (K, N) patterns in {-1, +1}.
      flip_fraction: fraction of units flipped in each probe.
      max_sweeps: the most sweeps per probe.
      order: 'fixed' or 'random'.

    Returns:
      NumPy arrays: 'probes', 'retrieved' (K, N); 'final_overlap' (K,) with the own
      prototype; 'exact' (K,) bool; 'nearest_pattern' (K,), the prototype with the largest
      overlap with the final state; 'sweeps' (K,); 'pattern_overlaps' (K, K) between
      prototypes.
    """
    chex.assert_rank(prototypes, 2)
    corrupt_key, retrieve_key = jax.random.split(key)
    patterns = jnp.asarray(prototypes, jnp.float32)
    probes = corrupt(corrupt_key, patterns, flip_fraction)
    retrieved, sweeps = retrieve(hebbian_weights(patterns), probes, retrieve_key, max_sweeps, order)
    overlaps_with_all = overlap(retrieved[:, None, :], patterns[None, :, :])  # (K, K)
    outputs = dict(
        probes=probes,
        retrieved=retrieved,
        final_overlap=overlap(retrieved, patterns),
        exact=jnp.all(retrieved == patterns, axis=-1),
        nearest_pattern=jnp.argmax(overlaps_with_all, axis=-1),
        sweeps=sweeps,
        pattern_overlaps=overlap(patterns[:, None, :], patterns[None, :, :]),
    )
    return {name: np.asarray(value) for name, value in outputs.items()}


# ------------------------------------------------------------------- config and experiment


def _fail(message: str) -> None:
    raise ValueError(message)


def _check_positive_int(name: str, value) -> None:
    if not util.is_int(value) or value <= 0:
        _fail(f"config.{name}={value!r}; allowed: a positive integer.")


def _check_loads(loads) -> None:
    allowed = "allowed: a non-empty, strictly increasing sequence of positive numbers."
    if not isinstance(loads, tuple | list) or not loads:
        _fail(f"config.model_config.loads={loads!r}; {allowed}")
    if not all(util.is_number(load) and load > 0 for load in loads):
        _fail(f"config.model_config.loads={loads!r}: loads must be positive; {allowed}")
    if any(later <= earlier for earlier, later in zip(loads, loads[1:], strict=False)):
        _fail(f"config.model_config.loads={loads!r}: not increasing; {allowed}")


def _check_model_config(model_config) -> None:
    missing = [name for name in MODEL_CONFIG_FIELDS if name not in model_config]
    if missing:
        _fail(f"config.model_config lacks {missing}; required fields: {MODEL_CONFIG_FIELDS}")
    for name in ("num_neurons", "num_trials", "max_sweeps", "num_digit_patterns"):
        _check_positive_int(f"model_config.{name}", model_config[name])
    _check_loads(model_config.loads)
    flip_fraction = model_config.flip_fraction
    if not util.is_number(flip_fraction) or not 0 <= flip_fraction < 0.5:
        _fail(f"config.model_config.flip_fraction={flip_fraction!r}; allowed: a number in [0, 0.5)")
    if model_config.order not in ORDER_MODES:
        _fail(f"config.model_config.order={model_config.order!r}; allowed: {ORDER_MODES}")


def _check_data_config(config) -> None:
    """An image dataset with plain [0, 1] intensities (no binarization, scaling or logit)."""
    pipeline.check_dataset_name(config.dataset)
    if config.dataset.startswith("toy2d"):
        _fail(
            f"config.dataset={config.dataset!r} has no images to store; allowed: an image "
            "dataset with labels, e.g. 'mnist5k' or 'digits8x8'."
        )
    for field, plain in pipeline.PREPROCESS_DEFAULTS.items():
        if config.preprocess[field] != plain:
            _fail(
                f"config.preprocess.{field}={config.preprocess[field]!r}; allowed: {plain!r} "
                "(prototypes threshold plain [0, 1] intensities)."
            )


def validate_config(config) -> None:
    """Raises ValueError naming the first bad field of a Hopfield config and its allowed values.

    Reads only the config (and the local TFDS catalog for a catalog dataset name).
    """
    if config.model != "hopfield":
        _fail(f"config.model={config.model!r}; allowed: 'hopfield'")
    _check_model_config(config.model_config)
    _check_positive_int("eval_batch_size", config.eval_batch_size)
    if not util.is_int(config.seed):
        _fail(f"config.seed={config.seed!r}; allowed: an integer.")
    if not isinstance(config.progress_bar, bool):
        _fail(f"config.progress_bar={config.progress_bar!r}; allowed: True or False.")
    compute_dtype = config.get("compute_dtype", "float32")
    if compute_dtype != "float32":
        # Each update is the sign of a sum of weights; in bfloat16 a field that is 0, or nearly
        # so, takes the wrong sign, and the experiment has no train step to speed up.
        _fail(
            f"config.compute_dtype={compute_dtype!r}; allowed: 'float32' (the Hopfield "
            "experiment's dynamics are sign thresholds of exact local fields)."
        )
    _check_data_config(config)
