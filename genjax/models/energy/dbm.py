"""Deep Boltzmann machines with two hidden layers (Salakhutdinov & Hinton 2009).

    params = {"W1": (V, H1), "W2": (H1, H2), "b_v": (V,), "b_h1": (H1,), "b_h2": (H2,)}
    E(v, h1, h2) = -v^T W1 h1 - h1^T W2 h2 - b_v.v - b_h1.h1 - b_h2.h2

Given h1, the visibles and the top layer are independent, so a block Gibbs sweep samples
h1 | v, h2, then (v, h2) | h1 (`gibbs_sweep`). Summing out v and h2 leaves an RBM whose
"visible" layer is h1 and whose "hidden" layer is (v, h2) (`as_rbm`), so log Z of the DBM is
log Z of that RBM: exact by enumerating h1, or AIS on h1 with v and h2 summed out, as
Salakhutdinov & Hinton (2009, section 3.2) do.

Training (one trainer run, three stages; see `genjax.models.staged`):
  1. layer 1 as an RBM with doubled visibles, concat(v, v) with tied weights [W1; W1], so
     p(h1 | v) = sigmoid(2 W1^T v + b_h1) and p(v | h1) = sigmoid(W1 h1 + b_v)
     (`doubled_visible_rbm`), by CD-k;
  2. layer 2 on the layer-1 hidden probabilities (with the doubled input) as an RBM with
     doubled hiddens, concat(h2, h2) with tied weights [W2, W2] (`doubled_hidden_rbm`); its
     visible bias is the frozen b_h1, so the two halves add up to the DBM's conditionals;
  3. joint training: the data-dependent statistics from mean-field (`mean_field`), the model's
     from persistent Gibbs chains (v, h1, h2) kept in the train state (Salakhutdinov & Hinton
     2009, algorithm 1), on the surrogate mean E(v, mu1, mu2) - mean E(v~, h1~, h2~).

Evaluation: the mean-field lower bound (Salakhutdinov & Hinton 2009, section 2.2)

    log p(v) >= -E(v, mu1, mu2) + H(mu1) + H(mu2) - log Z   (`mean_field_bound`),

with the binary entropies H. AIS underestimates log Z on average, which makes the reported
bound optimistic by that bias.

The pure functions, on the parameter dict above (chains are dicts {'v', 'h1', 'h2'} of
(N, V), (N, H1), (N, H2)):

    params = dbm.init_params(key, V, (H1, H2), weight_scale)   # zero biases
    dbm.energy(params, v, h1, h2)                  # (..., V), (..., H1), (..., H2) -> (...)
    dbm.h1_input(params, v, h2), dbm.h2_input(params, h1), dbm.visible_probs(params, h1)
    mu1, mu2 = dbm.mean_field(params, v, num_iterations)  # (..., V) -> (..., H1), (..., H2)
    dbm.mean_field_bound(params, v, mu1, mu2)      # -> (...), the bound + log Z
    chains = dbm.gibbs_chain(params, key, chains, num_steps)  # block sweeps (`gibbs_sweep`)
    dbm.random_chains(key, num, params), dbm.chains_from_data(key, v, mu1, mu2)
    model_rbm = dbm.as_rbm(params)                 # RBM over h1: W (H1, V + H2); log Z of the DBM
    dbm.doubled_visible_rbm(params), dbm.doubled_hidden_rbm(params)  # the pretraining RBMs
    images = dbm.sample(params, key, num, num_gibbs_steps)    # (num, V) means p(v = 1 | h1)

and `binary_entropy(mu)`, `reconstruction_error(params, v, mu1)`, `check_params(params)`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax.models import checks, staged
from genjax.models.energy import common, rbm, rbm_family
from genjax.nn.precision import cast_matrices, product

BOUND_NAME = "dbm-mean-field-bound"


def init_params(key: jax.Array, num_visible: int, hidden_sizes, weight_scale: float = 0.01) -> dict:
    """Weights N(0, weight_scale^2), zero biases; hidden_sizes = (H1, H2)."""
    num_h1, num_h2 = hidden_sizes
    key_1, key_2 = jax.random.split(key)
    return {
        "W1": weight_scale * jax.random.normal(key_1, (num_visible, num_h1)),
        "W2": weight_scale * jax.random.normal(key_2, (num_h1, num_h2)),
        "b_v": jnp.zeros(num_visible),
        "b_h1": jnp.zeros(num_h1),
        "b_h2": jnp.zeros(num_h2),
    }


def check_params(params: dict) -> None:
    """Asserts the shapes of a DBM parameter dict."""
    num_visible, num_h1 = np.shape(params["W1"])
    num_h2 = np.shape(params["W2"])[1]
    chex.assert_shape(params["W2"], (num_h1, num_h2))
    chex.assert_shape(params["b_v"], (num_visible,))
    chex.assert_shape(params["b_h1"], (num_h1,))
    chex.assert_shape(params["b_h2"], (num_h2,))


def energy(params: dict, v: jax.Array, h1: jax.Array, h2: jax.Array) -> jax.Array:
    """E(v, h1, h2) for (..., V), (..., H1), (..., H2) -> (...).

    Linear in each layer, so with factorial means (mu1, mu2) in place of states it is the
    expected energy under the product of Bernoullis.
    """
    visible_hidden = jnp.sum(product(v, params["W1"]) * h1, axis=-1)
    hidden_top = jnp.sum(product(h1, params["W2"]) * h2, axis=-1)
    biases = (
        jnp.sum(v * params["b_v"], axis=-1)
        + jnp.sum(h1 * params["b_h1"], axis=-1)
        + jnp.sum(h2 * params["b_h2"], axis=-1)
    )
    return -(visible_hidden + hidden_top + biases)


def h1_input(params: dict, v: jax.Array, h2: jax.Array) -> jax.Array:
    """b_h1 + W1^T v + W2 h2, the first hidden layer's total input: -> (..., H1)."""
    return params["b_h1"] + product(v, params["W1"]) + product(h2, params["W2"].T)


