"""Restricted Boltzmann machines as pure functions on a plain parameter dict.

    params = {"W": (V, H), "b_v": (V,), "b_h": (H,)}          # Bernoulli-Bernoulli
    params = {..., "log_sigma": (V,)}                           # Gaussian-Bernoulli

Energies (Hinton 2002; Gaussian visibles as in Hinton & Salakhutdinov 2006 and Hinton 2010,
"A practical guide to training RBMs", section 13.2):

    Bernoulli:  E(v, h) = -b_v.v - b_h.h - v^T W h
    Gaussian:   E(v, h) = sum_i (v_i - b_v,i)^2 / (2 sigma_i^2) - b_h.h - (v / sigma)^T W h

so p(h_j = 1 | v) = sigmoid(b_h,j + sum_i W_ij v_i / sigma_i) in both, and p(v | h) is
Bernoulli(sigmoid(b_v + W h)) or N(b_v + sigma * (W h), sigma^2). The Gaussian parameters are
W, b_v, b_h and `log_sigma` = log sigma_i. This is not the parameterisation of Cho, Ilin &
Raiko (2011, "Improved learning of Gaussian-Bernoulli RBMs"), whose interaction is
(v / sigma^2)^T W' h and who learn log sigma^2: the two describe the same family of
distributions (W' = sigma W), but the gradients, and so training, differ. Every function takes
visible batches of shape (..., V); the type is read from the parameters (a `log_sigma`
entry means Gaussian visibles).

Learning: `contrastive_divergence_loss` is the surrogate whose gradient is the CD/PCD
update (Hinton 2002; Tieleman 2008). Evaluation: `log_partition_exact` enumerates the smaller
layer; `ais_log_partition` is annealed importance sampling from a base-rate RBM
(Salakhutdinov & Murray 2008); `raise_log_likelihood` runs the same path backwards from test
data (RAISE, Burda, Grosse & Salakhutdinov 2015), a conservative log p(v). Parallel tempering
on that path is in `tempering`.

Mixed precision: with the weight matrix cast to bfloat16 (`precision.cast_matrices`), every
product with W runs in bfloat16 (`precision.product`) and the biases bring its result back to
float32, so the sampling probabilities, free energies and log Z are float32 sums. Bias terms
such as b_v . v are written as elementwise sums, not matrix products, for the same reason.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax.evaluate import ais
from genjax.nn.precision import product

# log_partition_exact enumerates 2**units configurations; beyond this it refuses.
MAX_EXACT_UNITS = 25
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def is_gaussian(params: dict) -> bool:
    """Whether `params` describe Gaussian visibles (they carry `log_sigma`)."""
    return "log_sigma" in params


def init_params(
    key: jax.Array,
    num_visible: int,
    num_hidden: int,
    gaussian: bool = False,
    weight_scale: float = 0.01,
) -> dict:
    """Small random weights N(0, weight_scale^2), zero biases (and unit sigma if Gaussian)."""
    params = {
        "W": weight_scale * jax.random.normal(key, (num_visible, num_hidden)),
        "b_v": jnp.zeros(num_visible),
        "b_h": jnp.zeros(num_hidden),
    }
    if gaussian:
        params["log_sigma"] = jnp.zeros(num_visible)
    return params


def _sigma(params: dict) -> jax.Array:
    return jnp.exp(params["log_sigma"]) if is_gaussian(params) else jnp.ones(())


def hidden_input(params: dict, v: jax.Array) -> jax.Array:
    """b_h + (v / sigma) W: the hidden units' total input, (..., V) -> (..., H)."""
    return params["b_h"] + product(v / _sigma(params), params["W"])


def energy(params: dict, v: jax.Array, h: jax.Array) -> jax.Array:
    """E(v, h) for (..., V) and (..., H) -> (...)."""
    sigma = _sigma(params)
    interaction = jnp.sum(product(v / sigma, params["W"]) * h, axis=-1)
    hidden_term = jnp.sum(h * params["b_h"], axis=-1)
    if is_gaussian(params):
        visible_term = -jnp.sum((v - params["b_v"]) ** 2 / (2 * sigma**2), axis=-1)
    else:
        visible_term = jnp.sum(v * params["b_v"], axis=-1)
    return -(visible_term + hidden_term + interaction)


