"""Tests for genjax/workbench/sweep.py: grids, command lines, resume, aggregation.

Runs are launched through a fake launcher (no training) except in the one slow test, which runs
`python -m experiments.sweep` on the tiny VAE end to end.
"""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from genjax.train import preemption
from genjax.workbench import sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_VAE = f"{REPO_ROOT}/configs/vae.py:tiny"


@pytest.fixture(scope="module")
def config():
    return sweep.load_config_file(TINY_VAE)


def _write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f)


# --- config fields and values ----------------------------------------------------------------


def test_load_config_file_applies_the_variant_and_rejects_unknown_ones():
    tiny_iwae = sweep.load_config_file(f"{REPO_ROOT}/configs/iwae.py:tiny")
    assert tiny_iwae.model_config.num_importance_samples == 5  # iwae's tiny, not vae's 1
    assert tiny_iwae.dataset == "digits8x8"
    assert sweep.load_config_file(f"{REPO_ROOT}/configs/iwae.py").dataset == "mnist5k"
    with pytest.raises(sweep.SweepError, match="unknown config variant 'huge'"):
        sweep.load_config_file(f"{REPO_ROOT}/configs/vae.py:huge")
    with pytest.raises(sweep.SweepError, match="no config file"):
        sweep.load_config_file(f"{REPO_ROOT}/configs/missing.py")


def test_resolve_field_top_level_model_config_and_dotted(config):
    assert sweep.resolve_field(config, "learning_rate") == "learning_rate"
    assert sweep.resolve_field(config, "seed") == "seed"
    assert sweep.resolve_field(config, "num_importance_samples") == (
        "model_config.num_importance_samples"
    )
    assert sweep.resolve_field(config, "model_config.objective") == "model_config.objective"
    assert sweep.resolve_field(config, "preprocess.binarize") == "preprocess.binarize"


def test_resolve_field_refuses_an_ambiguous_name(config):
    both = sweep.apply_overrides(config, ())
    both.model_config.batch_size = 7  # now a top-level and a model_config field
    with pytest.raises(sweep.SweepError, match="ambiguous") as error:
        sweep.resolve_field(both, "batch_size")
    assert "'batch_size'" in str(error.value) and "'model_config.batch_size'" in str(error.value)


def test_resolve_field_lists_the_allowed_fields_of_an_unknown_one(config):
    with pytest.raises(sweep.SweepError) as error:
        sweep.resolve_field(config, "num_importance_sample")
    message = str(error.value)
    assert "unknown config field 'num_importance_sample'" in message
    assert "did you mean 'num_importance_samples'" in message
    assert "'learning_rate'" in message and "'eval_chunk_size'" in message  # both levels
    with pytest.raises(sweep.SweepError, match="model_config has no field 'nope'"):
        sweep.resolve_field(config, "model_config.nope")


def test_parse_value_converts_to_the_field_type(config):
    value = sweep.parse_value(config, "model_config.num_importance_samples", "7")
    assert value == 7 and type(value) is int
    value = sweep.parse_value(config, "learning_rate", "3e-4")
    assert value == 3e-4 and type(value) is float
    assert type(sweep.parse_value(config, "learning_rate", "1")) is float
    for text, expected in (("TRUE", True), ("false", False), ("1", True), ("0", False)):
        assert sweep.parse_value(config, "model_config.analytic_kl", text) is expected
    assert sweep.parse_value(config, "model_config.objective", "iwae") == "iwae"


