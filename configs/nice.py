"""NICE (Dinh, Krueger & Bengio 2015) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/nice.py --workdir=runs/nice
Variants (`--config=configs/nice.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny     digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy      toy2d/8gaussians with 8 additive couplings of 64-unit MLPs; eval.json adds the true
           entropy and the gap to it, and the run writes density.png
  gaussian the standard-normal prior instead of the paper's logistic one
  affine   RealNVP's affine coupling (tanh scale) in place of NICE's additive one

The paper's MNIST model (Sec. 5): four additive couplings over the odd / even partition of the
784 pixels, each conditioned by a ReLU MLP of five hidden layers of 1,000 units, a learned
diagonal scaling at the top, the standard logistic prior. Data as the paper's: uniformly
dequantized pixels rescaled to [0, 1] (no logit transform), so `test_nll_nats` is the density
of the [0, 1] data and `test_bits_per_dim` is in the 256-level discrete space of published
tables (the paper reports a test log-likelihood of 1980.50 nats on the full MNIST, 4.36
bits/dim in that space). Adam at 1e-3 with batches of 64 as the other flows here (the paper's
Adam used beta2 = 0.99 and eps = 1e-4 with no stated batch); 2,000 steps on mnist5k, not the
paper's 1,500 epochs of 50,000 digits.
"""

import ml_collections

from configs import common, realnvp


def _toy(config: ml_collections.ConfigDict) -> None:
    realnvp.apply_toy(config)
    config.model_config.num_hidden_layers = 2


def _gaussian(config: ml_collections.ConfigDict) -> None:
    config.model_config.prior = "standard"


def _affine(config: ml_collections.ConfigDict) -> None:
    config.model_config.coupling = "affine"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config(
        "nice", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    mc = config.model_config
    mc.num_layers, mc.hidden_features, mc.num_hidden_layers = 4, 1000, 5
    mc.coupling, mc.prior = "additive", "logistic"
    config.preprocess.logit_alpha, config.preprocess.scale = 0.0, "unit"
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {
    "tiny": realnvp.apply_tiny,
    "toy": _toy,
    "gaussian": _gaussian,
    "affine": _affine,
}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "NICE"
