"""Draw samples from a trained run and save them as a PNG grid (or a 2-D scatter).

python -m experiments.sample --workdir=runs/vae --num=64 --out=grid.png
"""

from absl import app, flags, logging

from genjax.evaluate import plots
from genjax.train import Experiment, failures, load_config, restore_state

_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.")
_OUT = flags.DEFINE_string("out", "samples.png", "Output PNG path.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed (folded into the run's key).")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if _NUM.value <= 0:
        raise app.UsageError(f"--num={_NUM.value} must be positive")
    experiment = Experiment(load_config(_WORKDIR.value))
    with failures.reading_checkpoints():
        state = restore_state(experiment, _WORKDIR.value, _STEP.value)
    samples = experiment.sample(state, _NUM.value, seed=_SEED.value)
    if experiment.spec.is_image:
        plots.save_image_grid(samples, _OUT.value)
    else:
        plots.save_scatter_2d(samples, _OUT.value, title=f"{_NUM.value} samples")
    print(f"wrote {_NUM.value} samples to {_OUT.value}")


if __name__ == "__main__":
    app.run(main)
