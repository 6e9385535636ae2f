"""Helmholtz machines: sigmoid belief networks with a recognition network.

Dayan, Hinton, Neal & Zemel (1995). The generative model is a layered sigmoid belief network
(SBN) over binary units, x = h_0 at the bottom and L layers of binary latents above it,

    p(x, h) = p(h_L) prod_{l=1..L} p(h_{l-1} | h_l),
    p(h_L) = prod_u Bernoulli(sigmoid(a_u)),
    p(h_{l-1} | h_l) = prod_u Bernoulli(sigmoid(h_l W^p_l + b^p_l)_u),

and the recognition network q(h | x) = prod_l q(h_l | h_{l-1}) has the same shape upside down,
q(h_l | h_{l-1}) = prod_u Bernoulli(sigmoid(h_{l-1} W^q_l + b^q_l)_u), h_0 = x. Every log
probability is a Bernoulli log-likelihood in the log-sigmoid form of
`objectives.bernoulli_log_prob`, float32.

Training rules (`model_config.rule`), each a surrogate whose gradient is the update, so one
optimizer applies it (`rule_surrogate`):

  wake_sleep  Hinton, Dayan, Frey & Neal (1995). Wake: h ~ q(h | x), ascend log p(x, h) in the
              generative weights. Sleep: dream (x, h) ~ p, ascend log q(h | x) in the
              recognition weights.
  reweighted_wake_sleep
              Bornschein & Bengio (2015). K samples h_k ~ q(h | x) with self-normalised
              weights w~_k proportional to p(x, h_k) / q(h_k | x). Wake-phase p update:
              sum_k w~_k grad log p(x, h_k), which tends to grad log p(x) as K grows. q update
              (`model_config.q_update`): 'wake', sum_k w~_k grad log q(h_k | x) (tends to
              -grad KL(p(h | x) || q(h | x))); 'sleep', as in wake-sleep; or 'both' (their sum;
              the paper's recommendation). With K = 1 and the sleep update it is wake-sleep.
  vimco       Mnih & Rezende (2016): the IWAE-K bound, q trained by VIMCO's leave-one-out
              learning signals and p by the bound's gradient sum_k w~_k grad log p(x, h_k)
              (`objectives.estimators.vimco_surrogate`).

Evaluation is the importance-sampled estimate of log p(x) with q as the proposal (the IWAE-K
protocol of Burda et al. 2016, K = 5,000 at the end), so the numbers sit on the scale of the
VAE's.

Parameters are a plain pytree:

    {"generative": {"prior_logits": (H_L,),
                    "layer_0": {"kernel": (H_1, D), "bias": (D,)},        # p(x | h_1)
                    "layer_l": {"kernel": (H_{l+1}, H_l), "bias": (H_l,)}},  # p(h_l | h_{l+1})
     "recognition": {"layer_0": {"kernel": (D, H_1), "bias": (H_1,)},     # q(h_1 | x)
                     "layer_l": {"kernel": (H_l, H_{l+1}), "bias": (H_{l+1},)}}}

Latent samples are lists [h_1, ..., h_L] of arrays (K, B, H_l) (a sample axis first) or
(B, H_l).
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import chunked_iwae_log_likelihood, summarize_importance_sampled
from genjax.models import checks
from genjax.models.base import MAX_FILTERS, GradientModel
from genjax.objectives import estimators

RULES = ("wake_sleep", "reweighted_wake_sleep", "vimco")
Q_UPDATES = ("wake", "sleep", "both")
# Standard deviation of the initial weights; biases start at zero (every unit at p = 1/2).
INIT_WEIGHT_STD = 0.01


def init_params(key: jax.Array, num_visible: int, latent_sizes: Sequence[int]) -> dict:
    """Initial parameters of an SBN of `latent_sizes` (H_1, ..., H_L) over D = `num_visible`
    units and its recognition network: weights N(0, INIT_WEIGHT_STD^2), biases and the prior
    logits zero. Layout in the module docstring."""
    sizes = (num_visible, *latent_sizes)
    generative = {"prior_logits": jnp.zeros((sizes[-1],))}
    recognition = {}
    for layer, (below, above) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        p_key, q_key = jax.random.split(jax.random.fold_in(key, layer))
        generative[f"layer_{layer}"] = {
            "kernel": INIT_WEIGHT_STD * jax.random.normal(p_key, (above, below)),
            "bias": jnp.zeros((below,)),
        }
        recognition[f"layer_{layer}"] = {
            "kernel": INIT_WEIGHT_STD * jax.random.normal(q_key, (below, above)),
            "bias": jnp.zeros((above,)),
        }
    return {"generative": generative, "recognition": recognition}


def num_latent_layers(params: dict) -> int:
    """L, the number of latent layers."""
    return len(params["recognition"])


def _logits(layer: dict, inputs: jax.Array) -> jax.Array:
    """inputs (..., N_in) @ kernel + bias -> (..., N_out), as one 2-D matrix product."""
    lead = inputs.shape[:-1]
    flat = inputs.reshape((-1, inputs.shape[-1])) @ layer["kernel"] + layer["bias"]
    return flat.reshape((*lead, -1))


def _sigmoid_chain(
    layers: Sequence[dict], start: jax.Array, units: Sequence[jax.Array], draw: bool
) -> tuple[list[jax.Array], jax.Array]:
    """Walks a chain of sigmoid belief layers from `start` (up the recognition network, or
    down the generative one).

    Layer i maps the units before it (`start` for i = 0) to Bernoulli logits; its own units are
    `units[i]` as given (`draw=False`) or drawn from them (`draw=True`: `units[i]` are
    uniforms on [0, 1), and a unit is on where its uniform falls below sigmoid(logit)).

    Returns:
      (the units of every layer, the summed log probability of all of them (batch shape)).
    """
    values, log_prob, below = [], 0.0, start
    for layer, value in zip(layers, units, strict=True):
        logits = _logits(layer, below)
        if draw:
            value = (value < jax.nn.sigmoid(logits)).astype(jnp.float32)
        log_prob = log_prob + objectives.bernoulli_log_prob(value, logits, event_ndims=1)
        values.append(value)
        below = value
    return values, log_prob


def _recognition_layers(params: dict) -> list[dict]:
    return [params["recognition"][f"layer_{i}"] for i in range(num_latent_layers(params))]


def _generative_layers_top_down(params: dict) -> list[dict]:
    """p(h_{L-1} | h_L), ..., p(x | h_1)."""
    num_layers = num_latent_layers(params)
    return [params["generative"][f"layer_{i}"] for i in reversed(range(num_layers))]


def latent_sizes(params: dict) -> tuple[int, ...]:
    """(H_1, ..., H_L)."""
    return tuple(layer["bias"].shape[0] for layer in _recognition_layers(params))


def recognition_uniforms(keys: jax.Array, num_samples: int, sizes: Sequence[int]) -> list:
    """Uniform draws for `num_samples` recognition samples of each example, each example from
    its own key: keys (B,) -> per layer (K, B, H_l)."""

    def per_example(key):
        layer_keys = jax.random.split(key, len(sizes))
        return [
            jax.random.uniform(k, (num_samples, size))
            for k, size in zip(layer_keys, sizes, strict=True)
        ]

    return [jnp.swapaxes(u, 0, 1) for u in jax.vmap(per_example)(keys)]


def sample_recognition(
    params: dict, x: jax.Array, keys: jax.Array, num_samples: int
) -> tuple[list[jax.Array], jax.Array]:
    """K = `num_samples` draws h ~ q(h | x) per example, and their log q.

    Args:
      params: the Helmholtz machine's parameters.
      x: (B, D) binary.
      keys: (B,) one typed key per example.
      num_samples: K.

    Returns:
      (hs, log_q): [h_1, ..., h_L], each (K, B, H_l) in {0, 1}, and log q(h | x), (K, B). The
      draws are step functions of the logits (no gradient); log_q is differentiable in the
      recognition weights.
    """
    chex.assert_rank(x, 2)
    uniforms = recognition_uniforms(keys, num_samples, latent_sizes(params))
    hs, log_q = _sigmoid_chain(_recognition_layers(params), x, uniforms, draw=True)
    chex.assert_shape(log_q, (num_samples, x.shape[0]))
    return hs, log_q


def log_recognition(params: dict, x: jax.Array, hs: Sequence[jax.Array]) -> jax.Array:
    """log q(h | x) = sum_l log q(h_l | h_{l-1}) of given units: x (B, D), hs [(..., B, H_l)]
    -> (..., B)."""
    return _sigmoid_chain(_recognition_layers(params), x, hs, draw=False)[1]


def log_joint(params: dict, x: jax.Array, hs: Sequence[jax.Array]) -> jax.Array:
    """log p(x, h) = log p(h_L) + sum_l log p(h_{l-1} | h_l) of given units: x (B, D),
    hs [(..., B, H_l)] -> (..., B)."""
    top = hs[-1]
    log_prior = objectives.bernoulli_log_prob(
        top, jnp.broadcast_to(params["generative"]["prior_logits"], top.shape), event_ndims=1
    )
    below_top = [*reversed(hs[:-1]), x]  # h_{L-1}, ..., h_1, x
    log_conditionals = _sigmoid_chain(
        _generative_layers_top_down(params), top, below_top, draw=False
    )[1]
    return log_prior + log_conditionals


def importance_log_weights(
    params: dict, x: jax.Array, keys: jax.Array, num_samples: int
) -> jax.Array:
    """log w_k = log p(x, h_k) - log q(h_k | x), h_k ~ q(h | x): x (B, D), keys (B,) -> (K, B).

    Their log-mean-exp is the IWAE-K estimate of log p(x) (Burda et al. 2016, eq. 8)."""
    hs, log_q = sample_recognition(params, x, keys, num_samples)
    return log_joint(params, x, hs) - log_q


def sample_generative(params: dict, key: jax.Array, num: int) -> tuple[jax.Array, list[jax.Array]]:
    """Ancestral samples (x, h) ~ p: h_L from the prior, then each layer given the one above.

    Returns:
      (x, hs): x (num, D) binary, hs [h_1, ..., h_L] each (num, H_l).
    """
    sizes = latent_sizes(params)
    num_visible = params["generative"]["layer_0"]["bias"].shape[0]
    top_key, chain_key = jax.random.split(key)
    prior = jax.nn.sigmoid(params["generative"]["prior_logits"])
    top = (jax.random.uniform(top_key, (num, sizes[-1])) < prior).astype(jnp.float32)
    below_sizes = [*reversed(sizes[:-1]), num_visible]
    uniforms = [
        jax.random.uniform(jax.random.fold_in(chain_key, i), (num, size))
        for i, size in enumerate(below_sizes)
    ]
    below, _ = _sigmoid_chain(_generative_layers_top_down(params), top, uniforms, draw=True)
    x, hs = below[-1], [*reversed(below[:-1]), top]
    return x, hs


def visible_probabilities(params: dict, h1: jax.Array) -> jax.Array:
    """p(x_d = 1 | h_1) = sigmoid(h_1 W^p_1 + b^p_1): (..., H_1) -> (..., D)."""
    return jax.nn.sigmoid(_logits(params["generative"]["layer_0"], h1))


def sample_dreams(params: dict, keys: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    """One dream (x, h) ~ p per key, for the sleep phase: keys (B,) -> x (B, D), hs [(B, H_l)]."""
    x, hs = jax.vmap(lambda key: sample_generative(params, key, 1))(keys)
    return x[:, 0], [h[:, 0] for h in hs]


def rule_surrogate(
    params: dict,
    x: jax.Array,
    hs: Sequence[jax.Array],
    dreams: tuple[jax.Array, Sequence[jax.Array]] | None,
    rule: str,
    q_update: str = "both",
) -> tuple[jax.Array, jax.Array]:
    """A per-example surrogate whose value is the IWAE-K bound and whose gradient (in `params`)
    is the training rule's update direction (ascent).

    With log w_k = log p(x, h_k) - log q(h_k | x) and w~ = softmax(log w) (held constant):

      wake_sleep, reweighted_wake_sleep:
        sum_k w~_k grad log p(x, h_k)                       (wake-phase p update)
        + sum_k w~_k grad log q(h_k | x)                    (q_update 'wake' or 'both')
        + grad log q(h_dream | x_dream)                     (q_update 'sleep' or 'both')
        Wake-sleep is the K = 1 case with q_update 'sleep' (w~_1 = 1).
      vimco: `estimators.vimco_surrogate(log w, log q)`: the IWAE bound's gradient in p and
        VIMCO's estimate of it in q (Mnih & Rezende 2016).

    Args:
      params: the parameters (live).
      x: (B, D) binary data.
      hs: [h_1, ..., h_L], each (K, B, H_l), drawn from q and treated as constants.
      dreams: (x_dream (B, D), [h_l dream (B, H_l)]) drawn from p, treated as constants; read
        only by a sleep-phase q update.
      rule: one of RULES.
      q_update: one of Q_UPDATES; read only by 'reweighted_wake_sleep' ('wake_sleep' is
        'sleep').

    Returns:
      (surrogate (B,), log_w (K, B)).
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; allowed: {RULES}")
    if q_update not in Q_UPDATES:
        raise ValueError(f"q_update={q_update!r}; allowed: {Q_UPDATES}")
    if rule == "wake_sleep" and hs[0].shape[0] != 1:
        raise ValueError(
            f"rule='wake_sleep' takes one sample of q per example, got K={hs[0].shape[0]}; "
            "for K > 1 use rule='reweighted_wake_sleep'."
        )
    hs = [jax.lax.stop_gradient(h) for h in hs]
    log_p = log_joint(params, x, hs)  # (K, B)
    log_q = log_recognition(params, x, hs)  # (K, B)
    log_w = log_p - log_q
    if rule == "vimco":
        return estimators.vimco_surrogate(log_w, log_q), log_w
    if rule == "wake_sleep":
        q_update = "sleep"
    weights = jax.lax.stop_gradient(objectives.importance_weights(log_w, axis=0))  # (K, B)
    carrier = jnp.sum(weights * log_p, axis=0)  # (B,)
    if q_update in ("wake", "both"):
        carrier = carrier + jnp.sum(weights * log_q, axis=0)
    if q_update in ("sleep", "both"):
        if dreams is None:
            raise ValueError(f"rule={rule!r} with q_update={q_update!r} needs dreams from p.")
        dream_x, dream_hs = jax.tree.map(jax.lax.stop_gradient, dreams)
        carrier = carrier + log_recognition(params, dream_x, dream_hs)
    return objectives.value_with_gradient_of(objectives.iwae_bound(log_w, axis=0), carrier), log_w


