"""WGAN-GP (Gulrajani et al. 2017) with DCGAN networks on mnist5k.

Launch:
  python -m experiments.train --config=configs/wgan_gp.py --workdir=runs/wgan_gp
Variants (`--config=configs/wgan_gp.py:VARIANT`; several joined by commas):
  tiny  digits8x8, small networks, 20 generator steps: seconds

Algorithm 1 of the paper: the Wasserstein critic loss plus lambda = 10 times the gradient
penalty on interpolates, 5 critic updates (each on its own batch of 64) per generator update,
Adam 1e-4 with betas (0, 0.9); the critic uses layer norm, not batch norm (sec. 4). The networks
are configs/dcgan.py's. eval.json: Fréchet distance and precision/recall as in dcgan.py.
Measured (seed 0, 2 CPU cores): Fréchet distance 205.7, precision 0.679, recall 0.100 after 600
generator updates in 33 min, far from DCGAN's 87.6 at 2,000; more updates were not affordable
on the CPU.
"""

import ml_collections

from configs import common
from configs.dcgan import dcgan_model_config
from configs.gan import apply_image_tiny, apply_wgan_gp, image_gan_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = image_gan_config(
        dcgan_model_config(),
        num_steps=600,
        eval_every=200,
        checkpoint_every=200,
        sample_every=200,
        log_every=50,
    )
    apply_wgan_gp(config)
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {"tiny": apply_image_tiny}
