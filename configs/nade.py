"""NADE on mnist5k (Larochelle & Murray 2011: 500 sigmoid hidden units, dynamic binarization).

Launch:
  python -m experiments.train --config=configs/nade.py --workdir=runs/nade
  python -m experiments.train --config=configs/nade.py --workdir=runs/nade_bmnist \
      --config.dataset=binarized_mnist      # full binarized MNIST from the TFDS catalog
Variants (`--config=configs/nade.py:VARIANT`; several joined by commas,
e.g. `order_agnostic,tiny`):
  tiny            digits8x8, 16 hidden units, 20 steps: seconds on a laptop core
  order_agnostic  a random ordering per example and step, with the observed-input mask
                  (Uria, Murray & Larochelle 2014), evaluated as an 8-ordering ensemble

eval.json holds the exact test NLL (`nll_estimator` 'exact', or 'exact-ensemble-K' with
`single_ordering_nll_nats` for the natural order alone).

Measured on the 1,000 mnist5k test digits (seed 0, 1,000 Adam steps of 100 at 1e-2 with a
cosine decay, 2 shared CPU cores at about 2.3 steps/s; wall time from start to eval.json):
  default         95.67 +/- 0.82 nats (exact; train loss 88.3), 6.7 min
  order_agnostic  121.79 +/- 1.02 nats (exact-ensemble-8); the natural order alone 134.63
                  +/- 1.16; 15 min. Far from converged (train loss 119.2 and falling): one
                  network for all D! orderings needs many more steps than 1,000.
The papers' numbers are on the 50,000-digit binarized MNIST and are not comparable.
"""

import ml_collections

from configs import common


def nade_model_config() -> ml_collections.ConfigDict:
    """500 hidden units, the natural (raster) order."""
    return ml_collections.ConfigDict(
        dict(
            num_hidden=500,
            order_agnostic=False,
            mask_input=False,
            num_eval_orderings=1,
            pass_method="auto",
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "nade",
        nade_model_config(),
        num_steps=1_000,
        learning_rate=1e-2,  # Adam; 1e-3 is far slower for a 1,000-step budget
        log_every=50,
        eval_every=250,
        checkpoint_every=250,
        sample_every=500,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny(config)
    config.model_config.num_hidden = 16


def _order_agnostic(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.order_agnostic = mc.mask_input = True
    mc.num_eval_orderings = 8


VARIANTS = {"tiny": _tiny, "order_agnostic": _order_agnostic}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "NADE"
