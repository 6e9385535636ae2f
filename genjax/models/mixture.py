"""Mixtures of Gaussians and of Bernoullis, fitted by (stepwise) EM (`config.model = 'mixture'`).

    p(x) = sum_k pi_k p_k(x),   p_k = N(mu_k, Sigma_k)   or   prod_d Bernoulli(x_d; mu_kd)

with full, diagonal or spherical covariances Sigma_k (Gaussians) or pixel probabilities mu_k
(Bernoullis, for binary data). The test NLL is exact (`nll_estimator` 'exact').

Fitting is EM on the data pipeline's batches: each train step is one E-step on a batch (the
responsibilities r_nk = pi_k p_k(x_n) / p(x_n)) and one M-step from the running sufficient
statistics s = (mean r, mean r x, mean r x^2 or r x x^T), updated as in stepwise EM (Sato &
Ishii 2000; Cappe & Moulines 2009; Liang & Klein 2009):

    s <- (1 - eta_t) s + eta_t s_batch,   eta_t = (t + 2)^(-alpha),   0 <= alpha <= 1.

alpha in (0.5, 1] is stepwise EM's convergent range; alpha = 0 gives eta = 1, plain EM on each
batch, which is batch EM when one batch is the whole training set (`tests/models/
test_mixture.py` checks it against scikit-learn's `GaussianMixture`). Statistics are averaged
over the devices' batches, so the step is data-parallel like every other family's.

The M-step, as scikit-learn's: pi = s0 / sum(s0), mu = s1 / s0, Sigma = s2 / s0 - mu mu^T +
reg_covar I (the diagonal, or the mean of the diagonal for spherical); with s0 floored at
10 float eps. Bernoulli means are clipped to [min_probability, 1 - min_probability], so no
test pixel has probability 0.

Initialisation: k-means++ seeding (Arthur & Vassilvitskii 2007) on the first `init_examples`
training examples, `kmeans_iterations` Lloyd iterations (`kmeans`), then one M-step from the
hard assignments, as scikit-learn's `init_params='k-means++'` followed by its k-means.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp

from genjax import objectives
from genjax.core.parallel import DATA_AXIS
from genjax.core.state import TrainState
from genjax.data import toy2d
from genjax.evaluate.likelihood import summarize_exact_likelihood
from genjax.models import checks
from genjax.models.base import Model

DISTRIBUTIONS = ("gaussian", "bernoulli")
COVARIANCES = ("full", "diag", "spherical")


# ---------------------------------------------------------------------------------------------
# k-means.


def kmeans_plus_plus(key: jax.Array, x: jax.Array, num_clusters: int) -> jax.Array:
    """k-means++ seeds: the first centre uniform over x (N, D), each next one drawn with
    probability proportional to its squared distance to the nearest centre so far. -> (K, D)."""
    first_key, rest_key = jax.random.split(key)
    first = x[jax.random.randint(first_key, (), 0, x.shape[0])]
    centres = jnp.zeros((num_clusters, x.shape[1]), x.dtype).at[0].set(first)
    nearest = jnp.sum((x - first) ** 2, axis=1)  # (N,)

    def add_centre(index, carry):
        centres, nearest = carry
        key = jax.random.fold_in(rest_key, index)
        # All points coincide with centres: draw uniformly rather than from a zero vector.
        logits = jnp.where(nearest.sum() > 0, jnp.log(nearest), jnp.zeros_like(nearest))
        chosen = x[jax.random.categorical(key, logits)]
        nearest = jnp.minimum(nearest, jnp.sum((x - chosen) ** 2, axis=1))
        return centres.at[index].set(chosen), nearest

    centres, _ = jax.lax.fori_loop(1, num_clusters, add_centre, (centres, nearest))
    return centres


def assign(x: jax.Array, centres: jax.Array) -> jax.Array:
    """The index of each point's nearest centre, x (N, D), centres (K, D) -> (N,)."""
    distances = (
        jnp.sum(x**2, axis=1)[:, None] - 2.0 * x @ centres.T + jnp.sum(centres**2, axis=1)[None]
    )
    return jnp.argmin(distances, axis=1)


