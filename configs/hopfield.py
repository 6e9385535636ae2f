"""Hopfield network capacity (Hopfield 1982; Amit, Gutfreund & Sompolinsky 1985).

Launch:
  python -m experiments.hopfield --config=configs/hopfield.py --workdir=runs/hopfield
Variants (`--config=configs/hopfield.py:VARIANT`):
  tiny       digits8x8, N = 64, 4 loads, 2 trials, 2 digits: ~7 s of CPU (tests, smoke runs)

For each load alpha = P / N in 0.02, 0.04, ..., 0.30, ten times: store P random +-1 patterns in
N = 500 units with the Hebbian rule, flip 10% of the units of every stored pattern and run the
asynchronous dynamics (random order) to a fixed point; a probe is retrieved when it ends exactly
on its pattern. Then store the thresholded class-mean digits 0-4 of mnist5k and retrieve them
from 10%-corrupted copies. Writes config.json, results.json, capacity_curve.png, retrieval.png.

Expected (default, measured: 25 s of CPU, 43-51 s wall on 2 busy CPU cores): exact retrieval
rate 1.00 up to alpha = 0.04, 0.99 at 0.06, 0.95 at 0.08, 0.71 at 0.10, 0.46 at 0.12, 0.18 at
0.14, 0.06 at 0.16 and <= 0.01 from 0.18 on (standard errors over the 10 trials <= 0.03). The
empirical capacity, where the rate crosses 0.5, is alpha = 0.117: below the theoretical 0.138
because ending exactly on all 500 units is stricter than the criterion of Amit et al. The mean
final overlap is still 0.99 at 0.12 and 0.94 at 0.14, then collapses: 0.80 at 0.16, 0.47 at
0.20, 0.34 at 0.30. Digits: the thresholded class means 0-4 of mnist5k overlap each other by
0.70 on average, and none is retrieved (final overlaps 0.66-0.88): all five probes fall into
one spurious state, nearest to the "2". Correlated patterns exhaust the Hebbian rule long
before 0.138 N; with `--config.model_config.num_digit_patterns=2` both prototypes (0, 1) are
retrieved exactly, with 3 none is.
"""

import ml_collections

from configs import common
from genjax.train import base_config


def hopfield_model_config() -> ml_collections.ConfigDict:
    """N = 500 units, 15 loads from 0.02 to 0.30, 10 trials, 10% of the units flipped."""
    return ml_collections.ConfigDict(
        dict(
            num_neurons=500,
            loads=tuple(round(0.02 * step, 2) for step in range(1, 16)),
            num_trials=10,
            flip_fraction=0.1,
            max_sweeps=50,
            order="random",
            num_digit_patterns=5,
        )
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base_config()
    config.model = "hopfield"
    config.model_config = hopfield_model_config()
    config.dataset = "mnist5k"
    config.preprocess.binarize = "none"  # prototypes threshold plain [0, 1] class means
    config.preprocess.scale = "unit"
    config.preprocess.dequantize = False
    config.preprocess.logit_alpha = 0.0
    config.eval_batch_size = 500  # batches of the pass that averages the digits
    common.apply_variants(config, arg, VARIANTS)
    return config


def _tiny(config: ml_collections.ConfigDict) -> None:
    mc = config.model_config
    mc.num_neurons, mc.loads, mc.num_trials = 64, (0.05, 0.1, 0.2, 0.4), 2
    mc.max_sweeps, mc.num_digit_patterns = 20, 2
    config.dataset = "digits8x8"
    config.progress_bar = False


VARIANTS = {"tiny": _tiny}
