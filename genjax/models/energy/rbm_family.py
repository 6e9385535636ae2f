"""The RBM family for the trainer (`config.model = 'rbm'`): CD-k, PCD and PT on one surrogate.

Training descends `rbm.contrastive_divergence_loss`, mean F(v_data) - mean F(v_model), with
v_model from `gibbs_steps` block Gibbs sweeps started at the batch (CD-k, Hinton 2002) or at
persistent chains kept in the train state (PCD, Tieleman 2008), or from the beta = 1 chains
of parallel tempering (PT, Desjardins et al. 2010; `tempering`): persistent sets of
`num_temperatures` chains on the AIS path's tempered RBMs, base rates from the training data
seen so far, swapping neighbours after every sweep. The chains are sharded over
devices with the batch (`Model.sharded_extras`) and saved in every checkpoint. Each example
(and its chain) draws from its own key, so runs on 1 and N devices agree.

Evaluation: log p(v) = -F(v) - log Z with log Z exact (small models) or by AIS from the
base-rate RBM fitted to the training data's pixel means (Salakhutdinov & Murray 2008). The
final evaluation also runs RAISE (Burda et al. 2015, `rbm.raise_log_likelihood`), the same
path backwards from each test example, whose NLL errs high where AIS's errs low:
`test_nll_nats` (AIS or exact) and `test_nll_raise_nats` bracket the test NLL.

With `config.compute_dtype='bfloat16'` a train step's products with W (the Gibbs sweeps, the
surrogate and its gradient) run in bfloat16 with float32 biases, probabilities and free
energies (`genjax.nn.precision`); the chains stay float32, and evaluation (free energies,
AIS) and sampling use the float32 parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genjax.core import optim
from genjax.evaluate import ais
from genjax.models import checks
from genjax.models.base import GradientModel
from genjax.models.energy import common, rbm, tempering
from genjax.nn import precision

SAMPLERS = ("cd", "pcd", "pt")
VISIBLE_TYPES = ("bernoulli", "gaussian")


def update_running_mean(extras: dict, batch_mean: jax.Array) -> dict:
    """The training data's visible means so far (the AIS base rates), averaged over devices."""
    count = extras["num_batches"] + 1.0
    batch_mean = jax.lax.pmean(batch_mean, "data")
    mean = extras["visible_mean"] + (batch_mean - extras["visible_mean"]) / count
    return {**extras, "visible_mean": mean, "num_batches": count}


def initial_chains(key: jax.Array, num_chains: int, num_visible: int, gaussian: bool):
    """Persistent chains before the first update: uniform bits, or standard normal."""
    if gaussian:
        return jax.random.normal(key, (num_chains, num_visible))
    return jax.random.bernoulli(key, 0.5, (num_chains, num_visible)).astype(jnp.float32)


def base_visible_bias(params: dict, extras: dict):
    """AIS base rates from the training data's pixel means (None for Gaussian visibles)."""
    if rbm.is_gaussian(params):
        return None
    return rbm.base_rates_from_mean(extras["visible_mean"])


def sample_visible_means(
    params: dict, key: jax.Array, num: int, num_steps: int, start_probs=None
) -> jax.Array:
    """`num` Gibbs chains run `num_steps` sweeps; the last sweep's p(v | h) means (Bernoulli,
    for image grids) or samples (Gaussian). Returns (num, V).

    Bernoulli chains start from uniform bits, or from independent bits with `start_probs`
    (V,) (the data's pixel means, the AIS base-rate model): a trained RBM can hold chains
    started in pixel noise for thousands of sweeps in a grey, noise-driven state.
    """
    num_visible = params["W"].shape[0]
    init_key, chain_key, last_key = jax.random.split(key, 3)
    gaussian = rbm.is_gaussian(params)
    if start_probs is None or gaussian:
        v = initial_chains(init_key, num, num_visible, gaussian)
    else:
        v = jax.random.bernoulli(init_key, start_probs, (num, num_visible)).astype(jnp.float32)
    v = rbm.gibbs_chain(params, chain_key, v, num_steps)
    if gaussian:
        return v
    return rbm.visible_probs(params, rbm.sample_hidden(last_key, params, v))


def raise_summary(log_likelihood: np.ndarray, config) -> dict:
    """`eval.json`'s RAISE fields from per-example RAISE log p(v) (N,): the mean NLL, its
    standard error over examples, and the settings behind it."""
    log_likelihood = np.asarray(log_likelihood, np.float64)
    num = len(log_likelihood)
    return {
        "test_nll_raise_nats": float(-np.mean(log_likelihood)),
        "test_nll_raise_stderr": float(np.std(log_likelihood, ddof=1) / np.sqrt(num))
        if num > 1
        else float("nan"),
        "raise_chains": int(config.model_config.raise_chains),
        "raise_betas": int(config.model_config.raise_betas),
    }


