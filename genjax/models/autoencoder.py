"""Autoencoders: plain, denoising, stacked denoising, sparse, convolutional and recurrent, and
the denoising autoencoder as a generative model (a generative stochastic network).

An autoencoder maps x to a code h = f(x) and back to a reconstruction g(h), trained to
minimise the reconstruction loss -log p(x | g(f(x_tilde))) (`genjax.objectives.autoencoding`)
where x_tilde is x itself (plain) or a corrupted copy x_tilde ~ C(x_tilde | x) (denoising,
Vincent et al. 2008). The variants (`config.model_config`):

  architecture 'mlp': dense layers `hidden_sizes`; 'conv': two stride-2 convolutions and a
    dense code layer, mirrored by transposed convolutions; 'recurrent': an LSTM reads the
    image row by row and its last hidden state is the code; a second LSTM, fed the code at
    every step, writes the rows back (the sequence autoencoder of Srivastava et al. 2015);
    both start with forget-gate biases of `forget_bias` (Gers et al. 2000), so the code can
    still hold the top rows after reading 28.
  corruption / corruption_level: none, masking, salt-and-pepper or Gaussian noise.
  layerwise_pretraining (mlp): stacked denoising autoencoders (Vincent et al. 2010): each
    dense layer is first trained alone as a denoising autoencoder of the (clean) codes of the
    layers below it, then the whole stack is fine-tuned end to end on the reconstruction of x.
    The stages are `genjax.models.staged` stages, as the DBN's and DBM's are.
  l1_penalty / sparsity_target + sparsity_weight: sparse autoencoders: an L1 penalty on the
    code, and the KL penalty pulling each sigmoid unit's mean activation toward rho.

Sampling (Bengio, Yao, Alain & Vincent 2013, "Generalized denoising auto-encoders as
generative models"): the Markov chain x_t -> x_tilde ~ C(. | x_t) -> x_{t+1} ~ p(. | g(f(x_tilde)))
(`chain_step`) has, for a consistent estimator of p(x | x_tilde), the data distribution as its
stationary distribution; `sample` runs `chain_steps` of it from uniform noise and returns the
last step's decoder means. Walkback training (their section 3.4) follows the chain
`walkback_steps` steps from each training example and asks every step's reconstruction to be
the original example, to remove spurious modes far from the data (their motivation; not
measured here).
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from genjax.evaluate import plots
from genjax.evaluate.likelihood import mean_and_stderr
from genjax.models import checks, staged
from genjax.models.base import MAX_FILTERS
from genjax.objectives import autoencoding

ARCHITECTURES = ("mlp", "conv", "recurrent")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
_ACTIVATION_FNS = {"sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu}
# Consecutive chain steps per row of chain.png, and its rows (half from test digits).
CHAIN_FIGURE_STEPS = 20
CHAIN_FIGURE_ROWS = 4


# ---------------------------------------------------------------------------------------------
# Networks: each architecture is a list of (encoder, decoder) layer pairs. Pair i's encoder
# maps the code of pair i - 1 (x for i = 0) to code i; its decoder maps code i back to the
# pre-activation of code i - 1 (pair 0's: the likelihood's parameters of x).


class _ConvEncoder(nn.Module):
    code_size: int
    channels: tuple[int, int]

    @nn.compact
    def __call__(self, x):  # (B, H, W, C) -> (B, code_size) pre-activation
        for channels in self.channels:
            x = nn.relu(nn.Conv(channels, (4, 4), strides=(2, 2), padding="SAME")(x))
        return nn.Dense(self.code_size)(x.reshape((x.shape[0], -1)))


class _ConvDecoder(nn.Module):
    example_shape: tuple[int, int, int]
    channels: tuple[int, int]

    @nn.compact
    def __call__(self, code):  # (B, code_size) -> (B, H, W, C)
        height, width, out_channels = self.example_shape
        x = nn.relu(nn.Dense(height // 4 * width // 4 * self.channels[-1])(code))
        x = x.reshape((code.shape[0], height // 4, width // 4, self.channels[-1]))
        x = nn.relu(nn.ConvTranspose(self.channels[0], (4, 4), strides=(2, 2), padding="SAME")(x))
        return nn.ConvTranspose(out_channels, (4, 4), strides=(2, 2), padding="SAME")(x)


class _RowEncoder(nn.Module):
    """An LSTM over the image's rows; the code is its last hidden state, in (-1, 1)."""

    code_size: int

    @nn.compact
    def __call__(self, x):  # (B, H, W, C) -> (B, code_size), already activated
        rows = x.reshape((x.shape[0], x.shape[1], -1))
        (_, hidden), _ = nn.RNN(nn.OptimizedLSTMCell(self.code_size), return_carry=True)(rows)
        return hidden


