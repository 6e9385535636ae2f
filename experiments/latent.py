"""Latent-space figures of a trained GAN: interpolations and vector arithmetic.

  python -m experiments.latent --workdir=runs/dcgan --out_dir=runs/dcgan/latent

Writes `interpolation.png` (rows walking between random latent points; a conditional model
keeps one class per row), and on labelled image data `arithmetic.png` with `arithmetic.json`:
heavy `class_a` - light `class_a` + light `class_b` on averaged latents (Radford et al. 2016,
sec. 6), with the measured ink of the results and how often genjax's digit classifier reads
them as `class_b` (see `genjax.models.gan.latent`).
"""

import json
import os

import jax
import numpy as np
from absl import app, flags, logging

from genjax.core.util import write_json_atomic
from genjax.evaluate import classifier, plots
from genjax.models.gan import latent
from genjax.train import Experiment, failures, load_config, restore_state

_WORKDIR = flags.DEFINE_string("workdir", None, "A GAN run's directory.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where the figures go (default: workdir).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the latent draws.")
_ROWS = flags.DEFINE_integer("rows", 8, "Interpolation rows.")
_COLS = flags.DEFINE_integer("cols", 10, "Images per interpolation row.")
_METHOD = flags.DEFINE_enum("method", "slerp", latent.INTERPOLATIONS, "Interpolation path.")
_CLASS_A = flags.DEFINE_integer("class_a", 0, "Arithmetic: the class whose weight is moved.")
_CLASS_B = flags.DEFINE_integer("class_b", 1, "Arithmetic: the class it is moved onto.")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    config = load_config(_WORKDIR.value)
    if config.model != "gan":
        raise app.UsageError(
            f"--workdir={_WORKDIR.value!r} holds a {config.model!r} run; experiments.latent "
            "walks a GAN generator's latent space (config.model='gan')."
        )
    experiment = Experiment(config)
    if not experiment.spec.is_image:
        raise app.UsageError(
            "experiments.latent draws image figures; this run's data are not images."
        )
    with failures.reading_checkpoints():
        state = restore_state(experiment, _WORKDIR.value, _STEP.value)
    model, to_unit = experiment.model, experiment.dataset.preprocessor.to_unit
    # The moving average, with standing batch norm statistics when the config asks for them.
    variables = jax.jit(model.sampling_variables)(state, jax.random.key(_SEED.value + 1))
    generate_jit = jax.jit(lambda z, labels: model.generate(variables, z, labels)[0])

    def generate(z, labels):
        return to_unit(np.asarray(generate_jit(np.asarray(z), np.asarray(labels, np.int32))))

    out_dir = _OUT_DIR.value or _WORKDIR.value
    os.makedirs(out_dir, exist_ok=True)
    key = jax.random.key(_SEED.value)
    latent_size = config.model_config.latent_size
    num_classes = model.num_classes if config.model_config.conditioning != "none" else None
    grid = latent.interpolation_grid(
        generate, key, latent_size, _ROWS.value, _COLS.value, num_classes, _METHOD.value
    )
    path = os.path.join(out_dir, "interpolation.png")
    plots.save_image_grid(grid, path, num_rows=_ROWS.value)
    print(f"wrote {path}")
    if experiment.spec.num_classes is None:
        return
    reader = classifier.load_or_train(config.dataset, experiment.dataset.data_dir)
    result = latent.vector_arithmetic(
        generate,
        reader.predict,
        jax.random.fold_in(key, 1),
        latent_size,
        _CLASS_A.value,
        _CLASS_B.value,
        num_classes,
    )
    a, b = _CLASS_A.value, _CLASS_B.value
    rows = [
        (f"heavy {a}", result["groups"]["heavy_a"]),
        (f"light {a}", result["groups"]["light_a"]),
        (f"light {b}", result["groups"]["light_b"]),
        ("averages", np.stack([result["means"][n] for n in ("heavy_a", "light_a", "light_b")])),
        (f"= heavy {b}?", result["results"]),
    ]
    path = os.path.join(out_dir, "arithmetic.png")
    plots.save_image_rows(rows, path, title=f"heavy {a} - light {a} + light {b}")
    measured = {key: value for key, value in result.items() if isinstance(value, float)}
    measured.update(class_a=a, class_b=b, seed=_SEED.value, step=int(state.step))
    write_json_atomic(os.path.join(out_dir, "arithmetic.json"), measured)
    print(f"wrote {path}")
    print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    app.run(main)
