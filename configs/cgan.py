"""Conditional GAN (Mirza & Osindero 2014) with DCGAN networks on mnist5k.

Launch:
  python -m experiments.train --config=configs/cgan.py --workdir=runs/cgan
Variants (`--config=configs/cgan.py:VARIANT`; several joined by commas):
  tiny  digits8x8, small networks, 20 steps: seconds

The one-hot label is concatenated to z in G and to D's input as 10 constant feature maps.
Samples cycle through the classes (the grid's columns are the digits 0-9), and eval.json adds
`label_accuracy`: how often genjax's digit classifier reads the requested digit.
"""

import ml_collections

from configs import common
from configs.dcgan import dcgan_model_config
from configs.gan import apply_image_tiny, image_gan_config


def conditional_config(conditioning: str, arg: str | None) -> ml_collections.ConfigDict:
    """DCGAN networks on mnist5k conditioned by `conditioning`, 100-sample grids (ten per
    class), with the variants of `arg`."""
    config = image_gan_config(
        dcgan_model_config(conditioning=conditioning),
        num_steps=3_000,
        eval_every=1_000,
        checkpoint_every=1_000,
        sample_every=1_000,
        log_every=100,
        num_samples=100,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return conditional_config("concat", arg)


VARIANTS = {"tiny": apply_image_tiny}