@pytest.mark.parametrize(
    "path, text, message",
    [
        (
            "model_config.num_importance_samples",
            "five",
            "num_importance_samples='five' is not an int",
        ),
        ("model_config.num_importance_samples", "2.5", "is not an int"),
        ("learning_rate", "fast", "learning_rate='fast' is not a float"),
        ("model_config.analytic_kl", "yes", "analytic_kl='yes' is not a bool"),
        ("model_config.hidden_sizes", "(32,)", "hidden_sizes holds tuple.*only scalar fields"),
        (
            "preprocess",
            "x",
            "preprocess is a group of fields.*only scalar fields.*preprocess.binarize",
        ),
    ],
)
def test_parse_value_errors_name_field_and_value(config, path, text, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.parse_value(config, path, text)


def test_parse_grid_values_and_errors(config):
    grid = sweep.parse_grid(
        config, ["num_importance_samples=1, 5,50", "model_config.analytic_kl=true,false"]
    )
    assert grid == [
        ("num_importance_samples", [1, 5, 50]),
        ("model_config.analytic_kl", [True, False]),
    ]
    bad_grids = {
        "given twice": ["num_importance_samples=1", "model_config.num_importance_samples=2"],
        "empty value": ["num_importance_samples="],
        "empty value ": ["num_importance_samples=1,,2"],
        "must read field=value": ["num_importance_samples"],
        "swept by --seeds": ["seed=1,2"],
        "'1' is given twice|1 is given twice": ["num_importance_samples=1,1"],
    }
    for message, grid_flags in bad_grids.items():
        with pytest.raises(sweep.SweepError, match=message.strip()):
            sweep.parse_grid(config, grid_flags)


# --- runs and command lines ------------------------------------------------------------------


def test_grid_runs_product_order_seeds_innermost_and_fixed_overrides(config):
    grid = sweep.parse_grid(config, ["num_importance_samples=1,5,50", "learning_rate=1e-3,3e-4"])
    fixed = sweep.parse_assignments(config, ["num_steps=5"])
    specs = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(3), fixed)
    assert len(specs) == 3 * 2 * 3
    expected_labels = [
        (("num_importance_samples", k), ("learning_rate", lr), ("seed", seed))
        for k in (1, 5, 50)
        for lr in (1e-3, 3e-4)
        for seed in (0, 1, 2)
    ]
    assert [spec.labels for spec in specs] == expected_labels
    assert specs[4].name == "num_importance_samples=1,learning_rate=0.0003,seed=1"
    assert specs[4].overrides == (
        ("model_config.num_importance_samples", 1),
        ("learning_rate", 3e-4),
        ("num_steps", 5),
        ("seed", 1),
    )
    assert len({spec.name for spec in specs}) == len(specs)
    for spec in specs:
        assert re.fullmatch(r"[A-Za-z0-9._=,+-]+", spec.name)
        assert ("num_steps", 5) in spec.overrides
        assert "num_steps" not in dict(spec.labels)
        assert spec.config == "configs/vae.py:tiny"


def test_grid_runs_names_are_filesystem_safe_and_distinct(config):
    grid = sweep.parse_grid(config, ["dataset=toy2d/8gaussians,my data"])
    specs = sweep.grid_runs("c.py", config, grid, [0])
    assert [spec.name for spec in specs] == [
        "dataset=toy2d_8gaussians,seed=0",
        "dataset=my_data,seed=0",
    ]
    assert specs[0].labels == (("dataset", "toy2d/8gaussians"), ("seed", 0))  # labels as given
    clashing = sweep.parse_grid(config, ["dataset=a/b,a_b"])
    with pytest.raises(sweep.SweepError, match="share the directory name"):
        sweep.grid_runs("c.py", config, clashing, [0])
    with pytest.raises(sweep.SweepError, match="also swept"):
        sweep.grid_runs("c.py", config, grid, [0], [("dataset", "mnist5k")])


def test_run_command_lists_the_overrides():
    spec = sweep.RunSpec(
        "k=5,seed=1",
        "configs/iwae.py",
        (("model_config.num_importance_samples", 5), ("seed", 1)),
        (),
    )
    assert sweep.run_command(spec, "runs/sweep", python="py") == [
        "py",
        "-m",
        "experiments.train",
        "--config=configs/iwae.py",
        "--workdir=runs/sweep/k=5,seed=1",
        "--config.model_config.num_importance_samples=5",
        "--config.seed=1",
        "--config.progress_bar=False",
    ]


