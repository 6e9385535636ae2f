"""A leaderboard: every family's default image config trained on one dataset at one budget, in
wall time or in steps, then one table and one figure of samples (`python -m
experiments.leaderboard`).

  python -m experiments.leaderboard                              # mnist5k, 5 minutes each
  python -m experiments.leaderboard --budget=steps:1000          # 1,000 steps each
  python -m experiments.leaderboard --dataset=binarized_mnist    # on a networked machine
  python -m experiments.leaderboard --models=vae,iwae --budget=minutes:1 --workdir=runs/lb_small

Each config that names its row (`LEADERBOARD = "VAE"` in configs/vae.py; `entries()` finds
them) is trained by `experiments.train` (launched and resumed by
`genjax.workbench.sweep.execute`) with the same dataset, budget, seed and number of scored samples;
everything else (architecture, batch size, optimizer, preprocessing) is the config's own. The
budget (`Budget`, `parse_budget`) is either

  - wall time (`minutes:M`, `seconds:S`): every run gets `config.max_train_seconds` and trains
    until the trainer's clock has counted that much (`genjax.train.loop.TrainClock`: the train
    loop including compilation, not evaluation, sampling or checkpoints), reporting the steps
    it reached. `config.num_steps` is `TIME_BUDGET_NUM_STEPS`, far beyond any family's reach,
    so learning-rate schedules defined over num_steps (cosine, exponential) hardly decay.
    Staged families (DBN, DBM) count their stages in steps, so they keep their config's own
    `stage_steps` and `num_steps`: the budget may end them inside a stage, or they finish
    their stages before it (the table marks such rows). The rows share wall time on one
    machine, so launch them one at a time (`--parallel=1`);
  - steps (`steps:N`): every run trains `num_steps=N`; staged families get their `stage_steps`
    scaled to N in proportion (`scale_stage_steps`). The rows share a budget in steps, not in
    compute.

The monitoring evaluation and the periodic sample grids are switched off; the trainer's final
evaluation writes each run's eval.json (test NLL with its estimator, Fréchet distance and
precision/recall of the samples, the steps reached and the training time) and its final samples
grid.

Left out: sparse coding (`NOT_RANKED`, with the reason) and the Hopfield network
(`configs/hopfield.py`), an associative memory: it has no likelihood and no generative sampler
whose samples could be scored, so it has nothing to put in either column.
`configs/grbm.py`, `configs/planar.py` and `configs/gan.py` default to 2-D toy densities (a
Gaussian-Bernoulli RBM with an exact log Z, reverse-KL flows that need a known target density,
the mode-collapse benchmark), not images. `configs/wgan_gp.py`, `configs/cgan.py` and
`configs/acgan.py` are other losses and conditioning of the GAN family, which DCGAN represents.
`--models=vae,iwae` picks entries by run name (the config file's stem).

A config that cannot run on the chosen dataset is not an error for the leaderboard: it is
listed as "not applicable" with the trainer's message and not trained. The trainer's own checks
(`genjax.train.validate`) find most such configs before anything is launched (every default
config on a toy2d dataset: its preprocessing does not apply there); checks that need the data
run only inside the trainer (a flow on binarized data is refused once the dataset says it is
binary), and a run whose trainer exits with such a configuration error is reported the same way.

Layout of a leaderboard root (`--workdir`, default runs/leaderboard):

  sweep.json                the manifest (`genjax.workbench.sweep.write_manifest`): a later launch
                            into the same root must select the same runs with the same dataset,
                            budget and seed, and then resumes (finished runs are skipped); a
                            config that names a new row joins as a new run
  <run name>/               one `experiments.train` workdir per model, e.g. `vae/`, with
                            train.log (the process's output)
  leaderboard.md            the table, grouped by data kind and ranked within it by test NLL
                            (by FD without one), with the setup and notes
  leaderboard.csv, .json    every row's fields (a row's samples grid as a path under the root)
  leaderboard_samples.png   the final samples grid of every finished model
"""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import ml_collections
import numpy as np
from matplotlib import image as matplotlib_image

from genjax.core import util
from genjax.core.util import write_json_atomic
from genjax.evaluate import plots, sample_scorer
from genjax.train import config as config_lib
from genjax.workbench import sweep