def uses_sleep_phase(rule: str, q_update: str) -> bool:
    """Whether the rule's q update needs dreams from p."""
    return rule == "wake_sleep" or (rule == "reweighted_wake_sleep" and q_update != "wake")


class HelmholtzMachine(GradientModel):
    """Helmholtz machines (`config.model = 'helmholtz'`): a layered sigmoid belief network and
    its recognition network, trained by wake-sleep, reweighted wake-sleep or VIMCO.

    model_config fields:
      latent_sizes: (H_1, ..., H_L), the binary latent layers from the data upwards, e.g.
        (200, 200); the recognition network has the same shape.
      rule: one of RULES (module docstring).
      q_update: with rule='reweighted_wake_sleep', the recognition update: 'wake', 'sleep' or
        'both' (Bornschein & Bengio 2015); read only with that rule.
      num_importance_samples: K samples of q per example in training; 1 for 'wake_sleep',
        at least 2 for 'vimco'.
      eval_importance_samples, eval_chunk_size: the final log p(x) estimate (IWAE-5000,
        drawn `eval_chunk_size` samples at a time).
      monitor_importance_samples: K of the cheap evaluation during training.
    """

    name = "helmholtz"
    main_metric = "train/loss"
    evaluation_fields = checks.IMPORTANCE_SAMPLING_EVALUATION_FIELDS

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_sizes(mc, "latent_sizes", meaning="one per layer of binary latents")
        checks.check_choices(mc, {"rule": RULES, "q_update": Q_UPDATES})
        checks.check_importance_sampling(mc)
        if mc.rule == "wake_sleep" and mc.num_importance_samples != 1:
            raise ValueError(
                "config.model_config.rule='wake_sleep' draws one sample of q per example, but "
                f"config.model_config.num_importance_samples={mc.num_importance_samples}; "
                "allowed: 1 (for K > 1 use rule='reweighted_wake_sleep')."
            )
        if mc.rule == "vimco":
            estimators.check_estimator_for_bound(
                "vimco",
                "iwae",
                mc.num_importance_samples,
                estimator_field="config.model_config.rule",
                samples_field="config.model_config.num_importance_samples",
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        checks.require_binary(spec, "config.model='helmholtz' (binary visible units)")
        mc = config.model_config
        self.latent_sizes = tuple(int(size) for size in mc.latent_sizes)
        self.rule = mc.rule
        self.q_update = mc.q_update

    def init(self, key, example_x):
        return init_params(key, self.spec.num_dims, self.latent_sizes), {}

    def _flat(self, x: jax.Array) -> jax.Array:
        return x.reshape((x.shape[0], self.spec.num_dims))

    @staticmethod
    def _phase_keys(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Per-example keys (B,) -> (recognition keys (B,), dream keys (B,))."""
        split_keys = jax.vmap(jax.random.split)(keys)  # (B, 2)
        return split_keys[:, 0], split_keys[:, 1]

    def train_log_density(self, params, x, keys):
        """The training K's importance log weights log p(x, h_k) - log q(h_k | x), (K, B), of
        the samples `loss` draws with the same keys."""
        num_samples = self.config.model_config.num_importance_samples
        sample_keys, _ = self._phase_keys(keys)
        return importance_log_weights(params, self._flat(x), sample_keys, num_samples)

    def loss(self, params, extras, batch, keys):
        """-mean_b IWAE-K bound, with the rule's update as its gradient (`rule_surrogate`).

        Example b's key is split into its recognition draws and its sleep-phase dream."""
        x = self._flat(batch["x"])
        num_samples = self.config.model_config.num_importance_samples
        sample_keys, dream_keys = self._phase_keys(keys)
        frozen = jax.lax.stop_gradient(params)
        hs, _ = sample_recognition(frozen, x, sample_keys, num_samples)
        dreams = None
        if uses_sleep_phase(self.rule, self.q_update):
            dreams = sample_dreams(frozen, dream_keys)
        surrogate, log_w = rule_surrogate(params, x, hs, dreams, self.rule, self.q_update)
        chex.assert_shape(log_w, (num_samples, x.shape[0]))
        loss = -jnp.mean(surrogate + batch["log_det"])
        metrics = {
            "train/bound": jnp.mean(objectives.iwae_bound(log_w) + batch["log_det"]),
            "train/elbo": jnp.mean(objectives.elbo(log_w) + batch["log_det"]),
            "train/effective_sample_size": jnp.mean(objectives.effective_sample_size(log_w)),
        }
        return loss, (metrics, extras)

    def eval_step(self, state, batch, keys, final):
        mc = self.config.model_config
        x, log_det = self._flat(batch["x"]), batch["log_det"]
        if not final:
            log_w = importance_log_weights(state.params, x, keys, mc.monitor_importance_samples)
            return {
                "elbo": objectives.elbo(log_w) + log_det,
                "iwae": objectives.iwae_bound(log_w) + log_det,
            }

        def log_weights_fn(chunk_keys, num):
            return importance_log_weights(state.params, x, chunk_keys, num)

        log_likelihood, elbo = chunked_iwae_log_likelihood(
            log_weights_fn, keys, mc.eval_importance_samples, mc.eval_chunk_size
        )
        return {"log_likelihood": log_likelihood + log_det, "elbo": elbo + log_det}

    def summarize(self, outputs, final, constants):
        del constants  # none: every estimate is per example
        mc = self.config.model_config
        return summarize_importance_sampled(
            outputs,
            final,
            self.spec.num_dims,
            mc.monitor_importance_samples,
            mc.eval_importance_samples,
        )

    def sample(self, state, key, num):
        """p(x_d = 1 | h_1) for ancestral draws h ~ p, (num, *example_shape) (as the VAE
        shows its Bernoulli decoder's means)."""
        _, hs = sample_generative(state.params, key, num)
        probabilities = visible_probabilities(state.params, hs[0])
        return probabilities.reshape((num, *self.spec.example_shape))

    def first_layer_filters(self, state):
        """What each of the first `MAX_FILTERS` units of h_1 adds to the logits of p(x | h_1):
        rows of the generative kernel as images, (min(H_1, 100), *example_shape); None for
        data that are not images."""
        if len(self.spec.example_shape) < 2:
            return None
        kernel = np.asarray(jax.device_get(state.params["generative"]["layer_0"]["kernel"]))
        num_filters = min(kernel.shape[0], MAX_FILTERS)
        return kernel[:num_filters].reshape((num_filters, *self.spec.example_shape))