class _RowDecoder(nn.Module):
    """An LSTM fed the code at every step, each step's output mapped to one row."""

    example_shape: tuple[int, int, int]
    hidden_size: int

    @nn.compact
    def __call__(self, code):  # (B, code_size) -> (B, H, W, C)
        height, width, channels = self.example_shape
        inputs = jnp.broadcast_to(code[:, None, :], (code.shape[0], height, code.shape[1]))
        outputs = nn.RNN(nn.OptimizedLSTMCell(self.hidden_size))(inputs)
        return nn.Dense(width * channels)(outputs).reshape((code.shape[0], *self.example_shape))


def _layer_pairs(mc, example_shape) -> list[tuple[nn.Module, nn.Module]]:
    """The (encoder, decoder) modules of `mc.architecture` for data of `example_shape`."""
    num_dims = int(np.prod(example_shape))
    if mc.architecture == "mlp":
        inputs = (num_dims, *mc.hidden_sizes[:-1])
        return [(nn.Dense(size), nn.Dense(inputs[i])) for i, size in enumerate(mc.hidden_sizes)]
    code_size = mc.hidden_sizes[-1]
    if mc.architecture == "conv":
        channels = tuple(mc.conv_channels)
        return [(_ConvEncoder(code_size, channels), _ConvDecoder(example_shape, channels))]
    return [(_RowEncoder(code_size), _RowDecoder(example_shape, code_size))]


def shift_forget_biases(params, shift: float):
    """`params` with `shift` added to every LSTM forget-gate bias (the 'hf' bias of Flax's
    `OptimizedLSTMCell`); the other leaves unchanged."""

    def shifted(path, leaf):
        names = [getattr(entry, "key", None) for entry in path]
        return leaf + shift if names[-2:] == ["hf", "bias"] else leaf

    return jax.tree_util.tree_map_with_path(shifted, params)


