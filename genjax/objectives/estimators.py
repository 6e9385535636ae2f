"""Gradient-estimator surrogates for variational bounds of latent-variable models.

Each function here returns a *surrogate*: an array whose forward value is the bound itself (so a
loss built from it logs the real number) and whose gradient, when the caller differentiates it
with ``jax.grad`` with respect to whatever parameters produced the inputs, is the named
estimator of the bound's gradient. The construction is

    surrogate = stop_gradient(bound) + (g - stop_gradient(g)),

where ``g`` is a function of the inputs whose gradient is the estimator; the bracket is zero in
the forward pass. All inputs are arrays of shape (K, B) with the sample axis ``axis`` (size K),
as in ``genjax.objectives.vi``, and the outputs have shape (B,).

Notation. theta are the decoder (model) parameters, phi the encoder parameters, and

    log w_k = log p_theta(x, z_k) - log q_phi(z_k | x),    z_k ~ q_phi(z | x),  k = 1..K,

with, for a reparameterizable q, z_k = z(eps_k, phi) for noise eps_k. ``sg`` is
``jax.lax.stop_gradient``. L_K = log (1/K) sum_k w_k is the IWAE bound (Burda et al. 2016) and
w~_k = w_k / sum_j w_j are the normalised weights (``vi.importance_weights``). What the caller
must stop differs per estimator:

* ``reparam`` (Kingma & Welling 2014; Burda et al. 2016 eq. 14 for K > 1): no surrogate needed.
  Compute ``log_w`` with z_k = z(eps_k, phi) and every parameter live, and differentiate
  ``vi.elbo(log_w)`` or ``vi.iwae_bound(log_w)``.
* ``stl``, sticking the landing (Roeder, Wu & Duvenaud 2017): no surrogate needed either.
  Compute log w_k = log p_theta(x, z_k) - log q_{sg(phi)}(z_k | x): z_k reparameterized and
  live, but the density q evaluated with the variational parameters stopped. This drops the
  score term -grad_phi log q_phi(z | x) of the total derivative (zero in expectation), so the
  encoder gradient vanishes for every draw once q equals the posterior.
* ``dreg``, doubly reparameterized (Tucker, Lawson, Gu & Maddison 2019), for the IWAE bound:
  ``dreg_surrogate(log_w_encoder, log_w_decoder)``. ``log_w_encoder`` is
  log p_{sg(theta)}(x, z_k) - log q_{sg(phi)}(z_k | x) with z_k = z(eps_k, phi) live, so its
  gradient reaches phi through z only; ``log_w_decoder`` has the same values but is computed
  from sg(z_k) with phi stopped too, so its gradient reaches theta only.
  The gradient is sum_k sg(w~_k^2) grad log_w_encoder_k + sum_k sg(w~_k) grad log_w_decoder_k.
* ``score``, REINFORCE (Williams 1992) with a baseline b (Mnih & Gregor 2014, NVIL):
  ``score_function_surrogate(log_w, log_q, baseline, objective)``. Here z_k = sg(z_k) (any q,
  discrete included); ``log_w`` is computed from the stopped z_k with every parameter live
  (its gradient is the direct term, -grad_phi log q included) and ``log_q`` is
  log q_phi(sg(z_k) | x) with phi live. For the IWAE bound the gradient is
  sum_k sg(L_K - b) grad log q_k + sum_k sg(w~_k) grad log w_k; for the ELBO it is
  (1/K) sum_k [sg(log w_k - b) grad log q_k + grad log w_k]. ``learning_signal`` gives the
  value a learned baseline regresses on.
* ``vimco`` (Mnih & Rezende 2016, "Variational inference for Monte Carlo objectives"):
  ``vimco_surrogate(log_w, log_q)`` with the inputs of ``score``; each sample gets its own
  baseline built from the other K - 1 samples (``vimco_learning_signals``), K >= 2.

``reparam``, ``dreg``, ``score`` and ``vimco`` are unbiased for the gradient of their bound and
differ in variance. ``stl`` is unbiased for the ELBO's gradient (any K) but BIASED for the IWAE
bound with K > 1 (Tucker et al. 2019): the term it drops from the IWAE gradient is
-sum_k w~_k grad_phi log q_phi(z_k | x) with z_k held fixed, and weighted by w~_k, which
depends on z_k, it no longer has mean zero (for K = 1, w~_1 = 1 and the IWAE bound is the
ELBO). DReG is the unbiased estimator that keeps STL's vanishing encoder gradient at the exact
posterior.

Which estimator may estimate which bound is decided in one place, `check_estimator_for_bound`:
``dreg`` and ``vimco`` are IWAE-bound estimators (refused with the ELBO), ``vimco`` needs K >= 2,
and ``stl`` with the IWAE bound and K > 1 is accepted (e.g. for an ablation) with a
`BiasedEstimatorWarning` that names the bias.
"""