def test_run_command_round_trips_through_ml_collections_flags(tmp_path):
    """The trainer's own flag parsing reads every override back with its exact value and type."""
    overrides = (
        ("model_config.num_importance_samples", 7),
        ("learning_rate", 3e-4),
        ("lr_decay_rate", 0.1 + 0.2),  # 0.30000000000000004: needs repr, not str(round)
        ("model_config.analytic_kl", True),
        ("progress_bar", True),
        ("model_config.objective", "iwae"),
        ("data_dir", "/data with space/tfds"),
        ("seed", 2),
    )
    spec = sweep.RunSpec("run", "configs/vae.py:tiny", overrides, (("seed", 2),))
    argv = sweep.launch_command(spec, str(tmp_path))
    assert shlex.split(sweep.shell_command(argv)) == argv
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv[2:])
    flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
    flag_values(argv[2:])  # argv[2] ("experiments.train") stands for the program name
    parsed = flag_values.config
    for path, value in overrides:
        parsed_value = parsed
        for part in path.split("."):
            parsed_value = parsed_value[part]
        assert parsed_value == value and type(parsed_value) is type(value), path
    assert flag_values.workdir == os.path.join(str(tmp_path), "run")
    assert parsed.num_steps == 20  # untouched fields keep the variant's values
    assert argv.count("--config.progress_bar=True") == 1
    assert "--config.progress_bar=False" not in argv  # the run's own setting wins


# --- manifest and resume ---------------------------------------------------------------------


def test_a_manifest_that_may_grow_adds_new_runs_and_still_refuses_changed_ones(config, tmp_path):
    """`add_runs` (the leaderboard's): new runs join the manifest; a changed or a missing
    saved run is refused as before, and nothing is written then."""
    grid = sweep.parse_grid(config, ["num_importance_samples=1,2"])
    root = str(tmp_path / "sweep")
    two = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(1))
    sweep.write_manifest(root, two, {"note": "first"}, add_runs=True)
    four = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(2))
    sweep.write_manifest(root, four, {}, add_runs=True)
    manifest = json.loads(Path(root, sweep.MANIFEST_FILE).read_text())
    assert sorted(run["name"] for run in manifest["runs"]) == sorted(spec.name for spec in four)
    assert manifest["description"] == {"note": "first"}
    changed = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(2), [("num_steps", 5)])
    for other in (changed, four[:1]):
        before = Path(root, sweep.MANIFEST_FILE).read_bytes()
        with pytest.raises(sweep.SweepError, match="describes another sweep"):
            sweep.write_manifest(root, other, {}, add_runs=True)
        assert Path(root, sweep.MANIFEST_FILE).read_bytes() == before


def test_manifest_refuses_another_sweep_and_keeps_the_old_one(config, tmp_path):
    grid = sweep.parse_grid(config, ["num_importance_samples=1,2"])
    specs = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(2))
    root = str(tmp_path / "sweep")
    sweep.write_manifest(root, specs, {"note": "first"})
    manifest = Path(root, sweep.MANIFEST_FILE).read_bytes()
    sweep.write_manifest(root, specs, {"note": "second"})  # the same sweep: resumes
    sweep.write_manifest(root, specs[::-1], {})  # the same runs in another order: the same
    other_seeds = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(3))
    other_config = sweep.grid_runs("configs/iwae.py:tiny", config, grid, range(2))
    fixed = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(2), [("num_steps", 5)])
    for other, message in (
        (other_seeds, "2 only here"),
        (other_config, "config"),
        (fixed, "overrides"),
    ):
        with pytest.raises(sweep.SweepError, match="Use a new --workdir") as error:
            sweep.write_manifest(root, other, {})
        assert message in str(error.value)
    assert Path(root, sweep.MANIFEST_FILE).read_bytes() == manifest
    assert json.loads(manifest)["description"] == {"note": "first"}
    foreign = tmp_path / "a_training_run"
    _write_json(str(foreign / "eval.json"), {})
    with pytest.raises(sweep.SweepError, match="not a sweep"):
        sweep.write_manifest(str(foreign), specs, {})
    assert os.listdir(foreign) == ["eval.json"]


