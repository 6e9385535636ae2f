"""Deep belief networks (Hinton, Osindero & Teh 2006): pure functions and the DBN family.

A DBN with L layers is a stack of Bernoulli RBMs (`genjax.models.energy.rbm`):

    params = {"layer_0": rbm (V, H_0), "layer_1": rbm (H_0, H_1), ..., "layer_{L-1}": ...}

Write x_0 = v and x_{l+1} for the l-th hidden layer: RBM l couples x_l (its visibles) and
x_{l+1} (its hiddens). The generative model is the top RBM's marginal over its visibles
x_{L-1}, followed by directed sigmoid layers whose generative weights are the RBM weights:

    p(v) = sum_{x_1 .. x_{L-1}} p_top(x_{L-1}) prod_{l=0}^{L-2} p(x_l | x_{l+1}),
    p_top(x) = exp(-F_top(x)) / Z_top,   p(x_l | x_{l+1}) = Bernoulli(sigmoid(b_v^l + W^l x_{l+1})).

Training is greedy (Hinton et al. 2006, section 4): stage l trains RBM l by CD-k on the
hidden *probabilities* of the data under the frozen RBMs below, p(x_l | x_{l-1}) propagated
upward deterministically (`layer_input`).

Evaluation is the variational lower bound of Salakhutdinov & Murray (2008, section 4):

    log p(v) >= E_q[ sum_{l=0}^{L-2} log p(x_l | x_{l+1}) - F_top(x_{L-1})
                    - log q(x_1, .., x_{L-1} | v) ] - log Z_top,

with q the factorial up-pass q(x_{l+1} | x_l) = Bernoulli(sigmoid(b_h^l + x_l W^l)), sampled
layer by layer. The expectation is a Monte Carlo mean over `eval_bound_samples` samples per
example (`log_weights`); log Z_top is exact or AIS (`common.rbm_log_partition`). A 1-layer DBN
has no latent layers to bound over: its "bound" is the RBM's -F(v) - log Z exactly.

The pure functions, on the parameter dict above (each layer an `rbm` dict):

    params = dbn.init_params(key, V, (H_0, .., H_{L-1}), weight_scale)  # zero biases
    x = dbn.layer_input(params, v, layer)           # (..., V) -> (..., H_{layer-1}), no gradient
    log_w = dbn.log_weights(params, key, v, M)      # (V,) one example -> (M,), bound's terms
    errors = dbn.reconstruction_errors(params, v)   # {'layer_l': (...,)}, each RBM on its input
    images = dbn.sample(params, key, num, steps)    # (num, V) means p(v = 1 | x_1)
    dbn.top_layer(params), dbn.num_layers(params), dbn.check_params(params)

and `bernoulli_log_prob(x, logits)`, (..., N) -> (...). The top RBM's log Z comes from
`rbm.log_partition_exact` or `rbm.ais_log_partition` on `top_layer(params)`.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax.models import checks, staged
from genjax.models.energy import common, rbm, rbm_family
from genjax.nn import precision

BOUND_NAME = "dbn-variational-bound"


def layer_name(index: int) -> str:
    """The parameter key of RBM `index`: 'layer_0' is the bottom one."""
    return f"layer_{index}"


def num_layers(params: dict) -> int:
    """L, the number of RBMs in `params`."""
    return len(params)


def top_layer(params: dict) -> dict:
    """The top RBM's parameters, params['layer_{L-1}']."""
    return params[layer_name(num_layers(params) - 1)]


def init_params(key: jax.Array, num_visible: int, hidden_sizes, weight_scale: float = 0.01) -> dict:
    """Bernoulli RBMs (num_visible, H_0), (H_0, H_1), ...: `rbm.init_params` for each layer."""
    sizes = (num_visible, *hidden_sizes)
    keys = jax.random.split(key, len(hidden_sizes))
    return {
        layer_name(index): rbm.init_params(
            keys[index], sizes[index], sizes[index + 1], False, weight_scale
        )
        for index in range(len(hidden_sizes))
    }


