"""Train every family's default image config on one dataset at one budget, then write one table
(test NLL with its estimator, Fréchet distance, precision/recall, steps reached, train time,
steps/s) and one figure of samples.

  python -m experiments.leaderboard                                  # mnist5k, 5 minutes each
  python -m experiments.leaderboard --budget=steps:1000              # 1,000 steps each
  python -m experiments.leaderboard --dataset=binarized_mnist        # networked machine
  python -m experiments.leaderboard --models=vae,iwae --budget=steps:200 --parallel=2 \
      --workdir=runs/leaderboard_small --out=experiments/results

`--budget` is wall time per run (`minutes:M`, `seconds:S`: every run trains until the trainer's
clock has counted that much, on this machine, one run at a time) or steps per run (`steps:N`);
genjax/workbench/leaderboard.py says what each means for schedules and staged families.

The runs are the configs in configs/ that name their row (`LEADERBOARD = "..."`); `--models`
picks them by file stem (vae, iwae, ...; `--dry_run` lists them all). Launching again into the
same --workdir resumes: finished runs are skipped.
`--dry_run` prints each run's command and exits. Configs that cannot run on the dataset are
listed as not applicable, not trained. Writes WORKDIR/leaderboard.md, .csv, .json and
leaderboard_samples.png, and copies them into --out (genjax/workbench/leaderboard.py).
"""

import sys

from absl import app, flags

from genjax.workbench import leaderboard, sweep

_DATASET = flags.DEFINE_string("dataset", "mnist5k", "config.dataset of every run.")
_BUDGET = flags.DEFINE_string(
    "budget",
    "minutes:5",
    "Every run's budget: wall time ('minutes:M', 'seconds:S'; needs --parallel=1) or steps "
    "('steps:N').",
)
_SAMPLE_QUALITY_SAMPLES = flags.DEFINE_integer(
    "sample_quality_samples", 1000, "Samples scored by Fréchet distance, precision/recall."
)
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of every run.")
_MODELS = flags.DEFINE_list("models", None, "Run names to train (default: all).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/leaderboard", "Root: one directory per run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (steps budgets only).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
_OUT = flags.DEFINE_string("out", None, "Directory to copy the results into (optional).")


def main(argv):
    del argv
    root = _WORKDIR.value
    try:
        if _PARALLEL.value < 1:
            raise leaderboard.LeaderboardError("--parallel must be at least 1")
        budget = leaderboard.parse_budget(_BUDGET.value)
        if budget.is_time and _PARALLEL.value != 1:
            raise leaderboard.LeaderboardError(
                f"--parallel={_PARALLEL.value} with --budget={_BUDGET.value}: a wall-time budget "
                "needs --parallel=1 (runs launched together share the CPU cores)"
            )
        entries = leaderboard.select_entries(leaderboard.entries(), _MODELS.value)
        specs = leaderboard.leaderboard_runs(
            entries, _DATASET.value, budget, _SAMPLE_QUALITY_SAMPLES.value, _SEED.value
        )
        not_applicable = leaderboard.check_runs(specs, root)
        description = dict(
            command=sys.argv,
            dataset=_DATASET.value,
            budget=str(budget),
            sample_quality_samples=_SAMPLE_QUALITY_SAMPLES.value,
            seed=_SEED.value,
        )
        sweep.write_manifest(root, specs, description, add_runs=True)
    except sweep.SweepError as error:
        sys.exit(f"error: {error}")
    runnable = [spec for spec in specs if spec.name not in not_applicable]
    lines = sweep.command_lines(runnable, root) if runnable else []
    lines += [f"# {name}: not applicable: {message}" for name, message in not_applicable.items()]
    print("\n".join(lines), flush=True)
    if _DRY_RUN.value:
        return
    sweep.execute(runnable, root, parallel=_PARALLEL.value)
    labels = {leaderboard.run_name(config_arg): label for label, config_arg in entries}
    rows = leaderboard.leaderboard_rows(specs, labels, root, not_applicable)
    paths = leaderboard.write_leaderboard(rows, root, _OUT.value)
    with open(paths["markdown"]) as f:
        print(f.read())
    print(
        "wrote " + ", ".join(paths.values()) + (f" (copied to {_OUT.value})" if _OUT.value else "")
    )
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        logs = "\n".join(f"  {row['run']}: {root}/{row['run']}/{sweep.LOG_FILE}" for row in failed)
        sys.exit(f"{len(failed)} of {len(rows)} runs failed; their logs:\n{logs}")


if __name__ == "__main__":
    app.run(main)
