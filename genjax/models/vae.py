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

import functools
from collections.abc import Sequence
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax import objectives
from genjax.evaluate.likelihood import (
    active_units,
    chunked_iwae_log_likelihood,
    summarize_importance_sampled,
)
from genjax.flows.autoregressive import iaf_flow
from genjax.flows.planar import planar_flow
from genjax.models import checks
from genjax.models.base import GradientModel
from genjax.nn import precision
from genjax.objectives import estimators as estimator_lib

ARCHITECTURES = ("mlp", "conv")
OBJECTIVES = ("elbo", "iwae")
LIKELIHOODS = ("bernoulli", "gaussian")
POSTERIOR_FLOWS = ("none", "planar", "iaf")
LATENT_DISTRIBUTIONS = ("gaussian", "bernoulli")
SCORE_BASELINES = ("running_mean", "learned", "none")
# Estimators that differentiate through the sample (z = mean + std * eps) and those that treat
# it as a constant and use the score function of q (the only ones for Bernoulli latents).
PATHWISE_ESTIMATORS = estimator_lib.REPARAMETERIZED_ESTIMATORS
SCORE_ESTIMATORS = ("score", "vimco")
# The flow-posterior fields of model_config and their defaults (configs/vae.py sets the same
# values); runs saved before the fields existed read them through `added_field_defaults`.
FLOW_DEFAULTS = {
    "posterior_flow": "none",
    "posterior_flow_layers": 4,
    "posterior_flow_hidden": 64,
    "context_size": 32,
}
# The discrete-latent and score-function fields, likewise (configs/vae.py sets the same).
ESTIMATOR_DEFAULTS = {
    "latent_distribution": "gaussian",
    "score_baseline": "running_mean",
    "baseline_decay": 0.99,
    "baseline_hidden": 100,
}


class MLP(nn.Module):
    """tanh MLP: hidden layers then a linear output of `out_size`.

    Attributes:
      hidden_sizes: the tanh layer widths.
      out_size: the width of the linear output.
      return_hidden: also return the last hidden layer's activations (the input when there is
        no hidden layer): (output, hidden) instead of output.
      dtype: the compute dtype of the layers (parameters stay float32); the output is
        float32 whatever it is, so densities are computed and summed in float32.
    """

    hidden_sizes: Sequence[int]
    out_size: int
    return_hidden: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        # Leading axes (samples, batch) are flattened into one: XLA then lays out every
        # product and its gradient as a plain matrix product, without transposing copies.
        lead = h.shape[:-1]
        h = h.reshape((-1, h.shape[-1]))
        for size in self.hidden_sizes:
            h = nn.tanh(precision.dense(size, dtype=self.dtype)(h))
        out = precision.dense(self.out_size, dtype=self.dtype)(h).astype(jnp.float32)
        out, h = out.reshape((*lead, -1)), h.reshape((*lead, -1))
        return (out, h) if self.return_hidden else out


class GaussianMLP(nn.Module):
    """h -> (mean, log_var) of a diagonal Gaussian over `out_size` units; with
    `context_size` C > 0, (mean, log_var, context), the context (..., C) a linear head (a
    Dense named 'context') on the last hidden layer.

    Attributes:
      hidden_sizes: the tanh layer widths.
      out_size: the number of Gaussian units.
      context_size: C, the width of the context head; 0 (the default) for none.
      dtype: the compute dtype, as `MLP`'s; the outputs are float32.
    """

    hidden_sizes: Sequence[int]
    out_size: int
    context_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h):
        out, hidden = MLP(
            self.hidden_sizes, 2 * self.out_size, return_hidden=True, dtype=self.dtype
        )(h)
        mean, log_var = jnp.split(out, 2, axis=-1)
        if not self.context_size:
            return mean, log_var
        context = precision.dense(self.context_size, dtype=self.dtype, name="context")(hidden)
        return mean, log_var, context.astype(jnp.float32)