def test_manifest_resumes_in_a_moved_clone(config, tmp_path, monkeypatch):
    """The leaderboard names configs by absolute path; its manifest records them relative to the
    repository, so a copy of the clone (and its run root) elsewhere resumes the same sweep."""
    grid = sweep.parse_grid(config, ["num_importance_samples=1,2"])
    root = str(tmp_path / "sweep")
    first_clone, second_clone = str(tmp_path / "first"), str(tmp_path / "second")
    monkeypatch.setattr(sweep, "REPO_ROOT", first_clone)
    specs = sweep.grid_runs(f"{first_clone}/configs/vae.py:tiny", config, grid, range(2))
    sweep.write_manifest(root, specs, {})
    manifest = Path(root, sweep.MANIFEST_FILE).read_bytes()
    assert {run["config"] for run in json.loads(manifest)["runs"]} == {"configs/vae.py:tiny"}
    monkeypatch.setattr(sweep, "REPO_ROOT", second_clone)
    moved = sweep.grid_runs(f"{second_clone}/configs/vae.py:tiny", config, grid, range(2))
    sweep.write_manifest(root, moved, {})  # the same sweep: resumes
    other_file = sweep.grid_runs(f"{second_clone}/configs/iwae.py:tiny", config, grid, range(2))
    with pytest.raises(sweep.SweepError, match="configs/iwae.py:tiny"):
        sweep.write_manifest(root, other_file, {})
    outside = sweep.grid_runs(f"{first_clone}/configs/vae.py:tiny", config, grid, range(2))
    with pytest.raises(sweep.SweepError, match="Use a new --workdir"):  # not this clone's file
        sweep.write_manifest(root, outside, {})
    assert Path(root, sweep.MANIFEST_FILE).read_bytes() == manifest


def test_a_manifest_with_absolute_repository_paths_still_resumes(config, tmp_path):
    """Manifests written before configs were recorded relative to the repository hold the
    leaderboard's absolute paths; in the same clone they describe the same sweep."""
    grid = sweep.parse_grid(config, ["num_importance_samples=1,2"])
    specs = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(2))
    root = str(tmp_path / "sweep")
    sweep.write_manifest(root, specs, {})
    path = Path(root, sweep.MANIFEST_FILE)
    manifest = json.loads(path.read_text())
    for run in manifest["runs"]:
        run["config"] = os.path.join(sweep.REPO_ROOT, run["config"])
    path.write_text(json.dumps(manifest))
    sweep.write_manifest(root, specs, {})
    other = sweep.grid_runs("configs/iwae.py:tiny", config, grid, range(2))
    with pytest.raises(sweep.SweepError, match="config"):
        sweep.write_manifest(root, other, {})


class _FakeProcess:
    """Finishes on its third poll: writes eval.json when its return code is 0."""

    def __init__(self, launcher, workdir, return_code):
        self.launcher, self.workdir, self.return_code, self.polls = (
            launcher,
            workdir,
            return_code,
            0,
        )

    def poll(self):
        self.polls += 1
        if self.polls < 3:
            return None
        if self.polls == 3:
            self.launcher.running -= 1
            if self.return_code == 0:
                _write_json(os.path.join(self.workdir, "eval.json"), {"test_nll_nats": 1.0})
        return self.return_code

    def terminate(self):
        pass

    def wait(self):
        return self.return_code


class _FakeLauncher:
    """Records what it launches and the most runs alive at once; `failing` runs exit 1."""

    def __init__(self, failing=()):
        self.failing, self.launched, self.running, self.max_running = set(failing), [], 0, 0

    def __call__(self, argv, log_file):
        workdir = next(arg.split("=", 1)[1] for arg in argv if arg.startswith("--workdir="))
        name = os.path.basename(workdir)
        self.launched.append(name)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        log_file.write(f"fake training of {name}\n")
        return _FakeProcess(self, workdir, 1 if name in self.failing else 0)