import warnings

import chex
import jax
import jax.numpy as jnp

from genjax.objectives import vi

ESTIMATORS = ("reparam", "stl", "dreg", "score", "vimco")
# Estimators that differentiate through the sample z(eps, phi), so q must be reparameterizable.
REPARAMETERIZED_ESTIMATORS = ("reparam", "stl", "dreg")
SCORE_FUNCTION_OBJECTIVES = ("elbo", "iwae")
# Estimators of the IWAE bound's gradient only: with the ELBO they would change the objective.
IWAE_ONLY_ESTIMATORS = ("dreg", "vimco")


def _check_objective(objective: str, field: str = "objective") -> None:
    """Refuses an objective other than 'elbo' or 'iwae', naming it as ``field``."""
    if objective not in SCORE_FUNCTION_OBJECTIVES:
        raise ValueError(f"{field}={objective!r}; allowed: {SCORE_FUNCTION_OBJECTIVES}")


class BiasedEstimatorWarning(UserWarning):
    """An estimator used where its expectation is not the gradient of the bound (STL on the IWAE
    bound with K > 1)."""


def check_estimator_for_bound(
    estimator: str,
    objective: str,
    num_samples: int,
    estimator_field: str = "estimator",
    objective_field: str = "objective",
    samples_field: str = "num_samples",
) -> None:
    """Refuses an estimator that does not estimate the gradient of ``objective`` with K samples,
    and warns where it estimates it with a bias.

    The rules: ``estimator`` in ``ESTIMATORS`` and ``objective`` in ('elbo', 'iwae'); ``dreg``
    and ``vimco`` estimate the IWAE bound's gradient, so the ELBO is refused (a caller would
    otherwise train or measure the IWAE bound under the ELBO's name); ``vimco`` needs K >= 2;
    ``stl`` with the IWAE bound and K > 1 is biased (see the module docstring) and is accepted
    with a `BiasedEstimatorWarning`, so an ablation can still run it.

    Args:
      estimator: the estimator's name.
      objective: 'elbo' or 'iwae', the bound whose gradient is wanted.
      num_samples: K, the importance samples per example.
      estimator_field, objective_field, samples_field: how the messages name the three
        settings, e.g. "config.estimator" or "config.model_config.objective".

    Raises:
      ValueError: an unknown name, or a combination above that is refused; the message names
        the fields and the allowed values.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"{estimator_field}={estimator!r}; allowed: {ESTIMATORS}")
    _check_objective(objective, objective_field)
    if estimator in IWAE_ONLY_ESTIMATORS and objective != "iwae":
        raise ValueError(
            f"{estimator_field}={estimator!r} estimates the gradient of the IWAE bound, but "
            f"{objective_field}={objective!r}; use {objective_field}='iwae' (for the ELBO: "
            "'reparam', 'stl' or 'score')."
        )
    if estimator == "vimco" and num_samples < 2:
        raise ValueError(
            f"{estimator_field}='vimco' needs {samples_field} >= 2 (its baseline for sample k "
            f"uses the other samples), got {num_samples}."
        )
    if estimator == "stl" and objective == "iwae" and num_samples > 1:
        warnings.warn(
            f"{estimator_field}='stl' with {objective_field}='iwae' and {samples_field}="
            f"{num_samples}: STL is a BIASED estimator of the IWAE bound's gradient for K > 1 "
            "(the score term it drops has nonzero mean once weighted by w~_k; Tucker et al. "
            "2019); use 'dreg' for an unbiased gradient with STL's low variance, or "
            f"{objective_field}='elbo'.",
            BiasedEstimatorWarning,
            stacklevel=2,
        )


def value_with_gradient_of(value: jax.Array, surrogate: jax.Array) -> jax.Array:
    """Returns ``value`` in the forward pass and the gradient of ``surrogate`` in the backward.

    sg(value) + (surrogate - sg(surrogate)): the bracket is exactly zero for finite inputs, and
    the gradient of the sum is the gradient of ``surrogate`` alone.
    """
    chex.assert_equal_shape([value, surrogate])
    return jax.lax.stop_gradient(value) + (surrogate - jax.lax.stop_gradient(surrogate))


def _check_log_w_and_log_q(log_w: jax.Array, log_q: jax.Array, axis: int) -> None:
    """Asserts that the log weights and log q have one shape with a non-empty sample axis."""
    chex.assert_equal_shape([log_w, log_q])
    chex.assert_axis_dimension_gt(log_w, axis, 0)


def _bound(log_w: jax.Array, objective: str, axis: int) -> jax.Array:
    """The ELBO or the IWAE bound of ``log_w``, (K, B) -> (B,)."""
    _check_objective(objective)
    return vi.elbo(log_w, axis=axis) if objective == "elbo" else vi.iwae_bound(log_w, axis=axis)


def dreg_surrogate(log_w_encoder: jax.Array, log_w_decoder: jax.Array, axis: int = 0) -> jax.Array:
    """Doubly reparameterized (DReG) surrogate for the IWAE bound.

    Tucker, Lawson, Gu & Maddison 2019 ("Doubly reparameterized gradient estimators for Monte
    Carlo objectives"), the IWAE estimator of Sec. 3: the encoder's score terms are rewritten
    by a second reparameterization, giving

        grad_phi L_K  ~  sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi),
        grad_theta L_K  ~  sum_k w~_k grad_theta log w_k.

    For K = 1 the encoder part is the STL gradient (Roeder et al. 2017).

    Args:
      log_w_encoder: log weights, e.g. (K, B), computed with z_k = z(eps_k, phi) live and the
        parameters of both p and q stopped: the gradient reaches phi through z only.
      log_w_decoder: the same log weights (equal values) computed from sg(z_k) with phi
        stopped: the gradient reaches theta only.
      axis: the sample axis.

    Returns:
      Shape (B,): value ``vi.iwae_bound(log_w_decoder)``; gradient
      sum_k sg(w~_k^2) grad log_w_encoder_k + sum_k sg(w~_k) grad log_w_decoder_k,
      w~ = softmax(log_w) over the sample axis.
    """
    log_w_encoder, log_w_decoder = jnp.asarray(log_w_encoder), jnp.asarray(log_w_decoder)
    _check_log_w_and_log_q(log_w_encoder, log_w_decoder, axis)
    bound = vi.iwae_bound(log_w_decoder, axis=axis)  # (B,)
    normalized_weights = jax.lax.stop_gradient(vi.importance_weights(log_w_decoder, axis))
    gradient_carrier = jnp.sum(
        jnp.square(normalized_weights) * log_w_encoder + normalized_weights * log_w_decoder,
        axis=axis,
    )  # (B,)
    return value_with_gradient_of(bound, gradient_carrier)


def learning_signal(log_w: jax.Array, objective: str = "iwae", axis: int = 0) -> jax.Array:
    """The global learning signal of the score-function estimator: the bound, stop-gradiented.

    The value a learned baseline b(x) regresses on (Mnih & Gregor 2014, NVIL, Sec. 3.3): the
    ELBO (1/K) sum_k log w_k or the IWAE bound log (1/K) sum_k w_k.

    Args:
      log_w: log weights, e.g. (K, B).
      objective: 'elbo' or 'iwae'.
      axis: the sample axis.

    Returns:
      The bound, shape (B,), with no gradient.

    Raises:
      ValueError: for another ``objective``.
    """
    return jax.lax.stop_gradient(_bound(jnp.asarray(log_w), objective, axis))


def score_function_surrogate(
    log_w: jax.Array,
    log_q: jax.Array,
    baseline: jax.Array | float,
    objective: str = "iwae",
    axis: int = 0,
) -> jax.Array:
    """REINFORCE (score-function) surrogate with a constant-per-example baseline.

    Williams 1992; with a baseline as in Mnih & Gregor 2014 (NVIL). For z_k ~ q_phi, sampled
    without reparameterization,

        grad E[L_K] = E[ sum_k (L_K - b) grad log q_phi(z_k | x) + grad L_K |_{z fixed} ],

    unbiased for any b that does not depend on z_{1:K}, since E[grad log q_phi(z | x)] = 0.
    For the ELBO each sample carries its own term: (1/K) sum_k (log w_k - b) grad log q_k.

    Args:
      log_w: log weights, e.g. (K, B), computed from stopped samples with live parameters (the
        direct term, -grad_phi log q included).
      log_q: log q_phi(z_k | x), same shape, stopped samples, live encoder parameters.
      baseline: a scalar or shape (B,); treated as a constant (stop_gradient inside).
      objective: 'elbo' or 'iwae'.
      axis: the sample axis.

    Returns:
      Shape (B,): value the bound of ``log_w``; gradient the score term plus the direct term.

    Raises:
      ValueError: for another ``objective``.
    """
    _check_objective(objective)
    log_w, log_q = jnp.asarray(log_w), jnp.asarray(log_q)
    _check_log_w_and_log_q(log_w, log_q, axis)
    bound = _bound(log_w, objective, axis)  # (B,)
    baseline = jax.lax.stop_gradient(jnp.asarray(baseline, dtype=bound.dtype))
    chex.assert_is_broadcastable(baseline.shape, bound.shape)
    baseline = jnp.expand_dims(jnp.broadcast_to(baseline, bound.shape), axis)  # (1, B)
    if objective == "elbo":
        centered_signals = jax.lax.stop_gradient(log_w) - baseline  # (K, B)
        score_term = jnp.mean(centered_signals * log_q, axis=axis)
    else:
        centered_signal = jax.lax.stop_gradient(jnp.expand_dims(bound, axis)) - baseline  # (1, B)
        score_term = jnp.sum(centered_signal * log_q, axis=axis)
    return value_with_gradient_of(bound, score_term + bound)


def vimco_learning_signals(log_w: jax.Array, axis: int = 0) -> jax.Array:
    """Per-sample VIMCO learning signals L_K - L_{-k}, with no gradient.

    Mnih & Rezende 2016 ("Variational inference for Monte Carlo objectives"), Sec. 3: with
    L_K = log (1/K) sum_j w_j, the baseline for sample k is L_{-k}, the same bound with w_k
    replaced by the geometric mean of the other weights,
    log w^_{-k} = (1/(K-1)) sum_{j != k} log w_j, so that the signal of sample k is
    L_K - L_{-k}. Computed with logsumexp after subtracting the per-example maximum (the
    signals are invariant to a common shift), so log weights around -1e4 keep float32 accuracy.
    Builds the K leave-one-out copies exactly, so it uses O(K^2 B) memory.

    Args:
      log_w: log weights, e.g. (K, B), K >= 2, sample axis ``axis``.
      axis: the sample axis.

    Returns:
      The signals, same shape as ``log_w``.

    Raises:
      ValueError: if the sample axis has fewer than 2 entries.
    """
    log_w = jnp.asarray(log_w)
    chex.assert_axis_dimension_gt(log_w, axis, 0)
    num_importance_samples = log_w.shape[axis]
    if num_importance_samples < 2:
        raise ValueError(
            f"vimco needs K >= 2 importance samples; log_w.shape={log_w.shape} has "
            f"K={num_importance_samples} along axis={axis}."
        )
    log_w = jnp.moveaxis(jax.lax.stop_gradient(log_w), axis, 0)  # (K, B)
    log_w = log_w - jnp.max(log_w, axis=0, keepdims=True)  # (K, B), shift-invariant signals
    mean_of_others = (jnp.sum(log_w, axis=0) - log_w) / (num_importance_samples - 1)  # (K, B)
    replaced = jnp.eye(num_importance_samples, dtype=bool).reshape(
        (num_importance_samples, num_importance_samples) + (1,) * (log_w.ndim - 1)
    )  # (K, K, 1...): entry [k, j] is True where sample j is replaced in L_{-k}
    log_w_leave_one_out = jnp.where(replaced, mean_of_others[:, None], log_w[None])  # (K, K, B)
    signals = jax.nn.logsumexp(log_w, axis=0) - jax.nn.logsumexp(log_w_leave_one_out, axis=1)
    return jnp.moveaxis(signals, 0, axis)  # log K cancels in the difference


def vimco_surrogate(log_w: jax.Array, log_q: jax.Array, axis: int = 0) -> jax.Array:
    """VIMCO surrogate for the IWAE bound: per-sample leave-one-out baselines.

    Mnih & Rezende 2016, Sec. 3: the gradient estimate is

        sum_k (L_K - L_{-k}) grad log q_phi(z_k | x) + sum_k w~_k grad log w_k |_{z fixed},

    with the signals of ``vimco_learning_signals``; unbiased because L_{-k} does not depend on
    z_k. Inputs follow ``score_function_surrogate``.

    Args:
      log_w: log weights, e.g. (K, B), K >= 2, computed from stopped samples with live
        parameters.
      log_q: log q_phi(z_k | x), same shape, stopped samples, live encoder parameters.
      axis: the sample axis.

    Returns:
      Shape (B,): value ``vi.iwae_bound(log_w)``; gradient the VIMCO estimate above.

    Raises:
      ValueError: if K < 2.
    """
    log_w, log_q = jnp.asarray(log_w), jnp.asarray(log_q)
    _check_log_w_and_log_q(log_w, log_q, axis)
    signals = vimco_learning_signals(log_w, axis=axis)  # (K, B), no gradient
    bound = vi.iwae_bound(log_w, axis=axis)  # (B,)
    return value_with_gradient_of(bound, jnp.sum(signals * log_q, axis=axis) + bound)