def h2_input(params: dict, h1: jax.Array) -> jax.Array:
    """b_h2 + W2^T h1: (..., H1) -> (..., H2)."""
    return params["b_h2"] + product(h1, params["W2"])


def visible_probs(params: dict, h1: jax.Array) -> jax.Array:
    """p(v = 1 | h1) = sigmoid(b_v + W1 h1): (..., H1) -> (..., V)."""
    return jax.nn.sigmoid(params["b_v"] + product(h1, params["W1"].T))


def mean_field(params: dict, v: jax.Array, num_iterations: int) -> tuple[jax.Array, jax.Array]:
    """The factorial posterior q(h1, h2 | v) by mean-field fixed-point iteration.

    Starts from the bottom-up pass with doubled weights, mu1 = sigmoid(2 W1^T v + b_h1),
    mu2 = sigmoid(W2^T mu1 + b_h2) (Salakhutdinov & Hinton 2009, section 3: the doubling
    stands in for the missing top-down input), then repeats `num_iterations` times

        mu1 <- sigmoid(W1^T v + W2 mu2 + b_h1);   mu2 <- sigmoid(W2^T mu1 + b_h2).

    Args:
      params: the DBM.
      v: (..., V).
      num_iterations: fixed-point updates after the initial pass (0 returns that pass).

    Returns:
      (mu1 (..., H1), mu2 (..., H2)).
    """
    bottom_up = product(v, params["W1"])  # (..., H1)
    mu1 = jax.nn.sigmoid(2.0 * bottom_up + params["b_h1"])
    mu2 = jax.nn.sigmoid(h2_input(params, mu1))

    def update(carry, _):
        _, mu2 = carry
        mu1 = jax.nn.sigmoid(params["b_h1"] + bottom_up + product(mu2, params["W2"].T))
        return (mu1, jax.nn.sigmoid(h2_input(params, mu1))), None

    (mu1, mu2), _ = jax.lax.scan(update, (mu1, mu2), None, length=num_iterations)
    return mu1, mu2


def binary_entropy(mu: jax.Array) -> jax.Array:
    """sum_j H(Bernoulli(mu_j)) in nats: (..., N) -> (...); 0 at mu in {0, 1}."""
    return jnp.sum(jax.scipy.special.entr(mu) + jax.scipy.special.entr(1.0 - mu), axis=-1)