def check_params(params: dict) -> None:
    """Asserts that every layer is a Bernoulli RBM whose visibles are the hiddens below."""
    for index in range(num_layers(params)):
        layer = params[layer_name(index)]
        rbm.check_params(layer)
        if rbm.is_gaussian(layer):
            raise ValueError(f"{layer_name(index)} must be a Bernoulli RBM")
        if index:
            below = params[layer_name(index - 1)]["W"].shape[1]
            chex.assert_axis_dimension(layer["W"], 0, below)


def layer_input(params: dict, v: jax.Array, layer: int) -> jax.Array:
    """The data representation that RBM `layer` is trained on: (..., V) -> (..., H_{layer-1}).

    The deterministic up-pass of hidden probabilities x_{l+1} = p(x_{l+1} = 1 | x_l) through
    RBMs 0 .. layer - 1 (Hinton et al. 2006 train each layer on the probabilities below); `v`
    itself for layer 0. No gradient flows into the lower layers.
    """
    x = v
    for index in range(layer):
        x = rbm.hidden_probs(jax.lax.stop_gradient(params[layer_name(index)]), x)
    return x


def bernoulli_log_prob(x: jax.Array, logits: jax.Array) -> jax.Array:
    """sum_i log Bernoulli(x_i; sigmoid(a_i)) = sum_i x_i a_i - softplus(a_i): (..., N) -> (...)."""
    return jnp.sum(x * logits - jax.nn.softplus(logits), axis=-1)


def log_weights(params: dict, key: jax.Array, v: jax.Array, num_samples: int) -> jax.Array:
    """Per-sample terms of the variational bound for one example, without log Z_top.

    For x_1 .. x_{L-1} ~ q(. | v) (the sampled up-pass), returns

        log w = sum_{l=0}^{L-2} log p(x_l | x_{l+1}) - F_top(x_{L-1}) - log q(x_1 .. x_{L-1} | v)

    so that mean(log w) - log Z_top estimates the lower bound on log p(v) (Salakhutdinov &
    Murray 2008, section 4) and logmeanexp(log w) - log Z_top is the (tighter, in expectation)
    importance-weighted bound. Layer l's samples use `fold_in(key, l)`.

    Args:
      params: the DBN.
      key: this example's key.
      v: (V,) one binary example.
      num_samples: M, samples of q.

    Returns:
      (M,) log weights; every one equals -F(v) for a 1-layer DBN.
    """
    chex.assert_rank(v, 1)
    x = jnp.broadcast_to(v, (num_samples, v.shape[-1]))  # (M, V)
    log_w = jnp.zeros((num_samples,), v.dtype)
    for index in range(num_layers(params) - 1):
        layer = params[layer_name(index)]
        up_logits = rbm.hidden_input(layer, x)  # (M, H_index)
        x_above = jax.random.bernoulli(jax.random.fold_in(key, index), jax.nn.sigmoid(up_logits))
        x_above = x_above.astype(x.dtype)
        down_logits = layer["b_v"] + precision.product(x_above, layer["W"].T)  # (M, N_index)
        log_w = log_w + bernoulli_log_prob(x, down_logits) - bernoulli_log_prob(x_above, up_logits)
        x = x_above
    return log_w - rbm.free_energy(top_layer(params), x)


def reconstruction_errors(params: dict, v: jax.Array) -> dict[str, jax.Array]:
    """Each RBM's mean-field reconstruction error on its own input: {'layer_l': (...,)}."""
    return {
        layer_name(index): rbm.reconstruction_error(
            params[layer_name(index)], layer_input(params, v, index)
        )
        for index in range(num_layers(params))
    }


