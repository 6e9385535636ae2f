"""Hyperparameter sweeps: a grid over config fields and seeds, run as `experiments.train`
processes, then aggregated into a CSV, a Markdown table of mean ± std over seeds and plots.

  python -m experiments.sweep --config=configs/iwae.py \
      --grid=num_importance_samples=1,5,50 --grid=learning_rate=1e-3,3e-4 --seeds=3 \
      --workdir=runs/sweep --parallel=2

Layout of a sweep root (`--workdir`):

  sweep.json            the manifest: config argument and every run's overrides; a later launch
                        into the same root must describe the same sweep (it then resumes)
  <run name>/           one `experiments.train` workdir per run, e.g.
                        `num_importance_samples=5,learning_rate=0.0003,seed=1`, holding the
                        trainer's files plus `train.log` (the process's output) and, after a
                        non-zero exit, a `FAILED` marker
  results.csv           one row per run: labels, status, every scalar of eval.json
  results.md            one row per grid point: mean ± std of each metric over finished seeds
  plots/<metric>.png    each metric against the first grid field

A run is finished when its `eval.json` exists; launching the sweep again skips finished runs
and relaunches the others (the trainer resumes them from their checkpoints).
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import difflib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from genjax.core import util
from genjax.core.util import write_json_atomic
from genjax.evaluate import plots
from genjax.train import config as config_lib
from genjax.train import preemption

MANIFEST_FILE = "sweep.json"
EVAL_FILE = "eval.json"
LOG_FILE = "train.log"
FAILED_FILE = "FAILED"
STATUSES = ("finished", "unfinished", "failed", "pending")
# eval.json numbers that describe the run rather than measure the model: not tabulated or
# plotted by default (they stay in results.csv).
_NOT_METRICS = ("step", "num_test_examples", "max_train_seconds")
# The repository root: runs are launched from there (`python -m experiments.train` resolves
# from it), and relative config paths of the leaderboard and the benchmark resolve against it.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_POLL_SECONDS = 0.5  # how often `execute` checks its running processes
_SAFE_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9._=,+-]")
_MAX_NAME_BYTES = 255  # a path component on common filesystems

Launcher = Callable[[list[str], io.TextIOBase], Any]  # (argv, log file) -> a Popen-like process


class SweepError(ValueError):
    """An invalid sweep (grid, values, workdir), found before anything is launched or written."""


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One run of a sweep.

    Attributes:
      name: its directory under the sweep root, e.g. "num_importance_samples=5,seed=1".
      config: the `--config` argument, e.g. "configs/iwae.py" or "configs/vae.py:tiny".
      overrides: (full dotted field path, value) pairs, grid fields, fixed fields and the seed,
        e.g. (("model_config.num_importance_samples", 5), ("seed", 1)).
      labels: what identifies the run in tables: (grid field as named on the command line,
        value) pairs then ("seed", seed), e.g. (("num_importance_samples", 5), ("seed", 1)).
    """

    name: str
    config: str
    overrides: tuple[tuple[str, object], ...]
    labels: tuple[tuple[str, object], ...]


# ---------------------------------------------------------------------------------------------
# Config fields and values.


def load_config_module(path: str):
    """The Python module of a config file, executed from its path (as `config_flags` does)."""
    module_name = "sweep_config_" + re.sub(r"\W", "_", os.path.basename(path).removesuffix(".py"))
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load_config_file(config_arg: str) -> ml_collections.ConfigDict:
    """The config of a `--config` argument "path[:variant]", loaded as `config_flags` does:
    the file's `get_config(variant)` (or `get_config()` without a colon).

    Raises:
      SweepError: no such file, or `get_config` rejects the variant.
    """
    path, colon, variant = config_arg.partition(":")
    if not os.path.isfile(path):
        raise SweepError(f"--config={config_arg!r}: no config file {path!r}")
    module = load_config_module(path)
    try:
        return module.get_config(*((variant,) if colon else ()))
    except (KeyError, TypeError, ValueError) as error:
        raise SweepError(f"--config={config_arg!r}: {error}") from error


def _is_config_dict(value) -> bool:
    return isinstance(value, ml_collections.ConfigDict)