def mean_field_bound(params: dict, v: jax.Array, mu1: jax.Array, mu2: jax.Array) -> jax.Array:
    """-E(v, mu1, mu2) + H(mu1) + H(mu2): the lower bound on log p(v) + log Z, -> (...).

    For any factorial q(h1, h2) = Bernoulli(mu1) Bernoulli(mu2),
    log p*(v) >= E_q[-E(v, h1, h2)] + H(q) (Salakhutdinov & Hinton 2009, section 2.2); the energy
    is linear in each layer, so E_q[E] = E(v, mu1, mu2).
    """
    return -energy(params, v, mu1, mu2) + binary_entropy(mu1) + binary_entropy(mu2)


def _sample_bits(key: jax.Array, probs: jax.Array) -> jax.Array:
    """Bernoulli(probs) as float {0, 1}."""
    return jax.random.bernoulli(key, probs).astype(probs.dtype)


def _bernoulli(key: jax.Array, logits: jax.Array) -> jax.Array:
    return _sample_bits(key, jax.nn.sigmoid(logits))


def gibbs_sweep(key: jax.Array, params: dict, chains: dict) -> dict:
    """One block Gibbs sweep: h1 ~ p(h1 | v, h2), then v ~ p(v | h1) and h2 ~ p(h2 | h1).

    v and h2 are independent given h1, so the second half is one block. `chains` is
    {'v': (..., V), 'h1': (..., H1), 'h2': (..., H2)}; the incoming h1 is not used.
    """
    h1_key, v_key, h2_key = jax.random.split(key, 3)
    h1 = _bernoulli(h1_key, h1_input(params, chains["v"], chains["h2"]))
    v = _bernoulli(v_key, params["b_v"] + product(h1, params["W1"].T))
    h2 = _bernoulli(h2_key, h2_input(params, h1))
    return {"v": v, "h1": h1, "h2": h2}


def gibbs_chain(params: dict, key: jax.Array, chains: dict, num_steps: int) -> dict:
    """`num_steps` sweeps of `gibbs_sweep` under `jax.lax.scan`; step t uses fold_in(key, t)."""

    def sweep(state, step):
        return gibbs_sweep(jax.random.fold_in(key, step), params, state), None

    chains, _ = jax.lax.scan(sweep, chains, jnp.arange(num_steps))
    return chains


def random_chains(key: jax.Array, num: int, params: dict) -> dict:
    """`num` chain states from uniform h1: h1 ~ uniform bits, then v, h2 ~ p(v, h2 | h1).

    Starting from h1 rather than from uniform v matters: in a trained DBM, uniform-noise
    visibles switch every h1 unit off and p(v | h1 = 0) is noise again, a metastable state the
    chains do not leave. Returns {'v': (num, V), 'h1': (num, H1), 'h2': (num, H2)}.
    """
    h1_key, v_key, h2_key = jax.random.split(key, 3)
    h1 = rbm_family.initial_chains(h1_key, num, params["W1"].shape[1], gaussian=False)
    v = _bernoulli(v_key, params["b_v"] + product(h1, params["W1"].T))
    return {"v": v, "h1": h1, "h2": _bernoulli(h2_key, h2_input(params, h1))}


def chains_from_data(key: jax.Array, v: jax.Array, mu1: jax.Array, mu2: jax.Array) -> dict:
    """Chain states started at the data: v itself, h1 ~ Bernoulli(mu1), h2 ~ Bernoulli(mu2)."""
    h1_key, h2_key = jax.random.split(key)
    return {"v": v, "h1": _sample_bits(h1_key, mu1), "h2": _sample_bits(h2_key, mu2)}


def as_rbm(params: dict) -> dict:
    """The RBM over h1 that is left when v and h2 are summed out of the DBM.

    Its visible layer is h1 (bias b_h1), its hidden layer is concat(v, h2) (biases
    concat(b_v, b_h2)) and its weights are concat([W1^T, W2], axis=1), (H1, V + H2): the
    energies agree term by term, so sum_h1 exp(-F_rbm(h1)) = Z_DBM and log Z of this RBM
    (`rbm.log_partition_exact`, `rbm.ais_log_partition`) is log Z of the DBM.
    """
    return {
        "W": jnp.concatenate([params["W1"].T, params["W2"]], axis=1),
        "b_v": params["b_h1"],
        "b_h": jnp.concatenate([params["b_v"], params["b_h2"]]),
    }


