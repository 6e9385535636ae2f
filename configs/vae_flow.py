"""VAE with a flow posterior on mnist5k: configs/vae.py's default model, data, optimizer and
20,000 steps, with q(z | x) a planar flow of K = 8 layers (Rezende & Mohamed 2015) on top of
the Gaussian encoder, amortised by an encoder context h of 32 units.

Launch:
  python -m experiments.train --config=configs/vae_flow.py --workdir=runs/vae_flow
  python -m experiments.train --config=configs/vae_flow.py:iaf --workdir=runs/vae_iaf
Variants (`--config=configs/vae_flow.py:VARIANT`; several joined by commas, e.g. `iaf,tiny`):
  tiny  configs/vae.py's tiny, with a K = 2 flow and a small context (tests, smoke runs)
  iaf   an inverse autoregressive flow (Kingma et al. 2016) instead: K = 2 IAF layers, each a
        MADE with one hidden layer of 64 units that reads h in its first layer
  conv  configs/vae.py's convolutional encoder/decoder (the context head sits on its last
        hidden layer)
Override the flow with --config.model_config.posterior_flow_layers=16 (K) and
--config.model_config.context_size=64 (C).

Compared with configs/vae.py at the same steps, in eval.json: `test_nll_nats` (the IWAE-5000
estimate of -log p(x) on the 1,000 test digits) and `test_elbo`, both of which include the
flow's log-det through log q(z_K | x). A flow posterior should tighten the ELBO (a smaller
gap test_elbo + test_nll_nats) and may lower the NLL. configs/vae.py's default run:
test NLL 103.6 ± 1.0 nats (IWAE-5000), 15 of 50 active units (its docstring); test ELBO
-109.75 nats (runs/vae/eval.json of that run; configs/vae.py's docstring does not state it).

Measured (seed 0, 20,000 steps, 2 CPU cores, IWAE-5000 on the 1,000 mnist5k test digits):
  configs/vae.py (Gaussian q)  test NLL 103.62 +/- 1.00, test ELBO -109.75, 15/50 active units
  default (planar, K = 8)      test NLL 101.80 +/- 0.97, test ELBO -107.74, 40/50 active, 6.6 min
  iaf (K = 2, 64 hidden)       test NLL 102.89 +/- 0.98, test ELBO -108.92, 50/50 active, 6.5 min
"""

import ml_collections

from configs import common, vae


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = vae.get_config(None)
    config.model_config.posterior_flow = "planar"
    config.model_config.posterior_flow_layers = 8
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    vae.VARIANTS["tiny"](config)
    mc = config.model_config
    mc.posterior_flow_layers, mc.posterior_flow_hidden, mc.context_size = 2, 16, 8


def _iaf(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.posterior_flow, mc.posterior_flow_layers, mc.posterior_flow_hidden = "iaf", 2, 64


# two_layer is left out: a flow posterior needs one stochastic layer.
VARIANTS = {"tiny": _tiny, "iaf": _iaf, "conv": vae.VARIANTS["conv"]}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "VAE, planar flow posterior"
