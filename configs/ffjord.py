"""FFJORD, a continuous normalizing flow (Chen et al. 2018; Grathwohl et al. 2019), on toy2d.

Launch:
  python -m experiments.train --config=configs/ffjord.py --workdir=runs/ffjord
Variants (`--config=configs/ffjord.py:VARIANT`; several joined by commas, e.g. `image,tiny`):
  tiny        20 steps, a small network: seconds on a laptop core (keeps the dataset)
  toy         toy2d/8gaussians: the default's data, named as the other flows name it
  hutchinson  train with Hutchinson's Gaussian trace estimator instead of the exact trace
  discretize  backpropagate through the solver's steps (diffrax's DirectAdjoint) instead of
              the continuous adjoint; 2.3x slower per step here (1.3 against 3.0 steps/s)
  image       dequantized 8x8 digits (64 dimensions, RealNVP's logit), trained with
              Hutchinson's Rademacher estimator; evaluated with the exact trace

Default: toy2d/8gaussians, one ODE whose dynamics are a tanh MLP of three hidden layers of 64
units fed the time, integrated over [0, 1] by Dopri5 with rtol = atol = 1e-5 and the exact
trace (two dimensions), gradients by the continuous adjoint as in the paper; eval.json adds
the true entropy and the gap to it, the solver's mean step count and its tolerances, and the
run writes density.png. FFJORD's paper stacks several such blocks with ConcatSquash layers
and softplus; one block of concatenated-time layers is the small CPU version.
"""

import ml_collections

from configs import common, realnvp


def _tiny(config: ml_collections.ConfigDict) -> None:
    realnvp.apply_tiny(config)
    config.model_config.hidden_features = 16


def _hutchinson(config: ml_collections.ConfigDict) -> None:
    config.model_config.trace_estimator = "gaussian"


def _discretize(config: ml_collections.ConfigDict) -> None:
    config.model_config.ode_gradient = "discretize"


def _image(config: ml_collections.ConfigDict) -> None:
    fresh = realnvp.flow_config("ffjord")
    config.dataset, config.preprocess = "digits8x8", fresh.preprocess
    config.batch_size, config.eval_batch_size = 64, 200
    config.model_config.trace_estimator = "rademacher"
    config.sample_every, config.num_samples = 1_000, 36


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = realnvp.flow_config("ffjord", num_steps=2_000, checkpoint_every=500)
    mc = config.model_config
    mc.hidden_features, mc.num_hidden_layers, mc.ode_gradient = 64, 3, "adjoint"
    common.apply_toy2d(config)
    config.eval_every, config.sample_every, config.log_every = 500, 0, 100
    common.apply_variants(config, arg, VARIANTS)
    return config


VARIANTS = {
    "tiny": _tiny,
    "toy": common.apply_toy2d,
    "hutchinson": _hutchinson,
    "discretize": _discretize,
    "image": _image,
}