def free_energy(params: dict, v: jax.Array) -> jax.Array:
    """F(v) = -log sum_h exp(-E(v, h)), the hidden units summed out: (..., V) -> (...)."""
    softplus_sum = jnp.sum(jax.nn.softplus(hidden_input(params, v)), axis=-1)
    if is_gaussian(params):
        sigma = _sigma(params)
        return jnp.sum((v - params["b_v"]) ** 2 / (2 * sigma**2), axis=-1) - softplus_sum
    return -jnp.sum(v * params["b_v"], axis=-1) - softplus_sum


def hidden_probs(params: dict, v: jax.Array) -> jax.Array:
    """p(h_j = 1 | v), (..., V) -> (..., H)."""
    return jax.nn.sigmoid(hidden_input(params, v))


def visible_probs(params: dict, h: jax.Array) -> jax.Array:
    """p(v_i = 1 | h) for Bernoulli visibles, E[v_i | h] for Gaussian: (..., H) -> (..., V)."""
    top_down = product(h, params["W"].T)
    if is_gaussian(params):
        return params["b_v"] + _sigma(params) * top_down
    return jax.nn.sigmoid(params["b_v"] + top_down)


def sample_hidden(key: jax.Array, params: dict, v: jax.Array) -> jax.Array:
    """h ~ p(h | v) as float {0, 1}."""
    probs = hidden_probs(params, v)
    return jax.random.bernoulli(key, probs).astype(probs.dtype)


def sample_visible(key: jax.Array, params: dict, h: jax.Array) -> jax.Array:
    """v ~ p(v | h): {0, 1} for Bernoulli visibles, real for Gaussian."""
    mean = visible_probs(params, h)
    if is_gaussian(params):
        return mean + _sigma(params) * jax.random.normal(key, mean.shape, mean.dtype)
    return jax.random.bernoulli(key, mean).astype(mean.dtype)


def gibbs_step(key: jax.Array, params: dict, v: jax.Array) -> jax.Array:
    """One block Gibbs sweep v -> h ~ p(h | v) -> v' ~ p(v | h)."""
    hidden_key, visible_key = jax.random.split(key)
    return sample_visible(visible_key, params, sample_hidden(hidden_key, params, v))


def gibbs_chain(
    params: dict,
    key: jax.Array,
    v0: jax.Array,
    num_steps: int,
    return_trajectory: bool = False,
):
    """`num_steps` block Gibbs sweeps from `v0` (..., V), under `jax.lax.scan`.

    Step t uses `fold_in(key, t)`. Returns the final visible state (..., V), and with
    `return_trajectory` also every state after each sweep, (num_steps, ..., V).
    """

    def sweep(v, step):
        v = gibbs_step(jax.random.fold_in(key, step), params, v)
        return v, v if return_trajectory else None

    v_final, trajectory = jax.lax.scan(sweep, v0, jnp.arange(num_steps))
    return (v_final, trajectory) if return_trajectory else v_final


def contrastive_divergence_loss(params: dict, v_data: jax.Array, v_model: jax.Array) -> jax.Array:
    """mean F(v_data) - mean F(stop_gradient(v_model)): its gradient is the CD/PCD update.

    dF(v)/dW = -v p(h | v)^T, so descending this surrogate moves W by
    lr * (<v p(h|v)>_data - <v p(h|v)>_model) (Hinton 2002, eq. 5), and likewise the biases;
    any optax optimizer (momentum, weight decay) applies on top. `v_model` comes from k Gibbs
    steps started at the data (CD-k) or at persistent chains (PCD, Tieleman 2008); either way
    no gradient flows through it.
    """
    return positive_minus_negative(
        lambda v: free_energy(params, v), (v_data,), (jax.lax.stop_gradient(v_model),)
    )


def positive_minus_negative(fn, data: tuple, model: tuple) -> jax.Array:
    """mean fn(*data) - mean fn(*model), from one call of `fn` on both batches stacked.

    `data` and `model` are tuples of arrays with leading axes (B,) and (B',). Stacked, the
    gradient of each weight matrix is one matrix product over data and model samples together,
    <x h>_data - <x h>_model accumulated before its one rounding to the compute dtype. Two
    calls would round each term on its own, and the rounding errors of the two terms do not
    shrink with their difference, which becomes small as the model's statistics approach the
    data's (for a 784 x 500 RBM at initialisation, bfloat16's gradient of W is 0.19% off
    float32's stacked and 0.29% off in two calls).
    """
    num_data = data[0].shape[0]
    stacked = [jnp.concatenate([d, m]) for d, m in zip(data, model, strict=True)]
    values = fn(*stacked)  # (B + B',)
    return jnp.mean(values[:num_data]) - jnp.mean(values[num_data:])