def sample(params: dict, key: jax.Array, num: int, num_gibbs_steps: int) -> jax.Array:
    """Ancestral samples: Gibbs in the top RBM, then the directed layers down.

    `num` chains of the top RBM start from uniform bits and run `num_gibbs_steps` sweeps; its
    visible sample x_{L-1} is then passed down by sampling x_l ~ p(x_l | x_{l+1}) for
    l = L-2 .. 1, and the returned images are the means p(v = 1 | x_1) (for a 1-layer DBN,
    p(v = 1 | h) of the top RBM's last hidden sample, as the RBM family does). Returns (num, V).
    """
    top = top_layer(params)
    if num_layers(params) == 1:
        return rbm_family.sample_visible_means(top, key, num, num_gibbs_steps)
    init_key, chain_key, down_key = jax.random.split(key, 3)
    x = rbm_family.initial_chains(init_key, num, top["W"].shape[0], gaussian=False)
    x = rbm.gibbs_chain(top, chain_key, x, num_gibbs_steps)  # (num, N_{L-1})
    for index in range(num_layers(params) - 2, 0, -1):
        layer = params[layer_name(index)]
        x = rbm.sample_visible(jax.random.fold_in(down_key, index), layer, x)
    return rbm.visible_probs(params[layer_name(0)], x)


