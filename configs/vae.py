"""VAE on mnist5k (Burda et al. 2016 architecture, dynamic binarization).

Launch:
  python -m experiments.train --config=configs/vae.py --workdir=runs/vae
Variants (`--config=configs/vae.py:VARIANT`; several joined by commas,
e.g. `conv,tiny`):
  tiny       a few seconds on a laptop core (tests, smoke runs)
  two_layer  Burda's 2-stochastic-layer model, 784-100-100-100-50-50-50
  conv       convolutional encoder/decoder for the x <-> z_1 maps

Expected (default, 20,000 steps, about 2 minutes on 2 CPU cores): test NLL 104.0 ± 1.0 nats by
the IWAE-5000 estimate on the 1,000 mnist5k test digits, 23 of 50 latent units active.
"""

import ml_collections

from configs import common


def vae_model_config() -> ml_collections.ConfigDict:
    """Burda et al. (2016) one-stochastic-layer VAE: 784-200-200-50, tanh."""
    return ml_collections.ConfigDict(
        dict(
            architecture="mlp",
            hidden_sizes=((200, 200),),
            latent_sizes=(50,),
            likelihood="bernoulli",
            num_importance_samples=1,
            objective="elbo",
            analytic_kl=False,
            eval_importance_samples=5000,
            eval_chunk_size=500,
            monitor_importance_samples=100,
            # Flow posterior on z_1 (configs/vae_flow.py): 'none' | 'planar' | 'iaf', its
            # number of layers K, the MADE width of an IAF layer, and the width C of the
            # encoder's context h that conditions the flow (read only with a flow).
            posterior_flow="none",
            posterior_flow_layers=4,
            posterior_flow_hidden=64,
            context_size=32,
            # 'gaussian' | 'bernoulli' (binary latents, trained with --config.estimator=score
            # or vimco), and the baseline of the score-function estimator: 'running_mean'
            # (its decay), 'learned' (an MLP b(x) of `baseline_hidden` units) or 'none'.
            latent_distribution="gaussian",
            score_baseline="running_mean",
            baseline_decay=0.99,
            baseline_hidden=100,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "vae",
        vae_model_config(),
        num_steps=20_000,
        adam_eps=1e-4,  # Burda et al. 2016
        lr_schedule="exponential",
        lr_decay_rate=10 ** (-1 / 7),  # 10^(-i/7) over 7 stages, as Burda et al.
        log_every=200,
        eval_every=5_000,
        checkpoint_every=5_000,
        sample_every=5_000,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny(config)
    mc = config.model_config
    mc.hidden_sizes, mc.latent_sizes = ((32,),), (4,)
    mc.eval_importance_samples, mc.eval_chunk_size, mc.monitor_importance_samples = 64, 32, 8


def _two_layer(config: ml_collections.ConfigDict) -> None:
    config.model_config.hidden_sizes = ((100, 100), (50, 50))
    config.model_config.latent_sizes = (100, 50)


def _conv(config: ml_collections.ConfigDict) -> None:
    config.model_config.architecture = "conv"
    config.model_config.hidden_sizes = ((256,),)


# Shared by the VAE-family configs (configs/iwae.py).
VARIANTS = {"tiny": _tiny, "two_layer": _two_layer, "conv": _conv}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "VAE"