def _unknown_field_message(config, name: str) -> str:
    top_level = sorted(config)
    model_fields = (
        sorted(config.model_config) if _is_config_dict(config.get("model_config")) else []
    )
    candidates = top_level + model_fields
    close = difflib.get_close_matches(name, candidates, n=1)
    suggestion = f" (did you mean {close[0]!r}?)" if close else ""
    return (
        f"unknown config field {name!r}{suggestion}. Top-level fields: {top_level}; "
        f"model_config fields: {model_fields}; nested fields by dotted path, "
        "e.g. 'preprocess.binarize'."
    )


def resolve_field(config: ml_collections.ConfigDict, name: str) -> str:
    """The full dotted path of the config field `name`.

    A dotted path ("model_config.num_importance_samples") is checked and returned as is. A bare
    name is a top-level field if the config has one, else `model_config.<name>`.

    Raises:
      SweepError: an unknown field (listing the allowed names), or a bare name that is both a
        top-level and a model_config field (naming both paths).
    """
    if "." in name:
        node = config
        parts = name.split(".")
        for depth, part in enumerate(parts):
            if not _is_config_dict(node) or part not in node:
                parent = ".".join(parts[:depth]) or "the config"
                fields = sorted(node) if _is_config_dict(node) else []
                raise SweepError(
                    f"unknown config field {name!r}: {parent} has no field {part!r}; "
                    f"its fields: {fields}"
                )
            node = node[part]
        return name
    at_top_level = name in config
    in_model_config = _is_config_dict(config.get("model_config")) and name in config.model_config
    if at_top_level and in_model_config:
        raise SweepError(
            f"config field {name!r} is ambiguous: both {name!r} and 'model_config.{name}' "
            "exist; give the full path of the one to sweep."
        )
    if at_top_level:
        return name
    if in_model_config:
        return f"model_config.{name}"
    raise SweepError(_unknown_field_message(config, name))


def _field_value(config: ml_collections.ConfigDict, path: str):
    value = config
    for part in path.split("."):
        value = value[part]
    return value


def parse_value(config: ml_collections.ConfigDict, path: str, text: str) -> object:
    """`text` converted to the type of the field's current value: int, float, bool
    (true/false/1/0, any case) or str.

    Raises:
      SweepError: a field of another type (tuples, dicts, None: only scalar fields can be
        swept), or a value that does not convert, e.g. "num_importance_samples='five' is not
        an int".
    """
    current = _field_value(config, path)
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise SweepError(f"{path}={text!r} is not a bool (true, false, 1 or 0)")
    for field_type, type_name in ((int, "an int"), (float, "a float")):
        if isinstance(current, field_type):
            try:
                return field_type(text)
            except ValueError:
                raise SweepError(f"{path}={text!r} is not {type_name}") from None
    if isinstance(current, str):
        return text
    if _is_config_dict(current):
        raise SweepError(
            f"config.{path} is a group of fields {sorted(current)}: only scalar fields (int, "
            f"float, bool, str) can be swept or set, e.g. '{path}.{sorted(current)[0]}'."
        )
    raise SweepError(
        f"config.{path} holds {type(current).__name__} {current!r}: only scalar fields "
        "(int, float, bool, str) can be swept or set."
    )


