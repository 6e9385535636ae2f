"""Measure the capacity of a Hopfield network and retrieve digit prototypes.

  python -m experiments.hopfield --config=configs/hopfield.py --workdir=runs/hopfield
  python -m experiments.hopfield --config=configs/hopfield.py:tiny --workdir=/tmp/hopfield

Writes config.json, results.json, capacity_curve.png and retrieval.png to --workdir, then
prints the empirical capacity next to the theoretical 0.138.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from genjax.models.energy.hopfield import validate_config
from genjax.workbench.hopfield import run_experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results and plots.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    try:
        validate_config(_CONFIG.value)  # run_experiment checks again; this one prints cleanly
    except ValueError as error:  # before any write
        sys.exit(f"error: {error}")
    results = run_experiment(_CONFIG.value, _WORKDIR.value)
    capacity = results["empirical_capacity"]
    capacity_text = "below the smallest load" if capacity is None else f"{capacity:.3f}"
    digits = results["digit_retrieval"]
    print(
        f"empirical capacity (exact retrieval rate >= {results['capacity_threshold']}): "
        f"alpha = {capacity_text}; theoretical: {results['theoretical_capacity']}"
    )
    print(
        f"digit prototypes {digits['classes']}: exact retrieval rate "
        f"{digits['exact_retrieval_rate']:.2f}, final overlaps "
        f"{[round(value, 3) for value in digits['final_overlap']]}"
    )
    print(f"results in {_WORKDIR.value}")


if __name__ == "__main__":
    app.run(main)
