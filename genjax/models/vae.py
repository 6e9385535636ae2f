"""The variational autoencoder and its importance-weighted sibling.

VAE: Kingma & Welling (2014); IWAE: Burda, Grosse & Salakhutdinov (2016). One network serves
both: `model_config.num_importance_samples` k draws k posterior samples per example, and
`model_config.objective` trains on their average log weight ('elbo', Burda's "VAE k") or on
the importance-weighted bound ('iwae').

Architecture (Burda et al. 2016, section 5): each stochastic layer l has a Gaussian
q(z_l | z_{l-1}) computed by an MLP (tanh) with `hidden_sizes[l]`, and the generative model
mirrors it: p(z_L) = N(0, I), p(z_{l-1} | z_l) Gaussian, p(x | z_1) Bernoulli (binarized
data) or Gaussian (continuous data). One layer: 784-200-200-50; two layers: 784-100-100-100
(z_1) -50-50-50 (z_2). `architecture='conv'` replaces the x <-> z_1 MLPs by strided
convolutions.

Flow posteriors (`model_config.posterior_flow`, one stochastic layer only): the encoder also
outputs a context h (B, C), one linear head on its last hidden layer, and the Gaussian draw
z_0 = mean + std * eps is pushed through K amortised flow layers conditioned on h,
z_K = f_K o ... o f_1(z_0; h), with

    log q(z_K | x) = log N(z_0; mean, var) - sum_k log |det df_k / dz_{k-1}|,

so the log-det enters every importance weight: the ELBO, the IWAE bound and the IWAE-5000
evaluation. 'planar': Rezende & Mohamed (2015), per-example flow parameters from a Dense of h;
'iaf': Kingma et al. (2016), h added to the first hidden layer of each MADE.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import (
    active_units,
    chunked_iwae_log_likelihood,
    summarize_log_likelihood,
)
from genjax.flows.autoregressive import iaf_flow
from genjax.flows.planar import planar_flow
from genjax.models import checks
from genjax.models.base import GradientModel

ARCHITECTURES = ("mlp", "conv")
OBJECTIVES = ("elbo", "iwae")
LIKELIHOODS = ("bernoulli", "gaussian")
POSTERIOR_FLOWS = ("none", "planar", "iaf")
# The flow-posterior fields of model_config and their defaults (configs/vae.py sets the same
# values); runs saved before the fields existed read them through `added_field_defaults`.
FLOW_DEFAULTS = {
    "posterior_flow": "none",
    "posterior_flow_layers": 4,
    "posterior_flow_hidden": 64,
    "context_size": 32,
}


class MLP(nn.Module):
    """tanh MLP: hidden layers then a linear output of `out_size`.

    Attributes:
      hidden_sizes: the tanh layer widths.
      out_size: the width of the linear output.
      return_hidden: also return the last hidden layer's activations (the input when there is
        no hidden layer): (output, hidden) instead of output.
    """

    hidden_sizes: Sequence[int]
    out_size: int
    return_hidden: bool = False

    @nn.compact
    def __call__(self, h):
        for size in self.hidden_sizes:
            h = nn.tanh(nn.Dense(size)(h))
        out = nn.Dense(self.out_size)(h)
        return (out, h) if self.return_hidden else out


class GaussianMLP(nn.Module):
    """h -> (mean, log_var) of a diagonal Gaussian over `out_size` units; with
    `context_size` C > 0, (mean, log_var, context), the context (..., C) a linear head (a
    Dense named 'context') on the last hidden layer.

    Attributes:
      hidden_sizes: the tanh layer widths.
      out_size: the number of Gaussian units.
      context_size: C, the width of the context head; 0 (the default) for none.
    """

    hidden_sizes: Sequence[int]
    out_size: int
    context_size: int = 0

    @nn.compact
    def __call__(self, h):
        out, hidden = MLP(self.hidden_sizes, 2 * self.out_size, return_hidden=True)(h)
        mean, log_var = jnp.split(out, 2, axis=-1)
        if not self.context_size:
            return mean, log_var
        return mean, log_var, nn.Dense(self.context_size, name="context")(hidden)


class ConvEncoder(nn.Module):
    """Image (..., H, W, C) -> (mean, log_var) over `out_size` units, two stride-2 convs; with
    `context_size` C > 0, (mean, log_var, context), the context (..., C) a linear head (a Dense
    named 'context') on the last hidden layer.

    Attributes:
      channels: the conv widths.
      hidden_size: the width of the dense hidden layer after the convs.
      out_size: the number of Gaussian units.
      context_size: C, the width of the context head; 0 (the default) for none.
    """

    channels: Sequence[int]
    hidden_size: int
    out_size: int
    context_size: int = 0

    @nn.compact
    def __call__(self, x):
        lead = x.shape[:-3]
        h = x.reshape((-1, *x.shape[-3:]))
        for channels in self.channels:
            h = nn.relu(nn.Conv(channels, (3, 3), strides=(2, 2))(h))
        h = nn.relu(nn.Dense(self.hidden_size)(h.reshape((h.shape[0], -1))))
        mean, log_var = jnp.split(nn.Dense(2 * self.out_size)(h), 2, axis=-1)
        mean, log_var = mean.reshape((*lead, -1)), log_var.reshape((*lead, -1))
        if not self.context_size:
            return mean, log_var
        context = nn.Dense(self.context_size, name="context")(h)
        return mean, log_var, context.reshape((*lead, -1))


class ConvDecoder(nn.Module):
    """z (..., U) -> image-shaped outputs (..., H, W, C * outputs_per_pixel)."""

    channels: Sequence[int]
    hidden_size: int
    image_shape: tuple[int, int, int]
    outputs_per_pixel: int

    @nn.compact
    def __call__(self, z):
        lead = z.shape[:-1]
        height, width, channels_out = self.image_shape
        factor = 2 ** len(self.channels)
        h = nn.relu(nn.Dense(self.hidden_size)(z.reshape((-1, z.shape[-1]))))
        h = nn.relu(nn.Dense((height // factor) * (width // factor) * self.channels[-1])(h))
        h = h.reshape((-1, height // factor, width // factor, self.channels[-1]))
        for channels in reversed(self.channels[:-1]):
            h = nn.relu(nn.ConvTranspose(channels, (3, 3), strides=(2, 2))(h))
        h = nn.ConvTranspose(channels_out * self.outputs_per_pixel, (3, 3), strides=(2, 2))(h)
        return h.reshape((*lead, height, width, -1))


class VAENetwork(nn.Module):
    """Encoders q(z_l | z_{l-1}) and decoders p(z_{l-1} | z_l), p(x | z_1), and optionally a
    flow on the first layer's posterior.

    All methods take batches; latent tensors carry a leading sample axis: (K, B, U_l).

    Attributes:
      data_shape: the shape of one example.
      hidden_sizes: per stochastic layer, the hidden widths.
      latent_sizes: per stochastic layer, the latent width U_l.
      likelihood: 'bernoulli' | 'gaussian', of p(x | z_1).
      architecture: 'mlp' | 'conv', of the x <-> z_1 maps.
      conv_channels: the conv widths of the 'conv' architecture.
      posterior_flow: 'none' | 'planar' | 'iaf': the flow on q(z_1 | x) (one layer only).
      posterior_flow_layers: K, its number of layers.
      posterior_flow_hidden: the MADE hidden width of each 'iaf' layer.
      context_size: C, the width of the encoder's context h that conditions the flow.
    """

    data_shape: tuple[int, ...]
    hidden_sizes: Sequence[Sequence[int]]
    latent_sizes: Sequence[int]
    likelihood: str = "bernoulli"
    architecture: str = "mlp"
    conv_channels: Sequence[int] = (32, 64)
    posterior_flow: str = "none"
    posterior_flow_layers: int = 4
    posterior_flow_hidden: int = 64
    context_size: int = 32

    def setup(self):
        num_dims = int(np.prod(self.data_shape))
        outputs_per_dim = 1 if self.likelihood == "bernoulli" else 2
        has_flow = self.posterior_flow != "none"
        context_size = self.context_size if has_flow else 0
        if self.architecture == "conv":
            hidden = self.hidden_sizes[0][-1]
            self.data_encoder = ConvEncoder(
                self.conv_channels, hidden, self.latent_sizes[0], context_size
            )
            self.data_decoder = ConvDecoder(
                self.conv_channels, hidden, self.data_shape, outputs_per_dim
            )
        else:
            self.data_encoder = GaussianMLP(
                self.hidden_sizes[0], self.latent_sizes[0], context_size
            )
            self.data_decoder = MLP(
                tuple(reversed(self.hidden_sizes[0])), outputs_per_dim * num_dims
            )
        self.latent_encoders = [
            GaussianMLP(self.hidden_sizes[layer], self.latent_sizes[layer])
            for layer in range(1, len(self.latent_sizes))
        ]
        self.latent_decoders = [
            GaussianMLP(tuple(reversed(self.hidden_sizes[layer])), self.latent_sizes[layer - 1])
            for layer in range(1, len(self.latent_sizes))
        ]
        if has_flow and len(self.latent_sizes) != 1:
            raise ValueError(
                f"posterior_flow={self.posterior_flow!r} needs exactly one stochastic layer "
                f"(the flow acts on z_1), got latent_sizes={tuple(self.latent_sizes)}"
            )
        if self.posterior_flow == "planar":
            self.flow = planar_flow(self.posterior_flow_layers)
        elif self.posterior_flow == "iaf":
            self.flow = iaf_flow(
                self.latent_sizes[0], self.posterior_flow_layers, (self.posterior_flow_hidden,)
            )
        elif has_flow:
            raise ValueError(f"posterior_flow={self.posterior_flow!r}; allowed: {POSTERIOR_FLOWS}")

    def encode_data(self, x):
        """x (B, *data_shape) -> (mean, log_var) of q(z_1 | x), (B, U_1) each, and the flow's
        context h (B, C), None without a flow."""
        if self.architecture != "conv":
            x = x.reshape((x.shape[0], -1))
        outputs = self.data_encoder(x)
        return outputs if len(outputs) == 3 else (*outputs, None)

    def apply_flow(self, z0, context):
        """z_K = f_K o ... o f_1(z_0; h) and sum_k log |det df_k/dz_{k-1}|.

        Args:
          z0: (K, B, U_1) base draws.
          context: (B, C), the encoder's h for each example.

        Returns:
          (z_K (K, B, U_1), log_det (K, B)). The samples are flattened to (K * B, U_1) with the
          context repeated per sample (row k * B + b is sample k of example b, conditioned on
          h_b), pushed through the flow in one batch, and reshaped back.
        """
        num_samples, batch_size, num_units = z0.shape
        chex.assert_shape(context, (batch_size, None))
        flat_context = jnp.broadcast_to(context, (num_samples, *context.shape))
        flat_context = flat_context.reshape((num_samples * batch_size, -1))  # (K * B, C)
        flat_z, log_det = self.flow(
            z0.reshape((num_samples * batch_size, num_units)), context=flat_context
        )
        chex.assert_shape(log_det, (num_samples * batch_size,))
        return flat_z.reshape(z0.shape), log_det.reshape(num_samples, batch_size)

    def posterior(self, x, noise):
        """Reparameterised samples of q(z_1..z_L | x) and their log density.

        With a flow, z_1 = z_K = f_K o ... o f_1(z_0; h), z_0 = mean + std * eps, and its
        log q(z_K | x) = log N(z_0; mean, var) - sum_k log |det df_k/dz_{k-1}|.

        Args:
          x: (B, *data_shape).
          noise: per layer, standard normal draws of shape (K, B, U_l).

        Returns:
          (z: list of (K, B, U_l), log_q (K, B), first-layer (mean, log_var) (B, U_1) each
          (of the flow's base Gaussian, when there is a flow), posterior means: list of
          (B, U_l), E_q[z_l | x] averaged over the K samples; for a flow posterior the flow's
          image of the base mean, f(mean; h), a deterministic stand-in: a Monte Carlo mean of
          K draws would add variance of order 1/K to every unit, as large as the 0.01
          threshold of `active_units` at K = 100).
        """
        mean, log_var, context = self.encode_data(x)  # (B, U_1), (B, U_1), (B, C) | None
        first_layer = (mean, log_var)
        samples, log_q, means = [], 0.0, []
        for layer, eps in enumerate(noise):
            if layer > 0:
                mean, log_var = self.latent_encoders[layer - 1](samples[-1])  # (K, B, U_l)
            z = mean + jnp.exp(0.5 * log_var) * eps
            log_q = log_q + objectives.gaussian_log_prob(z, mean, log_var, event_ndims=1)
            if layer == 0 and context is not None:
                z, log_det = self.apply_flow(z, context)  # (K, B, U_1), (K, B)
                log_q = log_q - log_det
                mean = self.apply_flow(mean[None], context)[0][0]  # (B, U_1)
            samples.append(z)
            means.append(jnp.broadcast_to(mean, z.shape).mean(axis=0))
        return samples, log_q, first_layer, means

    def log_prior(self, samples):
        """log p(z_L) + sum_l log p(z_{l-1} | z_l), shape (K, B)."""
        top = samples[-1]
        log_p = objectives.gaussian_log_prob(
            top, jnp.zeros_like(top), jnp.zeros_like(top), event_ndims=1
        )
        for layer in range(len(samples) - 1, 0, -1):
            mean, log_var = self.latent_decoders[layer - 1](samples[layer])
            log_p = log_p + objectives.gaussian_log_prob(
                samples[layer - 1], mean, log_var, event_ndims=1
            )
        return log_p

    def decode(self, z1):
        """z_1 (..., U_1) -> parameters of p(x | z_1): logits, or (mean, log_var)."""
        out = self.data_decoder(z1)
        out = out.reshape((*z1.shape[:-1], *self.data_shape, -1))
        if self.likelihood == "bernoulli":
            return out[..., 0]
        return out[..., 0], out[..., 1]

    def log_likelihood(self, x, z1):
        """log p(x | z_1), shape (K, B), for x (B, *data_shape), z1 (K, B, U_1)."""
        event_ndims = len(self.data_shape)
        params = self.decode(z1)
        if self.likelihood == "bernoulli":
            return objectives.bernoulli_log_prob(x, params, event_ndims=event_ndims)
        mean, log_var = params
        return objectives.gaussian_log_prob(x, mean, log_var, event_ndims=event_ndims)

    def __call__(self, x, noise):
        """Log importance weights log p(x, z) - log q(z | x), shape (K, B), and extras."""
        samples, log_q, first_layer, means = self.posterior(x, noise)
        log_px = self.log_likelihood(x, samples[0])
        log_w = log_px + self.log_prior(samples) - log_q
        return {"log_w": log_w, "log_px": log_px, "first_layer": first_layer, "means": means}

    def generate(self, z_top, noise):
        """Ancestral sample: z_L -> ... -> z_1 -> mean of p(x | z_1). noise: per lower layer."""
        z = z_top
        for layer in range(len(self.latent_sizes) - 1, 0, -1):
            mean, log_var = self.latent_decoders[layer - 1](z)
            z = mean + jnp.exp(0.5 * log_var) * noise[layer - 1]
        params = self.decode(z)
        return jax.nn.sigmoid(params) if self.likelihood == "bernoulli" else params[0]


class VAE(GradientModel):
    """The VAE / IWAE family (`config.model = 'vae'`).

    model_config fields:
      architecture: 'mlp' | 'conv'.
      hidden_sizes: per stochastic layer, the tanh hidden widths, e.g. ((200, 200),).
      latent_sizes: per stochastic layer, the latent width, e.g. (50,) or (100, 50).
      likelihood: 'bernoulli' (binarized data) | 'gaussian'.
      num_importance_samples: k samples per example during training.
      objective: 'elbo' (mean log weight; with k = 1 the VAE) | 'iwae' (Burda's bound).
      analytic_kl: with one stochastic layer and 'elbo', use the closed-form KL term (refused
        with a flow posterior, whose KL has no closed form).
      posterior_flow: 'none' | 'planar' | 'iaf': a flow on q(z_1 | x), conditioned on the
        encoder's context h (one stochastic layer only).
      posterior_flow_layers: K, the number of flow layers.
      posterior_flow_hidden: the MADE hidden width of each 'iaf' layer.
      context_size: C, the width of the encoder's context h (used only with a flow).
      eval_importance_samples, eval_chunk_size: the final log p(x) estimate (IWAE-5000).
      monitor_importance_samples: k of the cheap evaluation during training.
    """

    main_metric = "train/loss"
    added_field_defaults = FLOW_DEFAULTS
    evaluation_fields = (
        "eval_importance_samples",
        "eval_chunk_size",
        "monitor_importance_samples",
    )

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(
            mc, {"architecture": ARCHITECTURES, "objective": OBJECTIVES, "likelihood": LIKELIHOODS}
        )
        if len(mc.hidden_sizes) != len(mc.latent_sizes) or not mc.latent_sizes:
            raise ValueError(
                "config.model_config.hidden_sizes needs one tuple per stochastic layer in "
                f"config.model_config.latent_sizes (got {mc.hidden_sizes} and {mc.latent_sizes})."
            )
        sizes = [s for layer in mc.hidden_sizes for s in layer] + list(mc.latent_sizes)
        if any(int(s) <= 0 for s in sizes):
            raise ValueError(f"config.model_config sizes must be positive, got {sizes}.")
        checks.check_positive_ints(
            mc,
            (
                "num_importance_samples",
                "eval_importance_samples",
                "eval_chunk_size",
                "monitor_importance_samples",
            ),
        )
        if mc.eval_importance_samples % mc.eval_chunk_size:
            raise ValueError(
                f"config.model_config.eval_importance_samples={mc.eval_importance_samples} must "
                f"be a multiple of config.model_config.eval_chunk_size={mc.eval_chunk_size}."
            )
        cls._validate_flow(mc)

    @staticmethod
    def _validate_flow(mc) -> None:
        """The flow-posterior fields: a known flow, positive sizes, one stochastic layer, and
        no closed-form KL."""
        checks.check_choice(mc, "posterior_flow", POSTERIOR_FLOWS)
        checks.check_positive_ints(
            mc, ("posterior_flow_layers", "posterior_flow_hidden", "context_size")
        )
        name = mc.posterior_flow
        if name == "none":
            return
        if len(mc.latent_sizes) != 1:
            raise ValueError(
                f"config.model_config.posterior_flow={name!r} needs exactly one stochastic "
                "layer (the flow acts on z_1), but config.model_config.latent_sizes="
                f"{tuple(mc.latent_sizes)} has {len(mc.latent_sizes)}; use one latent size or "
                "posterior_flow='none'."
            )
        if mc.analytic_kl:
            raise ValueError(
                f"config.model_config.analytic_kl={mc.analytic_kl!r} is not allowed with "
                f"config.model_config.posterior_flow={name!r}: the KL of a flow posterior has "
                "no closed form; allowed with a flow: analytic_kl=False."
            )

    def __init__(self, config, spec):
        super().__init__(config, spec)
        mc = config.model_config
        if mc.architecture == "conv" and (
            not spec.is_image or spec.example_shape[0] % 4 or spec.example_shape[1] % 4
        ):
            raise ValueError(
                "config.model_config.architecture='conv' needs images whose height and width "
                f"are multiples of 4; {spec.name!r} has examples of shape {spec.example_shape}."
            )
        if mc.likelihood == "bernoulli":
            checks.require_binary(
                spec, "config.model_config.likelihood='bernoulli'", "likelihood='gaussian'"
            )
        self._validate_flow(mc)  # also when built without `validate` (a closed-form KL is wrong)
        self.latent_sizes = tuple(int(s) for s in mc.latent_sizes)
        self.network = VAENetwork(
            data_shape=spec.example_shape,
            hidden_sizes=tuple(tuple(int(s) for s in layer) for layer in mc.hidden_sizes),
            latent_sizes=self.latent_sizes,
            likelihood=mc.likelihood,
            architecture=mc.architecture,
            posterior_flow=mc.posterior_flow,
            posterior_flow_layers=int(mc.posterior_flow_layers),
            posterior_flow_hidden=int(mc.posterior_flow_hidden),
            context_size=int(mc.context_size),
        )
        self.use_analytic_kl = (
            mc.analytic_kl and mc.objective == "elbo" and len(self.latent_sizes) == 1
        )

    def _noise(self, keys: jax.Array, num_samples: int) -> list[jax.Array]:
        """Standard normal draws per layer, (K, B, U_l), each example from its own key."""

        def per_example(key):
            layer_keys = jax.random.split(key, len(self.latent_sizes))
            return [
                jax.random.normal(k, (num_samples, size))
                for k, size in zip(layer_keys, self.latent_sizes, strict=True)
            ]

        noise = jax.vmap(per_example)(keys)  # list of (B, K, U_l)
        return [jnp.swapaxes(eps, 0, 1) for eps in noise]

    def init(self, key, example_x):
        noise = [jnp.zeros((1, example_x.shape[0], size)) for size in self.latent_sizes]
        return self.network.init(key, example_x, noise), {}

    def log_weights(self, params, x, keys, num_samples):
        """Log importance weights (K, B) and network outputs for fresh samples."""
        outputs = self.network.apply(params, x, self._noise(keys, num_samples))
        chex.assert_shape(outputs["log_w"], (num_samples, x.shape[0]))
        return outputs

    def loss(self, params, extras, batch, keys):
        mc = self.config.model_config
        outputs = self.log_weights(params, batch["x"], keys, mc.num_importance_samples)
        log_w = outputs["log_w"]  # (K, B)
        if self.use_analytic_kl:
            mean, log_var = outputs["first_layer"]
            bound = outputs["log_px"].mean(axis=0) - objectives.gaussian_kl(mean, log_var)
        elif mc.objective == "iwae":
            bound = objectives.iwae_bound(log_w, axis=0)
        else:
            bound = objectives.elbo(log_w, axis=0)
        bound = bound + batch["log_det"]  # (B,)
        metrics = {"train/bound": bound.mean(), "train/elbo": objectives.elbo(log_w).mean()}
        return -bound.mean(), (metrics, extras)

    def eval_step(self, state, batch, keys, final):
        mc = self.config.model_config
        x, log_det = batch["x"], batch["log_det"]
        if not final:
            outputs = self.log_weights(state.params, x, keys, mc.monitor_importance_samples)
            return {
                "elbo": objectives.elbo(outputs["log_w"]) + log_det,
                "iwae": objectives.iwae_bound(outputs["log_w"]) + log_det,
            }

        def log_weights_fn(chunk_keys, num):
            return self.log_weights(state.params, x, chunk_keys, num)["log_w"]

        log_likelihood, elbo = chunked_iwae_log_likelihood(
            log_weights_fn, keys, mc.eval_importance_samples, mc.eval_chunk_size
        )
        means = self.log_weights(state.params, x, keys, mc.monitor_importance_samples)["means"]
        outputs = {"log_likelihood": log_likelihood + log_det, "elbo": elbo + log_det}
        outputs.update({f"posterior_mean_{layer}": mean for layer, mean in enumerate(means)})
        return outputs

    def summarize(self, outputs, final, constants):
        del constants  # none: every estimate is per example
        mc = self.config.model_config
        if not final:
            k = mc.monitor_importance_samples
            return {
                "elbo": float(np.mean(outputs["elbo"])),
                f"nll_iwae{k}": float(-np.mean(outputs["iwae"])),
            }
        summary = summarize_log_likelihood(
            outputs["log_likelihood"], self.spec.num_dims, f"iwae-{mc.eval_importance_samples}"
        )
        summary["test_elbo"] = float(np.mean(outputs["elbo"]))
        num_layers = len(self.latent_sizes)
        units = [active_units(outputs[f"posterior_mean_{layer}"]) for layer in range(num_layers)]
        summary["active_units_per_layer"] = units
        summary["active_units"] = int(sum(units))
        return summary

    def sample(self, state, key, num):
        top_key, *layer_keys = jax.random.split(key, len(self.latent_sizes))
        z_top = jax.random.normal(top_key, (num, self.latent_sizes[-1]))
        noise = [
            jax.random.normal(k, (num, size))
            for k, size in zip(layer_keys, self.latent_sizes[:-1], strict=True)
        ]
        return self.network.apply(state.params, z_top, noise, method=VAENetwork.generate)