def _split_each(keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Two independent keys from each of keys (B,): two (B,) arrays."""
    pairs = jax.vmap(jax.random.split)(keys)  # (B, 2)
    return pairs[:, 0], pairs[:, 1]


# ---------------------------------------------------------------------------------------------
# The family.


class Autoencoder(staged.StagedModel):
    """Autoencoders of every kind (`config.model = 'autoencoder'`); see the module docstring.

    model_config fields:
      architecture: 'mlp' | 'conv' | 'recurrent'.
      hidden_sizes: mlp: the code sizes of the stacked layers (the last is the code); conv and
        recurrent: (code_size,).
      conv_channels: conv: the two convolutions' channels.
      activation: the code units' nonlinearity, 'sigmoid' | 'tanh' | 'relu' (mlp and conv;
        the recurrent code is the LSTM's hidden state).
      likelihood: the decoder's 'bernoulli' (binary data) | 'gaussian' (fixed scale).
      gaussian_scale: sigma of the Gaussian likelihood.
      corruption: 'none' | 'masking' | 'salt_and_pepper' | 'gaussian'.
      corruption_level: in [0, 1]: the probability of corrupting a pixel (masking,
        salt-and-pepper); the noise's std (Gaussian).
      walkback_steps: 1: plain (denoising) reconstruction; k > 1: walkback training with k
        chain steps (the end-to-end loss only, not the layer-wise stages).
      layerwise_pretraining: mlp with sigmoid codes: greedy layer-wise stages, then fine-tuning
        (stacked denoising autoencoders).
      stage_steps: with layerwise_pretraining only: len(hidden_sizes) + 1 stage lengths, one
        per layer then the fine-tuning, summing to `config.num_steps`.
      l1_penalty: weight of the mean over the batch of sum_j |h_j|.
      sparsity_target: rho of the KL sparsity penalty, in (0, 1).
      sparsity_weight: that penalty's weight (sigmoid codes only; 0: off).
      forget_bias: recurrent: the initial bias of both LSTMs' forget gates (Flax's is 0, a
        forget gate of 0.5 per row, so the code of a 28-row image keeps ~2^-27 of its first
        rows' contribution at the start of training).
      chain_steps: DAE chain steps `sample` runs from noise (evaluation only).
      active_threshold: a code unit counts as active on an example when h > this
        (evaluation only).
    """

    name = "autoencoder"
    main_metric = "train/reconstruction_nll"
    likelihood_model = False
    evaluation_fields = ("chain_steps", "active_threshold")
    # Runs saved before `forget_bias` existed resume under its default: it only sets the
    # recurrent LSTMs' initial parameters, which a resumed run restores instead.
    added_field_defaults = {"forget_bias": 3.0}
    stage_metrics = ("train/reconstruction_nll", "train/l1_penalty", "train/kl_sparsity")

    @classmethod
    def stages_for(cls, config) -> tuple[staged.Stage, ...]:
        """One stage training every layer; with `layerwise_pretraining`, first one stage per
        dense layer (its encoder and decoder only), then the fine-tuning stage."""
        mc = config.model_config
        every_key = tuple(
            f"{part}_{i}" for i in range(_num_pairs(mc)) for part in ("encoder", "decoder")
        )
        if not mc.layerwise_pretraining:
            return (staged.Stage("autoencoder", every_key),)
        layers = tuple(
            staged.Stage(f"layer_{i}", (f"encoder_{i}", f"decoder_{i}"))
            for i in range(len(mc.hidden_sizes))
        )
        return (*layers, staged.Stage("fine_tune", every_key))

    @classmethod
    def stage_steps_for(cls, config, stages) -> tuple[int, ...]:
        if not config.model_config.layerwise_pretraining:
            return (int(config.num_steps),)
        return staged.check_stage_steps(config, stages)

    @classmethod
    def validate_config(cls, config) -> None:
        mc = config.model_config
        checks.check_choices(
            mc,
            {
                "architecture": ARCHITECTURES,
                "activation": ACTIVATIONS,
                "likelihood": autoencoding.RECONSTRUCTIONS,
                "corruption": autoencoding.CORRUPTIONS,
            },
        )
        checks.check_sizes(mc, "hidden_sizes")
        checks.check_positive_ints(mc, ("walkback_steps", "chain_steps"))
        checks.check_non_negative_numbers(
            mc, ("l1_penalty", "sparsity_weight", "active_threshold", "forget_bias")
        )
        checks.check_bools(mc, ("layerwise_pretraining",))
        if not 0.0 <= mc.corruption_level <= 1.0:
            raise ValueError(
                f"config.model_config.corruption_level={mc.corruption_level!r} must be in "
                "[0, 1]: the probability of corrupting a pixel (the std of Gaussian noise)."
            )
        if not mc.gaussian_scale > 0:
            raise ValueError(
                f"config.model_config.gaussian_scale={mc.gaussian_scale!r} must be positive."
            )
        if mc.architecture != "mlp" and len(mc.hidden_sizes) != 1:
            raise ValueError(
                f"config.model_config.hidden_sizes={tuple(mc.hidden_sizes)} must hold one "
                f"code size for architecture={mc.architecture!r} (several only for 'mlp')."
            )
        if mc.architecture == "conv":
            checks.check_sizes(mc, "conv_channels")
            if len(mc.conv_channels) != 2:
                raise ValueError(
                    f"config.model_config.conv_channels={tuple(mc.conv_channels)} must hold "
                    "two channel counts, one per stride-2 convolution."
                )
        if mc.sparsity_weight > 0:
            if not 0.0 < mc.sparsity_target < 1.0:
                raise ValueError(
                    f"config.model_config.sparsity_target={mc.sparsity_target!r} must be in "
                    "(0, 1): the target mean activation rho of each sigmoid code unit."
                )
            if mc.architecture == "recurrent" or mc.activation != "sigmoid":
                raise ValueError(
                    f"config.model_config.sparsity_weight={mc.sparsity_weight} needs sigmoid "
                    "codes (activations read as firing probabilities): set activation="
                    "'sigmoid' with architecture 'mlp' or 'conv', or sparsity_weight=0."
                )
        if mc.layerwise_pretraining:
            if mc.architecture != "mlp" or mc.activation != "sigmoid":
                raise ValueError(
                    "config.model_config.layerwise_pretraining=True stacks dense layers whose "
                    "codes in [0, 1] the next layer reconstructs by cross-entropy: it needs "
                    "architecture='mlp' and activation='sigmoid'."
                )
        super().validate_config(config)

    def __init__(self, config, spec):
        mc = config.model_config
        if mc.likelihood == "bernoulli":
            checks.require_binary(
                spec, "config.model_config.likelihood='bernoulli'", "likelihood='gaussian'"
            )
        if mc.architecture != "mlp":
            if not spec.is_image:
                raise ValueError(
                    f"config.model_config.architecture={mc.architecture!r} reads images; "
                    f"config.dataset={spec.name!r} holds vectors: use architecture='mlp'."
                )
            height, width, _ = spec.example_shape
            if mc.architecture == "conv" and (height % 4 or width % 4):
                raise ValueError(
                    f"config.model_config.architecture='conv' halves the image twice: its "
                    f"height and width must be multiples of 4, got {spec.example_shape}."
                )
        self.example_shape = tuple(spec.example_shape)
        self.num_dims = spec.num_dims
        self.pairs = _layer_pairs(mc, self.example_shape)
        self.activation = _ACTIVATION_FNS[mc.activation]
        super().__init__(config, spec)

    # --- the network as functions of params -------------------------------------------------

    def _encoder_input(self, i: int, h: jax.Array) -> jax.Array:
        """Layer i's input: dense layers take flat vectors, the others images."""
        if self.config.model_config.architecture == "mlp":
            return h.reshape((h.shape[0], -1))
        return h

    def encode_layer(self, params, i: int, h: jax.Array) -> jax.Array:
        """Code i from code i - 1 (x for i = 0)."""
        pre = self.pairs[i][0].apply(params[f"encoder_{i}"], self._encoder_input(i, h))
        if self.config.model_config.architecture == "recurrent":
            return pre
        return self.activation(pre)

    def decode_layer(self, params, i: int, code: jax.Array) -> jax.Array:
        """The pre-activation of code i - 1 from code i; for i = 0 the likelihood's
        parameters of x (logits or mean), shaped like x."""
        out = self.pairs[i][1].apply(params[f"decoder_{i}"], code)
        if i == 0:
            return out.reshape((code.shape[0], *self.example_shape))
        return out

    def encode(self, params, x: jax.Array, layers: int | None = None) -> jax.Array:
        """The code (B, code_size) of x (B, *example_shape) through the first `layers`."""
        h = x
        for i in range(len(self.pairs) if layers is None else layers):
            h = self.encode_layer(params, i, h)
        return h

    def decode(self, params, code: jax.Array) -> jax.Array:
        """x's likelihood parameters (B, *example_shape) from the top code (B, code_size)."""
        h = code
        for i in reversed(range(len(self.pairs))):
            h = self.decode_layer(params, i, h)
            if i > 0:
                h = self.activation(h)
        return h

    def reconstruct(self, params, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(decoder output for x, top code): (B, *example_shape), (B, code_size)."""
        code = self.encode(params, x)
        output = self.decode(params, code)
        chex.assert_rank(code, 2)
        chex.assert_equal_shape((output, x))
        return output, code

    def mean(self, output: jax.Array) -> jax.Array:
        """The decoder's mean E[x | output] (pixel probabilities for Bernoulli)."""
        if self.config.model_config.likelihood == "bernoulli":
            return jax.nn.sigmoid(output)
        return output

    def draw(self, key: jax.Array, output: jax.Array) -> jax.Array:
        """x ~ p(x | output)."""
        mc = self.config.model_config
        if mc.likelihood == "bernoulli":
            return jax.random.bernoulli(key, jax.nn.sigmoid(output)).astype(output.dtype)
        return output + mc.gaussian_scale * jax.random.normal(key, output.shape, output.dtype)

    def corrupt(self, keys: jax.Array, x: jax.Array) -> jax.Array:
        """x_tilde ~ C(. | x) for a batch x (B, ...), with one key per example, keys (B,)."""
        mc = self.config.model_config
        return jax.vmap(
            lambda key, example: autoencoding.corrupt(
                key, example, mc.corruption, mc.corruption_level
            )
        )(keys, x)

    def chain_step(self, params, keys: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """One DAE chain transition of a batch x (B, *example_shape), one key per chain (B,):
        x_t -> (x_{t+1}, E[x_{t+1} | x_tilde]). Corrupt, then draw from the reconstruction
        distribution (Bengio et al. 2013, algorithm 1)."""
        corrupt_keys, draw_keys = _split_each(keys)
        output, _ = self.reconstruct(params, self.corrupt(corrupt_keys, x))
        return jax.vmap(self.draw)(draw_keys, output), self.mean(output)

    # --- training --------------------------------------------------------------------------

    def _penalties(self, code: jax.Array) -> dict:
        """The sparsity penalties of a batch of codes (B, H): scalars."""
        mc = self.config.model_config
        penalties = {"train/l1_penalty": jnp.mean(autoencoding.l1_penalty(code))}
        if mc.sparsity_weight > 0:
            penalties["train/kl_sparsity"] = autoencoding.kl_sparsity_penalty(
                code, mc.sparsity_target
            )
        return penalties

    def _regularised(self, nll: jax.Array, code: jax.Array) -> tuple[jax.Array, dict]:
        mc = self.config.model_config
        penalties = self._penalties(code)
        loss = nll + mc.l1_penalty * penalties["train/l1_penalty"]
        if mc.sparsity_weight > 0:
            loss = loss + mc.sparsity_weight * penalties["train/kl_sparsity"]
        return loss, {"train/reconstruction_nll": nll, **penalties}

    def end_to_end_loss(self, params, x: jax.Array, keys: jax.Array) -> tuple[jax.Array, dict]:
        """Mean -log p(x | g(f(x_tilde))) over the batch, plus the penalties; with walkback,
        the mean over `walkback_steps` chain steps started at x, each step's reconstruction
        scored against x itself."""
        mc = self.config.model_config
        likelihood = functools.partial(
            autoencoding.reconstruction_nll,
            likelihood=mc.likelihood,
            gaussian_scale=mc.gaussian_scale,
        )
        state, nlls, codes = x, [], []
        for step in range(mc.walkback_steps):
            step_keys = jax.vmap(lambda key: jax.random.fold_in(key, step))(keys)  # noqa: B023
            corrupt_keys, draw_keys = _split_each(step_keys)
            output, code = self.reconstruct(params, self.corrupt(corrupt_keys, state))
            nlls.append(jnp.mean(likelihood(x, output)))
            codes.append(code)
            state = jax.lax.stop_gradient(jax.vmap(self.draw)(draw_keys, output))
        return self._regularised(jnp.mean(jnp.stack(nlls)), codes[0])

    def layer_loss(self, params, i: int, x: jax.Array, keys: jax.Array) -> tuple[jax.Array, dict]:
        """Stage i of the stacked autoencoder: layer i alone as a denoising autoencoder of
        the fixed clean code h_{i-1} of the layers below (x for i = 0); cross-entropy, since
        sigmoid codes lie in [0, 1] (Vincent et al. 2010, section 3.5)."""
        mc = self.config.model_config
        target = jax.lax.stop_gradient(self.encode(params, x, layers=i))
        code = self.encode_layer(params, i, self.corrupt(keys, target))
        output = self.decode_layer(params, i, code)
        if i == 0:
            nll = autoencoding.reconstruction_nll(target, output, mc.likelihood, mc.gaussian_scale)
        else:
            nll = autoencoding.reconstruction_nll(target, output, "bernoulli")
        return self._regularised(jnp.mean(nll), code)

    def stage_loss(self, stage, params, extras, batch, keys, step):
        del step
        if stage == len(self.stages) - 1:  # the end-to-end stage (the only one unstacked)
            loss, metrics = self.end_to_end_loss(params, batch["x"], keys)
        else:
            loss, metrics = self.layer_loss(params, stage, batch["x"], keys)
        return loss, (metrics, extras)

    def init(self, key, example_x):
        params, h = {}, jnp.zeros((1, *self.example_shape), jnp.float32)
        keys = jax.random.split(key, 2 * len(self.pairs))
        for i, (encoder, decoder) in enumerate(self.pairs):
            params[f"encoder_{i}"] = encoder.init(keys[2 * i], self._encoder_input(i, h))
            code_pre = encoder.apply(params[f"encoder_{i}"], self._encoder_input(i, h))
            params[f"decoder_{i}"] = decoder.init(keys[2 * i + 1], code_pre)
            h = code_pre
        if self.config.model_config.architecture == "recurrent":
            params = shift_forget_biases(params, self.config.model_config.forget_bias)
        return params, {}

    # --- evaluation ------------------------------------------------------------------------

    def eval_step(self, state, batch, keys, final):
        del final
        mc = self.config.model_config
        params, x = state.params, batch["x"]
        output, code = self.reconstruct(params, x)
        outputs = {
            "reconstruction_nll": autoencoding.reconstruction_nll(
                x, output, mc.likelihood, mc.gaussian_scale
            ),
            "squared_error": autoencoding.squared_error(x, self.mean(output)),
            "mean_activation": jnp.mean(code, axis=1),
            "active_fraction": jnp.mean(code > mc.active_threshold, axis=1),
        }
        if mc.corruption != "none":
            corrupted = self.corrupt(keys, x)
            denoised, _ = self.reconstruct(params, corrupted)
            outputs["denoising_nll"] = autoencoding.reconstruction_nll(
                x, denoised, mc.likelihood, mc.gaussian_scale
            )
        return outputs

    def summarize(self, outputs, final, constants):
        del final, constants
        summary = {}
        for name in ("reconstruction_nll", "denoising_nll"):
            if name in outputs:
                mean, stderr = mean_and_stderr(outputs[name])
                summary[f"test_{name}_nats"], summary[f"test_{name}_stderr"] = mean, stderr
        summary["test_squared_error"] = float(np.mean(outputs["squared_error"]))
        summary["code_mean_activation"] = float(np.mean(outputs["mean_activation"]))
        summary["code_active_fraction"] = float(np.mean(outputs["active_fraction"]))
        return summary

    def features(self, state, x):
        """The top code of the clean input, (B, code_size)."""
        return self.encode(state.params, x)

    def run_chain(self, params, key, x0, num_steps: int) -> jax.Array:
        """`num_steps` chain transitions from x0 (N, *example_shape); the decoder means of
        every step, (num_steps, N, *example_shape)."""

        def step(x, step_key):
            return self.chain_step(params, jax.random.split(step_key, len(x)), x)

        _, means = jax.lax.scan(step, x0, jax.random.split(key, num_steps))
        return means

    def _noise(self, key, num: int) -> jax.Array:
        """The chain's start: uniform pixels (binary ones for the Bernoulli likelihood)."""
        shape = (num, *self.example_shape)
        if self.config.model_config.likelihood == "bernoulli":
            return jax.random.bernoulli(key, 0.5, shape).astype(jnp.float32)
        return jax.random.uniform(key, shape)

    def sample(self, state, key, num):
        """The decoder means after `chain_steps` DAE chain steps from noise."""
        noise_key, chain_key = jax.random.split(key)
        x0 = self._noise(noise_key, num)
        return self.run_chain(state.params, chain_key, x0, self.config.model_config.chain_steps)[-1]

    def first_layer_filters(self, state):
        """mlp: the first encoder layer's weights as images; conv: the first convolution's
        kernels; recurrent: None (its input weights are per-row gate weights)."""
        mc = self.config.model_config
        if mc.architecture == "recurrent" or not self.spec.is_image:
            return None
        if mc.architecture == "mlp":
            kernel = np.asarray(jax.device_get(state.params["encoder_0"]["params"]["kernel"]))
            filters = kernel.T[:MAX_FILTERS]
            return filters.reshape((-1, *self.example_shape))
        kernel = jax.device_get(state.params["encoder_0"]["params"]["Conv_0"]["kernel"])
        return np.moveaxis(np.asarray(kernel), -1, 0)  # (out, k, k, in)

    def figures(self, state, key, test_x, to_unit):
        """reconstructions.png (inputs, corrupted inputs for a denoising autoencoder, and
        reconstructions) and chain.png (consecutive DAE chain steps: rows from test digits
        and from noise)."""
        if not self.spec.is_image:
            return {}
        mc = self.config.model_config
        corrupt_key, chain_key, noise_key = jax.random.split(key, 3)
        corrupted = self.corrupt(jax.random.split(corrupt_key, len(test_x)), test_x)
        output, _ = jax.jit(self.reconstruct)(state.params, corrupted)
        rows = [("input", to_unit(test_x))]
        if mc.corruption != "none":
            rows.append(("corrupted", to_unit(corrupted)))
        rows.append(("decoded", to_unit(self.mean(output))))
        half = CHAIN_FIGURE_ROWS // 2
        x0 = jnp.concatenate([test_x[:half], self._noise(noise_key, half)])
        chain = jax.jit(self.run_chain, static_argnums=3)(
            state.params, chain_key, x0, CHAIN_FIGURE_STEPS
        )
        chain_rows = [
            (f"{'test digit' if row < half else 'noise'} {row % half + 1}", to_unit(chain[:, row]))
            for row in range(len(x0))
        ]
        return {
            "reconstructions.png": functools.partial(plots.save_image_rows, rows),
            "chain.png": functools.partial(
                plots.save_image_rows,
                chain_rows,
                title=f"DAE chain: {CHAIN_FIGURE_STEPS} consecutive steps from each start",
            ),
        }


def _num_pairs(mc) -> int:
    return len(mc.hidden_sizes) if mc.architecture == "mlp" else 1
