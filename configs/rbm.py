"""Bernoulli RBM on mnist5k, 500 hidden units, trained by CD-k or PCD.

Launch:
  python -m experiments.train --config=configs/rbm.py --workdir=runs/rbm_cd1
Variants (`--config=configs/rbm.py:VARIANT`, several joined by commas, e.g. `pcd,tiny`):
  cd1    CD-1 (the default)
  cd10   CD-10
  cd25   CD-25, the longest chains of Salakhutdinov & Murray (2008)
  pcd    persistent CD with one Gibbs sweep per update (Tieleman 2008)
  tiny   digits8x8, 16 hidden units, 20 steps, exact log Z: seconds on a laptop core

The final evaluation estimates log Z by AIS with the paper's 100 chains and 14,500 betas from
a base-rate RBM, and writes the test NLL to workdir/eval.json.

Measured (10,000 updates of 100, Adam 1e-3 with a cosine decay, seed 0, 2 CPU cores; wall time
includes the final AIS): test NLL by AIS 172.31 +/- 1.01 (CD-1, 4 min), 113.45 +/- 0.89 (CD-10,
6 min), 99.58 +/- 0.87 (CD-25, 9 min), 103.51 +/- 0.92 nats (PCD, 3.5 min).
"""

import ml_collections

from genjax.train import base_config


def shared_model_fields() -> dict:
    """model_config fields of every energy family: initial weights, AIS (Salakhutdinov &
    Murray's 100 chains x 14,500 betas; a cheap 16 x 1,000 for monitoring), exact log Z up to
    20 units, and 1,000 Gibbs sweeps per sample."""
    return dict(
        weight_scale=0.01,
        ais_chains=100,
        ais_betas=14_500,
        monitor_ais_chains=16,
        monitor_ais_betas=1_000,
        exact_max_units=20,
        sample_gibbs_steps=1_000,
    )


def rbm_model_config() -> ml_collections.ConfigDict:
    """500 hidden units, CD-1."""
    return ml_collections.ConfigDict(
        dict(
            num_hidden=500,
            visible="bernoulli",
            learn_sigma=False,
            sampler="cd",
            gibbs_steps=1,
            **shared_model_fields(),
        )
    )


def energy_config(model: str, model_config: ml_collections.ConfigDict, num_steps: int):
    """The training setup the energy configs share: mnist5k with dynamic binarization,
    batches of 100, Adam 1e-3 with a cosine decay, evaluation every 2,000 steps."""
    config = base_config()
    config.model = model
    config.model_config = model_config
    config.dataset = "mnist5k"
    config.preprocess.binarize = "dynamic"
    config.batch_size = 100
    config.eval_batch_size = 100
    config.num_steps = num_steps
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.lr_schedule = "cosine"
    config.log_every = 200
    config.eval_every = 2_000
    config.checkpoint_every = 2_000
    config.sample_every = 2_000
    return config


def apply_variants(config: ml_collections.ConfigDict, arg: str | None, apply_variant) -> None:
    """Applies the comma-separated variants of `arg` in order with `apply_variant`."""
    for variant in (arg or "").split(","):
        apply_variant(config, variant.strip())


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = energy_config("rbm", rbm_model_config(), num_steps=10_000)
    apply_variants(config, arg, apply_variant)
    return config


_VARIANTS = ("default", "cd1", "cd10", "cd25", "pcd", "tiny")


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> None:
    """Applies one named variant in place."""
    mc = config.model_config
    if variant in ("", "default", "cd1"):
        return
    if variant in ("cd10", "cd25"):
        mc.sampler, mc.gibbs_steps = "cd", int(variant[2:])
    elif variant == "pcd":
        mc.sampler, mc.gibbs_steps = "pcd", 1
    elif variant == "tiny":
        apply_tiny(config)
        mc.num_hidden = 16
    else:
        raise ValueError(f"unknown config variant {variant!r}; allowed: {_VARIANTS}")


def apply_tiny(config: ml_collections.ConfigDict) -> None:
    """The shared `tiny` settings of the energy configs: digits8x8, a few steps, cheap AIS."""
    mc = config.model_config
    config.dataset = "digits8x8"
    config.batch_size = 20
    config.eval_batch_size = 200
    config.num_steps = 20
    config.log_every = 5
    config.eval_every = 10
    config.checkpoint_every = 10
    config.sample_every = 0
    config.num_samples = 16
    config.progress_bar = False
    mc.ais_chains, mc.ais_betas = 16, 300
    mc.monitor_ais_chains, mc.monitor_ais_betas = 8, 100
    mc.sample_gibbs_steps = 50