def textbook_update(params: dict, v_data: jax.Array, v_model: jax.Array) -> dict:
    """The CD ascent direction for Bernoulli RBMs written out (Hinton 2002, eq. 5):

    dW = <v p(h|v)>_data - <v p(h|v)>_model, db_v = <v>_data - <v>_model,
    db_h = <p(h|v)>_data - <p(h|v)>_model, for batches (B, V).
    """
    h_data, h_model = hidden_probs(params, v_data), hidden_probs(params, v_model)
    num_data, num_model = v_data.shape[0], v_model.shape[0]
    return {
        "W": v_data.T @ h_data / num_data - v_model.T @ h_model / num_model,
        "b_v": v_data.mean(0) - v_model.mean(0),
        "b_h": h_data.mean(0) - h_model.mean(0),
    }


def log_likelihood(params: dict, v: jax.Array, log_z: jax.Array) -> jax.Array:
    """log p(v) = -F(v) - log Z, (..., V) -> (...)."""
    return -free_energy(params, v) - log_z


def reconstruction_error(params: dict, v: jax.Array) -> jax.Array:
    """Squared error of the mean-field reconstruction E[v | p(h | v)], summed over units."""
    reconstruction = visible_probs(params, hidden_probs(params, v))
    return jnp.sum((v - reconstruction) ** 2, axis=-1)


def pseudo_log_likelihood(params: dict, v: jax.Array, key: jax.Array) -> jax.Array:
    """Stochastic pseudo-log-likelihood of Bernoulli RBMs: V * log p(v_i | v_-i), i random.

    An unbiased estimate of sum_i log p(v_i | v_-i) (Besag 1975) from one unit per example;
    log p(v_i | v_-i) = log sigmoid(F(v with v_i flipped) - F(v)). `v` (V,) is one example
    and `key` its own key (vmap over a batch).
    """
    if is_gaussian(params):
        raise ValueError("pseudo_log_likelihood is defined here for Bernoulli visibles only")
    chex.assert_rank(v, 1)
    unit = jax.random.randint(key, (), 0, v.shape[-1])
    flipped = v.at[unit].set(1.0 - v[unit])
    return v.shape[-1] * jax.nn.log_sigmoid(free_energy(params, flipped) - free_energy(params, v))


def _binary_configurations(indices: jax.Array, num_units: int, dtype=jnp.float32) -> jax.Array:
    """The bits of each integer in `indices` (N,), as float {0, 1} of shape (N, num_units)."""
    return ((indices[:, None] >> jnp.arange(num_units)) & 1).astype(dtype)


def _log_unnormalized_hidden_marginal(params: dict, h: jax.Array) -> jax.Array:
    """log sum_v exp(-E(v, h)) for hidden states (N, H), visibles integrated out."""
    top_down = product(h, params["W"].T)  # (N, V)
    hidden_term = jnp.sum(h * params["b_h"], axis=-1)
    if is_gaussian(params):
        sigma = _sigma(params)
        per_unit = params["b_v"] * top_down / sigma + 0.5 * top_down**2
        constant = jnp.sum(_HALF_LOG_2PI + params["log_sigma"])
        return hidden_term + jnp.sum(per_unit, axis=-1) + constant
    return hidden_term + jnp.sum(jax.nn.softplus(params["b_v"] + top_down), axis=-1)


