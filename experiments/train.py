"""Train any genjax model, then evaluate it.

  python -m experiments.train --config=configs/vae.py --workdir=runs/vae
  python -m experiments.train --config=configs/vae.py:tiny --workdir=/tmp/t --config.num_steps=50

Resumes from the latest checkpoint in --workdir. Prints the final test metrics and writes them
to workdir/eval.json.
"""

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from genjax.train import ConfigError, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    try:
        results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ConfigError as error:  # found before any write: a message, not a traceback
        sys.exit(f"error: {error}")
    print(json.dumps(results, indent=2, sort_keys=True))
    if "test_nll_nats" in results:
        print(
            f"test log-likelihood: {-results['test_nll_nats']:.2f} nats "
            f"(+/- {results['test_nll_stderr']:.2f}, {results['nll_estimator']}, "
            f"{results['test_bits_per_dim']:.4f} bits/dim)"
        )


if __name__ == "__main__":
    app.run(main)