@pytest.mark.parametrize("parallel", [1, 3])
def test_execute_resumes_marks_failures_and_bounds_parallelism(
    config, tmp_path, monkeypatch, parallel
):
    monkeypatch.setattr(sweep, "_POLL_SECONDS", 0.001)
    grid = sweep.parse_grid(config, ["num_importance_samples=1,2"])
    specs = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(4))
    root = str(tmp_path)
    done_before = specs[0].name  # finished by an earlier, interrupted launch
    _write_json(os.path.join(root, done_before, "eval.json"), {"test_nll_nats": 2.0})
    failing = specs[5].name
    launcher = _FakeLauncher(failing=[failing])
    codes = sweep.execute(specs, root, parallel=parallel, launcher=launcher, progress=False)
    assert sorted(launcher.launched) == sorted(spec.name for spec in specs[1:])
    assert launcher.max_running == parallel
    assert codes == {spec.name: (1 if spec.name == failing else 0) for spec in specs[1:]}
    statuses = {spec.name: sweep.run_status(root, spec) for spec in specs}
    assert statuses == {
        spec.name: "failed" if spec.name == failing else "finished" for spec in specs
    }
    marker = Path(root, failing, sweep.FAILED_FILE).read_text()
    assert "exit status 1" in marker and os.path.join(root, failing, "train.log") in marker
    log = Path(root, failing, "train.log").read_text()
    assert (
        "sweep launch:" in log and "--config.seed=1" in log and f"fake training of {failing}" in log
    )

    relaunch = _FakeLauncher()  # the failed run succeeds this time
    assert sweep.execute(specs, root, parallel=parallel, launcher=relaunch, progress=False) == {
        failing: 0
    }
    assert relaunch.launched == [failing]
    assert not os.path.exists(os.path.join(root, failing, sweep.FAILED_FILE))
    assert Path(root, failing, "train.log").read_text().count("sweep launch:") == 2
    finished = _FakeLauncher()
    assert sweep.execute(specs, root, parallel=parallel, launcher=finished, progress=False) == {}
    assert finished.launched == []


def test_run_status_unfinished_and_pending(config, tmp_path):
    specs = sweep.grid_runs("c.py", config, [], range(2))
    _write_json(os.path.join(tmp_path, specs[0].name, "config.json"), {})
    assert [sweep.run_status(str(tmp_path), spec) for spec in specs] == ["unfinished", "pending"]


