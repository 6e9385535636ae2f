"""MAF (Papamakarios, Pavlakou & Murray 2017) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/maf.py --workdir=runs/maf
Variants (`--config=configs/maf.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny  digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy   toy2d/8gaussians with 8 MAF layers; eval.json adds the entropy gap, and the run writes
        density.png

5 MADE-conditioned affine layers (one hidden layer of 512 ReLU units each) with reversals
between them, on the flattened 784 pixels; the density pass is one network call per layer,
sampling 784 sequential ones. Data as configs/realnvp.py: dequantized, logit space;
`test_bits_per_dim` is in the 256-level discrete space.
"""

import ml_collections

from configs import common, realnvp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config(
        "maf", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    mc = config.model_config
    mc.num_layers, mc.hidden_features, mc.num_hidden_layers = 5, 512, 1
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = realnvp.VARIANTS