def kmeans(
    key: jax.Array, x: jax.Array, num_clusters: int, num_iterations: int
) -> tuple[jax.Array, jax.Array]:
    """k-means++ seeds, then `num_iterations` Lloyd iterations (an empty cluster keeps its
    centre). x (N, D) -> (centres (K, D), labels (N,))."""
    centres = kmeans_plus_plus(key, x, num_clusters)

    def lloyd(_, centres):
        one_hot = jax.nn.one_hot(assign(x, centres), num_clusters, dtype=x.dtype)  # (N, K)
        counts = one_hot.sum(axis=0)  # (K,)
        sums = one_hot.T @ x  # (K, D)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1)[:, None], centres)

    centres = jax.lax.fori_loop(0, num_iterations, lloyd, centres)
    return centres, assign(x, centres)


# ---------------------------------------------------------------------------------------------
# Densities, statistics, the M-step.


def component_log_probs(params: dict, x: jax.Array, distribution: str) -> jax.Array:
    """log p_k(x_n) for every example and component: x (N, D) -> (N, K).

    Gaussian params hold `means` (K, D) and `scale_tril` (K, D, D), the Cholesky factor of
    Sigma_k (diagonal for the diagonal and spherical covariances); Bernoulli params `means`,
    the pixel probabilities (K, D).
    """
    means = params["means"]
    if distribution == "bernoulli":
        return x @ jnp.log(means).T + (1.0 - x) @ jnp.log1p(-means).T
    num_dims = x.shape[1]
    scale_tril = params["scale_tril"]  # (K, D, D)
    centred = x[:, None, :] - means[None]  # (N, K, D)
    whitened = jax.vmap(
        lambda tril, diffs: jax.scipy.linalg.solve_triangular(tril, diffs.T, lower=True).T,
        in_axes=(0, 1),
        out_axes=1,
    )(scale_tril, centred)  # (N, K, D)
    half_log_det = jnp.sum(jnp.log(jnp.diagonal(scale_tril, axis1=1, axis2=2)), axis=1)  # (K,)
    return (
        -0.5 * jnp.sum(whitened**2, axis=2)
        - half_log_det[None]
        - 0.5 * num_dims * math.log(2.0 * math.pi)
    )


def log_joint(params: dict, x: jax.Array, distribution: str) -> jax.Array:
    """log pi_k + log p_k(x_n), (N, K)."""
    return jax.nn.log_softmax(params["logits"])[None] + component_log_probs(params, x, distribution)


def log_prob(params: dict, x: jax.Array, distribution: str) -> jax.Array:
    """Exact log p(x_n), x (N, D) -> (N,)."""
    return logsumexp(log_joint(params, x, distribution), axis=1)


def batch_statistics(resp: jax.Array, x: jax.Array, distribution: str, covariance: str) -> dict:
    """The sufficient statistics of a batch, averaged over its examples, from the
    responsibilities resp (N, K): s0 (K,), s1 (K, D), and for Gaussians s2, (K, D, D) for full
    covariances, else (K, D) (the diagonal)."""
    num = x.shape[0]
    stats = {"s0": resp.mean(axis=0), "s1": resp.T @ x / num}
    if distribution == "gaussian":
        if covariance == "full":
            stats["s2"] = jnp.einsum("nk,nd,ne->kde", resp, x, x) / num
        else:
            stats["s2"] = resp.T @ (x**2) / num
    return stats


