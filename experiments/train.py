"""Train any genjax model, then evaluate it.

  python -m experiments.train --config=configs/vae.py --workdir=runs/vae
  python -m experiments.train --config=configs/vae.py:tiny --workdir=/tmp/t --config.num_steps=50

Resumes from the newest intact checkpoint in --workdir. Prints the final test metrics and
writes them to workdir/eval.json.

Exit status: 0 done; 1 an `error:` line (a bad config, a workdir in use by a live run,
divergence, a full disk, a corrupt checkpoint under --config.strict_resume; the traceback is in
workdir/error.log); 75 stopped by SIGTERM or SIGINT after checkpointing (run the same command
again to resume: what a requeue script tests for); 128 + N a second signal N, at once.

Several processes (hosts, or one process per GPU) run the same command, joined by
`jax.distributed` (genjax.train.distributed):

  python -m experiments.train ... --coordinator_address=10.0.0.1:1234 --num_processes=4 \
    --process_id=$I
  python -m experiments.train ... --distributed=auto   # Cloud TPU slice, SLURM, Open MPI
"""

import json
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from genjax.train import ConfigError, distributed, failures, preemption, train_and_evaluate
from genjax.train.lock import WorkdirLockedError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
flags.mark_flags_as_required(["config", "workdir"])
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "off",
    ["off", "auto"],
    "'auto': let JAX detect a multi-process run (Cloud TPU slice, SLURM, Open MPI, "
    "Kubernetes). The three flags below (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, "
    "$JAX_PROCESS_ID) set one up explicitly whatever this flag says.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", "", "host:port of process 0 in a multi-process run."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    workdir = _WORKDIR.value
    failures.quiet_library_errors(workdir)
    try:
        distributed.initialize(
            _COORDINATOR.value,
            _NUM_PROCESSES.value,
            _PROCESS_ID.value,
            auto=_DISTRIBUTED.value == "auto",
        )
        results = train_and_evaluate(_CONFIG.value, workdir)
    except (ConfigError, distributed.SettingsError, WorkdirLockedError) as error:  # no write
        sys.exit(f"error: {error}")
    except preemption.Preempted as stopped:
        print(f"genjax: {stopped}", file=sys.stderr, flush=True)
        sys.exit(preemption.PREEMPTED_EXIT_STATUS)
    except Exception as error:
        line = failures.error_line(error, workdir)
        if line is None:  # not a failure we know: a bug, shown with its traceback
            failures.write_log(error, workdir)
            raise
        failures.exit_now(line)
    if jax.process_index():
        return  # process 0 reports
    print(json.dumps(results, indent=2, sort_keys=True))
    if "test_nll_nats" in results:
        print(
            f"test log-likelihood: {-results['test_nll_nats']:.2f} nats "
            f"(+/- {results['test_nll_stderr']:.2f}, {results['nll_estimator']}, "
            f"{results['test_bits_per_dim']:.4f} bits/dim)"
        )


if __name__ == "__main__":
    app.run(main)
