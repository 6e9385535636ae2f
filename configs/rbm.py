"""Bernoulli RBM on mnist5k, 500 hidden units, trained by CD-k, PCD or parallel tempering.

Launch:
  python -m experiments.train --config=configs/rbm.py --workdir=runs/rbm_cd1
Variants (`--config=configs/rbm.py:VARIANT`; several joined by commas,
e.g. `pcd,tiny`):
  cd1    CD-1 (the default)
  cd10   CD-10
  cd25   CD-25, the longest chains of Salakhutdinov & Murray (2008)
  pcd    persistent CD with one Gibbs sweep per update (Tieleman 2008)
  pt     parallel tempering (Desjardins et al. 2010): persistent sets of 10 chains at inverse
         temperatures 1, 8/9, ..., 0 on the AIS path, one sweep each and neighbour swaps
         per update, the beta = 1 chains giving the negative phase (10x PCD's sweeps)
  tiny   digits8x8, 16 hidden units, 20 steps, exact log Z: seconds on a laptop core

The final evaluation estimates log Z by AIS with the paper's 100 chains and 14,500 betas from
a base-rate RBM, and writes the test NLL to workdir/eval.json. Beside it, RAISE (Burda, Grosse
& Salakhutdinov 2015) anneals one chain per test example backwards along the same path
(1,000 betas, `raise_betas`), a conservative estimate: AIS tends to overestimate log-likelihood,
RAISE to underestimate it, so `test_nll_nats` and `test_nll_raise_nats` bracket the test NLL
(more betas tighten RAISE; 14,500 would cost 10x the forward AIS, one chain per test digit).

Measured (10,000 updates of 100, Adam 1e-3 with a cosine decay, seed 0, 2 CPU cores; wall time
includes the final AIS): test NLL by AIS 172.31 +/- 1.01 (CD-1, 4 min), 113.45 +/- 0.89 (CD-10,
6 min), 99.58 +/- 0.87 (CD-25, 9 min), 103.51 +/- 0.92 nats (PCD, 3.5 min). These predate the
visible biases initialised from the data's pixel means (`visible_bias_init='data_mean'`, now the
default); at 1,000 updates (`--config.num_steps=1000`, CD-1, seed 0) the new start gave 144.00
+/- 1.26 nats (AIS log Z 414.08 +/- 0.04) against 144.93 +/- 1.28 (log Z 450.80 +/- 0.03) with
`visible_bias_init='zeros'`, on the same machine: one seed, within the spread over test digits.
That CD-1 run's RAISE (1 chain x 1,000 betas) gave 146.90 +/- 1.31, so its NLL lies in about
[144.0, 146.9]. PCD and PT at 1,000 updates (seed 0, one run each, AIS 100 x 5,000 betas): 151.44
+/- 1.26 and 152.16 +/- 1.23 nats, no difference at this length (PT's final swap rate 0.40).
"""

import ml_collections

from configs import common


def shared_model_fields() -> dict:
    """model_config fields of every energy family: initial weights, visible biases from the
    training data's means and weight decay (when `config.weight_decay` > 0) on the weights
    only, as in Hinton's (2010) guide, AIS (Salakhutdinov & Murray's 100 chains x 14,500
    betas; a cheap 16 x 1,000 for monitoring), exact log Z up to 20 units, and 1,000 Gibbs
    sweeps per sample."""
    return dict(
        weight_scale=0.01,
        visible_bias_init="data_mean",
        weight_decay_biases=False,
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
            num_temperatures=10,
            raise_chains=1,
            raise_betas=1_000,
            **shared_model_fields(),
        )
    )


def energy_config(model: str, model_config: ml_collections.ConfigDict, num_steps: int):
    """The training setup the energy configs share (`common.binarized_mnist5k`), evaluation,
    checkpoints and sample grids every 2,000 steps."""
    return common.binarized_mnist5k(
        model,
        model_config,
        num_steps=num_steps,
        log_every=200,
        eval_every=2_000,
        checkpoint_every=2_000,
        sample_every=2_000,
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = energy_config("rbm", rbm_model_config(), num_steps=10_000)
    common.apply_variants(config, arg, VARIANTS)
    return config


def apply_tiny(config: ml_collections.ConfigDict) -> None:
    """The shared `tiny` settings of the energy configs: `common.apply_tiny` and cheap AIS."""
    common.apply_tiny(config)
    mc = config.model_config
    mc.ais_chains, mc.ais_betas = 16, 300
    mc.monitor_ais_chains, mc.monitor_ais_betas = 8, 100
    mc.sample_gibbs_steps = 50
    if "raise_betas" in mc:  # the RBM family's RAISE
        mc.raise_betas = 300


def _cd(k: int):
    def variant(config: ml_collections.ConfigDict) -> None:
        config.model_config.sampler, config.model_config.gibbs_steps = "cd", k

    return variant


def _pcd(config: ml_collections.ConfigDict) -> None:
    config.model_config.sampler, config.model_config.gibbs_steps = "pcd", 1


def _pt(config: ml_collections.ConfigDict) -> None:
    config.model_config.sampler, config.model_config.gibbs_steps = "pt", 1


def _tiny(config: ml_collections.ConfigDict) -> None:
    apply_tiny(config)
    config.model_config.num_hidden = 16


VARIANTS = {"cd1": _cd(1), "cd10": _cd(10), "cd25": _cd(25), "pcd": _pcd, "pt": _pt, "tiny": _tiny}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "RBM (CD-1)"