class RBM(GradientModel):
    """Bernoulli or Gaussian-Bernoulli RBM trained by CD-k or PCD.

    model_config fields:
      num_hidden: H.
      visible: 'bernoulli' (binarized data) | 'gaussian' (real-valued data).
      learn_sigma: Gaussian visibles: learn the per-unit sigma, as log sigma (else fixed at 1);
        the energy couples v / sigma to the hiddens (see `rbm`).
      sampler: 'cd' | 'pcd' | 'pt'; gibbs_steps: k sweeps per update (for 'pt', k
        tempering steps: a sweep of every chain, then swaps).
      num_temperatures: 'pt': chains per set, at inverse temperatures evenly spaced from 1
        to 0 (`tempering.tempering_betas`); at least 2.
      weight_scale: initial weights ~ N(0, weight_scale^2).
      visible_bias_init: 'data_mean' (logit of the training pixel means, or the mean itself
        for Gaussian visibles; `common.visible_bias_from_data`) | 'zeros'.
      weight_decay_biases: whether `config.weight_decay` also reaches b_v, b_h and log sigma
        (False: the weights only, Hinton 2010).
      ais_chains, ais_betas: the final AIS estimate of log Z (Salakhutdinov & Murray: 100
        chains, 14,500 betas); monitor_ais_chains, monitor_ais_betas: the cheap one every
        `config.eval_every` steps; exact_max_units: enumerate log Z exactly up to this many
        units in the smaller layer; sample_gibbs_steps: sweeps behind each sample.
      raise_chains, raise_betas: RAISE in the final evaluation, `raise_chains` reverse chains
        per test example over `ais.default_betas(raise_betas)` (0 chains: off).
    """

    name = "rbm"
    main_metric = "train/recon_error"
    evaluation_fields = (*common.EVALUATION_FIELDS, "raise_chains", "raise_betas")
    sharded_extras = ("chains",)
    compute_dtypes = ("float32", "bfloat16")
    added_field_defaults = {**common.ADDED_FIELD_DEFAULTS, "num_temperatures": 10}

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choice(mc, "visible", VISIBLE_TYPES)
        checks.check_choice(mc, "sampler", SAMPLERS)
        checks.check_positive_ints(mc, ("num_hidden", "gibbs_steps", "raise_betas"))
        common.check_shared_fields(mc)
        if not (isinstance(mc.num_temperatures, int) and mc.num_temperatures >= 2):
            raise ValueError(
                f"config.model_config.num_temperatures={mc.num_temperatures!r} must be an "
                "integer of at least 2 (the beta = 1 chain and at least one hotter one)."
            )
        if not (isinstance(mc.raise_chains, int) and mc.raise_chains >= 0):
            raise ValueError(
                f"config.model_config.raise_chains={mc.raise_chains!r} must be an integer >= 0 "
                "(0 turns RAISE off)."
            )
        if mc.raise_betas < 3:
            raise ValueError(
                f"config.model_config.raise_betas={mc.raise_betas} must be at least 3."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        if mc.visible == "bernoulli":
            checks.require_binary(
                spec, "config.model_config.visible='bernoulli'", "visible='gaussian'"
            )
        self.gaussian = mc.visible == "gaussian"
        self.persistent = mc.sampler in ("pcd", "pt")
        self.tempered = mc.sampler == "pt"
        self.num_visible = spec.num_dims
        self.init_batch_size = common.visible_mean_examples(mc)

    def make_optimizer(self):
        return optim.make_optimizer(
            self.config, weight_decay_mask=common.weight_decay_mask(self.config.model_config)
        )

    def init(self, key, example_x):
        """Parameters (visible biases from `example_x`, the training examples, with
        `visible_bias_init='data_mean'`) and extras: running means and persistent chains."""
        mc = self.config.model_config
        params_key, chains_key = jax.random.split(key)
        params = rbm.init_params(
            params_key, self.num_visible, mc.num_hidden, self.gaussian, mc.weight_scale
        )
        if mc.visible_bias_init == "data_mean":
            params["b_v"] = common.visible_bias_from_data(example_x, self.gaussian)
        extras = {"visible_mean": jnp.zeros(self.num_visible), "num_batches": jnp.zeros(())}
        if self.persistent:
            # PT: a set of num_temperatures chains per example, (B, M, V); PCD: (B, V).
            num_chains = self.config.batch_size * (mc.num_temperatures if self.tempered else 1)
            chains = initial_chains(chains_key, num_chains, self.num_visible, self.gaussian)
            if self.tempered:
                chains = chains.reshape(self.config.batch_size, mc.num_temperatures, -1)
            extras["chains"] = chains
        return params, extras

    def _trainable(self, params: dict) -> dict:
        if self.gaussian and not self.config.model_config.learn_sigma:
            return {**params, "log_sigma": jax.lax.stop_gradient(params["log_sigma"])}
        return params

    def train_log_density(self, params, x, keys):
        """-F(v) (B,), the unnormalized log density, from the matrices in the compute dtype."""
        del keys
        params = precision.cast_matrices(self._trainable(params), self.config.compute_dtype)
        return -rbm.free_energy(params, x.reshape((x.shape[0], -1)))

    def loss(self, params, extras, batch, keys):
        mc = self.config.model_config
        v = batch["x"].reshape((batch["x"].shape[0], -1))  # (B, V)
        params = precision.cast_matrices(self._trainable(params), self.config.compute_dtype)
        start = extras["chains"] if self.persistent else v
        frozen = jax.lax.stop_gradient(params)
        extras = update_running_mean(extras, v.mean(axis=0))
        metrics = {"train/recon_error": rbm.reconstruction_error(frozen, v).mean()}
        if self.tempered:
            chains, swap_rate = self._tempered_chains(frozen, extras, keys, start)
            v_model = chains[:, 0]  # the beta = 1 chains, (B, V)
            metrics["train/pt_swap_rate"] = jnp.mean(swap_rate)
        else:
            chains = v_model = jax.vmap(
                lambda key, v0: rbm.gibbs_chain(frozen, key, v0, mc.gibbs_steps)
            )(keys, start)
        loss = rbm.contrastive_divergence_loss(params, v, v_model)
        if self.persistent:
            extras["chains"] = chains
        return loss, (metrics, extras)

    def _tempered_chains(self, params, extras, keys, chains):
        """`gibbs_steps` parallel-tempering steps of every chain set (B, M, V), tempered
        towards the base-rate RBM of the training data seen so far (the AIS base)."""
        mc = self.config.model_config
        base = rbm.base_rate_params(params, base_visible_bias(params, extras))
        betas = tempering.tempering_betas(mc.num_temperatures)
        return jax.vmap(
            lambda key, chain_set: tempering.parallel_tempering_chain(
                params, base, key, chain_set, betas, mc.gibbs_steps
            )
        )(keys, chains)

    def evaluation_constants(self, state, key, final):
        progress = final and self.config.progress_bar and jax.process_index() == 0
        base = base_visible_bias(state.params, state.extras)
        return common.rbm_log_partition(
            state.params, key, self.config.model_config, final, base, progress
        )

    def eval_step(self, state, batch, keys, final):
        """Per-example free energies, reconstruction errors, pseudo-log-likelihoods and, in
        the final evaluation, RAISE's log p(v) (`raise_chains` > 0)."""
        mc = self.config.model_config
        params = state.params
        v = batch["x"].reshape((batch["x"].shape[0], -1))
        outputs = {
            "neg_free_energy": -rbm.free_energy(params, v) + batch["log_det"],
            "recon_error": rbm.reconstruction_error(params, v),
        }
        if not self.gaussian:
            outputs["pseudo_log_likelihood"] = jax.vmap(
                lambda x, key: rbm.pseudo_log_likelihood(params, x, key)
            )(v, keys)
        if final and mc.raise_chains:
            base = base_visible_bias(params, state.extras)
            betas = ais.default_betas(mc.raise_betas)

            def raise_one(x, key):
                return rbm.raise_log_likelihood(
                    params, jax.random.fold_in(key, 1), x[None], mc.raise_chains, betas, base
                ).log_likelihood[0]

            outputs["raise_log_likelihood"] = jax.vmap(raise_one)(v, keys) + batch["log_det"]
        return outputs

    def summarize(self, outputs, final, constants):
        log_likelihood = outputs["neg_free_energy"] - constants["log_z"]
        extra = {"recon_error": float(np.mean(outputs["recon_error"]))}
        if "pseudo_log_likelihood" in outputs:
            extra["pseudo_log_likelihood"] = float(np.mean(outputs["pseudo_log_likelihood"]))
        if not final:
            return {
                "nll": float(-np.mean(log_likelihood)),
                "log_z": float(constants["log_z"]),
                **extra,
            }
        summary = common.summarize_nll(log_likelihood, self.spec.num_dims, constants)
        summary.update(extra)
        if "raise_log_likelihood" in outputs:
            summary.update(raise_summary(outputs["raise_log_likelihood"], self.config))
        return summary

    def first_layer_filters(self, state):
        """W's columns as images, (min(H, 100), *example_shape), or None for non-image data."""
        return common.first_layer_filters(state.params["W"], self.spec.example_shape)

    def sample(self, state, key, num):
        mc = self.config.model_config
        start = state.extras["visible_mean"]
        samples = sample_visible_means(state.params, key, num, mc.sample_gibbs_steps, start)
        return samples.reshape((num, *self.spec.example_shape))