def _split_assignment(flag_name: str, text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise SweepError(f"--{flag_name}={text!r} must read field=value")
    return name.strip(), value


def parse_grid(config: ml_collections.ConfigDict, grid_flags: Sequence[str]) -> list[tuple]:
    """The grid of `--grid=field=v1,v2,...` flags: [(field as named, [parsed values])], in flag
    order. Fields may be bare names or dotted paths (`resolve_field`).

    Raises:
      SweepError: an unknown field, a field given twice (also under two names of one path), an
        empty or repeated value, the seed (swept by --seeds), or a value of the wrong type.
    """
    grid, seen_paths = [], {}
    for text in grid_flags:
        name, values_text = _split_assignment("grid", text)
        path = resolve_field(config, name)
        if path == "seed":
            raise SweepError("--grid: the seed is swept by --seeds=N (seeds 0..N-1)")
        if path in seen_paths:
            raise SweepError(
                f"--grid: field {path!r} is given twice ({seen_paths[path]!r}, {name!r})"
            )
        seen_paths[path] = name
        value_texts = [value.strip() for value in values_text.split(",")]
        if not all(value_texts):
            raise SweepError(f"--grid={text!r}: empty value; give field=v1,v2,...")
        values = [parse_value(config, path, value) for value in value_texts]
        repeated = [value for value in values if values.count(value) > 1]
        if repeated:
            raise SweepError(f"--grid={text!r}: value {repeated[0]!r} is given twice")
        grid.append((name, values))
    return grid


def parse_assignments(config: ml_collections.ConfigDict, set_flags: Sequence[str]) -> list[tuple]:
    """The fixed overrides of `--set=field=value` flags: [(full dotted path, parsed value)].

    Raises:
      SweepError: an unknown field, a field set twice, or a value of the wrong type.
    """
    fixed = []
    for text in set_flags:
        name, value_text = _split_assignment("set", text)
        path = resolve_field(config, name)
        if path in (fixed_path for fixed_path, _ in fixed):
            raise SweepError(f"--set: field {path!r} is set twice")
        fixed.append((path, parse_value(config, path, value_text)))
    return fixed


def apply_overrides(config: ml_collections.ConfigDict, overrides) -> ml_collections.ConfigDict:
    """A copy of `config` with each (dotted path, value) of `overrides` set."""
    config = copy.deepcopy(config)
    for path, value in overrides:
        *parents, field = path.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[field] = value
    return config


# ---------------------------------------------------------------------------------------------
# Runs and their command lines.


def _safe_name(text: str) -> str:
    """`text` with every character but letters, digits and `._=,+-` replaced by '_'."""
    return _SAFE_NAME_CHARACTERS.sub("_", text)


def _run_name(labels) -> str:
    return _safe_name(",".join(f"{label}={value}" for label, value in labels))


def grid_runs(
    config_arg: str,
    config: ml_collections.ConfigDict,
    grid: Sequence[tuple[str, Sequence]],
    seeds: Sequence[int],
    fixed: Sequence[tuple[str, object]] = (),
) -> list[RunSpec]:
    """Every run of the sweep: the Cartesian product of the grid's values in flag order (the
    last field varying fastest), with the seeds innermost.

    Args:
      config_arg: the `--config` argument, kept in each RunSpec.
      config: the loaded config (to resolve grid field names to paths).
      grid: [(field name, values)] as `parse_grid` returns.
      seeds: the seeds of each grid point, e.g. range(3).
      fixed: [(dotted path, value)] set in every run (`--set`), not part of names or labels.

    Returns:
      len(seeds) * prod(len(values)) RunSpecs.

    Raises:
      SweepError: no seeds or a repeated one, a fixed field that is also swept, or two runs
        whose directory names collide once made filesystem-safe.
    """
    seeds = [int(seed) for seed in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise SweepError(f"seeds {seeds} must be distinct and at least one")
    paths = [resolve_field(config, name) for name, _ in grid]
    for path, _ in fixed:
        if path in paths or path == "seed":
            raise SweepError(f"--set: field {path!r} is also swept; set it or sweep it")
    combinations = [[]]
    for (name, values), path in zip(grid, paths, strict=True):
        combinations = [combo + [(name, path, value)] for combo in combinations for value in values]
    specs = []
    for combo in combinations:
        for seed in seeds:
            labels = tuple((name, value) for name, _, value in combo) + (("seed", seed),)
            overrides = (
                tuple((path, value) for _, path, value in combo) + tuple(fixed) + (("seed", seed),)
            )
            specs.append(RunSpec(_run_name(labels), config_arg, overrides, labels))
    _check_names(specs)
    return specs


def _check_names(specs: Sequence[RunSpec]) -> None:
    counts = collections.Counter(spec.name for spec in specs)
    repeated = [name for name, count in counts.items() if count > 1]
    if repeated:
        raise SweepError(f"runs share the directory name {repeated[0]!r}; rename grid values")
    too_long = [spec.name for spec in specs if len(spec.name.encode()) > _MAX_NAME_BYTES]
    if too_long:
        raise SweepError(
            f"run name {too_long[0]!r} is too long for a directory; sweep fewer fields"
        )


def _flag_value(value) -> str:
    """`value` as ml_collections' field parsers read it back exactly."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float):
        return repr(value)  # the shortest string that float() maps back to the same float
    return str(value)


def run_command(spec: RunSpec, root: str, python: str = sys.executable) -> list[str]:
    """The argv that trains `spec` in `root/spec.name`:
    [python, -m, experiments.train, --config=..., --workdir=..., --config.PATH=VALUE..., and
    --config.progress_bar=False unless the run sets progress_bar itself]."""
    argv = [
        python,
        "-m",
        "experiments.train",
        f"--config={spec.config}",
        f"--workdir={os.path.join(root, spec.name)}",
    ]
    argv += [f"--config.{path}={_flag_value(value)}" for path, value in spec.overrides]
    if "progress_bar" not in (path for path, _ in spec.overrides):
        argv.append("--config.progress_bar=False")
    return argv


def launch_command(spec: RunSpec, root: str, python: str = sys.executable) -> list[str]:
    """`run_command` with the config file and the workdir as absolute paths: the argv that
    `execute` launches (from the repository root), runnable from any directory."""
    path, colon, variant = spec.config.partition(":")
    absolute = dataclasses.replace(spec, config=os.path.abspath(path) + colon + variant)
    return run_command(absolute, os.path.abspath(root), python)


def shell_command(argv: Sequence[str]) -> str:
    """`argv` as one shell-quoted line, for printing."""
    return shlex.join(argv)


def validate_runs(config: ml_collections.ConfigDict, specs: Sequence[RunSpec], root: str) -> None:
    """Runs the trainer's own checks (`genjax.train.validate`) on every run's config and its
    workdir, without starting JAX (one device and one process assumed).

    Raises:
      SweepError: naming the first invalid run and the trainer's message.
    """
    for spec in specs:
        run_config = apply_overrides(config, spec.overrides)
        try:
            config_lib.validate(
                run_config, os.path.join(root, spec.name), device_count=1, process_count=1
            )
        except config_lib.ConfigError as error:
            raise SweepError(f"run {spec.name}: {error}") from error


# ---------------------------------------------------------------------------------------------
# The manifest and run states.


def repo_config(config_arg: str, base: str | None = None) -> str:
    """A config argument "path[:variant]" as the manifest records it: a file inside the
    repository as a path relative to `REPO_ROOT` (so a clone that is moved or copied resumes its
    sweeps, and the leaderboard prints "configs/vae.py"), any other file as an absolute path.

    Args:
      config_arg: the argument; a relative path is taken relative to `base`.
      base: the directory of relative paths (default: the working directory).
    """
    path, colon, variant = config_arg.partition(":")
    path = os.path.normpath(os.path.join(base or os.getcwd(), path))
    if path.startswith(REPO_ROOT + os.sep):
        path = os.path.relpath(path, REPO_ROOT)
    return path + colon + variant


def _spec_record(spec: RunSpec) -> dict:
    record = {
        "name": spec.name,
        "config": repo_config(spec.config),
        "overrides": [list(pair) for pair in spec.overrides],
        "labels": [list(pair) for pair in spec.labels],
    }
    return json.loads(json.dumps(record))  # as it reads back from the file


def write_manifest(
    root: str, specs: Sequence[RunSpec], description: Mapping, add_runs: bool = False
) -> None:
    """Writes `root/sweep.json` (atomically), or checks that an existing one describes the same
    sweep: the same runs (in any order), each with the same config file and variant, overrides
    and labels. With `add_runs` (the leaderboard, which grows a row with each new family), the
    runs may also include new ones, which are added to the manifest; every saved run must still
    be among them, unchanged.
    Config files are recorded by `repo_config`; a manifest's absolute path inside this
    repository (as earlier versions recorded the leaderboard's) matches its relative form.

    `description` (the command line, the grid, ...) is stored for reference, not compared.

    Raises:
      SweepError: the existing manifest describes another sweep, or `root` holds files but no
        manifest. Nothing is written then.
    """
    path = os.path.join(root, MANIFEST_FILE)
    runs = [_spec_record(spec) for spec in specs]
    if os.path.exists(path):
        with open(path) as f:
            manifest = json.load(f)
        saved_runs = [  # saved relative config paths are relative to the repository
            {**run, "config": repo_config(run["config"], base=REPO_ROOT)}
            if "config" in run
            else run
            for run in manifest.get("runs", [])
        ]
        saved_names = {run["name"] for run in saved_runs}
        kept = [run for run in runs if run["name"] in saved_names] if add_runs else runs
        if _by_name(saved_runs) != _by_name(kept):  # the same runs, in any order
            raise SweepError(f"{path} describes another sweep: {_difference(saved_runs, runs)}")
        if len(kept) < len(runs):
            added = [run for run in runs if run["name"] not in saved_names]
            write_json_atomic(path, {**manifest, "runs": manifest["runs"] + added})
        return
    if os.path.isdir(root) and os.listdir(root):
        raise SweepError(
            f"--workdir={root!r} holds files but no {MANIFEST_FILE}: not a sweep. "
            "Use a new --workdir."
        )
    os.makedirs(root, exist_ok=True)
    write_json_atomic(path, {"description": dict(description), "runs": runs})


def _by_name(runs: list[dict]) -> list[dict]:
    return sorted(runs, key=lambda run: run["name"])


def _difference(saved_runs: list[dict], runs: list[dict]) -> str:
    """What differs between two manifests' runs, in a sentence that ends with the remedy."""
    saved_configs = sorted({run["config"] for run in saved_runs})
    configs = sorted({run["config"] for run in runs})
    if saved_configs != configs:
        detail = f"config {saved_configs} there, {configs} here"
    else:
        saved_names, names = [run["name"] for run in saved_runs], [run["name"] for run in runs]
        only_saved = [name for name in saved_names if name not in names]
        only_new = [name for name in names if name not in saved_names]
        if only_saved or only_new:
            detail = (
                f"{len(only_saved)} runs only there (e.g. {only_saved[:1]}), "
                f"{len(only_new)} only here (e.g. {only_new[:1]})"
            )
        else:
            detail = "the same run names with other overrides (e.g. a different --set)"
    return f"{detail}. Use a new --workdir (nothing was written)."


def run_status(root: str, spec: RunSpec) -> str:
    """ "finished" (root/name/eval.json exists), "failed" (the last launch exited non-zero or
    wrote no eval.json: root/name/FAILED), "unfinished" (started: its directory holds files)
    or "pending"."""
    run_dir = os.path.join(root, spec.name)
    if os.path.exists(os.path.join(run_dir, EVAL_FILE)):
        return "finished"
    if os.path.exists(os.path.join(run_dir, FAILED_FILE)):
        return "failed"
    if os.path.isdir(run_dir) and os.listdir(run_dir):
        return "unfinished"
    return "pending"


def command_lines(specs: Sequence[RunSpec], root: str) -> list[str]:
    """One line per run: its shell command (`launch_command`) then `# <status>`, so the lines
    can be handed to a scheduler as they are; a header comment line comes first."""
    statuses = [run_status(root, spec) for spec in specs]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES if s in statuses)
    lines = [f"# {len(specs)} runs ({counts}); executed from {REPO_ROOT}"]
    for spec, status in zip(specs, statuses, strict=True):
        lines.append(f"{shell_command(launch_command(spec, root))}  # {status}")
    return lines


# ---------------------------------------------------------------------------------------------
# Launching.


def _child_environment(parallel: int) -> dict[str, str]:
    """os.environ, plus, for parallel > 1, a GPU memory fraction of 0.9/parallel per process
    unless the user chose one (JAX preallocates 75% of a GPU to each process otherwise)."""
    environment = dict(os.environ)
    memory_flags = ("XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_PREALLOCATE")
    if parallel > 1 and not any(flag in environment for flag in memory_flags):
        environment["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / parallel:.3f}"
    return environment


def _popen_launcher(environment: Mapping[str, str]) -> Launcher:
    def launch(argv, log_file):
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            env=dict(environment),
        )

    return launch


def _launch(spec: RunSpec, root: str, launcher: Launcher):
    """Starts `spec`, appending its output to root/name/train.log: (process, open log file)."""
    run_dir = os.path.join(root, spec.name)
    os.makedirs(run_dir, exist_ok=True)
    argv = launch_command(spec, root)
    log_file = open(os.path.join(run_dir, LOG_FILE), "a")  # closed by execute
    now = datetime.datetime.now().isoformat(timespec="seconds")
    log_file.write(f"\n# {now} sweep launch: {shell_command(argv)}\n")
    log_file.flush()
    try:
        return launcher(argv, log_file), log_file
    except BaseException:
        log_file.close()
        raise


def _record_outcome(spec: RunSpec, root: str, return_code: int) -> None:
    """Writes root/name/FAILED after a non-zero exit (or a zero one without eval.json);
    removes an old marker after a success."""
    run_dir = os.path.join(root, spec.name)
    marker = os.path.join(run_dir, FAILED_FILE)
    wrote_results = os.path.exists(os.path.join(run_dir, EVAL_FILE))
    if return_code == 0 and wrote_results:
        if os.path.exists(marker):
            os.remove(marker)
        return
    reason = f"exit status {return_code}" if return_code else "exit status 0 but no eval.json"
    if return_code == preemption.PREEMPTED_EXIT_STATUS:
        reason += " (stopped by a signal after checkpointing: launching again resumes it)"
    util.write_text_atomic(marker, f"{reason}; log: {os.path.join(run_dir, LOG_FILE)}\n")


def execute(
    specs: Sequence[RunSpec],
    root: str,
    parallel: int = 1,
    launcher: Launcher | None = None,
    progress: bool = True,
) -> dict[str, int]:
    """Launches every run of `specs` that is not finished, at most `parallel` at a time, and
    waits for them all. Finished runs are skipped: calling this again resumes the sweep.

    Each run is `launch_command(spec, root)` started from the repository root with the
    environment of this process (see `_child_environment`), its output appended to
    root/name/train.log. A run that exits non-zero (or writes no eval.json) gets a
    root/name/FAILED marker and does not stop the others; a later success removes the marker.
    On an exception (e.g. Ctrl-C) the running processes are terminated.

    Args:
      specs: the sweep's runs.
      root: the sweep root.
      parallel: how many runs at once (>= 1).
      launcher: `(argv, log file) -> process` with `poll()`, `terminate()` and `wait()`;
        default `subprocess.Popen`.
      progress: show a tqdm bar over the launched runs.

    Returns:
      {run name: return code} of the runs launched by this call.
    """
    if parallel < 1:
        raise SweepError(f"--parallel={parallel} must be at least 1")
    launcher = launcher or _popen_launcher(_child_environment(parallel))
    queue = collections.deque(spec for spec in specs if run_status(root, spec) != "finished")
    running, return_codes = {}, {}
    bar = tqdm(total=len(queue), desc="sweep", unit="run", disable=not progress)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                spec = queue.popleft()
                running[spec.name] = (spec, *_launch(spec, root, launcher))
            done = {name: entry[1].poll() for name, entry in running.items()}
            done = {name: code for name, code in done.items() if code is not None}
            if not done:
                time.sleep(_POLL_SECONDS)
            for name, code in done.items():
                spec, _, log_file = running.pop(name)
                log_file.close()
                return_codes[name] = code
                _record_outcome(spec, root, code)
                bar.update(1)
                bar.set_postfix(failed=sum(1 for c in return_codes.values() if c != 0))
    finally:
        for _, process, log_file in running.values():
            process.terminate()
            process.wait()
            log_file.close()
        bar.close()
    return return_codes


# ---------------------------------------------------------------------------------------------
# Results.


def _is_scalar(value) -> bool:
    return isinstance(value, int | float | str | bool)


def _median_steps_per_sec(metrics_path: str) -> float | None:
    """The median of metrics.jsonl's "perf/steps_per_sec" (the first entry includes
    compilation, so the median, not the mean); None when the log has none."""
    if not os.path.exists(metrics_path):
        return None
    values = []
    with open(metrics_path) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if util.is_number(entry.get("perf/steps_per_sec")):
                values.append(entry["perf/steps_per_sec"])
    return float(np.median(values)) if values else None


def collect(specs: Sequence[RunSpec], root: str) -> list[dict]:
    """One row per run, keys in this order: its labels (grid fields, then "seed"), "status",
    every scalar (int, float, str, bool) of its eval.json (lists and dicts skipped) and
    "steps_per_sec", the median of metrics.jsonl's "perf/steps_per_sec" when logged."""
    rows = []
    for spec in specs:
        run_dir = os.path.join(root, spec.name)
        row = dict(spec.labels)
        row["status"] = run_status(root, spec)
        if row["status"] == "finished":
            with open(os.path.join(run_dir, EVAL_FILE)) as f:
                results = json.load(f)
            row.update(
                (key, value)
                for key, value in results.items()
                if _is_scalar(value) and key not in row
            )
        steps_per_sec = _median_steps_per_sec(os.path.join(run_dir, "metrics.jsonl"))
        if steps_per_sec is not None:
            row["steps_per_sec"] = steps_per_sec
        rows.append(row)
    return rows


def _label_columns(rows: Sequence[Mapping]) -> list[str]:
    """The label columns of `collect`'s rows: the keys before "status"."""
    if not rows:
        raise SweepError("no runs to aggregate")
    keys = list(rows[0])
    return keys[: keys.index("status")]


def _columns(rows: Sequence[Mapping]) -> list[str]:
    """The union of the rows' keys in order of first appearance (labels and status first)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def _default_metrics(rows: Sequence[Mapping]) -> list[str]:
    labels = _label_columns(rows)
    return [
        column
        for column in _columns(rows)
        if column not in (*labels, "status", *_NOT_METRICS)
        and any(util.is_number(row.get(column)) for row in rows)
    ]


def _check_metrics(rows: Sequence[Mapping], metrics: Sequence[str]) -> None:
    available = _default_metrics(rows)
    columns = _columns(rows)
    for metric in metrics:
        if metric not in columns or not any(util.is_number(row.get(metric)) for row in rows):
            raise SweepError(f"metric {metric!r} is not a number in any run; numeric: {available}")


def _mean_std(values: Sequence[float]) -> dict:
    """{"mean", "std" (sample std, ddof=1; None for fewer than 2 values), "count"}."""
    if not values:
        return {"mean": None, "std": None, "count": 0}
    values = np.asarray(values, dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "std": std, "count": len(values)}


def aggregate_table(rows: Sequence[Mapping], metrics: Sequence[str] | None = None) -> list[dict]:
    """The numbers behind results.md: one entry per grid point, in run order.

    Args:
      rows: `collect`'s rows.
      metrics: the columns to aggregate; default every numeric column but the labels, "step"
        and "num_test_examples".

    Returns:
      [{grid label: value, ..., "seeds": finished runs, "runs": runs, "metrics": {metric:
      {"mean", "std", "count"}}}], mean and sample std (ddof=1) over the finished runs that
      report the metric; std None for one such run, mean None for none.

    Raises:
      SweepError: a requested metric that no run reports as a number.
    """
    grid_columns = [column for column in _label_columns(rows) if column != "seed"]
    metrics = list(metrics) if metrics is not None else _default_metrics(rows)
    _check_metrics(rows, metrics)
    groups = collections.defaultdict(list)
    for row in rows:
        groups[tuple(row[column] for column in grid_columns)].append(row)
    table = []
    for key, group in groups.items():
        finished = [row for row in group if row["status"] == "finished"]
        entry = dict(zip(grid_columns, key, strict=True))
        entry["seeds"] = len(finished)
        entry["runs"] = len(group)
        entry["metrics"] = {
            metric: _mean_std([row[metric] for row in finished if util.is_number(row.get(metric))])
            for metric in metrics
        }
        table.append(entry)
    return table


def format_mean_std(mean: float | None, std: float | None) -> str:
    """ "mean ± std" with std to 2 significant digits and mean to the same decimal place
    (e.g. "103.62 ± 0.95", "104 ± 12"); "mean ± n/a" without a std (one seed, mean to 4
    significant digits); "—" without a mean (no finished seed)."""
    if mean is None:
        return "—"
    if std is None:
        return f"{mean:.4g} ± n/a"
    if std == 0 or not math.isfinite(std):
        return f"{mean:.4g} ± {std:g}"
    decimals = min(max(1 - math.floor(math.log10(std)), 0), 8)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _markdown_cell(value) -> str:
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping], root: str, metrics: Sequence[str] | None) -> str:
    """results.md: the grid points' mean ± std table, then the runs that have not finished."""
    table = aggregate_table(rows, metrics)
    grid_columns = [column for column in _label_columns(rows) if column != "seed"]
    metric_names = list(table[0]["metrics"])
    header = [*grid_columns, "seeds", *metric_names]
    lines = [
        "Mean ± sample standard deviation (ddof=1) over the finished seeds; "
        "'± n/a' where one seed finished, '—' where none did.",
        "",
        "| " + " | ".join(_markdown_cell(column) for column in header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for entry in table:
        cells = [entry[column] for column in grid_columns]
        cells.append(f"{entry['seeds']}/{entry['runs']}")
        cells += [format_mean_std(**_without_count(entry["metrics"][m])) for m in metric_names]
        lines.append("| " + " | ".join(_markdown_cell(cell) for cell in cells) + " |")
    labels = _label_columns(rows)
    unfinished = [row for row in rows if row["status"] != "finished"]
    if unfinished:
        lines += ["", f"Not finished ({len(unfinished)} of {len(rows)} runs):", ""]
        for row in unfinished:
            name = _run_name((label, row[label]) for label in labels)
            log = os.path.join(root, name, LOG_FILE)
            lines.append(
                f"- `{name}`: {row['status']}"
                + (f" (log: {log})" if row["status"] != "pending" else "")
            )
    return "\n".join(lines) + "\n"


def _without_count(summary: Mapping) -> dict:
    return {"mean": summary["mean"], "std": summary["std"]}


def _log_axis(values: Sequence) -> bool:
    """Whether grid values go on a log axis: all positive numbers spanning at least 10x."""
    if not values or not all(util.is_number(value) and value > 0 for value in values):
        return False
    return max(values) / min(values) >= 10


def _save_metric_plot(table: Sequence[Mapping], grid_columns: Sequence[str], metric, path) -> bool:
    """Plots `metric` against the first grid field, one line per combination of the others,
    error bars = std over seeds; returns False (and writes nothing) without any mean."""
    x_field = grid_columns[0] if grid_columns else None
    x_values = list(dict.fromkeys(entry[x_field] for entry in table)) if x_field else ["all"]
    log_axis = _log_axis(x_values)
    lines = collections.defaultdict(list)  # other fields' values -> [(x, mean, std)]
    for entry in table:
        summary = entry["metrics"][metric]
        if summary["mean"] is None:
            continue
        x = entry[x_field] if x_field else "all"
        position = x if log_axis else x_values.index(x)
        key = tuple((field, entry[field]) for field in grid_columns[1:])
        lines[key].append((position, summary["mean"], summary["std"] or 0.0))
    if not lines:
        return False
    figure = plots.new_figure()
    axes = figure.add_subplot()
    for key, points in lines.items():
        positions, means, stds = zip(*sorted(points), strict=True)
        label = ", ".join(f"{field}={value}" for field, value in key) or None
        axes.errorbar(positions, means, yerr=stds, marker="o", capsize=3, label=label)
    if log_axis:
        axes.set_xscale("log")
    else:
        axes.set_xticks(range(len(x_values)), [str(value) for value in x_values])
    axes.set_xlabel(x_field or "")
    axes.set_ylabel(metric)
    axes.set_title(f"{metric} (mean ± std over seeds)")
    if any(key for key in lines):
        axes.legend()
    plots.save_figure(figure, path)
    return True


def write_results(
    rows: Sequence[Mapping], root: str, metrics: Sequence[str] | None = None
) -> dict[str, str]:
    """Writes root/results.csv (every row and column), root/results.md (`markdown_table`) and
    root/plots/<metric>.png per aggregated metric with a value, each atomically.

    Returns:
      {"csv": path, "markdown": path, "plots": directory}.
    """
    paths = {
        "csv": os.path.join(root, "results.csv"),
        "markdown": os.path.join(root, "results.md"),
        "plots": os.path.join(root, "plots"),
    }
    markdown = markdown_table(rows, root, metrics)  # raises on an unknown metric: before writes
    util.write_text_atomic(paths["csv"], util.csv_text(rows, _columns(rows)))
    util.write_text_atomic(paths["markdown"], markdown)
    table = aggregate_table(rows, metrics)
    grid_columns = [column for column in _label_columns(rows) if column != "seed"]
    os.makedirs(paths["plots"], exist_ok=True)
    for metric in table[0]["metrics"]:
        plot_path = os.path.join(paths["plots"], _safe_name(metric) + ".png")
        _save_metric_plot(table, grid_columns, metric, plot_path)
    return paths
