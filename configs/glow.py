"""Glow (Kingma & Dhariwal 2018) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/glow.py --workdir=runs/glow
Variants (`--config=configs/glow.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny   digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy    toy2d/8gaussians with 8 flat Glow steps; eval.json adds the entropy gap, and the run
         writes density.png
  plain  the plain 1x1 convolution (slogdet of a full matrix) instead of the LU form

Each level squeezes, runs `num_layers` steps (ActNorm, 1x1 convolution, affine coupling with
the sigmoid scale), then factors out half of the channels. ActNorm is initialised on the first
`init_examples` training examples (data-dependent initialisation). Data as configs/realnvp.py:
dequantized, logit space; `test_bits_per_dim` is in the 256-level discrete space.
"""

import ml_collections

from configs import common, realnvp


def _plain(config: ml_collections.ConfigDict) -> None:
    config.model_config.lu = False


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config(
        "glow", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    config.model_config.num_layers = 4
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {**realnvp.VARIANTS, "plain": _plain}