class DBN(staged.StagedModel):
    """A deep belief net trained greedily, one RBM per stage, by CD-k.

    model_config fields:
      hidden_sizes: (H_0, .., H_{L-1}), one RBM per entry.
      stage_steps: updates per layer, bottom first; sums to `config.num_steps`.
      gibbs_steps: k of CD-k for every layer.
      weight_scale: initial weights ~ N(0, weight_scale^2).
      visible_bias_init: 'data_mean' (the bottom RBM's visible biases are the logit of the
        training pixel means) | 'zeros'; the higher RBMs' visible biases start at zero.
      weight_decay_biases: whether `config.weight_decay` also reaches the biases (False: the
        weights only, Hinton 2010).
      eval_bound_samples: Monte Carlo samples of q per example for the variational bound.
      ais_chains, ais_betas, monitor_ais_chains, monitor_ais_betas, exact_max_units: log Z of
        the top RBM (see `common.rbm_log_partition`); its AIS base rates are the running mean
        of the top RBM's input during its stage.
      sample_gibbs_steps: top-RBM sweeps behind each sample.

    Training metrics: `train/recon_error` is the active layer's reconstruction error of its
    own input, so it changes scale at each stage boundary.

    With `config.compute_dtype='bfloat16'` the products with the weights of a train step (the
    up-pass below the active layer, its Gibbs sweeps and its gradient) run in bfloat16, as in
    the RBM family; evaluation and sampling use the float32 parameters.
    """

    name = "dbn"
    main_metric = "train/recon_error"
    evaluation_fields = (*common.EVALUATION_FIELDS, "eval_bound_samples")
    stage_metrics = ("train/recon_error",)
    compute_dtypes = ("float32", "bfloat16")
    added_field_defaults = common.ADDED_FIELD_DEFAULTS

    @classmethod
    def stages_for(cls, config) -> tuple[staged.Stage, ...]:
        names = [layer_name(index) for index in range(len(config.model_config.hidden_sizes))]
        return tuple(staged.Stage(name, (name,)) for name in names)

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_sizes(mc, "hidden_sizes", meaning="one per RBM")
        checks.check_positive_ints(mc, ("gibbs_steps", "eval_bound_samples"))
        common.check_shared_fields(mc)
        super().validate_config(config)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        checks.require_binary(spec, "config.model='dbn' (a stack of Bernoulli RBMs)")
        self.num_visible = spec.num_dims
        self.num_layers = len(config.model_config.hidden_sizes)
        self.init_batch_size = common.visible_mean_examples(config.model_config)

    def weight_decay_mask(self):
        return common.weight_decay_mask(self.config.model_config)

    def init(self, key, example_x):
        """Parameters (layer 0's visible biases from `example_x`, the training examples, with
        `visible_bias_init='data_mean'`) and the top RBM's running input mean."""
        mc = self.config.model_config
        params = init_params(key, self.num_visible, tuple(mc.hidden_sizes), mc.weight_scale)
        if mc.visible_bias_init == "data_mean":
            params[layer_name(0)]["b_v"] = common.visible_bias_from_data(example_x)
        check_params(params)
        top_inputs = top_layer(params)["W"].shape[0]
        # The top RBM's input means during its stage: the AIS base rates of its log Z.
        extras = {"visible_mean": jnp.zeros(top_inputs), "num_batches": jnp.zeros(())}
        return params, extras

    def stage_loss(self, stage, params, extras, batch, keys, step):
        """CD-k for RBM `stage` on the hidden probabilities of the data below it."""
        del step
        mc = self.config.model_config
        params = precision.cast_matrices(params, self.config.compute_dtype)
        v = batch["x"].reshape((batch["x"].shape[0], -1))  # (B, V)
        x = layer_input(params, v, stage)  # (B, N_stage), no gradient
        layer = params[layer_name(stage)]
        frozen = jax.lax.stop_gradient(layer)
        x_model = jax.vmap(lambda key, x0: rbm.gibbs_chain(frozen, key, x0, mc.gibbs_steps))(
            keys, x
        )
        loss = rbm.contrastive_divergence_loss(layer, x, x_model)
        if stage == self.num_layers - 1:
            extras = rbm_family.update_running_mean(extras, x.mean(axis=0))
        metrics = {"train/recon_error": rbm.reconstruction_error(frozen, x).mean()}
        return loss, (metrics, extras)

    def evaluation_constants(self, state, key, final):
        progress = final and self.config.progress_bar and jax.process_index() == 0
        top = top_layer(state.params)
        # Before the top stage has seen data its running mean is empty: uniform base rates.
        trained = float(jax.device_get(state.extras["num_batches"])) > 0
        base = rbm_family.base_visible_bias(top, state.extras) if trained else None
        return common.rbm_log_partition(top, key, self.config.model_config, final, base, progress)

    def train_log_density(self, params, x, keys):
        """The bound's log weights (M, B) with M = eval_bound_samples (up to log Z), from the
        matrices in the compute dtype."""
        params = precision.cast_matrices(params, self.config.compute_dtype)
        num_samples = self.config.model_config.eval_bound_samples
        v = x.reshape((x.shape[0], -1))
        return jax.vmap(lambda v, key: log_weights(params, key, v, num_samples))(v, keys).T

    def eval_step(self, state, batch, keys, final):
        del final  # the same per-example quantities; only log Z's settings differ
        params = state.params
        num_samples = self.config.model_config.eval_bound_samples
        v = batch["x"].reshape((batch["x"].shape[0], -1))
        log_w = jax.vmap(lambda x, key: log_weights(params, key, x, num_samples))(v, keys)
        outputs = {
            "bound": jnp.mean(log_w, axis=-1) + batch["log_det"],  # (B,)
            "importance_weighted": jax.nn.logsumexp(log_w, axis=-1)
            - jnp.log(num_samples)
            + batch["log_det"],
        }
        for name, error in reconstruction_errors(params, v).items():
            outputs[f"recon_error_{name}"] = error
        return outputs

    def summarize(self, outputs, final, constants):
        log_z = constants["log_z"]
        bound = outputs["bound"] - log_z
        extra = {
            name: float(np.mean(value))
            for name, value in outputs.items()
            if name.startswith("recon_error_")
        }
        extra["importance_weighted_nll"] = float(-np.mean(outputs["importance_weighted"] - log_z))
        if not final:
            return {"nll_bound": float(-np.mean(bound)), "log_z": float(log_z), **extra}
        summary = common.summarize_nll(bound, self.spec.num_dims, constants, bound=BOUND_NAME)
        summary.update(extra, eval_bound_samples=self.config.model_config.eval_bound_samples)
        return summary

    def first_layer_filters(self, state):
        """The bottom RBM's weights as images, (min(H_0, 100), *example_shape)."""
        weights = state.params[layer_name(0)]["W"]
        return common.first_layer_filters(weights, self.spec.example_shape)

    def sample(self, state, key, num):
        steps = self.config.model_config.sample_gibbs_steps
        samples = sample(state.params, key, num, steps)
        return samples.reshape((num, *self.spec.example_shape))
