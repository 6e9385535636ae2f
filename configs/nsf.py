"""Neural spline flows (Durkan, Bekasov, Murray & Papamakarios 2019) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/nsf.py --workdir=runs/nsf
  python -m experiments.train --config=configs/nsf.py:toy --workdir=runs/nsf_toy
Variants (`--config=configs/nsf.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny            digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy             toy2d/8gaussians with 8 coupling layers of 64-unit MLPs, splines on [-4, 4];
                  eval.json adds the true entropy and the gap to it, the run writes density.png
  autoregressive  RQ-NSF (AR): MADE-conditioned autoregressive splines instead of couplings

RQ-NSF (C): four rational-quadratic spline couplings (8 bins on [-3, 3], linear tails) over
the even / odd partition of the flattened image, each conditioned by a ReLU MLP of two hidden
layers of 256 units; RealNVP's logit preprocessing (alpha = 0.05, whose range +-2.94 lies
inside the splines' interval), its log-det in the likelihood, so `test_bits_per_dim` is in the
256-level discrete space. The paper's image flows are multi-scale Glow-style networks with
1x1 convolutions between the couplings; this flat stack, sized for a CPU, is not that.
"""

import ml_collections

from configs import common, realnvp


def _toy(config: ml_collections.ConfigDict) -> None:
    realnvp.apply_toy(config)
    config.model_config.tail_bound = 4.0  # toy2d/8gaussians lies within about +-3.5


def _autoregressive(config: ml_collections.ConfigDict) -> None:
    config.model_config.spline_form = "autoregressive"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config(
        "nsf", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    mc = config.model_config
    mc.num_layers, mc.hidden_features, mc.num_hidden_layers = 4, 256, 2
    mc.num_bins, mc.tail_bound = 8, 3.0
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {"tiny": realnvp.apply_tiny, "toy": _toy, "autoregressive": _autoregressive}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "Neural spline flow"