def maximize(stats: dict, distribution: str, covariance: str, mc) -> dict:
    """The M-step: parameters from sufficient statistics (see the module docstring)."""
    s0 = stats["s0"] + 10.0 * jnp.finfo(stats["s0"].dtype).eps
    means = stats["s1"] / s0[:, None]
    params = {"logits": jnp.log(s0 / s0.sum())}
    if distribution == "bernoulli":
        params["means"] = jnp.clip(means, mc.min_probability, 1.0 - mc.min_probability)
        return params
    params["means"] = means
    num_dims = means.shape[1]
    if covariance == "full":
        cov = stats["s2"] / s0[:, None, None] - jnp.einsum("kd,ke->kde", means, means)
        cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2)) + mc.reg_covar * jnp.eye(num_dims)
        params["scale_tril"] = jnp.linalg.cholesky(cov)
        return params
    variances = stats["s2"] / s0[:, None] - means**2  # (K, D)
    if covariance == "spherical":
        variances = jnp.broadcast_to(variances.mean(axis=1, keepdims=True), variances.shape)
    std = jnp.sqrt(jnp.maximum(variances, 0.0) + mc.reg_covar)
    params["scale_tril"] = jax.vmap(jnp.diag)(std)
    return params


def step_size(step: jax.Array, alpha: float) -> jax.Array:
    """Stepwise EM's eta_t = (t + 2)^(-alpha) for the t-th update (t = 0, 1, ...)."""
    return (step.astype(jnp.float32) + 2.0) ** (-alpha)


# ---------------------------------------------------------------------------------------------
# The family.


