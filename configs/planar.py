"""Planar flows (Rezende & Mohamed 2015) fitted to a known 2-D density by the reverse KL.

Launch:
  python -m experiments.train --config=configs/planar.py --workdir=runs/planar
Variants (`--config=configs/planar.py:VARIANT`; several joined by commas, e.g. `radial,tiny`):
  tiny    8 layers, 20 steps: seconds on a laptop core
  radial  radial instead of planar layers

Planar and radial layers have no inverse, so the flow cannot score data; as in Rezende &
Mohamed's Sec. 6.1 it is fitted to an unnormalised target, here the exact toy2d/8gaussians
density p*, by minimising KL(q || p*) = E_q[log q(x) - log p*(x)] with x ~ q from the flow.
eval.json reports `reverse_kl_nats` (>= 0; 0 only for q = p*) from one draw per test point.
"""

import ml_collections

from configs import common, realnvp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config("planar", num_steps=5_000, eval_every=1_000)
    common.apply_toy2d(config)
    mc = config.model_config
    mc.objective, mc.num_layers = "reverse_kl", 32
    config.checkpoint_every, config.sample_every, config.log_every = 1_000, 0, 200
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    realnvp.apply_tiny(config)
    config.model_config.num_layers = 8


def _radial(config: ml_collections.ConfigDict) -> None:
    config.model_config.architecture = "radial"


VARIANTS = {"tiny": _tiny, "radial": _radial}
