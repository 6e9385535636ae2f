"""Generative adversarial networks as a model family (`config.model = 'gan'`).

One train step is one generator update preceded by `critic_steps` discriminator updates
(Goodfellow et al. 2014, Algorithm 1 with k = critic_steps; Arjovsky et al. 2017 and Gulrajani
et al. 2017 use n_critic = 5), each discriminator update on its own batch of real examples:
the trainer hands the step `critic_steps` batches as one (`train_batches_per_step`), split by
stride so that every micro-batch is the same set of examples on 1 or N devices.

The two networks have their own optimizers in one `TrainState` (`opt_state = {'generator',
'discriminator'}`; the discriminator may have its own learning rate), and an update of one
never touches the other's parameters or optimizer state. Samples and evaluations use an
exponential moving average of the generator's variables (Karras et al. 2018; Yazici et al.
2019): after generator update t (t = 0, 1, ...),

    ema <- d_t * ema + (1 - d_t) * current,   d_t = min(ema_decay, (1 + t) / (10 + t)),

the warm-up of TensorFlow's `ExponentialMovingAverage(num_updates=t)`, so the average forgets
the random initial weights within the first few hundred updates instead of the ~1 / (1 -
ema_decay) it would otherwise take (0.999**2000 = 13% of the initial weights left after 2,000
updates).

model_config fields:
  architecture: 'mlp' (vectors, e.g. toy2d) | 'dcgan' (images; Radford et al. 2016).
  loss: a name of `genjax.objectives.gan.GAN_LOSSES` (minimax, non_saturating, wasserstein,
    hinge, least_squares).
  latent_size: dimension of z ~ N(0, I).
  hidden_size, num_hidden_layers: the MLP networks.
  base_channels: the DCGAN networks' narrowest layer.
  discriminator_norm: 'none' | 'batch' | 'layer' in the discriminator's hidden layers.
  spectral_norm: spectral normalisation of every discriminator layer (Miyato et al. 2018).
  conditioning: 'none' | 'concat' (Mirza & Osindero 2014) | 'acgan' (Odena et al. 2017).
  aux_weight: weight of AC-GAN's class log-likelihood terms.
  critic_steps: discriminator updates per generator update.
  gradient_penalty: lambda of WGAN-GP's penalty on interpolates (0 disables).
  r1_penalty: gamma of the R1 penalty, (gamma / 2) E ||grad D(x)||^2 on real data (0 disables).
  weight_clip: c of WGAN's weight clipping of the discriminator (0 disables).
  ema_decay: the generator moving average's decay after its warm-up (0: samples from the
    current weights).
  discriminator_learning_rate: the discriminator's rate (0: config.learning_rate).
  weight_init: 'default' (Flax's initializers) | 'dcgan' (every kernel N(0, 0.02^2), batch
    norm scales N(1, 0.02^2); Radford et al. 2016, sec. 4); see `networks`.
  standing_stats_batches: 0 (the default), or how many batches of `config.batch_size` latents
    recompute the moving-average generator's batch norm statistics before it samples (the
    "standing statistics" of Brock et al. 2019, sec. 3.1 and app. C.1; see
    `standing_statistics`). Evaluation only: a run may be re-evaluated with another value.
  pack: PacGAN's packing degree m (Lin, Khetan, Fanti & Oh 2018): the discriminator scores
    packs of m samples of one kind, real with real and fake with fake, concatenated (vectors
    end to end, images along channels), one score per pack (`pack_examples`); 1 (the
    default) is the ordinary discriminator. Each device's micro-batch, hence
    config.batch_size, must be divisible by m. Penalties act on the packed input (one
    interpolate and one gradient norm per pack). Unconditional models only.

Labels: the fakes of a discriminator update take the labels of its real micro-batch; the
generator update and sampling draw labels uniformly (sampling cycles through the classes, so
a grid shows every class).

The moving average covers the generator's batch norm running statistics too, but those are
averages of the raw generator's batch statistics: the averaged weights were never run
forward in training, so their own statistics differ. `standing_stats_batches` > 0 replaces
them, when sampling, by the averaged weights' own (DCGAN networks; the MLP has no batch norm).

Evaluation: GANs have no likelihood. `eval.json` holds the sample-quality metrics the trainer
computes from `config.sample_quality_samples` samples (`genjax.evaluate.sample_quality`): mode
coverage on toy2d mixtures, and the Fréchet distance and precision/recall in the features of
genjax's own digit classifier on image datasets. Those samples come from the moving-average
generator; on toy2d mixtures (with ema_decay > 0) the same number of samples of the raw
generator (its current weights) is scored as well, as `raw_modes_covered`,
`raw_high_quality_fraction` and `raw_mode_kl`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genjax.core import optim
from genjax.core.parallel import DATA_AXIS, example_keys
from genjax.core.state import TrainState
from genjax.data import toy2d
from genjax.evaluate import sample_quality
from genjax.models import checks
from genjax.models.base import Model
from genjax.models.gan import networks
from genjax.objectives import gan as gan_losses

ARCHITECTURES = ("mlp", "dcgan")
NETWORKS = ("generator", "discriminator")
# fold_in streams of one example's key.
_LATENT, _LABEL, _PENALTY = 0, 1, 2
# fold_in stream of the evaluation key for the raw generator's samples.
_RAW_SAMPLES = 0
RAW_COVERAGE_FIELDS = ("modes_covered", "high_quality_fraction", "mode_kl")


def _split_collections(variables) -> tuple[dict, dict]:
    """Flax variables -> (params, every other collection)."""
    variables = dict(variables)
    return variables.pop("params"), variables


def ema_decay(decay: float, num_updates: jax.Array) -> jax.Array:
    """The moving average's decay after `num_updates` earlier generator updates:
    min(decay, (1 + t) / (10 + t)) (see the module docstring)."""
    t = jnp.asarray(num_updates, jnp.float32)
    return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def _mean_metrics(metrics: dict) -> dict:
    return {name: jnp.mean(value) for name, value in metrics.items()}


def pack_examples(x: jax.Array, pack: int) -> jax.Array:
    """PacGAN's packing (Lin et al. 2018, sec. 3): m = `pack` consecutive examples as one.

    Vectors (B, D) -> (B / m, m D), row i = [x_{mi}, x_{mi+1}, ..., x_{mi+m-1}]; images
    (B, H, W, C) -> (B / m, H, W, m C), the examples stacked along channels (channel j C + c
    of pack i is channel c of example mi + j). `pack` = 1 returns `x` itself.

    Raises ValueError when B is not divisible by m.
    """
    if pack == 1:
        return x
    batch = x.shape[0]
    if batch % pack:
        raise ValueError(
            f"config.model_config.pack={pack} must divide the discriminator's batch on each "
            f"device; got {batch} examples (make config.batch_size / devices a multiple of it)."
        )
    if x.ndim == 4:
        _, height, width, channels = x.shape
        packed = x.reshape((batch // pack, pack, height, width, channels))
        packed = jnp.moveaxis(packed, 1, 3)  # (B / m, H, W, m, C)
        return packed.reshape((batch // pack, height, width, pack * channels))
    return x.reshape((batch // pack, -1))  # (B / m, m * D)


class GAN(Model):
    """GANs (`config.model = 'gan'`); see the module docstring."""

    name = "gan"
    main_metric = "train/d_loss"
    compute_dtypes = ("float32", "bfloat16")
    likelihood_model = False
    evaluation_fields = ("standing_stats_batches",)
    added_field_defaults = {"pack": 1, "weight_init": "default", "standing_stats_batches": 0}

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(
            mc,
            {
                "architecture": ARCHITECTURES,
                "loss": tuple(gan_losses.GAN_LOSSES),
                "conditioning": networks.CONDITIONINGS,
                "discriminator_norm": networks.NORMS,
                "weight_init": networks.WEIGHT_INITS,
            },
        )
        checks.check_positive_ints(
            mc,
            (
                "latent_size",
                "hidden_size",
                "num_hidden_layers",
                "base_channels",
                "critic_steps",
                "pack",
            ),
        )
        if config.batch_size % mc.pack:
            raise ValueError(
                f"config.model_config.pack={mc.pack} must divide config.batch_size="
                f"{config.batch_size}: the discriminator scores packs of that many samples."
            )
        if mc.pack > 1 and mc.conditioning != "none":
            raise ValueError(
                f"config.model_config.pack={mc.pack} needs conditioning='none' (a pack mixes "
                f"the labels of its samples); got conditioning={mc.conditioning!r}."
            )
        checks.check_bools(mc, ("spectral_norm",))
        checks.check_non_negative_numbers(
            mc,
            (
                "gradient_penalty",
                "r1_penalty",
                "weight_clip",
                "aux_weight",
                "discriminator_learning_rate",
                "ema_decay",
            ),
        )
        standing = mc.standing_stats_batches
        if isinstance(standing, bool) or not isinstance(standing, int) or standing < 0:
            raise ValueError(
                f"config.model_config.standing_stats_batches={standing!r} must be a "
                "non-negative integer (0 disables it)."
            )
        if standing and mc.architecture != "dcgan":
            raise ValueError(
                f"config.model_config.standing_stats_batches={standing!r} recomputes batch "
                f"norm statistics; architecture={mc.architecture!r} has no batch norm in its "
                "generator (use 0, or architecture='dcgan')."
            )
        if not mc.ema_decay < 1:
            raise ValueError(
                f"config.model_config.ema_decay={mc.ema_decay!r} must be in [0, 1) "
                "(0: no moving average)."
            )
        penalised = mc.gradient_penalty > 0 or mc.r1_penalty > 0
        if penalised and mc.discriminator_norm == "batch":
            raise ValueError(
                "config.model_config.discriminator_norm='batch' with a gradient penalty: the "
                "penalty is per example, and batch norm couples the examples (Gulrajani et al. "
                "2017, sec. 4); use discriminator_norm='layer' or 'none'."
            )
        if config.preprocess.logit_alpha:
            raise ValueError(
                f"config.preprocess.logit_alpha={config.preprocess.logit_alpha!r}: GAN "
                "generators produce data-space values; set it to 0."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        image = len(spec.example_shape) == 3
        if mc.architecture == "dcgan" and not image:
            raise ValueError(
                f"config.model_config.architecture='dcgan' needs images; config.dataset="
                f"{spec.name!r} has examples of shape {spec.example_shape} (use 'mlp')."
            )
        if mc.conditioning != "none" and spec.num_classes is None:
            raise ValueError(
                f"config.model_config.conditioning={mc.conditioning!r} needs labels; "
                f"config.dataset={spec.name!r} has none (use conditioning='none')."
            )
        self.num_classes = spec.num_classes or 1
        self.loss_pair = gan_losses.gan_loss(mc.loss)
        self.generator, self.discriminator = self._networks(DATA_AXIS)
        self.train_batches_per_step = mc.critic_steps

    def _networks(self, axis_name):
        """(generator, discriminator) modules; batch norm reduces over `axis_name`."""
        mc, spec = self.config.model_config, self.spec
        low, high = spec.value_range
        activation = {(-1.0, 1.0): "tanh", (0.0, 1.0): "sigmoid"}.get((low, high), "linear")
        shared = dict(
            conditioning=mc.conditioning,
            num_classes=self.num_classes,
            dtype=jnp.dtype(self.config.compute_dtype),
            weight_init=mc.weight_init,
        )
        discriminator = dict(
            norm=mc.discriminator_norm, spectral_norm=mc.spectral_norm, axis_name=axis_name
        )
        if mc.architecture == "dcgan":
            generator = networks.DCGANGenerator(
                spec.example_shape,
                mc.base_channels,
                output_activation=activation,
                axis_name=axis_name,
                **shared,
            )
            return generator, networks.DCGANDiscriminator(
                mc.base_channels, **shared, **discriminator
            )
        layers = dict(hidden_size=mc.hidden_size, num_hidden_layers=mc.num_hidden_layers)
        generator = networks.MLPGenerator(
            spec.example_shape, **layers, output_activation=activation, **shared
        )
        return generator, networks.MLPDiscriminator(**layers, **shared, **discriminator)

    def make_optimizer(self) -> dict[str, optax.GradientTransformation]:
        """{'generator': at config.learning_rate, 'discriminator': at its own rate}."""
        rate = self.config.model_config.discriminator_learning_rate or None
        return {
            "generator": optim.make_optimizer(self.config),
            "discriminator": optim.make_optimizer(self.config, rate),
        }

    def init(self, key, example_x):
        generator, discriminator = self._networks(axis_name=None)  # init runs on one device
        g_key, d_key = jax.random.split(key)
        labels = jnp.zeros((example_x.shape[0],), jnp.int32)
        z = jnp.zeros((example_x.shape[0], self.config.model_config.latent_size))
        g_params, g_stats = _split_collections(generator.init(g_key, z, labels, False))
        pack = self.config.model_config.pack
        packed_x = pack_examples(jnp.repeat(jnp.asarray(example_x[:1]), pack, axis=0), pack)
        d_params, d_stats = _split_collections(
            discriminator.init(d_key, packed_x, labels[:1], False)
        )
        params = {"generator": g_params, "discriminator": d_params}
        extras = {
            "generator_stats": g_stats,
            "discriminator_stats": d_stats,
            "ema_generator": {"params": g_params, **g_stats},
        }
        return params, extras

    def create_state(self, key, example_x) -> TrainState:
        """A step-0 state with one optimizer state per network."""
        init_key, run_key = jax.random.split(key)
        params, extras = self.init(init_key, example_x)
        opt_state = {name: self.tx[name].init(params[name]) for name in NETWORKS}
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=opt_state,
            rng=jax.random.key_data(run_key),
            extras=extras,
        )

    # ---------------------------------------------------------------------------------------
    # The networks as functions.
    # ---------------------------------------------------------------------------------------

    def generate(self, variables, z, labels, train: bool = False, generator=None):
        """G(z, labels) with `variables` ({'params', 'batch_stats'?}) -> (x, new collections).

        In training mode batch norm uses (and updates the running averages from) the batch's
        statistics; otherwise the running averages.
        """
        generator = self.generator if generator is None else generator
        params, stats = _split_collections(variables)
        mutable = list(stats) if train else []
        x, updates = generator.apply({"params": params, **stats}, z, labels, train, mutable=mutable)
        return x, {**stats, **updates}

    def discriminate(self, params, stats, x, labels):
        """D(x, labels) in training mode -> (DiscriminatorOutput, updated collections); `x` is
        the discriminator's input, already packed (`pack_examples`) when pack > 1."""
        return self.discriminator.apply(
            {"params": params, **stats}, x, labels, True, mutable=list(stats)
        )

    def _packed(self, *arrays):
        """`arrays` (B, ...) as the discriminator sees them: examples packed by
        `pack_examples`, and per-example arrays (labels, keys) taken at each pack's first
        example; unchanged when pack = 1."""
        pack = self.config.model_config.pack
        if pack == 1:
            return arrays
        x, *per_example = arrays
        return (pack_examples(x, pack), *(a[::pack] for a in per_example))

    def _latents(self, keys):
        """One z ~ N(0, I) per example key: (B, latent_size)."""
        size = self.config.model_config.latent_size
        return jax.vmap(lambda k: jax.random.normal(jax.random.fold_in(k, _LATENT), (size,)))(keys)

    def _random_labels(self, keys):
        """Uniform labels, one per example key (zeros for an unconditional model): (B,)."""
        return jax.vmap(
            lambda k: jax.random.randint(jax.random.fold_in(k, _LABEL), (), 0, self.num_classes)
        )(keys)

    # ---------------------------------------------------------------------------------------
    # Training.
    # ---------------------------------------------------------------------------------------

    def discriminator_loss(self, d_params, d_stats, real, fake, labels, keys):
        """The discriminator's loss on one micro-batch -> (loss, (metrics, new d_stats)).

        The loss of `model_config.loss`, plus the penalties and AC-GAN's class terms that the
        config enables; `fake` is a constant here (generated outside the gradient).
        """
        mc = self.config.model_config
        real, labels, keys = self._packed(real, labels, keys)
        (fake,) = self._packed(fake)
        real_out, stats = self.discriminate(d_params, d_stats, real, labels)
        fake_out, stats = self.discriminate(d_params, stats, fake, labels)
        loss = self.loss_pair.discriminator(real_out.scores, fake_out.scores)
        metrics = {
            "train/d_loss": loss,
            "train/d_real": real_out.scores.mean(),
            "train/d_fake": fake_out.scores.mean(),
        }

        def critic(x):  # (P, *input) -> (P,) over P (packed) inputs, the same collections
            return self.discriminate(d_params, d_stats, x, labels)[0].scores

        if mc.gradient_penalty:
            penalty_keys = jax.vmap(lambda k: jax.random.fold_in(k, _PENALTY))(keys)
            penalty = gan_losses.gradient_penalty(critic, real, fake, penalty_keys)
            loss = loss + mc.gradient_penalty * penalty
            metrics["train/gradient_penalty"] = penalty
        if mc.r1_penalty:
            penalty = gan_losses.r1_penalty(critic, real)
            loss = loss + 0.5 * mc.r1_penalty * penalty
            metrics["train/r1_penalty"] = penalty
        if mc.conditioning == "acgan":
            aux = gan_losses.auxiliary_classifier_loss(
                real_out.class_logits, labels
            ) + gan_losses.auxiliary_classifier_loss(fake_out.class_logits, labels)
            loss = loss + mc.aux_weight * aux
            metrics["train/d_class_loss"] = aux
        if mc.loss == "wasserstein":
            metrics["train/wasserstein_estimate"] = real_out.scores.mean() - fake_out.scores.mean()
        return loss, (metrics, stats)

    def generator_loss(self, g_params, g_stats, d_params, d_stats, z, labels):
        """The generator's loss -> (loss, (metrics, new generator collections)); the
        discriminator's collections are read, not updated."""
        mc = self.config.model_config
        fake, new_g_stats = self.generate({"params": g_params, **g_stats}, z, labels, train=True)
        fake_out, _ = self.discriminate(d_params, d_stats, *self._packed(fake, labels))
        loss = self.loss_pair.generator(fake_out.scores)
        metrics = {"train/g_loss": loss}
        if mc.conditioning == "acgan":
            aux = gan_losses.auxiliary_classifier_loss(fake_out.class_logits, labels)
            loss = loss + mc.aux_weight * aux
            metrics["train/g_class_loss"] = aux
        return loss, (metrics, new_g_stats)

    def discriminator_update(self, state: TrainState, real, labels, key):
        """One discriminator update on a micro-batch -> (state, metrics); per-device."""
        mc = self.config.model_config
        params, extras = state.params, state.extras
        keys = example_keys(key, 0, real.shape[0])
        g_variables = {"params": params["generator"], **extras["generator_stats"]}
        fake, _ = self.generate(g_variables, self._latents(keys), labels, train=True)
        grad_fn = jax.grad(self.discriminator_loss, has_aux=True)
        grads, (metrics, d_stats) = grad_fn(
            params["discriminator"],
            extras["discriminator_stats"],
            real,
            jax.lax.stop_gradient(fake),
            labels,
            keys,
        )
        grads = jax.lax.pmean(grads, DATA_AXIS)
        metrics["train/d_grad_norm"] = optax.global_norm(grads)
        d_params = params["discriminator"]
        updates, d_opt = self.tx["discriminator"].update(
            grads, state.opt_state["discriminator"], d_params
        )
        d_params = optax.apply_updates(d_params, updates)
        if mc.weight_clip:
            d_params = gan_losses.clip_weights(d_params, mc.weight_clip)
        state = state.replace(
            params={**params, "discriminator": d_params},
            opt_state={**state.opt_state, "discriminator": d_opt},
            extras={**extras, "discriminator_stats": d_stats},
        )
        return state, jax.lax.pmean(metrics, DATA_AXIS)

    def generator_update(self, state: TrainState, key, local_batch_size: int):
        """One generator update, then the moving average -> (state, metrics); per-device."""
        params, extras = state.params, state.extras
        keys = example_keys(key, 0, local_batch_size)
        grad_fn = jax.grad(self.generator_loss, has_aux=True)
        grads, (metrics, g_stats) = grad_fn(
            params["generator"],
            extras["generator_stats"],
            params["discriminator"],
            extras["discriminator_stats"],
            self._latents(keys),
            self._random_labels(keys),
        )
        grads = jax.lax.pmean(grads, DATA_AXIS)
        metrics["train/g_grad_norm"] = optax.global_norm(grads)
        g_params = params["generator"]
        updates, g_opt = self.tx["generator"].update(grads, state.opt_state["generator"], g_params)
        g_params = optax.apply_updates(g_params, updates)
        # Batch norm statistics are already global (sync batch norm); the mean keeps every
        # device's copy bitwise identical.
        g_stats = jax.lax.pmean(g_stats, DATA_AXIS)
        ema = optax.incremental_update(
            {"params": g_params, **g_stats},
            extras["ema_generator"],
            step_size=1.0 - ema_decay(self.config.model_config.ema_decay, state.step),
        )
        state = state.replace(
            params={**params, "generator": g_params},
            opt_state={**state.opt_state, "generator": g_opt},
            extras={**extras, "generator_stats": g_stats, "ema_generator": ema},
        )
        return state, jax.lax.pmean(metrics, DATA_AXIS)

    def train_step(self, state, batch):
        """`critic_steps` discriminator updates, then one generator update; per-device."""
        num_critic = self.config.model_config.critic_steps
        x, labels = batch["x"], batch["label"]
        local = x.shape[0] // num_critic
        # Micro-batch j holds examples j, j + k, j + 2k, ... of the (per-device) batch: the
        # same examples whatever the device count (see parallel.example_keys).
        x = jnp.swapaxes(x.reshape((local, num_critic, *x.shape[1:])), 0, 1)  # (k, b, ...)
        labels = labels.reshape((local, num_critic)).T  # (k, b)
        step_key = jax.random.fold_in(state.key, state.step)

        def critic_step(state, inputs):
            index, real, real_labels = inputs
            key = jax.random.fold_in(step_key, index)
            return self.discriminator_update(state, real, real_labels, key)

        state, d_metrics = jax.lax.scan(critic_step, state, (jnp.arange(num_critic), x, labels))
        g_key = jax.random.fold_in(step_key, num_critic)
        state, g_metrics = self.generator_update(state, g_key, local)
        metrics = {**_mean_metrics(d_metrics), **g_metrics}
        return state.replace(step=state.step + 1), metrics

    # ---------------------------------------------------------------------------------------
    # Evaluation and sampling.
    # ---------------------------------------------------------------------------------------

    def _scores_raw_generator(self) -> bool:
        """Whether evaluations also score the raw generator: toy2d mixtures, with sample
        metrics on and a moving average that differs from the raw weights."""
        name = self.spec.name.removeprefix("toy2d/")
        return (
            self.spec.name.startswith("toy2d/")
            and name in toy2d.MIXTURE_NAMES
            and self.config.sample_quality_samples > 0
            and self.config.model_config.ema_decay > 0
            and self.config.preprocess.scale == "unit"  # model space = data space
        )

    def evaluation_constants(self, state, key, final):
        """On toy2d mixtures, `sample_quality_samples` samples of the raw generator (its
        current weights, not the moving average), (N, 2); nothing otherwise."""
        del final
        if not self._scores_raw_generator():
            return {}
        num = self.config.sample_quality_samples
        variables = {"params": state.params["generator"], **state.extras["generator_stats"]}
        samples = jax.jit(self._sample_from, static_argnums=2)(
            variables, jax.random.fold_in(key, _RAW_SAMPLES), num
        )
        return {"raw_generator_samples": samples}

    def _sample_from(self, variables, key, num):
        """`num` unconditional samples of the generator with `variables`: (num, *event)."""
        z = jax.random.normal(key, (num, self.config.model_config.latent_size))
        return self.generate(variables, z, jnp.zeros((num,), jnp.int32))[0]

    def eval_step(self, state, batch, keys, final):
        """Nothing per test example: GAN metrics are computed from samples (the trainer's
        `config.sample_quality_samples`)."""
        del state, batch, keys, final
        return {}

    def summarize(self, outputs, final, constants):
        """The raw generator's mode coverage (`raw_` + `RAW_COVERAGE_FIELDS`) when
        `evaluation_constants` drew its samples; the moving average's metrics come from the
        trainer's sample scorer."""
        del outputs, final
        if "raw_generator_samples" not in constants:
            return {}
        name = self.spec.name.removeprefix("toy2d/")
        samples = np.asarray(constants["raw_generator_samples"], np.float64)
        coverage = sample_quality.mode_coverage(
            samples.reshape(len(samples), -1), toy2d.mode_centers(name), toy2d.mode_std(name)
        )
        return {f"raw_{field}": coverage[field] for field in RAW_COVERAGE_FIELDS}

    def sample_labels(self, num: int) -> np.ndarray | None:
        """The labels `sample` conditions on: the classes in turn (None if unconditional)."""
        if self.config.model_config.conditioning == "none":
            return None
        return np.arange(num) % self.num_classes

    def standing_statistics(self, variables, key, num_batches: int, batch_size: int):
        """The generator's batch norm statistics recomputed for the weights in `variables`:
        Brock et al. (2019)'s "standing statistics" (sec. 3.1, app. C.1).

        The generator runs in training mode on `num_batches` batches of `batch_size` latents
        z ~ N(0, I) with uniform labels; each batch norm layer's new mean and variance are
        the averages over the batches of that layer's per-batch mean and (biased, as Flax's
        batch norm) variance of its input. The weights are unchanged.

        Args:
          variables: {'params', 'batch_stats'} of the generator (e.g. the moving average).
          key: the draws' key.
          num_batches, batch_size: how many batches, of how many latents.

        Returns:
          `variables` with 'batch_stats' replaced ({'mean', 'var'} (C,) per layer); as they
          are when the generator has no batch norm.
        """
        if "batch_stats" not in variables:
            return variables
        # Momentum 0: the running averages a training-mode call returns are its batch's
        # statistics. One device (no axis name): the batches are drawn here, not sharded.
        generator = self._networks(axis_name=None)[0].clone(batch_norm_momentum=0.0)
        size = self.config.model_config.latent_size

        def batch_statistics(batch_key):
            z_key, label_key = jax.random.split(batch_key)
            z = jax.random.normal(z_key, (batch_size, size))  # (B, latent_size)
            labels = jax.random.randint(label_key, (batch_size,), 0, self.num_classes)
            _, updates = self.generate(variables, z, labels, train=True, generator=generator)
            return updates["batch_stats"]

        per_batch = jax.lax.map(batch_statistics, jax.random.split(key, num_batches))
        mean_stats = jax.tree.map(lambda stat: jnp.mean(stat, axis=0), per_batch)
        return {**variables, "batch_stats": mean_stats}

    def sampling_variables(self, state, key):
        """The moving-average generator's variables as samples use them: with
        `standing_stats_batches` > 0 its batch norm statistics recomputed for its own weights
        (`standing_statistics`, batches of `config.batch_size` drawn from `key`); as stored
        otherwise (`key` unused)."""
        variables = state.extras["ema_generator"]
        num_batches = self.config.model_config.standing_stats_batches
        if num_batches:
            variables = self.standing_statistics(
                variables, key, num_batches, self.config.batch_size
            )
        return variables

    def sample(self, state, key, num):
        """`num` samples of the moving-average generator, shape (num, *example_shape), from
        `sampling_variables`."""
        standing_key = None
        if self.config.model_config.standing_stats_batches:
            key, standing_key = jax.random.split(key)
        variables = self.sampling_variables(state, standing_key)
        z = jax.random.normal(key, (num, self.config.model_config.latent_size))
        labels = self.sample_labels(num)
        labels = jnp.zeros((num,), jnp.int32) if labels is None else jnp.asarray(labels)
        return self.generate(variables, z, labels)[0]