class Mixture(Model):
    """Mixture models fitted by EM (`config.model = 'mixture'`); see the module docstring.

    model_config fields:
      distribution: 'gaussian' (continuous data) | 'bernoulli' (binary data).
      num_components: K.
      covariance: Gaussians: 'full' | 'diag' | 'spherical'.
      reg_covar: added to every variance (scikit-learn's default 1e-6).
      min_probability: Bernoulli pixel probabilities are clipped to [this, 1 - this].
      stepwise_alpha: eta_t = (t + 2)^(-alpha); 0 is plain EM on each batch.
      init_examples: training examples k-means initialises from.
      kmeans_iterations: Lloyd iterations after the k-means++ seeding.

    The config's optimizer fields are unused: EM's updates are closed-form.
    """

    name = "mixture"
    main_metric = "train/nll"

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(mc, {"distribution": DISTRIBUTIONS, "covariance": COVARIANCES})
        checks.check_positive_ints(mc, ("num_components", "init_examples", "kmeans_iterations"))
        checks.check_non_negative_numbers(mc, ("reg_covar",))
        if not 0.0 <= mc.stepwise_alpha <= 1.0:
            raise ValueError(
                f"config.model_config.stepwise_alpha={mc.stepwise_alpha!r} must be in [0, 1] "
                "(0: plain EM on each batch; (0.5, 1]: stepwise EM's convergent range)."
            )
        if not 0.0 < mc.min_probability < 0.5:
            raise ValueError(
                f"config.model_config.min_probability={mc.min_probability!r} must be in "
                "(0, 0.5): Bernoulli probabilities are clipped to [it, 1 - it]."
            )
        if mc.init_examples < mc.num_components:
            raise ValueError(
                f"config.model_config.init_examples={mc.init_examples} must be at least "
                f"config.model_config.num_components={mc.num_components}: k-means seeds each "
                "component on a distinct example."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        self.distribution, self.covariance = mc.distribution, mc.covariance
        if self.distribution == "bernoulli":
            checks.require_binary(
                spec, "config.model_config.distribution='bernoulli'", "distribution='gaussian'"
            )
        elif spec.binarized or (spec.num_levels is not None and not config.preprocess.dequantize):
            raise ValueError(
                "config.model_config.distribution='gaussian' is a density on continuous data; "
                f"config.dataset={spec.name!r} is discrete here: set "
                "config.preprocess.binarize='none' and config.preprocess.dequantize=True, or "
                "use distribution='bernoulli' on binarized data."
            )
        self.num_dims = spec.num_dims
        self.init_batch_size = mc.init_examples
        self.toy_name = toy2d.density_name(spec.name)

    def make_optimizer(self) -> optax.GradientTransformation:
        return optax.identity()  # EM: the parameters are set, not descended

    def _flat(self, x: jax.Array) -> jax.Array:
        return x.reshape((x.shape[0], self.num_dims))

    def _statistics(self, params: dict, x: jax.Array) -> tuple[dict, jax.Array]:
        """(batch statistics, log p(x_n) (N,)) of one E-step."""
        joint = log_joint(params, x, self.distribution)
        log_p = logsumexp(joint, axis=1)
        resp = jnp.exp(joint - log_p[:, None])
        return batch_statistics(resp, x, self.distribution, self.covariance), log_p

    def init(self, key, example_x):
        mc = self.config.model_config
        x = self._flat(jnp.asarray(example_x, jnp.float32))
        _, labels = kmeans(key, x, mc.num_components, int(mc.kmeans_iterations))
        resp = jax.nn.one_hot(labels, mc.num_components, dtype=x.dtype)
        stats = batch_statistics(resp, x, self.distribution, self.covariance)
        return maximize(stats, self.distribution, self.covariance, mc), {"stats": stats}

    def train_step(self, state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        mc = self.config.model_config
        x = self._flat(batch["x"])
        stats, log_p = self._statistics(state.params, x)
        stats = jax.lax.pmean(stats, DATA_AXIS)
        eta = step_size(state.step, mc.stepwise_alpha)
        running = jax.tree.map(
            lambda old, new: (1.0 - eta) * old + eta * new, state.extras["stats"], stats
        )
        params = maximize(running, self.distribution, self.covariance, mc)
        nll = jax.lax.pmean(-(log_p + batch["log_det"]).mean(), DATA_AXIS)
        metrics = {
            "train/nll": nll,
            "train/loss": nll,
            "train/bits_per_dim": objectives.bits_per_dim(nll, self.num_dims),
            "train/step_size": eta,
        }
        new_state = state.replace(
            step=state.step + 1, params=params, extras={**state.extras, "stats": running}
        )
        return new_state, metrics

    def train_log_density(self, params, x, keys):
        """log p(x) (B,), exact."""
        del keys
        return log_prob(params, self._flat(x), self.distribution)

    def evaluation_constants(self, state, key, final):
        del key, final
        return {"weights": jax.nn.softmax(state.params["logits"])}

    def eval_step(self, state, batch, keys, final):
        del keys, final  # exact: one evaluation serves monitoring and eval.json
        log_p = log_prob(state.params, self._flat(batch["x"]), self.distribution)
        return {"log_likelihood": log_p + batch["log_det"]}

    def summarize(self, outputs, final, constants):
        summary = summarize_exact_likelihood(
            outputs["log_likelihood"], self.num_dims, self.toy_name, final
        )
        if not final:
            return summary
        # How many components EM kept in use: those above 1e-3 of the mass, and the
        # perplexity of the weights (K when they are uniform).
        weights = np.asarray(constants["weights"], np.float64)
        summary["components_above_1e-3"] = int(np.sum(weights > 1e-3))
        positive = weights[weights > 0]
        summary["weight_perplexity"] = float(np.exp(-np.sum(positive * np.log(positive))))
        return summary

    def sample(self, state, key, num):
        """Ancestral: a component k ~ pi, then x ~ p_k."""
        params = state.params
        component_key, draw_key = jax.random.split(key)
        components = jax.random.categorical(component_key, params["logits"], shape=(num,))
        means = params["means"][components]  # (num, D)
        if self.distribution == "bernoulli":
            x = jax.random.bernoulli(draw_key, means).astype(jnp.float32)
        else:
            noise = jax.random.normal(draw_key, means.shape)
            x = means + jnp.einsum("nde,ne->nd", params["scale_tril"][components], noise)
        return x.reshape((num, *self.spec.example_shape))

    def log_density(self, state, x):
        return log_prob(state.params, self._flat(x), self.distribution)

    def first_layer_filters(self, state):
        """The components' means as images (Bernoulli: pixel probabilities); None for vectors."""
        if not self.spec.is_image:
            return None
        means = np.asarray(jax.device_get(state.params["means"]))
        return means.reshape((-1, *self.spec.example_shape))