# Where the leaderboard finds its configs: every file here that sets `LEADERBOARD`.
CONFIG_DIR = "configs"
MARKDOWN_FILE = "leaderboard.md"
CSV_FILE = "leaderboard.csv"
JSON_FILE = "leaderboard.json"
FIGURE_FILE = "leaderboard_samples.png"
NOT_APPLICABLE = "not applicable"
NO_LIKELIHOOD = "none (no likelihood)"
# Registered families with no leaderboard row, and why (every other family names one).
NOT_RANKED = {
    "sparse_coding": "a dictionary of image patches: no likelihood, and its samples are "
    "independent patches tiled into an image, with no image-level structure to score",
}
# Data kinds in table order: NLLs compare only within one kind.
DATA_KINDS = ("binarized", "dequantized", "[0, 1] intensities", "[-1, 1] intensities")
# The columns of leaderboard.csv / the keys of each row, in order.
COLUMNS = (
    "model",
    "run",
    "config",
    "status",
    "reason",
    "dataset",
    "data",
    "seed",
    "max_train_seconds",
    "num_steps",
    "steps",
    "stopped_by",
    "batch_size",
    "test_nll_nats",
    "test_nll_stderr",
    "test_bits_per_dim",
    "nll_estimator",
    "nll_space",
    "frechet_distance",
    "precision",
    "recall",
    "precision_recall_k",
    "sample_quality_num_samples",
    "sample_quality_reference",
    "feature_network",
    "train_seconds",
    "steps_per_sec",
    "train_machine",
    "samples",
)
# The eval.json fields a row copies (eval.json's "model" and "dataset" name the family and the
# data, not the row's label).
_RESULT_KEYS = (
    *COLUMNS[COLUMNS.index("test_nll_nats") : COLUMNS.index("train_seconds")],
    "stopped_by",
    "train_machine",
)
# config.num_steps of a run under a wall-time budget: a cap that no family reaches first.
TIME_BUDGET_NUM_STEPS = 1_000_000
BUDGET_KINDS = ("minutes", "seconds", "steps")
_TRAINER_ERROR_PREFIX = "error: "  # experiments/train.py exits with "error: <ConfigError>"
_LAUNCH_MARKER = " sweep launch: "  # the line `sweep.execute` writes before every launch
_FIGURE_COLUMNS = 4


class LeaderboardError(sweep.SweepError):
    """An invalid leaderboard request (models, budget), found before anything is written."""


class Budget(NamedTuple):
    """What every run of a leaderboard gets: `kind` "minutes" or "seconds" (wall time) or
    "steps", and `amount` of it."""

    kind: str
    amount: float

    @property
    def is_time(self) -> bool:
        return self.kind != "steps"

    @property
    def seconds(self) -> float:
        """The wall-time budget in seconds (`config.max_train_seconds`); 0.0 for steps."""
        return {"minutes": 60.0, "seconds": 1.0}.get(self.kind, 0.0) * self.amount

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount:g}"


def parse_budget(text: str) -> Budget:
    """`--budget`: "minutes:M" or "seconds:S" (a positive number) or "steps:N" (a positive
    integer), e.g. "minutes:5" -> Budget("minutes", 5.0), "steps:1000" -> Budget("steps", 1000).

    Raises:
      LeaderboardError: naming --budget and the allowed forms.
    """
    kind, _, amount = text.strip().partition(":")
    allowed = "'minutes:M', 'seconds:S' or 'steps:N' (e.g. 'minutes:5', 'steps:1000')"
    if kind not in BUDGET_KINDS:
        raise LeaderboardError(f"--budget={text!r}: unknown kind {kind!r}; allowed: {allowed}")
    try:
        value = int(amount) if kind == "steps" else float(amount)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        unit = "a positive integer" if kind == "steps" else "a positive number"
        raise LeaderboardError(f"--budget={text!r}: {kind} must be {unit}; allowed: {allowed}")
    return Budget(kind, value)


# ---------------------------------------------------------------------------------------------
# Runs.


def entries(config_dir: str = CONFIG_DIR) -> tuple[tuple[str, str], ...]:
    """(label, config argument) of every config file in `config_dir` (relative to the
    repository root) that sets `LEADERBOARD = "<row label>"`, by file name: a config puts its
    default setup on the leaderboard by naming its row."""
    found = []
    for path in sorted(glob.glob(os.path.join(sweep.REPO_ROOT, config_dir, "*.py"))):
        label = getattr(sweep.load_config_module(path), "LEADERBOARD", None)
        if label is not None:
            found.append((label, os.path.join(config_dir, os.path.basename(path))))
    return tuple(found)


def run_name(config_arg: str) -> str:
    """The run's directory and `--models` name: the config file's stem ("configs/iwae.py" ->
    "iwae")."""
    return os.path.basename(config_arg.partition(":")[0]).removesuffix(".py")


