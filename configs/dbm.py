"""A two-hidden-layer deep Boltzmann machine on mnist5k, 784-500-1000 (Salakhutdinov & Hinton
2009).

Launch:
  python -m experiments.train --config=configs/dbm.py --workdir=runs/dbm
Variants (`--config=configs/dbm.py:VARIANT`, several joined by commas):
  default  the architecture of the paper on a CPU budget (below)
  tiny     digits8x8, 64-12-8, 5 + 5 + 10 steps, exact log Z: seconds on a laptop core

One run has three stages (`model_config.stage_steps`, summing to `config.num_steps`), each
with its own Adam state and cosine schedule: layer 1 pretrained as an RBM with doubled
visibles, layer 2 as an RBM with doubled hiddens on layer 1's probabilities (both CD-1), then
joint training with a 10-iteration mean-field positive phase and one persistent Gibbs chain
per batch example (`gibbs_steps` sweeps per update). The paper trains on all 60,000 MNIST
images for far more updates; this budget fits minutes on a CPU.

The final evaluation reports in workdir/eval.json the mean-field lower bound on log p(v)
(50 fixed-point iterations per test example) with log Z by AIS on h1 (v and h2 summed out;
100 chains, 14,500 betas), as `test_nll_nats`: an upper bound on the NLL, up to the AIS error.

Measured (default config, seed 0, 2 CPU cores shared with other jobs, load average ~7):
  test_nll_nats 107.9 +/- 1.0 (mean-field bound, AIS log Z = 1462.5 +/- 0.3), reconstruction
  error 22.4; about 9 minutes in all: 2.5 minutes of pretraining, 4 of joint training (~16
  steps/s), the rest evaluation and AIS. The first few hundred joint updates disturb the
  pretrained model (reconstruction error 26 -> 38) before it recovers (21.5 at the end).
"""

import ml_collections

from configs import common, rbm


def dbm_model_config() -> ml_collections.ConfigDict:
    """784-500-1000; CD-1 pretraining, then joint training; AIS with the paper's settings."""
    return ml_collections.ConfigDict(
        dict(
            hidden_sizes=(500, 1000),
            stage_steps=(2_000, 2_000, 4_000),
            pretrain_gibbs_steps=1,
            gibbs_steps=5,
            mean_field_iterations=10,
            eval_mean_field_iterations=50,
            **rbm.shared_model_fields(),
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = rbm.energy_config("dbm", dbm_model_config(), num_steps=0)
    config.sample_every = 4_000
    common.apply_variants(config, arg, VARIANTS)
    config.num_steps = sum(config.model_config.stage_steps)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    rbm.apply_tiny(config)
    mc = config.model_config
    mc.hidden_sizes, mc.stage_steps, mc.eval_mean_field_iterations = (12, 8), (5, 5, 10), 20


# get_config sets num_steps from stage_steps after the variants.
VARIANTS = {"tiny": _tiny}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "DBM"
