"""Sweep config fields and seeds: one `experiments.train` run per grid point and seed, then a
table of mean ± std over seeds and a plot per metric.

  python -m experiments.sweep --config=configs/iwae.py --grid=num_importance_samples=1,5,50 \
      --grid=learning_rate=1e-3,3e-4 --seeds=3 --workdir=runs/sweep --parallel=2

Fields are bare names (top-level, else model_config) or dotted paths; `--set=field=value` fixes
a field in every run. Launching again into the same --workdir resumes: finished runs are
skipped. `--dry_run` prints each run's command (for a cluster scheduler) and exits; running the
sweep afterwards launches what is still unfinished and aggregates. Writes WORKDIR/results.csv,
WORKDIR/results.md and WORKDIR/plots/<metric>.png (genjax/workbench/sweep.py).
"""

import sys

from absl import app, flags

from genjax.workbench import sweep

_CONFIG = flags.DEFINE_string("config", None, "Config file (path[:variant]).")
_GRID = flags.DEFINE_multi_string("grid", [], "field=v1,v2,... (repeatable).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds 0..N-1 per grid point.")
_SET = flags.DEFINE_multi_string("set", [], "field=value set in every run (repeatable).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep root: one directory per run.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the runs' commands and exit.")
_METRICS = flags.DEFINE_list("metrics", None, "Metrics to tabulate (default: all numeric).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    root = _WORKDIR.value
    try:
        if _SEEDS.value < 1 or _PARALLEL.value < 1:
            raise sweep.SweepError("--seeds and --parallel must be at least 1")
        config = sweep.load_config_file(_CONFIG.value)
        grid = sweep.parse_grid(config, _GRID.value)
        fixed = sweep.parse_assignments(config, _SET.value)
        specs = sweep.grid_runs(_CONFIG.value, config, grid, range(_SEEDS.value), fixed)
        sweep.validate_runs(config, specs, root)
        description = dict(command=sys.argv, grid=_GRID.value, seeds=_SEEDS.value, set=_SET.value)
        sweep.write_manifest(root, specs, description)
    except sweep.SweepError as error:
        sys.exit(f"error: {error}")
    print("\n".join(sweep.command_lines(specs, root)), flush=True)
    if _DRY_RUN.value:
        return
    sweep.execute(specs, root, parallel=_PARALLEL.value)
    rows = sweep.collect(specs, root)
    try:
        paths = sweep.write_results(rows, root, _METRICS.value)
    except sweep.SweepError as error:
        sys.exit(f"error: {error} (runs are done: rerun with other --metrics to aggregate)")
    with open(paths["markdown"]) as f:
        print(f.read())
    print(f"wrote {paths['csv']}, {paths['markdown']} and {paths['plots']}/")
    failed = [spec for spec, row in zip(specs, rows, strict=True) if row["status"] == "failed"]
    if failed:
        logs = "\n".join(f"  {spec.name}: {root}/{spec.name}/{sweep.LOG_FILE}" for spec in failed)
        sys.exit(f"{len(failed)} of {len(specs)} runs failed; their logs:\n{logs}")


if __name__ == "__main__":
    app.run(main)
