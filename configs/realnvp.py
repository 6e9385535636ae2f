"""RealNVP (Dinh, Sohl-Dickstein & Bengio 2017) on dequantized 8-bit mnist5k.

Launch:
  python -m experiments.train --config=configs/realnvp.py --workdir=runs/realnvp
Variants (`--config=configs/realnvp.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny  digits8x8, a small flow, 20 steps: seconds on a laptop core
  toy   toy2d/8gaussians with 8 'half'-mask couplings; eval.json adds the true entropy and the
        gap to it (the floor no model can beat) and the run writes density.png

Data: uniformly dequantized pixels in [0, 1], then RealNVP's logit transform with its paper's
alpha = 0.05 (Dinh et al. 2017, Sec. 4.1: x -> logit(alpha + (1 - 2 alpha) x)); its log-det
enters the likelihood, so `test_nll_nats` is the density of the dequantized [0, 1]
data and `test_bits_per_dim` is in the 256-level discrete space of published tables
(eval.json's `nll_space` says so).
"""

import ml_collections

from configs import common


def flow_model_config(architecture: str) -> ml_collections.ConfigDict:
    """The `config.model = 'flow'` fields, CPU-sized: 2 scales, conditioners 32 wide; affine
    couplings with RealNVP's tanh scale, standard-normal priors, MAF's clamp at |3|; splines
    of 8 bins on [-3, 3]; FFJORD with the exact trace, tolerances 1e-5, T = 1."""
    return ml_collections.ConfigDict(
        dict(
            architecture=architecture,
            objective="max_likelihood",
            num_layers=3,
            num_scales=2,
            hidden_features=32,
            num_hidden_layers=2,
            lu=True,
            init_examples=256,
            coupling="affine",
            coupling_scale="tanh",
            prior="standard",
            max_log_scale=3.0,
            spline_form="coupling",
            num_bins=8,
            tail_bound=3.0,
            trace_estimator="exact",
            ode_gradient="discretize",
            ode_rtol=1e-5,
            ode_atol=1e-5,
            ode_time=1.0,
            ode_max_steps=1000,
        )
    )


def flow_config(architecture: str, **fields) -> ml_collections.ConfigDict:
    """The training setup the image flows share: dequantized mnist5k in RealNVP's logit space
    (alpha = 0.05; MAF and Glow set their own papers' preprocessing), batches of 64, Adam 1e-3
    with a cosine decay and gradient clipping."""
    config = common.dequantized_mnist5k(
        "flow",
        flow_model_config(architecture),
        batch_size=64,
        eval_batch_size=200,
        grad_clip_norm=100.0,
        log_every=50,
        num_samples=36,
        **fields,
    )
    config.preprocess.logit_alpha = 0.05
    return config


def apply_tiny(config: ml_collections.ConfigDict) -> None:
    """`common.apply_tiny` and a small flow; a toy2d dataset chosen before is kept."""
    common.apply_tiny_keeping_toy2d(config)
    mc = config.model_config
    mc.num_layers, mc.hidden_features, mc.num_hidden_layers, mc.init_examples = 2, 8, 1, 64


def apply_toy(config: ml_collections.ConfigDict) -> None:
    """toy2d/8gaussians with flat couplings: many more, cheaper steps."""
    common.apply_toy2d(config)
    mc = config.model_config
    mc.num_layers, mc.hidden_features = 8, 64
    config.num_steps, config.eval_every, config.checkpoint_every = 5_000, 1_000, 1_000
    config.sample_every, config.log_every = 0, 200


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = flow_config(
        "realnvp", num_steps=2_000, eval_every=500, checkpoint_every=500, sample_every=1_000
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {"tiny": apply_tiny, "toy": apply_toy}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "RealNVP"
