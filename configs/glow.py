"""Glow (Kingma & Dhariwal 2018) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/glow.py --workdir=runs/glow
Variants (`--config=configs/glow.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny   digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy    toy2d/8gaussians with 8 flat Glow steps; eval.json adds the entropy gap, and the run
         writes density.png
  plain     the plain 1x1 convolution (slogdet of a full matrix) instead of the LU form
  tanh      RealNVP's tanh coupling scale instead of Glow's sigmoid (which can only contract in
            the density direction)
  additive  NICE's additive couplings (shift only, log-det 0), Glow's other coupling
  standard  standard-normal priors instead of the learned ones

Each level squeezes, runs `num_layers` steps (ActNorm, 1x1 convolution, affine coupling with
Glow's sigmoid scale), then factors out half of the channels, which get Glow's learned split
prior N(mu(h), sigma(h)^2) from a zero-initialised 3x3 convolution of the kept half h; the last
level's latent gets the learned top prior (`model_config.prior = 'learned'`). ActNorm is
initialised on the first `init_examples` training examples (data-dependent initialisation).

Data: Glow's preprocessing, no logit transform (Kingma & Dhariwal 2018 and their code: x / 256
- 0.5 plus uniform dequantization noise): dequantized pixels scaled to [-1, 1]
(`preprocess.scale = 'symmetric'`), a factor 2 from Glow's [-0.5, 0.5] that the first ActNorm
absorbs; its log-det D log 2 enters the likelihood, so `test_bits_per_dim` is in the 256-level
discrete space.

Measured with `--config.num_steps=300` (seed 0): 5.73 bits/dim; `:tanh` 3.72; `:standard,tanh`
4.06. The config before it (sigmoid, standard priors, RealNVP's logit with alpha 0.05) gave
4.39, and with the tanh scale 2.81 (README, normalizing flows).
"""

import ml_collections

from configs import common, realnvp


def _plain(config: ml_collections.ConfigDict) -> None:
    config.model_config.lu = False


def _tanh(config: ml_collections.ConfigDict) -> None:
    config.model_config.coupling_scale = "tanh"


def _additive(config: ml_collections.ConfigDict) -> None:
    config.model_config.coupling = "additive"


def _standard(config: ml_collections.ConfigDict) -> None:
    config.model_config.prior = "standard"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config(
        "glow", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    mc = config.model_config
    mc.num_layers, mc.coupling_scale, mc.prior = 4, "sigmoid", "learned"
    config.preprocess.logit_alpha, config.preprocess.scale = 0.0, "symmetric"
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {
    **realnvp.VARIANTS,
    "plain": _plain,
    "tanh": _tanh,
    "additive": _additive,
    "standard": _standard,
}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "Glow"
