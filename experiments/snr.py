"""Gradient signal-to-noise ratio of a trained VAE-family run, per estimator, K and group.

  python -m experiments.snr --workdir=runs/vae --estimators=reparam,dreg \
      --num_samples=1,3,10,30,100 --num_draws=1000

Rainforth et al. (2018) and Tucker et al. (2019): at the run's final parameters, on a fixed
batch of training examples, each estimator's gradient of the bound (`--objective`, default the
IWAE bound) is drawn `--num_draws` times per K; the SNR |E g| / std g is averaged over the
elements of the encoder's and the decoder's parameters (`genjax.evaluate.gradient_snr`).
Every (estimator, K) obeys the rules of the run's config validation before anything is drawn:
an estimator of another bound is refused (dreg and vimco with --objective=elbo), and stl with
the IWAE bound and K > 1 prints a BiasedEstimatorWarning. Writes snr.json, snr.md and snr.png
to --out (default workdir/snr).
"""

import json
import os

from absl import app, flags, logging

from genjax.core.util import write_json_atomic, write_text_atomic
from genjax.evaluate import gradient_snr
from genjax.objectives import ESTIMATORS
from genjax.workbench import snr

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained VAE-family run's directory.")
_ESTIMATORS = flags.DEFINE_list("estimators", ["reparam", "dreg"], f"Among {ESTIMATORS}.")
_NUM_SAMPLES = flags.DEFINE_list("num_samples", ["1", "3", "10", "30", "100"], "Values of K.")
_NUM_DRAWS = flags.DEFINE_integer("num_draws", 1000, "Gradient draws per (estimator, K).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 10, "Training examples in the fixed batch.")
_OBJECTIVE = flags.DEFINE_enum("objective", "iwae", ["iwae", "elbo"], "The bound.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the gradient draws.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/snr).")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    num_samples = [int(k) for k in _NUM_SAMPLES.value]
    try:
        rows, step = snr.measure_run(
            _WORKDIR.value,
            _ESTIMATORS.value,
            num_samples,
            _NUM_DRAWS.value,
            _BATCH_SIZE.value,
            _OBJECTIVE.value,
            _SEED.value,
            progress=True,
        )
    except ValueError as error:  # a bad flag or a run of another family: a message
        raise app.UsageError(str(error)) from None
    out = _OUT.value or os.path.join(_WORKDIR.value, "snr")
    os.makedirs(out, exist_ok=True)
    settings = {
        "workdir": _WORKDIR.value,
        "step": step,
        "objective": _OBJECTIVE.value,
        "num_draws": _NUM_DRAWS.value,
        "batch_size": _BATCH_SIZE.value,
        "seed": _SEED.value,
    }
    write_json_atomic(os.path.join(out, "snr.json"), {"settings": settings, "rows": rows})
    table = gradient_snr.snr_markdown(rows)
    write_text_atomic(os.path.join(out, "snr.md"), table)
    gradient_snr.save_snr_plot(
        rows, os.path.join(out, "snr.png"), title=f"gradient SNR, {_OBJECTIVE.value} bound"
    )
    print(table)
    print(json.dumps(settings))
    print(f"wrote {out}/snr.json, snr.md, snr.png")


if __name__ == "__main__":
    app.run(main)
