"""Score any trained run's samples on one scale: Fréchet distance and precision/recall in
genjax's digit-classifier features (labelled images), or mode coverage (toy2d mixtures).

  python -m experiments.sample_quality --workdir=runs/vae --num=1000

Works for every family with samples (VAE, flows, autoregressive models, GANs): samples are
mapped to the unit-interval data space and compared with the test split there (see
`genjax.evaluate.sample_scorer`). Prints the metrics and writes them to
`workdir/sample_quality.json`.
"""

import json
import os

from absl import app, flags, logging

from genjax.core.util import write_json_atomic
from genjax.train import ConfigError, Experiment, failures, load_config, restore_state

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_NUM = flags.DEFINE_integer("num", 1000, "Number of samples to score.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
flags.mark_flag_as_required("workdir")

OUT_FILE = "sample_quality.json"


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = load_config(_WORKDIR.value)
    config.sample_quality_samples = _NUM.value
    try:
        experiment = Experiment(config)
    except ConfigError as error:
        message = str(error).replace("config.sample_quality_samples", "--num")
        raise app.UsageError(message) from None
    with failures.reading_checkpoints():
        state = restore_state(experiment, _WORKDIR.value, _STEP.value)
    metrics = experiment.sample_quality(state, progress=True)
    metrics.update(step=int(state.step), model=config.model, dataset=config.dataset)
    path = os.path.join(_WORKDIR.value, OUT_FILE)
    write_json_atomic(path, metrics)
    print(json.dumps(metrics, indent=2, sort_keys=True))
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
