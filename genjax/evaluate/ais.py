"""Annealed importance sampling (Neal 2001) for log partition functions.

The estimator anneals from a base distribution p_0 with known log Z_0 to the target p_1
through intermediate distributions p_beta, 0 = beta_0 < ... < beta_K = 1:

    x_0 ~ p_0;  log w = sum_k [log p*_{beta_k}(x_{k-1}) - log p*_{beta_{k-1}}(x_{k-1})];
    x_k ~ T_{beta_k}(x_{k-1} -> .)  (a transition that leaves p_{beta_k} invariant),

and E[w] = Z_1 / Z_0, so log Z_1 ~= log Z_0 + log mean(w) over independent chains
(Salakhutdinov & Murray 2008, "On the quantitative analysis of deep belief networks").
log mean(w) is a stochastic lower bound on log Z_1 (Jensen): AIS underestimates log Z on
average, which makes the log-likelihoods built on it optimistic; the reported standard error
measures the spread of the weights, not that bias. `reverse_annealed_importance_sampling`
(RAISE, Burda et al. 2015) runs the same path backwards from test data for the complementary
estimate, which errs low.

The chains run under `jax.lax.scan` in fixed-length segments compiled once, so long
schedules can show a progress bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

# Salakhutdinov & Murray (2008), section 4: 500 betas spaced uniformly in [0, 0.5], 4,000 in
# [0.5, 0.9] and 10,000 in [0.9, 1.0]: dense near 1, where the target's modes appear.
SALAKHUTDINOV_MURRAY_SPACING = ((0.5, 500), (0.9, 4_000), (1.0, 10_000))
DEFAULT_NUM_BETAS = sum(count for _, count in SALAKHUTDINOV_MURRAY_SPACING)


class AISResult(NamedTuple):
    """An AIS estimate: `log_z` with the standard error of log Z-hat, and the chains' weights.

    `stderr` is the delta-method standard error std(w) / (sqrt(n) mean(w)); Salakhutdinov &
    Murray (2008) report log(Z-hat +/- 3 sigma), which is about log_z +/- 3 * stderr.
    """

    log_z: jax.Array
    stderr: jax.Array
    log_weights: jax.Array  # (num_chains,), including log Z_0


class RAISEResult(NamedTuple):
    """RAISE estimates per data point: `log_likelihood` (N,), log mean of its chains' weights
    (a stochastic lower bound on log p_ann(x)), `stderr` (N,) the delta-method standard error
    of it over chains (0 with one chain), and `log_weights` (N, num_chains)."""

    log_likelihood: jax.Array
    stderr: jax.Array
    log_weights: jax.Array


def default_betas(num_betas: int = DEFAULT_NUM_BETAS) -> np.ndarray:
    """The inverse temperatures 0 = beta_0 < ... < beta_K = 1 of Salakhutdinov & Murray (2008).

    `num_betas` = K; the default is the paper's 14,500. Other values keep the paper's
    proportions (500 : 4,000 : 10,000 over [0, .5], [.5, .9], [.9, 1]), for cheap monitoring.

    Returns a float32 array of shape (num_betas + 1,).
    """
    if num_betas < len(SALAKHUTDINOV_MURRAY_SPACING):
        raise ValueError(f"num_betas={num_betas} must be at least 3")
    counts = [
        max(1, round(num_betas * count / DEFAULT_NUM_BETAS))
        for _, count in SALAKHUTDINOV_MURRAY_SPACING
    ]
    counts[-1] = num_betas - sum(counts[:-1])
    pieces, start = [np.zeros(1)], 0.0
    for (stop, _), count in zip(SALAKHUTDINOV_MURRAY_SPACING, counts, strict=True):
        pieces.append(np.linspace(start, stop, count + 1)[1:])
        start = stop
    return np.concatenate(pieces).astype(np.float32)


def check_betas(betas) -> np.ndarray:
    """`betas` as float32 NumPy, checked: 1-D, from 0 to 1, non-decreasing."""
    betas = np.asarray(betas, np.float32)
    if betas.ndim != 1 or betas.size < 2:
        raise ValueError(f"betas must be a 1-D schedule of at least 2 values, got {betas.shape}")
    if betas[0] != 0.0 or betas[-1] != 1.0 or np.any(np.diff(betas) < 0):
        raise ValueError("betas must start at 0, end at 1 and never decrease")
    return betas


def log_mean_exp_with_stderr(log_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """log mean(w) and the delta-method standard error of it, from log w of shape (n,)."""
    n = log_weights.shape[0]
    log_mean = jax.nn.logsumexp(log_weights) - jnp.log(n)
    ratios = jnp.exp(log_weights - log_mean)  # w / mean(w), mean 1
    stderr = jnp.std(ratios, ddof=1 if n > 1 else 0) / jnp.sqrt(n)
    return log_mean, stderr


def annealed_importance_sampling(
    key: jax.Array,
    sample_base: Callable[[jax.Array, int], Any],
    log_unnormalized: Callable[[Any, jax.Array], jax.Array],
    transition: Callable[[jax.Array, Any, jax.Array], Any],
    log_z_base: jax.Array,
    num_chains: int,
    betas=None,
    segment_length: int = 500,
    progress: bool = False,
) -> AISResult:
    """Estimates log Z of p_1 by annealing independent chains from p_0.

    Args:
      key: a typed key.
      sample_base: (key, num_chains) -> a chain-state pytree (leading axis num_chains) drawn
        exactly from p_0.
      log_unnormalized: (states, beta) -> (num_chains,) log p*_beta, with p*_0 normalized by
        `log_z_base` and p*_1 the target's unnormalized density.
      transition: (key, states, beta) -> states, a Markov step that leaves p_beta invariant.
      log_z_base: log Z_0, the base distribution's log normalizer.
      num_chains: number of independent annealing runs.
      betas: the schedule (see `default_betas`, the default).
      segment_length: betas per compiled `lax.scan` segment (the progress bar's unit).
      progress: show a progress bar over the schedule.

    Returns:
      `AISResult(log_z, stderr, log_weights)`.
    """
    betas = check_betas(default_betas() if betas is None else betas)
    num_transitions = betas.size - 1
    segment_length = max(1, min(segment_length, num_transitions))
    # Pad with beta = 1 repeats: each adds log p*_1(x) - log p*_1(x) = 0 and one more valid
    # transition, so every segment has the same length and compiles once.
    padding = -num_transitions % segment_length
    previous = np.concatenate([betas[:-1], np.ones(padding, np.float32)])
    current = np.concatenate([betas[1:], np.ones(padding, np.float32)])
    num_segments = previous.size // segment_length

    def step(carry, inputs):
        states, log_w = carry
        index, beta_previous, beta = inputs
        log_w = log_w + log_unnormalized(states, beta) - log_unnormalized(states, beta_previous)
        states = transition(jax.random.fold_in(key, index), states, beta)
        return (states, log_w), None

    @jax.jit
    def run_segment(carry, indices, beta_previous, beta):
        carry, _ = jax.lax.scan(step, carry, (indices, beta_previous, beta))
        return carry

    base_key = jax.random.fold_in(key, -1 % 2**31)
    carry = (jax.jit(sample_base, static_argnums=1)(base_key, num_chains), jnp.zeros(num_chains))
    for segment in tqdm(
        range(num_segments), desc="AIS", unit="segment", leave=False, disable=not progress
    ):
        window = slice(segment * segment_length, (segment + 1) * segment_length)
        indices = np.arange(window.start, window.stop, dtype=np.int32)
        carry = run_segment(carry, indices, previous[window], current[window])
    log_w = carry[1] + log_z_base
    log_z, stderr = log_mean_exp_with_stderr(log_w)
    return AISResult(log_z, stderr, log_w)


def reverse_annealed_importance_sampling(
    key: jax.Array,
    data_states: Any,
    log_unnormalized: Callable[[Any, jax.Array], jax.Array],
    transition: Callable[[jax.Array, Any, jax.Array], Any],
    log_base_density: Callable[[Any], jax.Array],
    betas=None,
) -> jax.Array:
    """RAISE: log weights whose mean estimates the annealing model's probability of the data.

    Burda, Grosse & Salakhutdinov (2015), "Accurate and conservative estimates of MRF
    log-likelihood using reverse annealing". The annealing model p_ann is the distribution of
    the last state of forward AIS (`annealed_importance_sampling` with the same `betas` and
    `transition`): x_0 ~ p_0, x_k ~ T_{beta_k}(x_{k-1} -> .), k = 1..K. Started at a data
    point x_K = x, the chains run that schedule backwards,

        x_{k-1} ~ T_{beta_k}(x_k -> .),  k = K..1;
        log w = log p_0(x_0) + sum_k [log p*_{beta_k}(x_k) - log p*_{beta_k}(x_{k-1})],

    which is importance sampling of the forward path with the reversed chain as proposal, so
    E[w] = p_ann(x) exactly; no log Z is needed. By Jensen E[log w] <= log p_ann(x), and
    averaged over data from the model E log p_ann(x) <= E log p(x) (a KL divergence), so RAISE
    errs low where forward AIS, which underestimates log Z, errs high; as K grows p_ann -> p.

    Pure: one `lax.scan` over the schedule (no progress bar), so it runs inside `jit`/`vmap`.

    Args:
      key: a typed key; step k uses `fold_in(key, k)`.
      data_states: the chains' start, a pytree with leading axis num_chains (each data point
        repeated for as many chains as it gets).
      log_unnormalized: (states, beta) -> (num_chains,) log p*_beta, as for forward AIS.
      transition: (key, states, beta) -> states, a Markov step that leaves p_beta invariant
        and is reversible with respect to it (its own reversal, as a block Gibbs sweep
        v -> h -> v' is); the reverse chain needs the reversal.
      log_base_density: states -> (num_chains,) log p_0, normalized.
      betas: the schedule 0 = beta_0 < ... < beta_K = 1 (see `default_betas`, the default).

    Returns:
      log w, (num_chains,): log mean over a data point's chains estimates log p_ann(x).
    """
    betas = check_betas(default_betas() if betas is None else betas)
    backwards = jnp.asarray(betas[1:][::-1])  # beta_K, ..., beta_1

    def step(carry, inputs):
        states, log_w = carry
        index, beta = inputs
        previous = transition(jax.random.fold_in(key, index), states, beta)
        log_w = log_w + log_unnormalized(states, beta) - log_unnormalized(previous, beta)
        return (previous, log_w), None

    num_chains = jax.tree.leaves(data_states)[0].shape[0]
    indices = jnp.arange(backwards.shape[0])
    (base_states, log_w), _ = jax.lax.scan(
        step, (data_states, jnp.zeros(num_chains)), (indices, backwards)
    )
    return log_w + log_base_density(base_states)
