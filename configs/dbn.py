"""Deep belief net on mnist5k, 784-500-1000, trained greedily by CD-1 (Hinton et al. 2006).

Launch:
  python -m experiments.train --config=configs/dbn.py --workdir=runs/dbn
Variants (`--config=configs/dbn.py:VARIANT`; several joined by commas,
e.g. `cd10,tiny`):
  cd1    CD-1 for every layer (the default)
  cd10   CD-10 for every layer
  deep   784-500-500-2000, the architecture of Hinton, Osindero & Teh (2006)
  tiny   digits8x8, 64-12-8, 2 x 10 steps, exact log Z of the top RBM: seconds on a laptop core

One run trains both RBMs in turn: `model_config.stage_steps` = (4000, 4000) updates, bottom
layer first, each with its own Adam state and cosine schedule; `config.num_steps` is their
sum. The final evaluation reports in workdir/eval.json the variational lower bound on
log p(v) of Salakhutdinov & Murray (2008, section 4) with 100 samples of the up-pass per test
example, the top RBM's log Z by AIS (100 chains, 14,500 betas), as `test_nll_nats` (an upper
bound on the NLL, up to the AIS error), plus the importance-weighted bound and each layer's
reconstruction error.

Measured (default config, seed 0, 2 CPU cores shared with other jobs, load average ~7):
  test_nll_nats 115.8 +/- 1.0 (variational bound, AIS log Z_top = 687.28 +/- 0.07),
  importance_weighted_nll 112.9, reconstruction error 21.8 (layer 0) and 2.6 (layer 1);
  about 6 minutes in all: 2 minutes of training (70-125 steps/s), the rest evaluation and AIS.
  During stage 0 the monitored bound (~268 nats) is that of an untrained top RBM: it only
  becomes meaningful once stage 1 starts (118 at step 6000).
"""

import ml_collections

from configs import common, rbm


def dbn_model_config() -> ml_collections.ConfigDict:
    """784-500-1000, CD-1, 4000 updates per layer, AIS with Salakhutdinov & Murray's settings."""
    return ml_collections.ConfigDict(
        dict(
            hidden_sizes=(500, 1000),
            stage_steps=(4_000, 4_000),
            gibbs_steps=1,
            eval_bound_samples=100,
            **rbm.shared_model_fields(),
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = rbm.energy_config("dbn", dbn_model_config(), num_steps=0)
    config.sample_every = 4_000
    common.apply_variants(config, arg, VARIANTS)
    config.num_steps = sum(config.model_config.stage_steps)
    return config


def _cd(k: int):
    def variant(config: ml_collections.ConfigDict) -> None:
        config.model_config.gibbs_steps = k

    return variant


def _deep(config: ml_collections.ConfigDict) -> None:
    config.model_config.hidden_sizes = (500, 500, 2_000)
    config.model_config.stage_steps = (4_000, 4_000, 4_000)


def _tiny(config: ml_collections.ConfigDict) -> None:
    rbm.apply_tiny(config)
    mc = config.model_config
    mc.hidden_sizes, mc.stage_steps, mc.eval_bound_samples = (12, 8), (10, 10), 10


# get_config sets num_steps from stage_steps after the variants.
VARIANTS = {"cd1": _cd(1), "cd10": _cd(10), "deep": _deep, "tiny": _tiny}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "DBN"
