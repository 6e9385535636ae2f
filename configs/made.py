"""MADE on mnist5k (Germain et al. 2015: one masked hidden layer of 500, dynamic binarization).

Launch:
  python -m experiments.train --config=configs/made.py --workdir=runs/made
  python -m experiments.train --config=configs/made.py --workdir=runs/made_bmnist \
      --config.dataset=binarized_mnist      # full binarized MNIST from the TFDS catalog
Variants (`--config=configs/made.py:VARIANT`; several joined by commas,
e.g. `ensemble,tiny`):
  tiny      digits8x8, 32 hidden units, 20 steps: seconds on a laptop core
  ensemble  8 order-agnostic mask sets in training, evaluated as an 8-member ensemble

eval.json holds the exact test NLL (`nll_estimator` 'exact', or 'exact-ensemble-K' with
`single_mask_nll_nats` for the first mask set alone).

Measured on the 1,000 mnist5k test digits (seed 0, 20,000 Adam steps of 100 with a cosine
decay, 2 shared CPU cores; wall time from start to eval.json):
  default   107.58 +/- 0.99 nats (exact; train loss 96.2: MADE overfits 4,000 digits), 4.6 min
  ensemble  102.20 +/- 0.81 nats (exact-ensemble-8); its first mask set alone 106.59 +/- 0.88,
            3.9 min
The papers' numbers are on the 50,000-digit binarized MNIST and are not comparable.
"""

import ml_collections

from configs import common


def made_model_config() -> ml_collections.ConfigDict:
    """One hidden layer of 500 ReLU units, one mask set in the natural order."""
    return ml_collections.ConfigDict(
        dict(
            hidden_sizes=(500,),
            activation="relu",
            num_masks=1,
            order_agnostic=False,
            degrees="random",
            num_eval_masks=1,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "made",
        made_model_config(),
        eval_batch_size=500,
        num_steps=20_000,
        log_every=200,
        eval_every=2_000,
        checkpoint_every=2_000,
        sample_every=5_000,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny(config)
    config.model_config.hidden_sizes = (32,)
    config.learning_rate = 1e-2


def _ensemble(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.num_masks = mc.num_eval_masks = 8
    mc.order_agnostic = True


VARIANTS = {"tiny": _tiny, "ensemble": _ensemble}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "MADE"