def log_partition_exact(
    params: dict, max_units: int = MAX_EXACT_UNITS, chunk_size: int = 2**12
) -> jax.Array:
    """log Z by enumerating every state of the smaller layer, in chunks of bounded memory.

    Bernoulli RBMs sum over whichever layer is smaller; Gaussian-Bernoulli RBMs sum over the
    hidden layer and integrate the visibles in closed form. Memory is O(chunk_size * (V + H));
    any positive `chunk_size` gives the same sum (a last, partial chunk is masked).

    Raises:
      ValueError: if the enumerated layer has more than `max_units` units, or chunk_size < 1.
    """
    num_visible, num_hidden = params["W"].shape
    over_visible = not is_gaussian(params) and num_visible < num_hidden
    num_units = num_visible if over_visible else num_hidden
    if num_units > max_units:
        raise ValueError(
            f"log_partition_exact enumerates 2**{num_units} states of the "
            f"{'visible' if over_visible else 'hidden'} layer; the limit is {max_units} units. "
            "Use ais_log_partition for larger models."
        )
    if chunk_size < 1:
        raise ValueError(f"log_partition_exact: chunk_size={chunk_size} must be at least 1.")
    total = 2**num_units
    chunk_size = min(chunk_size, total)
    if over_visible:
        log_unnormalized = lambda v: -free_energy(params, v)
    else:
        log_unnormalized = lambda h: _log_unnormalized_hidden_marginal(params, h)

    def chunk(carry, start):
        indices = start + jnp.arange(chunk_size)  # (chunk_size,)
        states = _binary_configurations(indices, num_units, params["W"].dtype)
        # The last chunk may run past 2**num_units when chunk_size does not divide it: those
        # indices would repeat states already counted (their low bits), so they count zero.
        terms = jnp.where(indices < total, log_unnormalized(states), -jnp.inf)
        return jnp.logaddexp(carry, jax.nn.logsumexp(terms)), None

    starts = jnp.arange(0, total, chunk_size)
    log_z, _ = jax.lax.scan(chunk, jnp.array(-jnp.inf, params["W"].dtype), starts)
    return log_z


def base_rate_params(params: dict, base_visible_bias: jax.Array | None = None) -> dict:
    """The AIS base model: no weights, no hidden biases (Salakhutdinov & Murray 2008).

    Bernoulli visibles get `base_visible_bias` (the base rates, e.g. logit of the data's pixel
    means; zeros, the uniform distribution, by default). Gaussian visibles keep the model's
    own means and sigmas.
    """
    base = {
        "W": jnp.zeros_like(params["W"]),
        "b_v": params["b_v"],
        "b_h": jnp.zeros_like(params["b_h"]),
    }
    if is_gaussian(params):
        base["log_sigma"] = params["log_sigma"]
    else:
        base["b_v"] = (
            jnp.zeros_like(params["b_v"]) if base_visible_bias is None else base_visible_bias
        )
    return base


def base_rates_from_mean(visible_mean: jax.Array, num_examples: float = 1000.0) -> jax.Array:
    """Base-rate visible biases logit(p), with p the data's smoothed pixel means.

    Smoothing (p * n + 0.5) / (n + 1) keeps never-on pixels at a finite bias.
    """
    p = (visible_mean * num_examples + 0.5) / (num_examples + 1.0)
    return jnp.log(p) - jnp.log1p(-p)


def _log_partition_independent(params: dict) -> jax.Array:
    """log Z of an RBM with W = 0 (independent units)."""
    hidden = jnp.sum(jax.nn.softplus(params["b_h"]))
    if is_gaussian(params):
        return hidden + jnp.sum(_HALF_LOG_2PI + params["log_sigma"])
    return hidden + jnp.sum(jax.nn.softplus(params["b_v"]))


def interpolate(base: dict, params: dict, beta: jax.Array) -> dict:
    """The intermediate RBM of Salakhutdinov & Murray's (2008) AIS path, by its parameters.

    W and b_h are scaled by beta (the base RBM has none) and the visible biases are mixed,
    (1 - beta) b_v^base + beta b_v; Gaussian visibles keep the model's sigma. This is the
    geometric path between the *joint* distributions over (v, h),
    p_beta(v, h) ~ p_base(v, h)^(1 - beta) p(v, h)^beta (the base's hiddens uniform), whose
    marginal for Bernoulli visibles is

        p_beta(v) ~ exp(((1 - beta) b_v^base + beta b_v).v) prod_j (1 + exp(beta (b_h + v W)_j)).

    That is NOT the geometric path between the marginals, p_base(v)^(1 - beta) p(v)^beta,
    whose hidden factors would be (1 + exp((b_h + v W)_j))^beta: the two agree at beta = 0
    and 1 only and are different distributions in between. Any path with these end points
    gives valid AIS; this one keeps every intermediate an ordinary RBM, with a closed-form
    free energy and block Gibbs sweeps.
    """
    mixed = dict(params)
    mixed["W"] = beta * params["W"]
    mixed["b_h"] = beta * params["b_h"]
    mixed["b_v"] = (1.0 - beta) * base["b_v"] + beta * params["b_v"]
    return mixed