def doubled_visible_rbm(params: dict) -> dict:
    """Stage 1's RBM: visibles concat(v, v), weights [W1; W1] (2V, H1), biases (b_v, b_v), b_h1.

    With both copies equal to v, p(h1 | v) = sigmoid(2 W1^T v + b_h1), and each copy's
    p(v | h1) = sigmoid(W1 h1 + b_v) (Salakhutdinov & Hinton 2009, section 3.1). Gradients
    through the concatenation reach the tied W1 and b_v.
    """
    return {
        "W": jnp.concatenate([params["W1"], params["W1"]], axis=0),
        "b_v": jnp.concatenate([params["b_v"], params["b_v"]]),
        "b_h": params["b_h1"],
    }


def doubled_hidden_rbm(params: dict) -> dict:
    """Stage 2's RBM: visibles h1 (bias b_h1, frozen), hiddens concat(h2, h2), weights [W2, W2].

    p(h2 | h1) = sigmoid(W2^T h1 + b_h2) for each copy and, with both copies equal,
    p(h1 | h2) = sigmoid(2 W2 h2 + b_h1).
    """
    return {
        "W": jnp.concatenate([params["W2"], params["W2"]], axis=1),
        "b_v": jax.lax.stop_gradient(params["b_h1"]),
        "b_h": jnp.concatenate([params["b_h2"], params["b_h2"]]),
    }


def doubled(v: jax.Array) -> jax.Array:
    """concat(v, v) along the last axis: (..., N) -> (..., 2N)."""
    return jnp.concatenate([v, v], axis=-1)


def reconstruction_error(params: dict, v: jax.Array, mu1: jax.Array) -> jax.Array:
    """sum_i (v_i - p(v_i = 1 | mu1))^2: (..., V) -> (...)."""
    return jnp.sum((v - visible_probs(params, mu1)) ** 2, axis=-1)


def sample(params: dict, key: jax.Array, num: int, num_gibbs_steps: int) -> jax.Array:
    """`num` chains from `random_chains`, `num_gibbs_steps` sweeps; p(v = 1 | h1), (num, V)."""
    init_key, chain_key = jax.random.split(key)
    chains = gibbs_chain(params, chain_key, random_chains(init_key, num, params), num_gibbs_steps)
    return visible_probs(params, chains["h1"])


def _cd_loss(model_rbm: dict, x: jax.Array, keys: jax.Array, num_steps: int) -> jax.Array:
    """CD-k surrogate for an RBM on data x (B, N); each example's chain from its own key."""
    frozen = jax.lax.stop_gradient(model_rbm)
    x_model = jax.vmap(lambda key, x0: rbm.gibbs_chain(frozen, key, x0, num_steps))(keys, x)
    return rbm.contrastive_divergence_loss(model_rbm, x, x_model)


