"""Helmholtz machine on mnist5k: a 784-200-200 sigmoid belief network and a recognition network
of the same shape, trained by reweighted wake-sleep (Bornschein & Bengio 2015).

Launch:
  python -m experiments.train --config=configs/helmholtz.py --workdir=runs/helmholtz
Variants (`--config=configs/helmholtz.py:VARIANT`; several joined by commas, e.g.
`vimco,tiny`):
  tiny        a few seconds on a laptop core (tests, smoke runs)
  wake_sleep  plain wake-sleep (Hinton et al. 1995): one sample, sleep-phase q update
  vimco       the IWAE-5 bound with VIMCO's q gradient (Mnih & Rezende 2016)
  q_wake      reweighted wake-sleep with the wake-phase q update only
  q_sleep     reweighted wake-sleep with the sleep-phase q update only
  one_layer   one layer of 200 binary latents

The default takes the settings of Bornschein & Bengio's code for MNIST 200-200
(jbornschein/reweighted-ws, mnist/param-mnist-200-200.py: K = 5, learning rate 1e-3 for the
p, wake-q and sleep-q updates alike, batch 100), with sigmoid-layer recognition networks and
this repository's optimizer, Adam with a cosine decay.

Expected (default, 20,000 steps; measured with the launch command above, 13 minutes in all
on 2 shared CPU cores, 594 s of training): test NLL 109.0 ± 0.9 nats by the IWAE-5000
estimate with q as the proposal on the 1,000 mnist5k test digits (ELBO -125.4).
experiments/results/bornschein2015.md compares the rules at 3,000 updates, 3 seeds:
wake-sleep 153.5, reweighted wake-sleep 138.6, VIMCO 137.8 nats.
"""

import ml_collections

from configs import common


def helmholtz_model_config() -> ml_collections.ConfigDict:
    """Two layers of 200 binary latents, reweighted wake-sleep with K = 5 and both q updates."""
    return ml_collections.ConfigDict(
        dict(
            latent_sizes=(200, 200),
            # 'wake_sleep' | 'reweighted_wake_sleep' | 'vimco' (genjax/models/helmholtz.py).
            rule="reweighted_wake_sleep",
            # Reweighted wake-sleep's q update: 'wake' | 'sleep' | 'both'.
            q_update="both",
            num_importance_samples=5,
            eval_importance_samples=5000,
            eval_chunk_size=500,
            monitor_importance_samples=100,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "helmholtz",
        helmholtz_model_config(),
        num_steps=20_000,
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
    mc.latent_sizes = (8, 4)
    mc.eval_importance_samples, mc.eval_chunk_size, mc.monitor_importance_samples = 64, 32, 8


def _wake_sleep(config: ml_collections.ConfigDict) -> None:
    config.model_config.rule = "wake_sleep"
    config.model_config.num_importance_samples = 1


def _vimco(config: ml_collections.ConfigDict) -> None:
    config.model_config.rule = "vimco"


def _q_wake(config: ml_collections.ConfigDict) -> None:
    config.model_config.q_update = "wake"


def _q_sleep(config: ml_collections.ConfigDict) -> None:
    config.model_config.q_update = "sleep"


def _one_layer(config: ml_collections.ConfigDict) -> None:
    config.model_config.latent_sizes = (200,)


VARIANTS = {
    "tiny": _tiny,
    "wake_sleep": _wake_sleep,
    "vimco": _vimco,
    "q_wake": _q_wake,
    "q_sleep": _q_sleep,
    "one_layer": _one_layer,
}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "Helmholtz machine (RWS)"