class ConvEncoder(nn.Module):
    """Image (..., H, W, C) -> (mean, log_var) over `out_size` units, two stride-2 convs; with
    `context_size` C > 0, (mean, log_var, context), the context (..., C) a linear head (a Dense
    named 'context') on the last hidden layer.

    Attributes:
      channels: the conv widths.
      hidden_size: the width of the dense hidden layer after the convs.
      out_size: the number of Gaussian units.
      context_size: C, the width of the context head; 0 (the default) for none.
      dtype: the compute dtype, as `MLP`'s; the outputs are float32.
    """

    channels: Sequence[int]
    hidden_size: int
    out_size: int
    context_size: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        lead = x.shape[:-3]
        h = x.reshape((-1, *x.shape[-3:]))
        for channels in self.channels:
            h = nn.relu(precision.conv(channels, (3, 3), strides=(2, 2), dtype=self.dtype)(h))
        h = nn.relu(
            precision.dense(self.hidden_size, dtype=self.dtype)(h.reshape((h.shape[0], -1)))
        )
        out = precision.dense(2 * self.out_size, dtype=self.dtype)(h).astype(jnp.float32)
        mean, log_var = jnp.split(out, 2, axis=-1)
        mean, log_var = mean.reshape((*lead, -1)), log_var.reshape((*lead, -1))
        if not self.context_size:
            return mean, log_var
        context = precision.dense(self.context_size, dtype=self.dtype, name="context")(h)
        return mean, log_var, context.astype(jnp.float32).reshape((*lead, -1))