def select_entries(
    entries: Sequence[tuple[str, str]], names: Sequence[str] | None
) -> list[tuple[str, str]]:
    """The entries whose run names are in `names` (all for None), in `entries`' order.

    Raises:
      LeaderboardError: an unknown or repeated name, or an empty selection, listing the
        allowed names.
    """
    allowed = [run_name(config_arg) for _, config_arg in entries]
    if names is None:
        return list(entries)
    names = [name.strip() for name in names if name.strip()]
    if not names:
        raise LeaderboardError(f"--models is empty; allowed: {allowed}")
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise LeaderboardError(f"--models: unknown model {unknown}; allowed: {allowed}")
    repeated = [name for name in names if names.count(name) > 1]
    if repeated:
        raise LeaderboardError(f"--models: {repeated[0]!r} is given twice")
    return [entry for entry, name in zip(entries, allowed, strict=True) if name in names]


def scale_stage_steps(stage_steps: Sequence[int], num_steps: int) -> tuple[int, ...]:
    """`stage_steps` rescaled to sum to `num_steps`, in proportion, as integers >= 1.

    Largest-remainder rounding of num_steps * s_i / sum(s): the floors, then one more step for
    the stages with the largest remainders (earlier stages first on ties); a stage left at 0
    then takes one step from the currently longest stage. (4000, 4000) at 1,000 steps ->
    (500, 500); (2000, 2000, 4000) at 7 -> (2, 2, 3).

    Raises:
      LeaderboardError: fewer steps than stages.
    """
    stage_steps = [int(steps) for steps in stage_steps]
    if num_steps < len(stage_steps):
        raise LeaderboardError(
            f"--num_steps={num_steps} is fewer than the {len(stage_steps)} training stages of "
            f"stage_steps={tuple(stage_steps)}: every stage needs at least one step"
        )
    total = sum(stage_steps)
    scaled = [num_steps * steps // total for steps in stage_steps]
    remainders = [num_steps * steps % total for steps in stage_steps]
    by_remainder = sorted(range(len(scaled)), key=lambda index: (-remainders[index], index))
    for index in by_remainder[: num_steps - sum(scaled)]:
        scaled[index] += 1
    for index, steps in enumerate(scaled):
        if steps == 0:
            scaled[int(np.argmax(scaled))] -= 1
            scaled[index] = 1
    return tuple(scaled)


def absolute_config(config_arg: str) -> str:
    """`config_arg` with a relative file path resolved against the repository root."""
    path, colon, variant = config_arg.partition(":")
    return os.path.join(sweep.REPO_ROOT, path) + colon + variant


def leaderboard_runs(
    entries: Sequence[tuple[str, str]],
    dataset: str,
    budget: Budget | int,
    sample_quality_samples: int,
    seed: int,
) -> list[sweep.RunSpec]:
    """One `RunSpec` per entry: its default config on `dataset` at `budget`.

    Overrides, in order: dataset, num_steps (a steps budget's N; under a time budget
    `TIME_BUDGET_NUM_STEPS`, or a staged family's own num_steps), model_config.stage_steps
    (staged families under a steps budget only, `scale_stage_steps`), max_train_seconds (time
    budgets only), eval_every=0 (no monitoring evaluation: the final one writes eval.json),
    sample_every=0 (the final samples grid only), checkpoint_every=num_steps,
    log_every=min(100, num_steps), sample_quality_samples, seed.

    Args:
      entries: (label, config argument) pairs, e.g. `entries()`; relative config paths are
        resolved against the repository root (the RunSpec holds the absolute path).
      dataset: `config.dataset` of every run, e.g. "mnist5k".
      budget: a `Budget`; an int N is `Budget("steps", N)`.
      sample_quality_samples: samples scored by Fréchet distance and precision/recall (0: none).
      seed: `config.seed` of every run.

    Returns:
      RunSpecs named by `run_name`, labelled (("model", label),).

    Raises:
      LeaderboardError: a non-positive budget, a sample count the scorer refuses, two entries
        with one run name, or a steps budget below a staged family's number of stages.
    """
    if not isinstance(budget, Budget):
        budget = Budget("steps", budget)
    if budget.kind not in BUDGET_KINDS or not budget.amount > 0:
        raise LeaderboardError(f"--budget={budget} must be a positive amount of {BUDGET_KINDS}")
    if sample_quality_samples and sample_quality_samples < sample_scorer.MIN_SAMPLES:
        raise LeaderboardError(
            f"--sample_quality_samples={sample_quality_samples} must be 0 (none) or at least "
            f"{sample_scorer.MIN_SAMPLES}"
        )
    names = [run_name(config_arg) for _, config_arg in entries]
    repeated = [name for name in names if names.count(name) > 1]
    if repeated:
        raise LeaderboardError(f"two entries share the run name {repeated[0]!r}")
    specs = []
    for (label, config_arg), name in zip(entries, names, strict=True):
        config_path = absolute_config(config_arg)
        config = sweep.load_config_file(config_path)
        staged = "stage_steps" in config.model_config
        if not budget.is_time:
            num_steps = int(budget.amount)
        else:  # a staged family's stages count steps: its own stay
            num_steps = config.num_steps if staged else TIME_BUDGET_NUM_STEPS
        overrides = [("dataset", dataset), ("num_steps", num_steps)]
        if staged and not budget.is_time:
            stages = scale_stage_steps(config.model_config.stage_steps, num_steps)
            overrides.append(("model_config.stage_steps", stages))
        if budget.is_time:
            overrides.append(("max_train_seconds", budget.seconds))
        overrides += [
            ("eval_every", 0),
            ("sample_every", 0),
            ("checkpoint_every", num_steps),
            ("log_every", min(100, num_steps)),
            ("sample_quality_samples", sample_quality_samples),
            ("seed", seed),
        ]
        specs.append(sweep.RunSpec(name, config_path, tuple(overrides), (("model", label),)))
    return specs


def _spec_config(spec: sweep.RunSpec) -> ml_collections.ConfigDict:
    return sweep.apply_overrides(sweep.load_config_file(spec.config), spec.overrides)


def check_runs(specs: Sequence[sweep.RunSpec], root: str) -> dict[str, str]:
    """The runs that cannot run on their dataset, by the trainer's own checks, before launch.

    Each run's config goes through `genjax.train.validate` without its workdir (no JAX devices
    are touched); a ConfigError makes the run not applicable. The other runs then go through
    `sweep.validate_runs` with their workdirs under `root`.

    Returns:
      {run name: the trainer's message} of the runs that are not applicable.

    Raises:
      SweepError: a run's workdir holds a run of another model or model_config.
    """
    not_applicable = {}
    for spec in specs:
        try:
            config_lib.validate(_spec_config(spec), None, device_count=1, process_count=1)
        except config_lib.ConfigError as error:
            not_applicable[spec.name] = str(error)
            continue
        sweep.validate_runs(sweep.load_config_file(spec.config), [spec], root)
    return not_applicable


# ---------------------------------------------------------------------------------------------
# Rows.


def _read_json(path: str) -> dict | None:
    """The JSON object in `path`, or None when it is missing or not (yet) valid JSON."""
    try:
        with open(path) as f:
            payload = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


def _metric_records(metrics_path: str) -> list[dict]:
    """The JSON objects of a metrics.jsonl; a missing file or a line cut short is skipped."""
    if not os.path.exists(metrics_path):
        return []
    records = []
    with open(metrics_path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def training_seconds(metrics_path: str) -> float | None:
    """Training time from a metrics.jsonl: sum over the logged training records (those with
    "perf/steps_per_sec", in step order) of (step - previous logged step) / steps_per_sec, the
    first interval counted from step 0.

    The trainer's clock covers training steps only (evaluation, sampling and checkpoints are
    excluded), so this is the time spent in training steps; the first interval includes the
    compilation of the train step. None when no training record was logged.
    """
    intervals = sorted(
        (record["step"], record["perf/steps_per_sec"])
        for record in _metric_records(metrics_path)
        if isinstance(record.get("step"), int) and _is_positive(record.get("perf/steps_per_sec"))
    )
    if not intervals:
        return None
    seconds, previous_step = 0.0, 0
    for step, steps_per_sec in intervals:
        seconds += (step - previous_step) / steps_per_sec
        previous_step = step
    return seconds


def _is_positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def data_kind(preprocess: Mapping) -> str:
    """What the model's likelihood is over, from `config.preprocess`: "binarized" (binarize
    'dynamic' or 'fixed'), "dequantized" (uniform dequantization), else "[-1, 1] intensities"
    (scale 'symmetric') or "[0, 1] intensities"."""
    if preprocess.get("binarize", "none") != "none":
        return "binarized"
    if preprocess.get("dequantize"):
        return "dequantized"
    if preprocess.get("scale") == "symmetric":
        return "[-1, 1] intensities"
    return "[0, 1] intensities"


def _run_config(spec: sweep.RunSpec, root: str) -> ml_collections.ConfigDict:
    """The config the run saved (config.json), else (not started) the one it will run with."""
    try:
        return config_lib.load_config(os.path.join(root, spec.name))
    except (OSError, ValueError):  # no config.json yet, or not valid JSON
        return _spec_config(spec)


def _trainer_config_error(run_dir: str) -> str | None:
    """The configuration error the run's last launch exited with, from its train.log: the
    trainer prints "error: <message>" (and no traceback) when the config cannot run on the
    data, e.g. a flow on binarized data. None for any other outcome."""
    try:
        with open(os.path.join(run_dir, sweep.LOG_FILE)) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    launches = [index for index, line in enumerate(lines) if _LAUNCH_MARKER in line]
    last_launch = lines[launches[-1] + 1 :] if launches else lines
    errors = [i for i, line in enumerate(last_launch) if line.startswith(_TRAINER_ERROR_PREFIX)]
    if not errors:
        return None
    tail = last_launch[errors[-1] :]
    if any(line.startswith("Traceback") for line in tail):
        return None
    return "\n".join(tail).strip().removeprefix(_TRAINER_ERROR_PREFIX)


def _latest_samples(root: str, name: str) -> str | None:
    """The latest samples grid of run `name` (samples/step_XXXXXXXX.png sorts by step) as a
    path relative to the leaderboard root, e.g. "vae/samples/step_00001000.png", or None."""
    paths = sorted(glob.glob(os.path.join(root, name, "samples", "step_*.png")))
    return os.path.relpath(paths[-1], root) if paths else None


def leaderboard_rows(
    specs: Sequence[sweep.RunSpec],
    labels: Mapping[str, str],
    root: str,
    not_applicable: Mapping[str, str] | None = None,
) -> list[dict]:
    """One row per run, keys `COLUMNS`, in `specs`' order.

    Args:
      specs: the leaderboard's runs (`leaderboard_runs`).
      labels: {run name: model label}, e.g. {"vae": "VAE"}.
      root: the leaderboard root holding one workdir per run.
      not_applicable: {run name: message} of the runs `check_runs` kept from launching.

    Returns:
      Rows with: "status" ("finished", "unfinished", "failed", "pending" as
      `sweep.run_status`, or "not applicable": found before launch, or a launch that exited
      with the trainer's configuration error) and "reason" (the message, or the log of a
      failed or unfinished run); "dataset", "seed", "batch_size" and "data" (`data_kind`) from
      the run's saved config (the planned one before it starts), and from it
      "max_train_seconds" (the time budget, None for none) and "num_steps"; "steps" (the
      steps reached: eval.json's step, else num_steps under a steps budget, else None);
      eval.json's test NLL fields, "nll_estimator" (NO_LIKELIHOOD for a family without one,
      e.g. a GAN), sample-quality fields, "stopped_by" ("num_steps" or "max_train_seconds")
      and "train_machine"; "train_seconds" (eval.json's, the trainer's clock; for runs from
      before it, `training_seconds` of the metric log), "steps_per_sec" (the median logged
      rate) and "samples" (the latest samples grid, relative to `root`, so the table stays
      true when the root is moved or copied). Missing values are None.
    """
    not_applicable = dict(not_applicable or {})
    rows = []
    for spec, collected in zip(specs, sweep.collect(specs, root), strict=True):
        run_dir = os.path.join(root, spec.name)
        config = _run_config(spec, root)
        status, reason = collected["status"], None
        if spec.name in not_applicable:
            status, reason = NOT_APPLICABLE, not_applicable[spec.name]
        elif status == "failed" and (message := _trainer_config_error(run_dir)) is not None:
            status, reason = NOT_APPLICABLE, message
        elif status in ("failed", "unfinished"):
            reason = f"log: {os.path.join(run_dir, sweep.LOG_FILE)}"
        results = {}
        if status == "finished":
            results = _read_json(os.path.join(run_dir, sweep.EVAL_FILE)) or {}
        time_budget = config.get("max_train_seconds", 0.0)
        planned_steps = None if time_budget else config.num_steps  # reached: unknown before
        row = dict.fromkeys(COLUMNS)
        row.update(
            model=labels[spec.name],
            run=spec.name,
            config=sweep.repo_config(spec.config),
            status=status,
            reason=reason,
            dataset=config.dataset,
            data=data_kind(config.preprocess),
            seed=config.seed,
            max_train_seconds=time_budget or None,
            num_steps=config.num_steps,
            steps=results.get("step", planned_steps),
            batch_size=config.batch_size,
        )
        row.update((key, results[key]) for key in _RESULT_KEYS if key in results)
        if status == "finished":
            row["nll_estimator"] = results.get("nll_estimator", NO_LIKELIHOOD)
            row["samples"] = _latest_samples(root, spec.name)
        row["train_seconds"] = results.get("train_seconds")
        if not _is_positive(row["train_seconds"]):  # a run from before the trainer's clock
            row["train_seconds"] = training_seconds(os.path.join(run_dir, "metrics.jsonl"))
        row["steps_per_sec"] = collected.get("steps_per_sec")
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Tables and the figure.


def _ranked(rows: Sequence[Mapping]) -> list[Mapping]:
    """Rows grouped by data kind (`DATA_KINDS` order, unknown kinds last), ranked within one
    by test NLL, then (no NLL: a GAN) by Fréchet distance, lowest first; rows with neither
    (not finished, not applicable) last, in their given order."""
    order = {kind: index for index, kind in enumerate(DATA_KINDS)}

    def key(row):
        scores = [row.get(field) for field in ("test_nll_nats", "frechet_distance")]
        scores = [math.inf if not _is_number(score) else score for score in scores]
        return (order.get(row["data"], len(order)), *scores)

    return sorted(rows, key=key)


_is_number = util.is_finite_number


def _number(value, spec: str) -> str:
    return format(value, spec) if _is_number(value) else "—"


def _duration(seconds) -> str:
    if not _is_number(seconds):
        return "—"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _nll_cell(row: Mapping) -> str:
    if row["status"] != "finished":
        return row["status"]
    if not _is_number(row["test_nll_nats"]):
        return "—"
    stderr = row["test_nll_stderr"] if _is_number(row["test_nll_stderr"]) else None
    cell = sweep.format_mean_std(row["test_nll_nats"], stderr)
    return cell + " †" if _heavy_tailed(row) else cell


HEAVY_TAIL_FRACTION = 0.1


def _heavy_tailed(row: Mapping) -> bool:
    """A mean NLL whose standard error exceeds HEAVY_TAIL_FRACTION of its size: a few test
    examples with huge NLLs carry the mean, and the row says so rather than ranking by it."""
    nll, stderr = row["test_nll_nats"], row["test_nll_stderr"]
    return _is_number(nll) and _is_number(stderr) and stderr > HEAVY_TAIL_FRACTION * abs(nll)


def _distinct(rows: Sequence[Mapping], key: str) -> str:
    values = list(dict.fromkeys(row[key] for row in rows if row[key] is not None))
    return ", ".join(str(value) for value in values) if values else "—"


def _is_time_budgeted(rows: Sequence[Mapping]) -> bool:
    return any(row["max_train_seconds"] for row in rows)


def _budget_cell(row: Mapping) -> str:
    """ "5 min" (a wall-time budget), "1,000 steps" (a steps budget) or "—"."""
    seconds = row["max_train_seconds"]
    if seconds:
        return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"
    return f"{row['num_steps']:,} steps" if _is_number(row["num_steps"]) else "—"


def _steps_cell(row: Mapping) -> str:
    """The steps reached and the batch, "12,345 (100)"; ‡ marks a run with a time budget that
    reached its num_steps first."""
    steps = f"{row['steps']:,}" if _is_number(row["steps"]) else "—"
    mark = " ‡" if _finished_early(row) else ""
    return f"{steps} ({row['batch_size']}){mark}"


def _finished_early(row: Mapping) -> bool:
    return bool(row["max_train_seconds"]) and row["stopped_by"] == "num_steps"


def _setup_sentence(rows: Sequence[Mapping]) -> str:
    seed = _distinct(rows, "seed")
    if not _is_time_budgeted(rows):
        return (
            f"Each family's default config trained for {_distinct(rows, 'steps')} steps at the "
            f"config's own batch size (column 'steps reached (batch)') with seed {seed}, then "
            "evaluated by the trainer's final protocol on the test split "
            "(`python -m experiments.leaderboard --budget=steps:N`). The rows share a budget in "
            "steps, not in compute: architectures, batch sizes and optimizers are the configs' "
            "own."
        )
    budgets = ", ".join(
        dict.fromkeys(_budget_cell(row) for row in rows if row["max_train_seconds"])
    )
    machines = _distinct(rows, "train_machine")
    machine = f"one machine ({machines})" if machines != "—" else "one machine"
    return (
        f"Each family's default config trained for {budgets} of wall time on {machine}, one "
        f"run at a time, at the config's own batch size with seed {seed}, then evaluated by the "
        "trainer's final protocol on the test split (`python -m experiments.leaderboard "
        "--budget=minutes:M`). The rows share a budget in wall time on this machine, not in "
        "steps: column 'steps reached (batch)' gives the steps each family reached in it. "
        "Architectures, batch sizes and optimizers are the configs' own."
    )


def _header_lines(rows: Sequence[Mapping]) -> list[str]:
    scored = [row for row in rows if row["feature_network"]]
    if scored:
        quality = (
            f"Sample quality: {_distinct(scored, 'sample_quality_num_samples')} samples per "
            f"model against the {_distinct(scored, 'sample_quality_reference')}: Fréchet "
            f"distance (FD) and precision/recall (k = {_distinct(scored, 'precision_recall_k')}"
            f" nearest neighbours) in the features of {_distinct(scored, 'feature_network')}."
        )
    else:
        quality = "Sample quality: not measured by any finished run."
    return [
        f"# Leaderboard: {_distinct(rows, 'dataset')}",
        "",
        _setup_sentence(rows),
        "",
        quality,
        "",
    ]


_TABLE_HEADER = (
    "model",
    "config",
    "data",
    "test NLL, nats",
    "bits/dim",
    "NLL estimator",
    "FD",
    "precision",
    "recall",
    "budget",
    "steps reached (batch)",
    "train time",
    "steps/s",
)

_NOTES = (
    "NLLs compare only within one data kind, so the rows are grouped by it and ranked within "
    "it by test NLL (GANs, with none, by FD), whatever the estimators: 'binarized' is "
    "the NLL of binary pixels (a discrete distribution), 'dequantized' the density of "
    "dequantized pixels in [0, 1] (continuous: it can be negative; its bits/dim are in the "
    "discrete space eval.json's `nll_space` names), and a GAN has no likelihood.",
    "± is the standard error over the test examples (one seed). Estimators: 'exact' (and "
    "'exact-ensemble-K'), 'ais' (log Z by annealed importance sampling, which underestimates "
    "log Z on average, so the NLL leans optimistic), 'iwae-K' (the importance-weighted bound "
    "with K samples: an upper bound on the NLL in expectation), and '... bound (... log Z)' "
    "(a variational bound of a DBN or DBM: an upper bound on the NLL up to the error of log Z).",
    "Train time: the trainer's train clock (eval.json's `train_seconds`, which a time budget "
    "counts): the train loop's wall time, compiling the train step included, evaluation, "
    "sampling and checkpoints excluded (for runs from before the clock: the sum over logged "
    "intervals of steps / (steps/s)). steps/s: the median over the logged intervals.",
)


def _time_budget_notes(rows: Sequence[Mapping]) -> list[str]:
    """The notes a wall-time budget needs: where training stops, the schedules, staged and
    early-finished rows."""
    capped = [row for row in rows if row["max_train_seconds"] and row["num_steps"]]
    uncapped = [row for row in capped if row["num_steps"] == TIME_BUDGET_NUM_STEPS]
    reached = [row["steps"] / row["num_steps"] for row in uncapped if _is_number(row["steps"])]
    notes = [
        "Budget: training stops at the first step after the train clock reaches the budget "
        "(the steps still in flight then finish, so a run may pass it by a step or two); the "
        "final evaluation, sampling and checkpoint follow, outside it. Runs launched together "
        "would share the CPU cores, so the leaderboard's runs are trained one at a time; the "
        "steps reached still depend on the machine and on whatever else it ran meanwhile."
    ]
    if uncapped:
        note = (
            f"Learning-rate schedules span config.num_steps = {TIME_BUDGET_NUM_STEPS:,}, far "
            "beyond the steps reached, so the configs' decays barely progress"
        )
        if reached:
            most = max(reached)
            note += (
                f": at most {most:.1%} of the span here, where a cosine decay keeps "
                f"{0.5 * (1 + math.cos(math.pi * most)):.0%} of its initial rate and an "
                f"exponential decay to a tenth over the span (the VAE's) {10**-most:.0%}"
            )
        notes.append(note + ".")
    staged = [row for row in capped if row["num_steps"] != TIME_BUDGET_NUM_STEPS]
    if staged:
        names = ", ".join(f"{row['model']} {row['num_steps']:,}" for row in staged)
        notes.append(
            "Staged families count their stages in steps, so they keep their configs' own "
            f"stage_steps and num_steps ({names}); the budget may end them inside a stage."
        )
    early = [row["model"] for row in rows if _finished_early(row)]
    if early:
        notes.append(
            f"‡ ({', '.join(early)}): reached its num_steps before the budget, so it trained "
            "for less than the budget (its train time says how long)."
        )
    return notes


def markdown_table(rows: Sequence[Mapping]) -> str:
    """leaderboard.md: the setup, the table (rows grouped by data kind), notes, and the runs
    that did not finish with their reasons."""
    rows = _ranked(rows)
    lines = _header_lines(rows)
    lines.append("| " + " | ".join(_TABLE_HEADER) + " |")
    lines.append("|" + "|".join("---" for _ in _TABLE_HEADER) + "|")
    for row in rows:
        cells = [
            row["model"],
            f"`{row['config']}`",
            row["data"],
            _nll_cell(row),
            _number(row["test_bits_per_dim"], ".4g"),
            row["nll_estimator"] or "—",
            _number(row["frechet_distance"], ".3g"),
            _number(row["precision"], ".3f"),
            _number(row["recall"], ".3f"),
            _budget_cell(row),
            _steps_cell(row),
            _duration(row["train_seconds"]),
            _number(row["steps_per_sec"], ".3g"),
        ]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    notes = list(_NOTES)
    if _is_time_budgeted(rows):
        notes += _time_budget_notes(rows)
    heavy = [row["model"] for row in rows if row["status"] == "finished" and _heavy_tailed(row)]
    if heavy:
        notes.append(
            f"† ({', '.join(heavy)}): the standard error exceeds {HEAVY_TAIL_FRACTION:.0%} of "
            "the mean, so a few test examples with huge NLLs carry it; read the mean as a "
            "failure on those examples, not as a typical test score (the README's normalizing "
            "flows section explains one such case: MAF under a logit transform with a large "
            "alpha, where blank pixels become near-constant directions it stretches without "
            "bound)."
        )
    lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    unfinished = [row for row in rows if row["status"] != "finished"]
    if unfinished:
        lines += ["", f"Not finished ({len(unfinished)} of {len(rows)} runs):", ""]
        for row in unfinished:
            reason = f": {row['reason']}" if row["reason"] else ""
            lines.append(f"- {row['model']} (`{row['run']}`): {row['status']}{reason}")
    return "\n".join(lines) + "\n"


def _panel_title(row: Mapping) -> str:
    if _is_number(row["test_nll_nats"]):
        likelihood = f"NLL {row['test_nll_nats']:.1f} nats ({row['nll_estimator']})"
    else:
        likelihood = "no likelihood"
    quality = f"FD {row['frechet_distance']:.3g}" if _is_number(row["frechet_distance"]) else ""
    return f"{row['model']}\n{likelihood}" + (f", {quality}" if quality else "")


def save_samples_figure(rows: Sequence[Mapping], root: str, path: str) -> bool:
    """One panel per finished row with a samples grid (its "samples" PNG under `root`), titled
    with the model, its NLL and estimator and its FD, in `_FIGURE_COLUMNS` columns; written
    atomically. Returns False (and writes nothing) when no row has samples."""
    panels = [row for row in _ranked(rows) if row["samples"]]
    if not panels:
        return False
    num_cols = min(_FIGURE_COLUMNS, len(panels))
    num_rows = math.ceil(len(panels) / num_cols)
    figure = plots.new_figure(num_rows, num_cols)
    for index, row in enumerate(panels, start=1):
        axes = figure.add_subplot(num_rows, num_cols, index)
        image = matplotlib_image.imread(os.path.join(root, row["samples"]))
        axes.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(_panel_title(row), fontsize=9)
        axes.axis("off")
    plots.save_figure(figure, path)
    return True


def write_leaderboard(
    rows: Sequence[Mapping], root: str, out_dir: str | None = None
) -> dict[str, str]:
    """Writes leaderboard.md (`markdown_table`), leaderboard.csv (every column),
    leaderboard.json ({"rows": rows}) and leaderboard_samples.png (`save_samples_figure`) into
    `root`, and the same files into `out_dir` when given; each file atomically.

    Returns:
      {"markdown", "csv", "json", and "figure" when one was drawn: path under root}.
    """
    rows = [dict(row) for row in rows]
    markdown, csv_text = markdown_table(rows), util.csv_text(rows, COLUMNS)
    paths = {}
    for directory in (root, out_dir) if out_dir else (root,):
        os.makedirs(directory, exist_ok=True)
        written = {
            "markdown": os.path.join(directory, MARKDOWN_FILE),
            "csv": os.path.join(directory, CSV_FILE),
            "json": os.path.join(directory, JSON_FILE),
        }
        util.write_text_atomic(written["markdown"], markdown)
        util.write_text_atomic(written["csv"], csv_text)
        write_json_atomic(written["json"], {"rows": rows})
        figure_path = os.path.join(directory, FIGURE_FILE)
        if save_samples_figure(rows, root, figure_path):
            written["figure"] = figure_path
        paths = paths or written
    return paths