class DBM(staged.StagedModel):
    """A two-hidden-layer DBM: greedy pretraining with doubled units, then joint PCD training.

    model_config fields:
      hidden_sizes: (H1, H2).
      stage_steps: updates of (layer-1 pretraining, layer-2 pretraining, joint training);
        sums to `config.num_steps`.
      pretrain_gibbs_steps: k of CD-k in the pretraining stages.
      gibbs_steps: Gibbs sweeps of the persistent chains per joint update.
      mean_field_iterations: fixed-point updates of the positive phase.
      weight_scale: initial weights ~ N(0, weight_scale^2).
      visible_bias_init: 'data_mean' (b_v = logit of the training pixel means) | 'zeros'.
      weight_decay_biases: whether `config.weight_decay` also reaches the biases (False: W1
        and W2 only, Hinton 2010).
      eval_mean_field_iterations: fixed-point updates behind the evaluation bound.
      ais_chains, ais_betas, monitor_ais_chains, monitor_ais_betas, exact_max_units: log Z
        through `as_rbm` (see `common.rbm_log_partition`); AIS runs on h1 with base rates from
        the running mean of mu1 during joint training.
      sample_gibbs_steps: sweeps behind each sample.

    Training metrics: `train/recon_error` is the active stage's reconstruction error of its
    own input (v in stages 1 and 3, layer 1's probabilities in stage 2);
    `train/unnormalized_bound` (joint stage only) is the mean-field bound plus log Z.

    With `config.compute_dtype='bfloat16'` every product with W1 and W2 in a train step (mean
    field, the Gibbs sweeps, the surrogates and their gradients) runs in bfloat16 with float32
    biases, probabilities and chains; evaluation and sampling use the float32 parameters.
    """

    name = "dbm"
    main_metric = "train/recon_error"
    evaluation_fields = (*common.EVALUATION_FIELDS, "eval_mean_field_iterations")
    sharded_extras = ("chains",)
    stage_metrics = ("train/recon_error", "train/unnormalized_bound")
    compute_dtypes = ("float32", "bfloat16")
    added_field_defaults = common.ADDED_FIELD_DEFAULTS
    JOINT_STAGE = 2

    @classmethod
    def stages_for(cls, config) -> tuple[staged.Stage, ...]:
        del config
        return (
            staged.Stage("pretrain_layer_1", ("W1", "b_v", "b_h1")),
            staged.Stage("pretrain_layer_2", ("W2", "b_h2")),
            staged.Stage("joint", ("W1", "W2", "b_v", "b_h1", "b_h2")),
        )

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_sizes(mc, "hidden_sizes", 2, "(H1, H2): this DBM has two hidden layers")
        checks.check_positive_ints(
            mc,
            (
                "pretrain_gibbs_steps",
                "gibbs_steps",
                "mean_field_iterations",
                "eval_mean_field_iterations",
            ),
        )
        common.check_shared_fields(mc)
        super().validate_config(config)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        checks.require_binary(spec, "config.model='dbm' (Bernoulli visibles)")
        self.num_visible = spec.num_dims
        self.joint_start = staged.stage_starts(self.stage_steps)[self.JOINT_STAGE]
        self.init_batch_size = common.visible_mean_examples(config.model_config)

    def weight_decay_mask(self):
        return common.weight_decay_mask(self.config.model_config)

    def init(self, key, example_x):
        """Parameters (b_v from `example_x`, the training examples, with
        `visible_bias_init='data_mean'`), persistent chains and mu1's running mean."""
        mc = self.config.model_config
        params_key, chains_key = jax.random.split(key)
        params = init_params(params_key, self.num_visible, tuple(mc.hidden_sizes), mc.weight_scale)
        if mc.visible_bias_init == "data_mean":
            params["b_v"] = common.visible_bias_from_data(example_x)
        check_params(params)
        extras = {
            # Persistent chains, one per example of the global batch; (re)started from the
            # data at the first joint update.
            "chains": random_chains(chains_key, self.config.batch_size, params),
            # mu1's running mean during joint training: the AIS base rates on h1.
            "visible_mean": jnp.zeros(params["W1"].shape[1]),
            "num_batches": jnp.zeros(()),
        }
        return params, extras

    def stage_loss(self, stage, params, extras, batch, keys, step):
        params = cast_matrices(params, self.config.compute_dtype)
        v = batch["x"].reshape((batch["x"].shape[0], -1))  # (B, V)
        losses = (self._pretrain_layer_1, self._pretrain_layer_2, self._joint)
        return losses[stage](params, extras, v, keys, step)

    def _pretrain_layer_1(self, params, extras, v, keys, step):
        """CD-k on the doubled-visible RBM over concat(v, v)."""
        del step
        mc = self.config.model_config
        model_rbm = doubled_visible_rbm(params)
        loss = _cd_loss(model_rbm, doubled(v), keys, mc.pretrain_gibbs_steps)
        mu1 = rbm.hidden_probs(jax.lax.stop_gradient(model_rbm), doubled(v))
        frozen = jax.lax.stop_gradient(params)
        metrics = {"train/recon_error": reconstruction_error(frozen, v, mu1).mean()}
        return loss, (metrics, extras)

    def _pretrain_layer_2(self, params, extras, v, keys, step):
        """CD-k on the doubled-hidden RBM over layer 1's hidden probabilities."""
        del step
        mc = self.config.model_config
        layer_1 = jax.lax.stop_gradient(doubled_visible_rbm(params))
        h1 = rbm.hidden_probs(layer_1, doubled(v))  # (B, H1), sigmoid(2 W1^T v + b_h1)
        model_rbm = doubled_hidden_rbm(params)
        loss = _cd_loss(model_rbm, h1, keys, mc.pretrain_gibbs_steps)
        error = rbm.reconstruction_error(jax.lax.stop_gradient(model_rbm), h1)
        return loss, ({"train/recon_error": error.mean()}, extras)

    def _joint(self, params, extras, v, keys, step):
        """Mean-field positive phase, persistent-chain negative phase (Salakhutdinov & Hinton
        2009, algorithm 1), as the surrogate mean E(v, mu) - mean E(chains)."""
        mc = self.config.model_config
        frozen = jax.lax.stop_gradient(params)
        mu1, mu2 = mean_field(frozen, v, mc.mean_field_iterations)  # (B, H1), (B, H2)
        init_keys = jax.vmap(lambda key: jax.random.fold_in(key, 0))(keys)
        chain_keys = jax.vmap(lambda key: jax.random.fold_in(key, 1))(keys)
        from_data = jax.vmap(chains_from_data)(init_keys, v, mu1, mu2)
        first_joint_step = step == self.joint_start
        chains = jax.tree.map(
            lambda fresh, kept: jnp.where(first_joint_step, fresh, kept),
            from_data,
            extras["chains"],
        )
        chains = jax.vmap(lambda key, c: gibbs_chain(frozen, key, c, mc.gibbs_steps))(
            chain_keys, chains
        )
        loss = rbm.positive_minus_negative(
            lambda *states: energy(params, *states),
            (v, mu1, mu2),
            (chains["v"], chains["h1"], chains["h2"]),
        )
        extras = rbm_family.update_running_mean(extras, mu1.mean(axis=0))
        extras["chains"] = chains
        metrics = {
            "train/recon_error": reconstruction_error(frozen, v, mu1).mean(),
            "train/unnormalized_bound": mean_field_bound(frozen, v, mu1, mu2).mean(),
        }
        return loss, (metrics, extras)

    def train_log_density(self, params, x, keys):
        """The mean-field bound (B,) (up to log Z) after the training's mean-field iterations,
        from the matrices in the compute dtype."""
        del keys
        params = cast_matrices(params, self.config.compute_dtype)
        v = x.reshape((x.shape[0], -1))
        mu1, mu2 = mean_field(params, v, self.config.model_config.mean_field_iterations)
        return mean_field_bound(params, v, mu1, mu2)

    def evaluation_constants(self, state, key, final):
        progress = final and self.config.progress_bar and jax.process_index() == 0
        model_rbm = as_rbm(state.params)
        # Before joint training has seen data the running mean is empty: uniform base rates.
        trained = float(jax.device_get(state.extras["num_batches"])) > 0
        base = rbm_family.base_visible_bias(model_rbm, state.extras) if trained else None
        return common.rbm_log_partition(
            model_rbm, key, self.config.model_config, final, base, progress
        )

    def eval_step(self, state, batch, keys, final):
        del keys, final  # deterministic; only log Z's settings differ
        params = state.params
        v = batch["x"].reshape((batch["x"].shape[0], -1))
        mu1, mu2 = mean_field(params, v, self.config.model_config.eval_mean_field_iterations)
        return {
            "bound": mean_field_bound(params, v, mu1, mu2) + batch["log_det"],
            "recon_error": reconstruction_error(params, v, mu1),
        }

    def summarize(self, outputs, final, constants):
        bound = outputs["bound"] - constants["log_z"]
        extra = {"recon_error": float(np.mean(outputs["recon_error"]))}
        if not final:
            log_z = float(constants["log_z"])
            return {"nll_bound": float(-np.mean(bound)), "log_z": log_z, **extra}
        summary = common.summarize_nll(bound, self.spec.num_dims, constants, bound=BOUND_NAME)
        summary.update(extra)
        return summary

    def first_layer_filters(self, state):
        """W1's columns as images, (min(H1, 100), *example_shape)."""
        return common.first_layer_filters(state.params["W1"], self.spec.example_shape)

    def sample(self, state, key, num):
        samples = sample(state.params, key, num, self.config.model_config.sample_gibbs_steps)
        return samples.reshape((num, *self.spec.example_shape))
