"""Re-evaluate a run's latest (or a chosen) checkpoint and rewrite its eval.json.

  python -m experiments.evaluate --config=configs/vae.py --workdir=runs/vae
  python -m experiments.evaluate --workdir=runs/vae --step=5000

Without --config the run's own workdir/config.json is used. --config with overrides changes the
evaluation settings, e.g. --config.model_config.eval_importance_samples=1000.
"""

import json

from absl import app, flags, logging
from ml_collections import config_flags

from genjax.train import (
    Experiment,
    failures,
    final_evaluation,
    load_config,
    restore_state,
    validate,
)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to evaluate (default: latest).")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value if _CONFIG.value is not None else load_config(_WORKDIR.value)
    validate(config, _WORKDIR.value)  # evaluation-only model_config fields may differ
    experiment = Experiment(config)
    with failures.reading_checkpoints():
        state = restore_state(experiment, _WORKDIR.value, _STEP.value)
    results = final_evaluation(experiment, state, _WORKDIR.value)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
