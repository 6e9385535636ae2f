"""A mixture of 100 Bernoullis on mnist5k, fitted by stepwise EM (the weakest tractable baseline).

Launch:
  python -m experiments.train --config=configs/mixture.py --workdir=runs/mixture
  python -m experiments.train --config=configs/mixture.py:toy --workdir=runs/mixture_toy
Variants (`--config=configs/mixture.py:VARIANT`; several joined by commas, e.g. `toy,tiny`):
  tiny  digits8x8, 4 components, 20 steps: seconds on a laptop core
  toy   8 full-covariance Gaussians on toy2d/8gaussians; eval.json adds the true entropy and
        the gap to it, and the run writes density.png
Other covariances: `--config.model_config.covariance=diag` (or `spherical`).

eval.json holds the exact test NLL (`nll_estimator` 'exact'). Measured: docs/classic-models.md.
"""

import ml_collections

from configs import common


def mixture_model_config() -> ml_collections.ConfigDict:
    """100 Bernoulli components; stepwise EM with eta_t = (t + 2)^-0.6."""
    return ml_collections.ConfigDict(
        dict(
            distribution="bernoulli",
            num_components=100,
            covariance="full",
            reg_covar=1e-6,
            min_probability=1e-3,
            stepwise_alpha=0.6,
            init_examples=4000,
            kmeans_iterations=10,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = common.binarized_mnist5k(
        "mixture",
        mixture_model_config(),
        num_steps=2_000,
        log_every=100,
        eval_every=500,
        checkpoint_every=500,
        sample_every=1_000,
    )
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    common.apply_tiny_keeping_toy2d(config)
    config.model_config.num_components = 4
    config.model_config.init_examples = 100


def _toy(config: ml_collections.ConfigDict) -> None:
    common.apply_toy2d(config)
    mc = config.model_config
    mc.distribution, mc.covariance, mc.num_components = "gaussian", "full", 8
    config.num_steps, config.eval_every, config.checkpoint_every = 1_000, 250, 250


VARIANTS = {"tiny": _tiny, "toy": _toy}

# This config's row on the cross-family leaderboard (`genjax.workbench.leaderboard`).
LEADERBOARD = "Mixture of 100 Bernoullis"