def _annealing_path(params: dict, base: dict):
    """The AIS path from `base` to `params`: (log_unnormalized, transition) for
    `genjax.evaluate.ais`, log p*_beta(v) = -F(v) of `interpolate(base, params, beta)` and one
    block Gibbs sweep of that RBM (reversible with respect to its marginal)."""

    def log_unnormalized(v, beta):
        return -free_energy(interpolate(base, params, beta), v)

    def transition(step_key, v, beta):
        return gibbs_step(step_key, interpolate(base, params, beta), v)

    return log_unnormalized, transition


def ais_log_partition(
    params: dict,
    key: jax.Array,
    num_chains: int = 100,
    betas=None,
    base_visible_bias: jax.Array | None = None,
    progress: bool = False,
) -> ais.AISResult:
    """log Z of an RBM by annealed importance sampling (Salakhutdinov & Murray 2008).

    Anneals `num_chains` chains from the base-rate RBM (`base_rate_params`), whose log Z is
    closed-form, through the RBMs `interpolate(base, params, beta)`, with one block Gibbs
    sweep per beta. The default schedule is the paper's 14,500 betas (`ais.default_betas`).

    Returns:
      `ais.AISResult(log_z, stderr, log_weights)`; see `genjax.evaluate.ais`.
    """
    base = base_rate_params(params, base_visible_bias)
    num_hidden = params["W"].shape[1]
    log_unnormalized, transition = _annealing_path(params, base)

    def sample_base(base_key, num):
        h = jnp.zeros((num, num_hidden))
        return sample_visible(base_key, base, h)

    return ais.annealed_importance_sampling(
        key,
        sample_base,
        log_unnormalized,
        transition,
        _log_partition_independent(base),
        num_chains,
        betas,
        progress=progress,
    )


def raise_log_likelihood(
    params: dict,
    key: jax.Array,
    v: jax.Array,
    num_chains: int = 1,
    betas=None,
    base_visible_bias: jax.Array | None = None,
) -> ais.RAISEResult:
    """Conservative log p(v) of test examples by RAISE (Burda, Grosse & Salakhutdinov 2015).

    Runs the path of `ais_log_partition` (same base-rate RBM, `interpolate`, one block Gibbs
    sweep per beta) backwards from each example, `num_chains` chains per example
    (`ais.reverse_annealed_importance_sampling`). The estimate is unbiased for p_ann(v), the
    probability of v under the forward annealing chain with these betas; its log errs low
    (Jensen), and on data that the model fits p_ann falls short of p on average, so RAISE
    complements forward AIS, whose log-likelihoods err high. No log Z is involved.

    Args:
      v: test examples (N, V).
      num_chains: reverse chains per example.
      betas: the schedule (`ais.default_betas`, 14,500 betas, by default).

    Returns:
      `ais.RAISEResult` with log_likelihood and stderr (N,), log_weights (N, num_chains).
    """
    chex.assert_rank(v, 2)
    num_examples = v.shape[0]
    base = base_rate_params(params, base_visible_bias)
    log_unnormalized, transition = _annealing_path(params, base)
    log_z_base = _log_partition_independent(base)

    def log_base_density(x):
        return -free_energy(base, x) - log_z_base

    starts = jnp.repeat(v, num_chains, axis=0)  # (N * C, V), each example's chains together
    log_w = ais.reverse_annealed_importance_sampling(
        key, starts, log_unnormalized, transition, log_base_density, betas
    ).reshape(num_examples, num_chains)
    log_likelihood, stderr = jax.vmap(ais.log_mean_exp_with_stderr)(log_w)
    return ais.RAISEResult(log_likelihood, stderr, log_w)


def check_params(params: dict) -> None:
    """Asserts the shapes of an RBM parameter dict."""
    num_visible, num_hidden = np.shape(params["W"])
    chex.assert_shape(params["b_v"], (num_visible,))
    chex.assert_shape(params["b_h"], (num_hidden,))
    if is_gaussian(params):
        chex.assert_shape(params["log_sigma"], (num_visible,))
