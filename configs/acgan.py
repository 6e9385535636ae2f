"""AC-GAN (Odena, Olah & Shlens 2017) with DCGAN networks on mnist5k.

Launch:
  python -m experiments.train --config=configs/acgan.py --workdir=runs/acgan
Variants (`--config=configs/acgan.py:VARIANT`; several joined by commas):
  tiny  digits8x8, small networks, 20 steps: seconds

G takes the one-hot label with z; D does not see the label but predicts it with a second head,
and both networks add the class log-likelihood to their losses (eq. 2-3 of the paper, weight
`aux_weight` = 1).
Samples cycle through the classes (the grid's columns are the digits 0-9), and eval.json adds
`label_accuracy`: how often genjax's digit classifier reads the requested digit.
"""

import ml_collections

from configs.cgan import VARIANTS, conditional_config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return conditional_config("acgan", arg)


__all__ = ["VARIANTS", "get_config"]