class ConvDecoder(nn.Module):
    """z (..., U) -> image-shaped outputs (..., H, W, C * outputs_per_pixel)."""

    channels: Sequence[int]
    hidden_size: int
    image_shape: tuple[int, int, int]
    outputs_per_pixel: int
    dtype: Any = jnp.float32  # the compute dtype, as `MLP`'s; the output is float32

    @nn.compact
    def __call__(self, z):
        lead = z.shape[:-1]
        height, width, channels_out = self.image_shape
        factor = 2 ** len(self.channels)
        dense = functools.partial(precision.dense, dtype=self.dtype)
        deconv = functools.partial(precision.conv_transpose, strides=(2, 2), dtype=self.dtype)
        h = nn.relu(dense(self.hidden_size)(z.reshape((-1, z.shape[-1]))))
        h = nn.relu(dense((height // factor) * (width // factor) * self.channels[-1])(h))
        h = h.reshape((-1, height // factor, width // factor, self.channels[-1]))
        for channels in reversed(self.channels[:-1]):
            h = nn.relu(deconv(channels, (3, 3))(h))
        h = deconv(channels_out * self.outputs_per_pixel, (3, 3))(h).astype(jnp.float32)
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
      latent_distribution: 'gaussian' | 'bernoulli' (one stochastic layer of binary units,
        q(z | x) = prod_u Bernoulli(sigmoid(l_u(x))), prior Bernoulli(sigmoid(prior_logits))).
      baseline_hidden: with a learned score-function baseline, the width of its tanh hidden
        layer; 0 for no baseline network.
      dtype: the compute dtype of the encoder and decoder networks (`config.compute_dtype`);
        parameters stay float32, every network output is cast to float32, so sampling, the
        log densities and their sums (log w, the bounds) and the flow are float32.
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
    latent_distribution: str = "gaussian"
    baseline_hidden: int = 0
    dtype: Any = jnp.float32

    def setup(self):
        num_dims = int(np.prod(self.data_shape))
        outputs_per_dim = 1 if self.likelihood == "bernoulli" else 2
        has_flow = self.posterior_flow != "none"
        context_size = self.context_size if has_flow else 0
        if self.baseline_hidden:
            # b(x): an input-dependent baseline for the score-function estimator (NVIL).
            self.baseline_network = MLP((self.baseline_hidden,), 1, dtype=self.dtype)
        if self.latent_distribution == "bernoulli":
            self.data_encoder = MLP(  # logits
                self.hidden_sizes[0], self.latent_sizes[0], dtype=self.dtype
            )
            self.data_decoder = MLP(
                tuple(reversed(self.hidden_sizes[0])), outputs_per_dim * num_dims, dtype=self.dtype
            )
            self.prior_logits = self.param(
                "prior_logits", nn.initializers.zeros, (self.latent_sizes[0],)
            )
        elif self.architecture == "conv":
            hidden = self.hidden_sizes[0][-1]
            self.data_encoder = ConvEncoder(
                self.conv_channels, hidden, self.latent_sizes[0], context_size, self.dtype
            )
            self.data_decoder = ConvDecoder(
                self.conv_channels, hidden, self.data_shape, outputs_per_dim, self.dtype
            )
        else:
            self.data_encoder = GaussianMLP(
                self.hidden_sizes[0], self.latent_sizes[0], context_size, self.dtype
            )
            self.data_decoder = MLP(
                tuple(reversed(self.hidden_sizes[0])), outputs_per_dim * num_dims, dtype=self.dtype
            )
        self.latent_encoders = [
            GaussianMLP(self.hidden_sizes[layer], self.latent_sizes[layer], dtype=self.dtype)
            for layer in range(1, len(self.latent_sizes))
        ]
        self.latent_decoders = [
            GaussianMLP(
                tuple(reversed(self.hidden_sizes[layer])),
                self.latent_sizes[layer - 1],
                dtype=self.dtype,
            )
            for layer in range(1, len(self.latent_sizes))
        ]
        if has_flow:  # on z_1, the one stochastic layer (`VAE.validate_config`)
            flows = {
                "planar": lambda: planar_flow(self.posterior_flow_layers, dtype=self.dtype),
                "iaf": lambda: iaf_flow(
                    self.latent_sizes[0],
                    self.posterior_flow_layers,
                    (self.posterior_flow_hidden,),
                    dtype=self.dtype,
                ),
            }
            self.flow = flows[self.posterior_flow]()

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
        if self.latent_distribution == "bernoulli":
            return self._bernoulli_posterior(x, noise[0])
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

    def _bernoulli_posterior(self, x, uniform):
        """Binary z ~ q(z | x) = prod_u Bernoulli(sigmoid(l_u(x))) from uniform draws (K, B, U):
        z_u = 1 where uniform_u < sigmoid(l_u). z is a step function of the logits, so no
        gradient flows through it; only score-function estimators train the encoder.

        Returns what `posterior` returns; the first layer is (logits, None), the posterior mean
        sigmoid(l(x)) (B, U).
        """
        logits = self.data_encoder(x.reshape((x.shape[0], -1)))  # (B, U)
        z = (uniform < jax.nn.sigmoid(logits)).astype(uniform.dtype)  # (K, B, U)
        log_q = objectives.bernoulli_log_prob(z, logits, event_ndims=1)  # (K, B)
        return [z], log_q, (logits, None), [jax.nn.sigmoid(logits)]

    def posterior_log_prob(self, x, samples):
        """log q(z_1..z_L | x) of given samples (no flow), shape (K, B).

        Applied with stopped parameters it gives sticking-the-landing's log q (Roeder et al.
        2017): the density's parameters are constants, while z (and, in a hierarchy, the z_l
        that condition upper layers) keep their gradients.
        """
        if self.latent_distribution == "bernoulli":
            logits = self.data_encoder(x.reshape((x.shape[0], -1)))
            return objectives.bernoulli_log_prob(samples[0], logits, event_ndims=1)
        mean, log_var, _ = self.encode_data(x)  # (B, U_1) each
        log_q = objectives.gaussian_log_prob(samples[0], mean, log_var, event_ndims=1)
        for layer in range(1, len(samples)):
            mean, log_var = self.latent_encoders[layer - 1](samples[layer - 1])  # (K, B, U_l)
            log_q = log_q + objectives.gaussian_log_prob(
                samples[layer], mean, log_var, event_ndims=1
            )
        return log_q

    def log_joint(self, x, samples):
        """(log p(x | z_1), log p(z)), each (K, B), of given samples."""
        return self.log_likelihood(x, samples[0]), self.log_prior(samples)

    def baseline(self, x):
        """The learned score-function baseline b(x), (B,), for x (B, *data_shape)."""
        return self.baseline_network(x.reshape((x.shape[0], -1)))[:, 0]

    def log_prior(self, samples):
        """log p(z_L) + sum_l log p(z_{l-1} | z_l), shape (K, B)."""
        if self.latent_distribution == "bernoulli":
            logits = jnp.broadcast_to(self.prior_logits, samples[0].shape)
            return objectives.bernoulli_log_prob(samples[0], logits, event_ndims=1)
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
        # Summed over one flattened event axis: a single contiguous reduction.
        x = x.reshape((x.shape[0], -1))
        params = jax.tree.map(lambda p: p.reshape((*z1.shape[:-1], -1)), self.decode(z1))
        if self.likelihood == "bernoulli":
            return objectives.bernoulli_log_prob(x, params, event_ndims=1)
        mean, log_var = params
        return objectives.gaussian_log_prob(x, mean, log_var, event_ndims=1)

    def __call__(self, x, noise):
        """Log importance weights log p(x, z) - log q(z | x), shape (K, B), and extras."""
        samples, log_q, first_layer, means = self.posterior(x, noise)
        log_px = self.log_likelihood(x, samples[0])
        log_w = log_px + self.log_prior(samples) - log_q
        outputs = {"log_w": log_w, "log_px": log_px, "first_layer": first_layer, "means": means}
        if self.baseline_hidden:
            outputs["baseline"] = self.baseline(x)  # (B,)
        return outputs

    def generate(self, z_top, noise):
        """Ancestral sample: z_L -> ... -> z_1 -> mean of p(x | z_1). noise: per lower layer.

        Gaussian latents: z_top is the top layer's draw (num, U_L). Bernoulli latents: z_top
        is uniform (num, U), and z = 1 where it falls below sigmoid(prior_logits).
        """
        z = z_top
        if self.latent_distribution == "bernoulli":
            z = (z_top < jax.nn.sigmoid(self.prior_logits)).astype(z_top.dtype)
        for layer in range(len(self.latent_sizes) - 1, 0, -1):
            mean, log_var = self.latent_decoders[layer - 1](z)
            z = mean + jnp.exp(0.5 * log_var) * noise[layer - 1]
        params = self.decode(z)
        return jax.nn.sigmoid(params) if self.likelihood == "bernoulli" else params[0]


def _check_estimator_choice(
    mc, estimator: str, num_samples: int, estimator_field: str, samples_field: str
) -> None:
    """Refuses `estimator` with K = `num_samples` where it cannot estimate the gradient of this
    model_config's bound, and warns where it estimates it with a bias.

    The one place the family decides; config validation (`VAE._validate_estimator`) and a
    per-call override (`VAE.check_estimator`: `VAE.estimator_loss`, the gradient SNR of
    `genjax.evaluate.gradient_snr.measure_run`) all come here. The estimator against the bound
    (`estimators.check_estimator_for_bound`: dreg/vimco only with the IWAE bound, vimco with
    K >= 2, a `BiasedEstimatorWarning` for stl with the IWAE bound and K > 1), then against the
    family: binary latents take only score/vimco, a flow posterior or the closed-form KL only
    reparam.

    Args:
      mc: the model_config.
      estimator: the estimator's name.
      num_samples: K.
      estimator_field, samples_field: how messages name the estimator and K, e.g.
        "config.estimator" and "config.model_config.num_importance_samples".

    Raises:
      ValueError: naming the fields and the allowed values.
    """
    estimator_lib.check_estimator_for_bound(
        estimator,
        mc.objective,
        num_samples,
        estimator_field=estimator_field,
        objective_field="config.model_config.objective",
        samples_field=samples_field,
    )
    field = f"{estimator_field}={estimator!r}"
    if mc.latent_distribution == "bernoulli" and (
        estimator not in SCORE_ESTIMATORS or mc.posterior_flow != "none"
    ):
        raise ValueError(
            f"{field} with config.model_config.latent_distribution='bernoulli': binary "
            f"latents cannot be reparameterized; allowed: {estimator_field} in "
            f"{SCORE_ESTIMATORS}, with posterior_flow='none'."
        )
    if mc.posterior_flow != "none" and estimator != "reparam":
        raise ValueError(
            f"{field} with config.model_config.posterior_flow={mc.posterior_flow!r}: the "
            "other estimators evaluate log q at a given z, which needs the flow's inverse; "
            f"allowed with a flow: {estimator_field}='reparam'."
        )
    if mc.analytic_kl and estimator != "reparam":
        raise ValueError(
            f"{field} with config.model_config.analytic_kl=True: the closed-form KL is "
            f"the reparameterized ELBO's; use {estimator_field}='reparam' or analytic_kl=False."
        )


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
      latent_distribution: 'gaussian' | 'bernoulli' (one layer of binary units; trained with
        config.estimator = 'score' or 'vimco').
      score_baseline: the baseline b of config.estimator='score': 'running_mean' (an
        exponential moving average of the learning signal, bias-corrected), 'learned' (an MLP
        b(x) fitted by squared error to the signal, Mnih & Gregor 2014) or 'none'.
      baseline_decay: the moving average's decay.
      baseline_hidden: the learned baseline's hidden width.

    The top-level `config.estimator` picks the gradient estimator (see `estimator_loss`).
    """

    name = "vae"
    main_metric = "train/loss"
    added_field_defaults = {**FLOW_DEFAULTS, **ESTIMATOR_DEFAULTS}
    estimators = estimator_lib.ESTIMATORS
    compute_dtypes = ("float32", "bfloat16")
    evaluation_fields = checks.IMPORTANCE_SAMPLING_EVALUATION_FIELDS

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
        checks.check_importance_sampling(mc)
        cls._validate_flow(mc)
        cls._validate_estimator(config)

    @staticmethod
    def _validate_estimator(config) -> None:
        """The estimator fields, and the estimator against the latents and the objective."""
        mc = config.model_config
        checks.check_choices(
            mc, {"latent_distribution": LATENT_DISTRIBUTIONS, "score_baseline": SCORE_BASELINES}
        )
        checks.check_positive_ints(mc, ("baseline_hidden",))
        if not 0.0 <= mc.baseline_decay < 1.0:
            raise ValueError(
                f"config.model_config.baseline_decay={mc.baseline_decay!r} must be in [0, 1)."
            )
        if mc.latent_distribution == "bernoulli" and (
            len(mc.latent_sizes) != 1 or mc.architecture != "mlp"
        ):
            raise ValueError(
                "config.model_config.latent_distribution='bernoulli' needs one stochastic "
                f"layer and architecture='mlp'; got latent_sizes={tuple(mc.latent_sizes)}, "
                f"architecture={mc.architecture!r}."
            )
        _check_estimator_choice(
            mc,
            config.estimator,
            mc.num_importance_samples,
            "config.estimator",
            "config.model_config.num_importance_samples",
        )

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
        self.estimator = config.estimator
        self.score_baseline = mc.score_baseline if config.estimator == "score" else "none"
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
            latent_distribution=mc.latent_distribution,
            baseline_hidden=int(mc.baseline_hidden) if self.score_baseline == "learned" else 0,
            dtype=jnp.dtype(config.compute_dtype),
        )
        self.use_analytic_kl = (
            mc.analytic_kl and mc.objective == "elbo" and len(self.latent_sizes) == 1
        )

    def _noise(self, keys: jax.Array, num_samples: int) -> list[jax.Array]:
        """Draws per layer, (K, B, U_l), each example from its own key: standard normal, or
        uniform on [0, 1) for Bernoulli latents."""
        draw = jax.random.normal
        if self.config.model_config.latent_distribution == "bernoulli":
            draw = jax.random.uniform

        def per_example(key):
            layer_keys = jax.random.split(key, len(self.latent_sizes))
            return [
                draw(k, (num_samples, size))
                for k, size in zip(layer_keys, self.latent_sizes, strict=True)
            ]

        noise = jax.vmap(per_example)(keys)  # list of (B, K, U_l)
        return [jnp.swapaxes(eps, 0, 1) for eps in noise]

    def init(self, key, example_x):
        noise = [jnp.zeros((1, example_x.shape[0], size)) for size in self.latent_sizes]
        extras = {}
        if self.score_baseline == "running_mean":
            extras = {"baseline_mean": jnp.zeros(()), "baseline_updates": jnp.zeros((), jnp.int32)}
        return self.network.init(key, example_x, noise), extras

    def train_log_density(self, params, x, keys):
        """The training K's log importance weights, (K, B)."""
        return self.log_weights(params, x, keys, self.config.model_config.num_importance_samples)[
            "log_w"
        ]

    def log_weights(self, params, x, keys, num_samples):
        """Log importance weights (K, B) and network outputs for fresh samples."""
        outputs = self.network.apply(params, x, self._noise(keys, num_samples))
        chex.assert_shape(outputs["log_w"], (num_samples, x.shape[0]))
        return outputs

    def parameter_groups(self) -> dict[str, tuple[str, ...]]:
        """Parameter-path prefixes of the inference network (phi: encoders, flow, and a
        learned baseline's own group) and of the generative model (theta: decoders, prior),
        for per-group gradient diagnostics (`genjax.evaluate.gradient_snr.prefix_groups`)."""
        upper = range(len(self.latent_sizes) - 1)
        return {
            "encoder": (
                "params/data_encoder",
                *(f"params/latent_encoders_{i}" for i in upper),
                "params/flow",
            ),
            "decoder": (
                "params/data_decoder",
                *(f"params/latent_decoders_{i}" for i in upper),
                "params/prior_logits",
            ),
        }

    def _bound(self, log_w):
        """The training objective of log weights (K, B) -> (B,): IWAE bound or ELBO."""
        if self.config.model_config.objective == "iwae":
            return objectives.iwae_bound(log_w, axis=0)
        return objectives.elbo(log_w, axis=0)

    def loss(self, params, extras, batch, keys):
        return self.estimator_loss(params, extras, batch, keys)

    def check_estimator(self, estimator: str, num_samples: int) -> None:
        """The config's rules (`_check_estimator_choice`) for a per-call override: refuses
        (ValueError) `estimator` with K = `num_samples` where the configuration would, and
        warns (`BiasedEstimatorWarning`) where it would.

        Called by `estimator_loss` whenever it is given an override, and by gradient
        diagnostics before they start (`genjax.evaluate.gradient_snr.measure_run`).
        """
        _check_estimator_choice(
            self.config.model_config, estimator, num_samples, "estimator", "num_samples"
        )

    def estimator_loss(self, params, extras, batch, keys, estimator=None, num_samples=None):
        """-mean_b bound(x_b) -> (loss, (metrics, extras)); its gradient is `estimator`'s.

        The loss's value is always the bound (the configured objective with k =
        `num_samples` samples); the estimator changes only the gradient
        (genjax.objectives.estimators):

          reparam  pathwise: z = mu + sigma * eps, differentiate log w (Kingma & Welling 2014).
          stl      pathwise with log q's parameters stopped (Roeder et al. 2017); unbiased
                   for the ELBO, biased for the IWAE bound with k > 1 (a warning says so).
          dreg     doubly reparameterized IWAE gradient (Tucker et al. 2019): encoder terms
                   weighted by w~_k^2 through z, decoder terms by w~_k; two decoder passes.
          score    z stopped, the score function of q times (signal - baseline).
          vimco    z stopped, VIMCO's leave-one-out signals (Mnih & Rezende 2016).

        Args:
          params, extras, batch, keys: as `loss`.
          estimator: overrides `config.estimator` (for gradient diagnostics).
          num_samples: overrides `model_config.num_importance_samples`.

        Raises:
          ValueError: an override the configuration would refuse (`check_estimator`), e.g.
            'dreg' or 'vimco' with `objective='elbo'`, whose loss would otherwise be the IWAE
            bound; 'stl' with the IWAE bound and K > 1 warns (`BiasedEstimatorWarning`).
        """
        mc = self.config.model_config
        overridden = estimator is not None or num_samples is not None
        estimator = self.estimator if estimator is None else estimator
        num_samples = mc.num_importance_samples if num_samples is None else num_samples
        if overridden:  # the configured pair was checked when the model was built
            self.check_estimator(estimator, num_samples)
        x, net = batch["x"], self.network
        noise = self._noise(keys, num_samples)
        metrics, baseline_loss = {}, 0.0
        if estimator == "reparam":
            outputs = net.apply(params, x, noise)
            log_w = outputs["log_w"]  # (K, B)
            bound = self._bound(log_w)
            if self.use_analytic_kl:
                mean, log_var = outputs["first_layer"]
                bound = outputs["log_px"].mean(axis=0) - objectives.gaussian_kl(mean, log_var)
            surrogate = bound
        elif estimator in estimator_lib.REPARAMETERIZED_ESTIMATORS:  # stl, dreg
            samples = net.apply(params, x, noise, method=VAENetwork.posterior)[0]
            frozen = jax.lax.stop_gradient(params)
            log_q_frozen = net.apply(frozen, x, samples, method=VAENetwork.posterior_log_prob)
            if estimator == "stl":
                log_px, log_prior = net.apply(params, x, samples, method=VAENetwork.log_joint)
                log_w = log_px + log_prior - log_q_frozen
                surrogate = bound = self._bound(log_w)
            else:
                # Encoder path: z live, every density's parameters frozen.
                log_w_encoder = (
                    sum(net.apply(frozen, x, samples, method=VAENetwork.log_joint)) - log_q_frozen
                )
                # Decoder path: z fixed, the generative model's parameters live.
                fixed = jax.lax.stop_gradient(samples)
                log_px, log_prior = net.apply(params, x, fixed, method=VAENetwork.log_joint)
                log_w = log_px + log_prior - jax.lax.stop_gradient(log_q_frozen)
                surrogate = estimator_lib.dreg_surrogate(log_w_encoder, log_w)
                bound = objectives.iwae_bound(log_w, axis=0)
        else:  # score, vimco: z is a constant, q enters through its score
            samples = net.apply(params, x, noise, method=VAENetwork.posterior)[0]
            samples = jax.lax.stop_gradient(samples)
            log_q = net.apply(params, x, samples, method=VAENetwork.posterior_log_prob)
            log_px, log_prior = net.apply(params, x, samples, method=VAENetwork.log_joint)
            log_w = log_px + log_prior - log_q  # (K, B)
            bound = self._bound(log_w)
            if estimator == "vimco":
                surrogate = estimator_lib.vimco_surrogate(log_w, log_q)
            else:
                signal = estimator_lib.learning_signal(log_w, mc.objective)  # (B,)
                baseline, baseline_loss = self._score_baseline(params, extras, x, signal)
                surrogate = estimator_lib.score_function_surrogate(
                    log_w, log_q, baseline, mc.objective
                )
                metrics["train/learning_signal"] = signal.mean()
                metrics["train/baseline_mse"] = jnp.mean(jnp.square(signal - baseline))
        chex.assert_shape(log_w, (num_samples, x.shape[0]))
        # The baseline's fitting loss adds its gradient but not its value to the loss.
        fitting = baseline_loss - jax.lax.stop_gradient(baseline_loss)
        loss = -jnp.mean(surrogate + batch["log_det"]) + fitting
        metrics["train/bound"] = jnp.mean(bound + batch["log_det"])
        metrics["train/elbo"] = objectives.elbo(log_w).mean()
        return loss, (metrics, extras)

    def _score_baseline(self, params, extras, x, signal):
        """The score-function baseline b (scalar or (B,)) and the loss that fits it."""
        if self.score_baseline == "learned":
            baseline = self.network.apply(params, x, method=VAENetwork.baseline)  # (B,)
            return baseline, jnp.mean(jnp.square(jax.lax.stop_gradient(signal) - baseline))
        if self.score_baseline == "running_mean":
            updates = extras["baseline_updates"]
            decay = self.config.model_config.baseline_decay
            # Bias-corrected moving average; no baseline before the first update.
            corrected = extras["baseline_mean"] / (1.0 - decay ** jnp.maximum(updates, 1))
            return jnp.where(updates > 0, corrected, 0.0), 0.0
        return 0.0, 0.0

    def train_step(self, state, batch):
        state, metrics = super().train_step(state, batch)
        if self.score_baseline != "running_mean":
            return state, metrics
        # The running-mean baseline follows the learning signal, averaged over devices.
        decay = self.config.model_config.baseline_decay
        extras = dict(state.extras)
        extras["baseline_mean"] = (
            decay * extras["baseline_mean"] + (1.0 - decay) * metrics["train/learning_signal"]
        )
        extras["baseline_updates"] = extras["baseline_updates"] + 1
        return state.replace(extras=extras), metrics

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
        summary = summarize_importance_sampled(
            outputs,
            final,
            self.spec.num_dims,
            mc.monitor_importance_samples,
            mc.eval_importance_samples,
        )
        if not final:
            return summary
        num_layers = len(self.latent_sizes)
        units = [active_units(outputs[f"posterior_mean_{layer}"]) for layer in range(num_layers)]
        summary["active_units_per_layer"] = units
        summary["active_units"] = int(sum(units))
        return summary

    def sample(self, state, key, num):
        top_key, *layer_keys = jax.random.split(key, len(self.latent_sizes))
        if self.config.model_config.latent_distribution == "bernoulli":
            z_top = jax.random.uniform(top_key, (num, self.latent_sizes[-1]))
        else:
            z_top = jax.random.normal(top_key, (num, self.latent_sizes[-1]))
        noise = [
            jax.random.normal(k, (num, size))
            for k, size in zip(layer_keys, self.latent_sizes[:-1], strict=True)
        ]
        return self.network.apply(state.params, z_top, noise, method=VAENetwork.generate)