def test_child_environment_shares_the_gpu_memory_between_parallel_runs(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in sweep._child_environment(1)
    assert sweep._child_environment(4)["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the user's choice stands
    assert "XLA_PYTHON_CLIENT_MEM_FRACTION" not in sweep._child_environment(4)


# --- results ---------------------------------------------------------------------------------

# (k, seed) -> test_nll_nats, active_units of the finished runs; (5, 2) failed, (50, 1)
# started, (50, 2) never launched.
_RESULTS = {
    (1, 0): (100.0, 3),
    (1, 1): (102.0, 4),
    (1, 2): (104.0, 5),
    (5, 0): (95.0, 6),
    (5, 1): (96.0, 6),
    (50, 0): (97.25, 7),
}


@pytest.fixture
def finished_sweep(config, tmp_path):
    grid = sweep.parse_grid(config, ["num_importance_samples=1,5,50"])
    specs = sweep.grid_runs("configs/vae.py:tiny", config, grid, range(3))
    root = str(tmp_path)
    for spec in specs:
        labels = dict(spec.labels)
        key = (labels["num_importance_samples"], labels["seed"])
        run_dir = os.path.join(root, spec.name)
        if key in _RESULTS:
            nll, active = _RESULTS[key]
            results = dict(
                test_nll_nats=nll,
                active_units=active,
                active_units_per_layer=[active],
                nll_estimator="iwae-64",
                num_test_examples=355,
                step=5,
            )
            _write_json(os.path.join(run_dir, "eval.json"), results)
    lines = [
        json.dumps({"step": s, "perf/steps_per_sec": v})
        for s, v in ((5, 10.0), (10, 30.0), (15, 20.0))
    ]
    with open(os.path.join(root, specs[0].name, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + '\n{"step": 20, "perf/ste')  # a line cut by a crash
    Path(root, specs[5].name).mkdir()
    Path(root, specs[5].name, sweep.FAILED_FILE).write_text("exit status 1\n")
    Path(root, specs[7].name).mkdir()
    Path(root, specs[7].name, "train.log").write_text("started\n")
    return specs, root


def test_collect_rows(finished_sweep):
    specs, root = finished_sweep
    rows = sweep.collect(specs, root)
    assert rows[0] == {
        "num_importance_samples": 1,
        "seed": 0,
        "status": "finished",
        "test_nll_nats": 100.0,
        "active_units": 3,
        "nll_estimator": "iwae-64",
        "num_test_examples": 355,
        "step": 5,
        "steps_per_sec": 20.0,  # the median of 10, 30, 20
    }
    assert list(rows[0])[:3] == ["num_importance_samples", "seed", "status"]
    assert [row["status"] for row in rows[5:]] == ["failed", "finished", "unfinished", "pending"]
    assert rows[5] == {"num_importance_samples": 5, "seed": 2, "status": "failed"}


def test_aggregate_table_matches_numpy(finished_sweep):
    specs, root = finished_sweep
    table = sweep.aggregate_table(sweep.collect(specs, root))
    assert [entry["num_importance_samples"] for entry in table] == [1, 5, 50]
    assert [(entry["seeds"], entry["runs"]) for entry in table] == [(3, 3), (2, 3), (1, 3)]
    assert list(table[0]["metrics"]) == ["test_nll_nats", "active_units", "steps_per_sec"]
    for entry in table:
        k = entry["num_importance_samples"]
        nlls = [nll for (kk, _), (nll, _) in _RESULTS.items() if kk == k]
        actives = [active for (kk, _), (_, active) in _RESULTS.items() if kk == k]
        for metric, values in (("test_nll_nats", nlls), ("active_units", actives)):
            summary = entry["metrics"][metric]
            assert summary["count"] == len(values)
            np.testing.assert_allclose(summary["mean"], np.mean(values), rtol=1e-12)
            if len(values) > 1:
                np.testing.assert_allclose(summary["std"], np.std(values, ddof=1), rtol=1e-12)
            else:
                assert summary["std"] is None
    assert table[0]["metrics"]["steps_per_sec"] == {"mean": 20.0, "std": None, "count": 1}
    assert table[1]["metrics"]["steps_per_sec"] == {"mean": None, "std": None, "count": 0}
    with pytest.raises(sweep.SweepError, match="'nll_estimator' is not a number"):
        sweep.aggregate_table(sweep.collect(specs, root), ["nll_estimator"])


def test_the_time_budget_of_a_run_is_not_a_metric():
    """eval.json's max_train_seconds is a setting (genjax.train.loop); train_seconds is
    measured, and tabulated."""
    rows = [
        {"seed": seed, "status": "finished", "test_nll_nats": nll, "train_seconds": seconds,
         "max_train_seconds": 60.0, "stopped_by": "max_train_seconds", "step": 1234}
        for seed, nll, seconds in ((0, 100.0, 61.0), (1, 102.0, 63.0))
    ]  # fmt: skip
    (entry,) = sweep.aggregate_table(rows)
    assert list(entry["metrics"]) == ["test_nll_nats", "train_seconds"]
    assert entry["metrics"]["train_seconds"]["mean"] == 62.0


def test_format_mean_std():
    assert sweep.format_mean_std(103.62, 0.95) == "103.62 ± 0.95"
    assert sweep.format_mean_std(104.4, 12.3) == "104 ± 12"
    assert sweep.format_mean_std(0.03456, 0.00123) == "0.0346 ± 0.0012"
    assert sweep.format_mean_std(37.0, 0.0) == "37 ± 0"
    assert sweep.format_mean_std(5.0, None) == "5 ± n/a"
    assert sweep.format_mean_std(None, None) == "—"


def test_write_results_csv_markdown_and_plots(finished_sweep):
    specs, root = finished_sweep
    paths = sweep.write_results(sweep.collect(specs, root), root)
    assert paths == {
        "csv": os.path.join(root, "results.csv"),
        "markdown": os.path.join(root, "results.md"),
        "plots": os.path.join(root, "plots"),
    }
    with open(paths["csv"]) as f:
        reader = csv.DictReader(f)
        csv_rows = list(reader)
    assert reader.fieldnames[:3] == ["num_importance_samples", "seed", "status"]
    assert "active_units_per_layer" not in reader.fieldnames  # lists are skipped
    assert len(csv_rows) == 9
    assert [float(row["test_nll_nats"]) for row in csv_rows if row["test_nll_nats"]] == [
        nll for nll, _ in _RESULTS.values()
    ]
    assert csv_rows[5]["status"] == "failed" and csv_rows[5]["test_nll_nats"] == ""

    markdown = Path(paths["markdown"]).read_text()
    # test_nll_nats: k=1 mean 102, sample std 2; k=5 mean 95.5, std sqrt(0.5) = 0.7071.
    assert (
        "| num_importance_samples | seeds | test_nll_nats | active_units | steps_per_sec |"
        in markdown
    )
    assert "| 1 | 3/3 | 102.0 ± 2.0 | 4.0 ± 1.0 | 20 ± n/a |" in markdown
    assert "| 5 | 2/3 | 95.50 ± 0.71 | 6 ± 0 | — |" in markdown
    assert "| 50 | 1/3 | 97.25 ± n/a | 7 ± n/a | — |" in markdown
    failed_log = os.path.join(root, specs[5].name, "train.log")
    assert f"- `num_importance_samples=5,seed=2`: failed (log: {failed_log})" in markdown
    assert "- `num_importance_samples=50,seed=1`: unfinished" in markdown
    assert "- `num_importance_samples=50,seed=2`: pending" in markdown

    assert sorted(os.listdir(paths["plots"])) == [
        "active_units.png",
        "steps_per_sec.png",
        "test_nll_nats.png",
    ]
    with Image.open(os.path.join(paths["plots"], "test_nll_nats.png")) as image:
        assert image.size == (400, 400)


def test_write_results_chosen_metrics_and_two_grid_fields(config, tmp_path):
    grid = sweep.parse_grid(config, ["model_config.objective=elbo,iwae", "learning_rate=1e-3,3e-4"])
    specs = sweep.grid_runs("c.py", config, grid, range(2))
    for index, spec in enumerate(specs):
        _write_json(os.path.join(tmp_path, spec.name, "eval.json"), {"a": index, "b": 1.0})
    paths = sweep.write_results(sweep.collect(specs, str(tmp_path)), str(tmp_path), ["b"])
    assert os.listdir(paths["plots"]) == ["b.png"]
    markdown = Path(paths["markdown"]).read_text()
    assert "| model_config.objective | learning_rate | seeds | b |" in markdown
    assert "| iwae | 0.0003 | 2/2 | 1 ± 0 |" in markdown
    with pytest.raises(sweep.SweepError, match="'c' is not a number in any run"):
        sweep.write_results(sweep.collect(specs, str(tmp_path)), str(tmp_path), ["c"])


def test_log_axis_choice():
    assert sweep._log_axis([1, 5, 50])
    assert sweep._log_axis([1e-4, 1e-3])
    assert not sweep._log_axis([1, 2, 4])  # spans less than 10x: categorical
    assert not sweep._log_axis([0, 10, 100])
    assert not sweep._log_axis(["reparam", "dreg"])
    assert not sweep._log_axis([True, False])


# --- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_command_line_trains_aggregates_and_resumes(tmp_path):
    root = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "experiments.sweep",
        "--config=configs/vae.py:tiny",
        "--grid=num_importance_samples=1,2",
        "--seeds=1",
        "--set=num_steps=5",
        f"--workdir={root}",
        "--parallel=2",
    ]

    def run(*extra):
        return subprocess.run(
            command + list(extra), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900
        )

    dry = run("--dry_run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert dry.stdout.count("-m experiments.train") == 2 and dry.stdout.count("# pending") == 2
    assert sorted(os.listdir(root)) == ["sweep.json"]

    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    with open(root / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["num_importance_samples"], row["seed"], row["status"]) for row in rows] == [
        ("1", "0", "finished"),
        ("2", "0", "finished"),
    ]
    assert all(float(row["test_nll_nats"]) > 0 and row["step"] == "5" for row in rows)
    assert "| 1 | 1/1 |" in first.stdout and "| 2 | 1/1 |" in first.stdout
    logs = {
        name: (root / name / "train.log").read_text()
        for name in ("num_importance_samples=1,seed=0", "num_importance_samples=2,seed=0")
    }

    second = run()
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("# finished") == 2 and "# pending" not in second.stdout
    assert {name: (root / name / "train.log").read_text() for name in logs} == logs  # no launch

    other = run("--seeds=2")  # absl keeps the last --seeds: another sweep, refused
    assert other.returncode == 1 and "Use a new --workdir" in other.stderr


def test_a_run_stopped_by_a_signal_is_marked_resumable(tmp_path):
    spec = sweep.RunSpec(name="run", config="configs/vae.py:tiny", overrides=(), labels=())
    os.makedirs(tmp_path / "run")
    sweep._record_outcome(spec, str(tmp_path), preemption.PREEMPTED_EXIT_STATUS)
    marker = Path(tmp_path, "run", sweep.FAILED_FILE).read_text()
    assert "exit status 75 (stopped by a signal after checkpointing" in marker
