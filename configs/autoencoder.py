"""A denoising autoencoder on binarized mnist5k, sampled by its Markov chain (a GSN).

Launch:
  python -m experiments.train --config=configs/autoencoder.py --workdir=runs/dae
  python -m experiments.train --config=configs/autoencoder.py:stacked --workdir=runs/sdae
Variants (`--config=configs/autoencoder.py:VARIANT`; several joined by commas, e.g. `conv,tiny`):
  denoising  the default: 784-1000-784 sigmoid units, salt-and-pepper noise 0.4 on the input,
             walkback of 2 chain steps
  plain      the same network without corruption or walkback (its samples are not scored)
  stacked    500-250 sigmoid layers, each pretrained alone as a denoising autoencoder of the
             codes below it, then fine-tuned end to end (masking noise 0.25)
  sparse     1000 sigmoid units, no corruption, KL sparsity target rho = 0.05 (weight 0.1)
  conv       convolutional encoder/decoder (32, 64 channels), a 128-unit ReLU code; 2,000 steps
  recurrent  LSTM sequence autoencoder over the image rows, a 256-unit code, no corruption,
             forget-gate biases of 3, Adam 3e-3; 2,000 steps
  tiny       digits8x8, 20 steps: seconds on a laptop core

eval.json: the test reconstruction NLL (nats, under the Bernoulli decoder) on clean inputs and,
for the denoising variants, on corrupted ones; the squared error; the code's mean activation
and active fraction; a logistic-regression probe on the codes against the same probe on the
pixels; and (`sample_quality_samples`) the Fréchet distance and precision/recall of the DAE
chain's samples. Measured: docs/classic-models.md.
"""

import ml_collections

from configs import common


def autoencoder_model_config() -> ml_collections.ConfigDict:
    """784-1000-784 sigmoid DAE: salt-and-pepper 0.4, walkback 2, 100 chain steps to sample."""
    return ml_collections.ConfigDict(
        dict(
            architecture="mlp",
            hidden_sizes=(1000,),
            conv_channels=(32, 64),
            activation="sigmoid",
            likelihood="bernoulli",
            gaussian_scale=1.0,
            corruption="salt_and_pepper",
            corruption_level=0.4,
            walkback_steps=2,
            layerwise_pretraining=False,
            l1_penalty=0.0,
            sparsity_target=0.05,
            sparsity_weight=0.0,
            forget_bias=3.0,
            chain_steps=100,
            active_threshold=0.5,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "autoencoder",
        autoencoder_model_config(),
        num_steps=5_000,
        log_every=100,
        eval_every=1_000,
        checkpoint_every=1_000,
        sample_every=1_000,
        sample_quality_samples=1_000,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def _plain(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.corruption, mc.corruption_level, mc.walkback_steps = "none", 0.0, 1
    # Without corruption the chain x -> draw from g(f(x)) is no sampler of the data (it
    # stays near its start), so its samples are not scored.
    config.sample_quality_samples = 0


def _denoising(config: ml_collections.ConfigDict) -> None:
    del config  # the default


def _stacked(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.hidden_sizes, mc.layerwise_pretraining = (500, 250), True
    mc.corruption, mc.corruption_level, mc.walkback_steps = "masking", 0.25, 1
    mc.stage_steps = (1_500, 1_500, 2_000)  # layer 0, layer 1, fine-tuning


def _sparse(config: ml_collections.ConfigDict) -> None:
    _plain(config)
    config.model_config.sparsity_weight = 0.1


def _conv(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    # ReLU codes: a sigmoid code fed by 3,136 convolutional features saturates within 100
    # steps and the decoder falls back to the mean digit (measured: 205 nats at step 400).
    mc.architecture, mc.hidden_sizes, mc.activation, mc.active_threshold = (
        "conv",
        (128,),
        "relu",
        0.0,
    )
    config.num_steps = 2_000


def _recurrent(config: ml_collections.ConfigDict) -> None:
    # A plain sequence autoencoder, as Srivastava et al. (2015): no corruption, so no chain
    # samples to score. Train reconstruction NLL at 400 of 400 steps (seed 0): forget-gate
    # bias 0 (Flax's) 194 nats, 1 176, 3 167; with bias 3, at 1,100 of 1,500 steps, Adam 3e-3
    # 74 nats against 1e-3's 95.
    _plain(config)
    mc = config.model_config
    mc.architecture, mc.hidden_sizes, mc.active_threshold = "recurrent", (256,), 0.0
    config.num_steps, config.learning_rate = 2_000, 3e-3


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny(config)
    mc = config.model_config
    mc.hidden_sizes = tuple(min(size, 32) for size in mc.hidden_sizes)
    mc.conv_channels, mc.chain_steps = (4, 8), 5
    if "stage_steps" in mc:
        mc.stage_steps = (5, 5, 10)
    config.sample_quality_samples = 0


VARIANTS = {
    "plain": _plain,
    "denoising": _denoising,
    "stacked": _stacked,
    "sparse": _sparse,
    "conv": _conv,
    "recurrent": _recurrent,
    "tiny": _tiny,
}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "Denoising autoencoder (GSN chain)"
