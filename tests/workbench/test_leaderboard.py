"""Tests for genjax/workbench/leaderboard.py: runs and their overrides, applicability, rows, tables
and the samples figure.

Rows are read from hand-written run directories (eval.json, metrics.jsonl, samples/*.png,
train.log) whose numbers are worked out by hand below; the two slow tests launch the trainer:
one run that stops at its configuration check, and `python -m experiments.leaderboard` on two
models for 3 steps each.
"""

import csv
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

from genjax import models
from genjax.core import util
from genjax.train import config as config_lib
from genjax.train import loop
from genjax.workbench import leaderboard, sweep

REPO_ROOT = Path(__file__).resolve().parents[2]
# The run names of the configs that set LEADERBOARD, read off their text (not through
# `leaderboard.entries()`), by file name.
ALL_NAMES = sorted(
    path.stem
    for path in (REPO_ROOT / "configs").glob("*.py")
    if re.search(r"^LEADERBOARD = \"[^\"]+\"$", path.read_text(), re.M)
)


def _entries(*names):
    """The leaderboard's entries for these run names, in this order."""
    by_name = {leaderboard.run_name(entry[1]): entry for entry in leaderboard.entries()}
    return [by_name[name] for name in names]


def _write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f)


def _write_png(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((12, 12), value, np.uint8)).save(path)


def _overrides(spec):
    return dict(spec.overrides)


# --- runs ------------------------------------------------------------------------------------


def test_every_config_that_names_a_row_is_an_entry_and_every_family_has_one():
    entries = leaderboard.entries()
    assert [leaderboard.run_name(config) for _, config in entries] == ALL_NAMES
    labels = [label for label, _ in entries]
    assert len(set(labels)) == len(labels) and all(labels)
    families = {sweep.load_config_file(config).model for _, config in entries}
    assert families == set(models.names()) - set(leaderboard.NOT_RANKED)
    assert set(leaderboard.NOT_RANKED) <= set(models.names())


def test_leaderboard_runs_set_the_budget_on_every_entry():
    specs = leaderboard.leaderboard_runs(leaderboard.entries(), "mnist5k", 1000, 500, 3)
    assert [spec.name for spec in specs] == ALL_NAMES
    assert [dict(spec.labels)["model"] for spec in specs] == [
        label for label, _ in leaderboard.entries()
    ]
    expected = {
        "dataset": "mnist5k",
        "num_steps": 1000,
        "eval_every": 0,
        "sample_every": 0,
        "checkpoint_every": 1000,
        "log_every": 100,
        "sample_quality_samples": 500,
        "seed": 3,
    }
    for spec in specs:
        overrides = _overrides(spec)
        assert {key: overrides[key] for key in expected} == expected, spec.name
        assert spec.config == f"{REPO_ROOT}/configs/{spec.name}.py"
        staged = "model_config.stage_steps" in overrides
        assert staged == (spec.name in ("dbn", "dbm")), spec.name
    by_name = {spec.name: spec for spec in specs}
    assert _overrides(by_name["dbn"])["model_config.stage_steps"] == (500, 500)  # (4000, 4000)
    assert _overrides(by_name["dbm"])["model_config.stage_steps"] == (250, 250, 500)
    short = leaderboard.leaderboard_runs(_entries("rbm"), "digits8x8", 30, 0, 0)
    assert (
        _overrides(short[0])["log_every"] == 30 and _overrides(short[0])["checkpoint_every"] == 30
    )
    for bad, message in (
        (dict(budget=0), "--budget=steps:0 must be a positive amount"),
        (dict(budget=leaderboard.Budget("minutes", -1.0)), "--budget=minutes:-1 must be"),
        (dict(sample_quality_samples=5), "at least 10"),
        (dict(budget=2, entries=[("DBM", "configs/dbm.py")]), "fewer than the 3"),
    ):
        arguments = dict(
            entries=_entries("rbm"),
            dataset="mnist5k",
            budget=10,
            sample_quality_samples=50,
            seed=0,
        )
        with pytest.raises(leaderboard.LeaderboardError, match=message):
            leaderboard.leaderboard_runs(**{**arguments, **bad})


def test_parse_budget_reads_time_and_steps():
    five_minutes = leaderboard.parse_budget("minutes:5")
    assert five_minutes == leaderboard.Budget("minutes", 5.0)
    assert five_minutes.is_time and five_minutes.seconds == 300.0
    assert str(five_minutes) == "minutes:5"
    assert leaderboard.parse_budget("seconds:2.5").seconds == 2.5
    steps = leaderboard.parse_budget("steps:1000")
    assert steps == leaderboard.Budget("steps", 1000) and type(steps.amount) is int
    assert not steps.is_time and steps.seconds == 0.0
    for text, message in (
        ("hours:1", "unknown kind 'hours'; allowed: 'minutes:M', 'seconds:S' or 'steps:N'"),
        ("1000", "unknown kind '1000'"),
        ("steps:1.5", "steps must be a positive integer"),
        ("steps:0", "steps must be a positive integer"),
        ("minutes:0", "minutes must be a positive number"),
        ("minutes:nan", "minutes must be a positive number"),
        ("seconds:", "seconds must be a positive number"),
    ):
        with pytest.raises(leaderboard.LeaderboardError, match=re.escape(message)):
            leaderboard.parse_budget(text)


def test_leaderboard_runs_under_a_time_budget():
    """Every run gets max_train_seconds and the num_steps cap; DBN and DBM keep their own
    stages (8,000 steps each), since their stages count steps."""
    budget = leaderboard.Budget("minutes", 5.0)
    specs = leaderboard.leaderboard_runs(leaderboard.entries(), "mnist5k", budget, 1000, 0)
    assert [spec.name for spec in specs] == ALL_NAMES
    for spec in specs:
        overrides = _overrides(spec)
        num_steps = 8000 if spec.name in ("dbn", "dbm") else leaderboard.TIME_BUDGET_NUM_STEPS
        assert overrides["max_train_seconds"] == 300.0, spec.name
        assert overrides["num_steps"] == overrides["checkpoint_every"] == num_steps, spec.name
        assert overrides["log_every"] == 100 and overrides["eval_every"] == 0, spec.name
        assert "model_config.stage_steps" not in overrides, spec.name
        if spec.name in ("dbn", "dbm", "vae"):  # the trainer accepts the stages and the cap
            config = sweep.apply_overrides(sweep.load_config_file(spec.config), spec.overrides)
            config_lib.validate(config, None, device_count=1, process_count=1)
    # A steps budget sets no time budget: its runs are the ones launched before there was one.
    steps = leaderboard.leaderboard_runs(leaderboard.entries(), "mnist5k", 1000, 1000, 0)
    assert not any("max_train_seconds" in _overrides(spec) for spec in steps)


def test_scale_stage_steps_sums_to_the_budget_in_proportion():
    assert leaderboard.scale_stage_steps((4000, 4000), 1000) == (500, 500)
    assert leaderboard.scale_stage_steps((2000, 2000, 4000), 1000) == (250, 250, 500)
    # 7 * (1/4, 1/4, 1/2) = (1.75, 1.75, 3.5): floors (1, 1, 3), the 2 left go to the largest
    # remainders (0.75, 0.75).
    assert leaderboard.scale_stage_steps((2000, 2000, 4000), 7) == (2, 2, 3)
    assert leaderboard.scale_stage_steps((1, 3), 4) == (1, 3)
    # 2 * (1/1001, 1000/1001) rounds to (0, 2); the empty stage takes a step from the other.
    assert leaderboard.scale_stage_steps((1, 1000), 2) == (1, 1)
    assert leaderboard.scale_stage_steps((4000, 4000), 7) == (4, 3)  # tie: earlier stage first
    for stages in ((4000, 4000), (2000, 2000, 4000), (3, 5, 11, 1)):
        for budget in range(len(stages), 60):
            scaled = leaderboard.scale_stage_steps(stages, budget)
            assert sum(scaled) == budget and min(scaled) >= 1, (stages, budget)
            exact = np.array(stages) * budget / sum(stages)
            if exact.min() >= 1:
                assert np.all(np.abs(np.array(scaled) - exact) < 1), (stages, budget, scaled)
    with pytest.raises(leaderboard.LeaderboardError, match="every stage needs"):
        leaderboard.scale_stage_steps((2000, 2000, 4000), 2)


def test_the_stage_steps_tuple_round_trips_through_the_trainers_flags(tmp_path):
    """The trainer's config flags read `--config.model_config.stage_steps=(4, 3)` back as the
    tuple, and the parsed config passes the trainer's check that the stages sum to num_steps."""
    (spec,) = leaderboard.leaderboard_runs([("DBN", "configs/dbn.py")], "mnist5k", 7, 0, 0)
    argv = sweep.launch_command(spec, str(tmp_path))
    assert "--config.model_config.stage_steps=(4, 3)" in argv
    assert shlex.split(sweep.shell_command(argv)) == argv
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv[2:])
    flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
    flag_values(argv[2:])
    parsed = flag_values.config
    assert parsed.model_config.stage_steps == (4, 3)
    assert type(parsed.model_config.stage_steps) is tuple
    assert parsed.num_steps == 7 and parsed.checkpoint_every == 7 and parsed.log_every == 7
    config_lib.validate(parsed, None, device_count=1, process_count=1)
    unscaled = sweep.apply_overrides(parsed, [("model_config.stage_steps", (4000, 4000))])
    with pytest.raises(config_lib.ConfigError, match="sums to 8000"):
        config_lib.validate(unscaled, None, device_count=1, process_count=1)


def test_select_entries_keeps_entry_order_and_lists_the_allowed_names():
    chosen = leaderboard.select_entries(leaderboard.entries(), ["vae", " iwae"])
    assert chosen == [("IWAE, k = 50", "configs/iwae.py"), ("VAE", "configs/vae.py")]
    assert leaderboard.select_entries(leaderboard.entries(), None) == list(leaderboard.entries())
    with pytest.raises(leaderboard.LeaderboardError) as error:
        leaderboard.select_entries(leaderboard.entries(), ["vae", "hopfield"])
    assert "unknown model ['hopfield']" in str(error.value)
    assert str(ALL_NAMES) in str(error.value)
    with pytest.raises(leaderboard.LeaderboardError, match="'vae' is given twice"):
        leaderboard.select_entries(leaderboard.entries(), ["vae", "vae"])
    with pytest.raises(leaderboard.LeaderboardError, match="--models is empty; allowed"):
        leaderboard.select_entries(leaderboard.entries(), [" "])


# --- applicability ---------------------------------------------------------------------------


def test_check_runs_on_offline_datasets(tmp_path):
    """What happens on the offline datasets: every default config passes the trainer's checks
    on mnist5k and on the 8x8 digits (levels 0..16, binarized or dequantized like 28x28 ones),
    and none on a toy2d density, whose raw 2-D points take no intensity preprocessing."""
    for dataset in ("mnist5k", "digits8x8"):
        specs = leaderboard.leaderboard_runs(leaderboard.entries(), dataset, 100, 50, 0)
        assert leaderboard.check_runs(specs, str(tmp_path)) == {}, dataset
    toy = leaderboard.leaderboard_runs(leaderboard.entries(), "toy2d/8gaussians", 100, 50, 0)
    not_applicable = leaderboard.check_runs(toy, str(tmp_path))
    assert list(not_applicable) == ALL_NAMES
    assert not_applicable["vae"].startswith("config.preprocess.binarize='dynamic' does not apply")
    assert not_applicable["realnvp"].startswith("config.preprocess.dequantize=True does not")
    assert not_applicable["dcgan"].startswith("config.preprocess.scale='symmetric' does not")
    assert os.listdir(tmp_path) == []  # checking writes nothing


def test_check_runs_refuses_a_workdir_of_another_model(tmp_path):
    (vae,) = leaderboard.leaderboard_runs([("VAE", "configs/vae.py")], "mnist5k", 10, 0, 0)
    _write_json(str(tmp_path / "vae" / "config.json"), {"model": "made", "model_config": {}})
    with pytest.raises(sweep.SweepError, match="run vae:.*config.model='made'"):
        leaderboard.check_runs([vae], str(tmp_path))


def test_a_flow_on_binarized_digits_passes_validate_and_fails_in_the_trainer():
    """A flow on binary data is refused only once the data are loaded (the dataset says it is
    binary), so `check_runs` cannot see it; the trainer raises a ConfigError, which
    experiments/train.py prints as "error: <message>" (the train.log below copies that)."""
    (spec,) = leaderboard.leaderboard_runs(
        [("RealNVP", "configs/realnvp.py")], "digits8x8", 3, 0, 0
    )
    binary = [
        ("preprocess.binarize", "fixed"),
        ("preprocess.dequantize", False),
        ("preprocess.logit_alpha", 0.0),
    ]
    config = sweep.apply_overrides(
        sweep.load_config_file(spec.config), spec.overrides + tuple(binary)
    )
    config_lib.validate(config, None, device_count=1, process_count=1)
    with pytest.raises(config_lib.ConfigError, match="models continuous densities.*is binarized"):
        loop.Experiment(config)


# --- rows, tables, figure --------------------------------------------------------------------

_FLOW_ERROR = (
    "config.model='flow' models continuous densities; config.dataset='mnist5k' is binarized: "
    "set config.preprocess.binarize='none' and config.preprocess.dequantize=True."
)
_SAMPLE_QUALITY = {
    "sample_quality_num_samples": 1000,
    "sample_quality_reference": "mnist5k test split (1000 examples)",
    "feature_network": "genjax DigitClassifier v1 (128 features, trained on the train split)",
    "precision_recall_k": 3,
}


@pytest.fixture
def finished_leaderboard(tmp_path):
    """A root of 8 runs at a 300-step budget: VAE, RealNVP and DCGAN finished; MADE started
    (unfinished); NADE pending; DBN failed with a traceback; Glow's trainer refused its config;
    MAF kept from launching by `check_runs` (its message passed in)."""
    # Out of table order, so that the table's grouping by data kind shows.
    names = ["dcgan", "realnvp", "dbn", "glow", "nade", "made", "vae", "maf"]
    entries = _entries(*names)
    specs = leaderboard.leaderboard_runs(entries, "mnist5k", 300, 1000, 0)
    root = str(tmp_path / "leaderboard")
    by_name = {spec.name: spec for spec in specs}
    for name in ("vae", "realnvp", "dcgan", "made"):
        run_dir = os.path.join(root, name)
        os.makedirs(run_dir)
        config = sweep.apply_overrides(
            sweep.load_config_file(by_name[name].config), by_name[name].overrides
        )
        config_lib.save_config(config, run_dir)
    vae_metrics = [
        {"step": 100, "train/loss": 180.0, "perf/steps_per_sec": 10.0},
        {"step": 100, "eval/elbo": -150.0},  # a monitoring record: no rate, not counted
        {"step": 250, "train/loss": 120.0, "perf/steps_per_sec": 50.0},
        {"step": 300, "train/loss": 110.0, "perf/steps_per_sec": 25.0},
    ]
    with open(os.path.join(root, "vae", "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(record) + "\n" for record in vae_metrics)
        f.write('{"step": 3')  # a line cut short by a crash
    _write_json(
        os.path.join(root, "vae", "eval.json"),
        {
            "model": "vae",
            "dataset": "mnist5k",
            "step": 300,
            "test_nll_nats": 103.62,
            "test_nll_stderr": 1.0013,
            "test_bits_per_dim": 0.190679,
            "nll_estimator": "iwae-5000",
            "frechet_distance": 12.34,
            "precision": 0.71,
            "recall": 0.62,
            **_SAMPLE_QUALITY,
        },
    )
    _write_png(os.path.join(root, "vae", "samples", "step_00000100.png"), 0)
    _write_png(os.path.join(root, "vae", "samples", "step_00000300.png"), 255)
    with open(os.path.join(root, "realnvp", "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 300, "perf/steps_per_sec": 2.0}) + "\n")
    _write_json(
        os.path.join(root, "realnvp", "eval.json"),
        {
            "model": "flow",
            "step": 300,
            "test_nll_nats": -3314.43,
            "test_nll_stderr": 5.71,
            "test_bits_per_dim": 1.90,
            "nll_estimator": "exact",
            "nll_space": "dequantized [0, 1] pixels",
            "frechet_distance": 250.0,
            "precision": 0.1,
            "recall": 0.05,
            **_SAMPLE_QUALITY,
        },
    )
    _write_png(os.path.join(root, "realnvp", "samples", "step_00000300.png"), 128)
    _write_json(
        os.path.join(root, "dcgan", "eval.json"),
        {"model": "gan", "step": 300, "frechet_distance": 87.6, "precision": 0.491,
         "recall": 0.463, **_SAMPLE_QUALITY},
    )  # fmt: skip
    _write_png(os.path.join(root, "dcgan", "samples", "step_00000300.png"), 64)
    with open(os.path.join(root, "made", "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 100, "perf/steps_per_sec": 4.0}) + "\n")
    launch = "\n# 2025-01-01T00:00:00 sweep launch: python -m experiments.train ...\n"
    os.makedirs(os.path.join(root, "dbn"))
    Path(root, "dbn", "train.log").write_text(
        launch + "Traceback (most recent call last):\nFloatingPointError: nan\n"
    )
    Path(root, "dbn", "FAILED").write_text("exit status 1\n")
    os.makedirs(os.path.join(root, "glow"))
    Path(root, "glow", "train.log").write_text(
        launch + "Traceback (most recent call last):\nOSError: an earlier launch\n"
        + launch + "WARNING: a warning\nerror: " + _FLOW_ERROR + "\n"
    )  # fmt: skip
    Path(root, "glow", "FAILED").write_text("exit status 1\n")
    labels = {leaderboard.run_name(config_arg): label for label, config_arg in entries}
    not_applicable = {"maf": "config.dataset='x' is not for MAF."}
    rows = leaderboard.leaderboard_rows(specs, labels, root, not_applicable)
    return root, rows


def test_leaderboard_rows_read_each_run(finished_leaderboard):
    root, rows = finished_leaderboard
    by_run = {row["run"]: row for row in rows}
    assert [row["run"] for row in rows] == [
        "dcgan", "realnvp", "dbn", "glow", "nade", "made", "vae", "maf"
    ]  # fmt: skip
    assert all(list(row) == list(leaderboard.COLUMNS) for row in rows)
    statuses = {run: row["status"] for run, row in by_run.items()}
    assert statuses == {
        "nade": "pending",
        "made": "unfinished",
        "vae": "finished",
        "dbn": "failed",
        "realnvp": "finished",
        "glow": "not applicable",
        "maf": "not applicable",
        "dcgan": "finished",
    }
    vae = by_run["vae"]
    assert vae["model"] == "VAE" and vae["config"] == "configs/vae.py"  # not eval.json's "vae"
    assert (vae["data"], vae["dataset"], vae["seed"], vae["steps"], vae["batch_size"]) == (
        "binarized", "mnist5k", 0, 300, 100
    )  # fmt: skip
    # 100 steps at 10/s, 150 at 50/s, 50 at 25/s; the eval record and the cut line skipped.
    assert vae["train_seconds"] == pytest.approx(100 / 10 + 150 / 50 + 50 / 25)
    assert vae["steps_per_sec"] == pytest.approx(25.0)  # median of 10, 50, 25
    assert vae["samples"] == "vae/samples/step_00000300.png"  # under the root, wherever it is
    assert (vae["test_nll_nats"], vae["nll_estimator"]) == (103.62, "iwae-5000")
    realnvp = by_run["realnvp"]
    assert (realnvp["data"], realnvp["batch_size"], realnvp["train_seconds"]) == (
        "dequantized", 64, 150.0
    )  # fmt: skip
    dcgan = by_run["dcgan"]
    assert dcgan["data"] == "[-1, 1] intensities" and dcgan["test_nll_nats"] is None
    assert dcgan["nll_estimator"] == leaderboard.NO_LIKELIHOOD
    assert dcgan["train_seconds"] is None  # no metrics.jsonl
    assert by_run["made"]["train_seconds"] == 25.0 and by_run["made"]["samples"] is None
    assert by_run["made"]["reason"] == f"log: {root}/made/train.log"
    assert by_run["nade"]["data"] == "binarized" and by_run["nade"]["steps"] == 300
    assert by_run["dbn"]["reason"] == f"log: {root}/dbn/train.log"
    assert by_run["glow"]["reason"] == _FLOW_ERROR  # the last launch's trainer message
    assert by_run["maf"]["reason"] == "config.dataset='x' is not for MAF."


def test_write_leaderboard_table_notes_and_figure(finished_leaderboard, tmp_path):
    root, rows = finished_leaderboard
    out = str(tmp_path / "results")
    paths = leaderboard.write_leaderboard(rows, root, out)
    assert paths == {
        "markdown": f"{root}/leaderboard.md",
        "csv": f"{root}/leaderboard.csv",
        "json": f"{root}/leaderboard.json",
        "figure": f"{root}/leaderboard_samples.png",
    }
    markdown = Path(paths["markdown"]).read_text()
    assert markdown.startswith("# Leaderboard: mnist5k\n")
    assert "trained for 300 steps" in markdown and "with seed 0" in markdown
    assert (
        "1000 samples per model against the mnist5k test split (1000 examples)" in markdown
        and "k = 3 nearest" in markdown
        and "genjax DigitClassifier v1 (128 features" in markdown
    )
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    models = [line.split(" | ")[0].removeprefix("| ") for line in table[1:]]
    # Grouped by data kind: binarized, dequantized, [-1, 1] intensities; within one, the
    # finished runs ranked by NLL, then the rest in run order.
    assert models == ["VAE", "DBN", "NADE", "MADE", "RealNVP", "Glow", "MAF", "DCGAN"]
    assert (
        "| VAE | `configs/vae.py` | binarized | 103.6 ± 1.0 | 0.1907 | iwae-5000 | 12.3 | 0.710 "
        "| 0.620 | 300 steps | 300 (100) | 15.0 s | 25 |" in table
    )
    assert (
        "| RealNVP | `configs/realnvp.py` | dequantized | -3314.4 ± 5.7 | 1.9 | exact | 250 "
        "| 0.100 | 0.050 | 300 steps | 300 (64) | 2.5 min | 2 |" in table
    )
    assert (
        "| DCGAN | `configs/dcgan.py` | [-1, 1] intensities | — | — | none (no likelihood) "
        "| 87.6 | 0.491 | 0.463 | 300 steps | 300 (64) | — | — |" in table
    )
    assert "| MAF | `configs/maf.py` | dequantized | not applicable | — |" in markdown
    assert "NLLs compare only within one data kind" in markdown
    assert "Train time: the trainer's train clock" in markdown
    assert "Budget: training stops" not in markdown  # a time budget's notes only
    unfinished = markdown.split("Not finished (5 of 8 runs):\n\n")[1].splitlines()
    assert unfinished == [
        f"- DBN (`dbn`): failed: log: {root}/dbn/train.log",
        "- NADE (`nade`): pending",
        f"- MADE (`made`): unfinished: log: {root}/made/train.log",
        f"- Glow (`glow`): not applicable: {_FLOW_ERROR}",
        "- MAF (`maf`): not applicable: config.dataset='x' is not for MAF.",
    ]
    with open(paths["csv"]) as f:
        csv_rows = list(csv.DictReader(f))
    assert [row["run"] for row in csv_rows] == [row["run"] for row in rows]
    assert csv_rows[6]["train_seconds"] == "15.0" and csv_rows[0]["test_nll_nats"] == ""
    assert json.loads(Path(paths["json"]).read_text())["rows"] == json.loads(json.dumps(rows))
    with Image.open(paths["figure"]) as figure:
        assert figure.size == (1200, 400)  # 3 panels of 4 inches at 100 dpi, one row
        pixels = np.asarray(figure.convert("L"))
    # Each panel's centre shows its run's latest grid: VAE's step 300 (255, not step 100's 0),
    # RealNVP's 128, DCGAN's 64.
    assert [int(pixels[220, x]) for x in (200, 600, 1000)] == [255, 128, 64]
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.json"):
        assert Path(out, name).read_bytes() == Path(root, name).read_bytes()
    assert os.path.exists(os.path.join(out, "leaderboard_samples.png"))
    assert not [name for name in os.listdir(root) if name.startswith(".tmp")]


def test_a_moved_leaderboard_root_redraws_its_figure_from_its_json(finished_leaderboard, tmp_path):
    root, rows = finished_leaderboard
    leaderboard.write_leaderboard(rows, root)
    moved = str(tmp_path / "moved")
    shutil.move(root, moved)
    saved_rows = json.loads(Path(moved, "leaderboard.json").read_text())["rows"]
    os.remove(os.path.join(moved, "leaderboard_samples.png"))
    assert leaderboard.write_leaderboard(saved_rows, moved)["figure"] == (
        f"{moved}/leaderboard_samples.png"
    )
    with Image.open(os.path.join(moved, "leaderboard_samples.png")) as figure:
        pixels = np.asarray(figure.convert("L"))
    assert [int(pixels[220, x]) for x in (200, 600, 1000)] == [255, 128, 64]


def test_a_mean_carried_by_a_few_test_examples_is_marked(finished_leaderboard):
    _, rows = finished_leaderboard
    assert "†" not in leaderboard.markdown_table(rows)  # VAE's 1.0 and RealNVP's 5.7: small
    by_run = {row["run"]: dict(row) for row in rows}
    # 0.11 of the mean: marked; 0.1 exactly is not (a strict bound).
    by_run["vae"]["test_nll_stderr"] = 0.11 * 103.62
    by_run["realnvp"]["test_nll_stderr"] = 0.1 * 3314.43
    markdown = leaderboard.markdown_table(list(by_run.values()))
    assert "| VAE | `configs/vae.py` | binarized | 104 ± 11 † |" in markdown
    assert "| RealNVP | `configs/realnvp.py` | dequantized | -3314 ± 331 |" in markdown
    assert "- † (VAE): the standard error exceeds 10% of the mean" in markdown


def test_write_leaderboard_without_finished_runs_draws_no_figure(tmp_path):
    specs = leaderboard.leaderboard_runs(_entries("rbm", "dbn"), "mnist5k", 10, 0, 0)
    rows = leaderboard.leaderboard_rows(specs, {"rbm": "RBM", "dbn": "DBN"}, str(tmp_path))
    assert [row["status"] for row in rows] == ["pending", "pending"]
    paths = leaderboard.write_leaderboard(rows, str(tmp_path))
    assert "figure" not in paths and not os.path.exists(tmp_path / "leaderboard_samples.png")
    markdown = Path(paths["markdown"]).read_text()
    assert "Sample quality: not measured by any finished run." in markdown
    assert "| RBM | `configs/rbm.py` | binarized | pending |" in markdown


_MACHINE = "1 cpu device(s) (cpu), 2 host CPU cores"


@pytest.fixture
def time_budget_leaderboard(tmp_path):
    """A root of 3 runs under a 5-minute budget: VAE stopped by the budget at step 54,321;
    DBN finished its own 8,000 steps first; NADE pending."""
    names = ["vae", "dbn", "nade"]
    entries = _entries(*names)
    budget = leaderboard.Budget("minutes", 5.0)
    specs = leaderboard.leaderboard_runs(entries, "mnist5k", budget, 1000, 0)
    root = str(tmp_path / "leaderboard")
    results = {
        "vae": dict(step=54_321, stopped_by="max_train_seconds", train_seconds=300.25,
                    test_nll_nats=103.62, test_nll_stderr=1.0013, test_bits_per_dim=0.190679,
                    nll_estimator="iwae-5000", frechet_distance=12.34, precision=0.71,
                    recall=0.62),
        "dbn": dict(step=8000, stopped_by="num_steps", train_seconds=95.5, test_nll_nats=164.7,
                    test_nll_stderr=1.3, test_bits_per_dim=0.3031,
                    nll_estimator="dbn-variational-bound (ais log Z)", frechet_distance=405.0,
                    precision=0.939, recall=0.003),
    }  # fmt: skip
    rates = {"vae": 181.0, "dbn": 84.0}  # the metric log's: 54,321 / 181 = 300.1 s, not 300.25
    for spec in specs[:2]:
        run_dir = os.path.join(root, spec.name)
        os.makedirs(run_dir)
        config = sweep.apply_overrides(sweep.load_config_file(spec.config), spec.overrides)
        config_lib.save_config(config, run_dir)
        _write_json(
            os.path.join(run_dir, "eval.json"),
            {"max_train_seconds": 300.0, "train_machine": _MACHINE, **results[spec.name],
             **_SAMPLE_QUALITY},
        )  # fmt: skip
        step = results[spec.name]["step"]
        with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"step": step, "perf/steps_per_sec": rates[spec.name]}) + "\n")
        _write_png(os.path.join(run_dir, "samples", f"step_{step:08d}.png"), 255)
    labels = {leaderboard.run_name(config_arg): label for label, config_arg in entries}
    return root, leaderboard.leaderboard_rows(specs, labels, root)


def test_time_budget_rows_report_the_steps_reached(time_budget_leaderboard):
    _, rows = time_budget_leaderboard
    vae, dbn, nade = rows
    assert (vae["max_train_seconds"], vae["num_steps"], vae["steps"]) == (300.0, 1_000_000, 54_321)
    assert (vae["stopped_by"], vae["train_machine"]) == ("max_train_seconds", _MACHINE)
    assert vae["train_seconds"] == 300.25  # the trainer's clock, not the metric log's sum
    assert (dbn["num_steps"], dbn["steps"], dbn["stopped_by"]) == (8000, 8000, "num_steps")
    assert nade["status"] == "pending" and nade["max_train_seconds"] == 300.0
    assert nade["steps"] is None and nade["num_steps"] == 1_000_000  # not reached yet


def test_time_budget_table_and_notes(time_budget_leaderboard):
    root, rows = time_budget_leaderboard
    markdown = leaderboard.markdown_table(rows)
    assert (
        f"trained for 5 min of wall time on one machine ({_MACHINE}), one run at a time" in markdown
    )
    assert "The rows share a budget in wall time on this machine, not in steps" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert table[0].endswith("| recall | budget | steps reached (batch) | train time | steps/s |")
    assert table[1:] == [
        "| VAE | `configs/vae.py` | binarized | 103.6 ± 1.0 | 0.1907 | iwae-5000 | 12.3 | 0.710 "
        "| 0.620 | 5 min | 54,321 (100) | 5.0 min | 181 |",
        "| DBN | `configs/dbn.py` | binarized | 164.7 ± 1.3 | 0.3031 | dbn-variational-bound "
        "(ais log Z) | 405 | 0.939 | 0.003 | 5 min | 8,000 (100) ‡ | 95.5 s | 84 |",
        "| NADE | `configs/nade.py` | binarized | pending | — | — | — | — | — | 5 min | — (100) "
        "| — | — |",
    ]
    reordered = leaderboard.markdown_table([rows[2], rows[1], rows[0]])  # ranked, not in order
    assert [line for line in reordered.splitlines() if line.startswith("| ")] == table
    notes = markdown.split("Notes:\n\n")[1].split("\n\n")[0].splitlines()
    assert (
        "- Budget: training stops at the first step after the train clock reaches"
        in (notes[3][:72])
    )
    # 54,321 of 1,000,000 steps: 5.4% of the schedules' span, where a cosine decay is at
    # (1 + cos(0.054321 pi)) / 2 = 0.9927 of its initial rate and 10**-0.054321 = 0.8824.
    assert notes[4] == (
        "- Learning-rate schedules span config.num_steps = 1,000,000, far beyond the steps "
        "reached, so the configs' decays barely progress: at most 5.4% of the span here, where "
        "a cosine decay keeps 99% of its initial rate and an exponential decay to a tenth over "
        "the span (the VAE's) 88%."
    )
    assert notes[5].endswith("own stage_steps and num_steps (DBN 8,000); the budget may end "
                             "them inside a stage.")  # fmt: skip
    assert notes[6].startswith("- ‡ (DBN): reached its num_steps before the budget")
    csv_rows = list(csv.DictReader(io.StringIO(util.csv_text(rows, leaderboard.COLUMNS))))
    assert (csv_rows[0]["max_train_seconds"], csv_rows[0]["steps"]) == ("300.0", "54321")


@pytest.mark.slow
def test_leaderboard_command_line_under_a_time_budget(tmp_path):
    """One model for 3 seconds of training: stopped by the budget, evaluated, tabulated."""
    root = tmp_path / "leaderboard"
    command = [
        sys.executable, "-m", "experiments.leaderboard", "--models=vae", "--budget=seconds:3",
        "--sample_quality_samples=50", "--dataset=digits8x8", f"--workdir={root}",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((root / "vae" / "eval.json").read_text())
    assert results["stopped_by"] == "max_train_seconds" and results["max_train_seconds"] == 3.0
    assert results["train_seconds"] >= 3.0 and 0 < results["step"] < 1_000_000
    markdown = (root / "leaderboard.md").read_text()
    (row,) = [line for line in markdown.splitlines() if line.startswith("| VAE ")]
    cells = row.strip("| ").split(" | ")
    assert cells[9:11] == ["3 s", f"{results['step']:,} (100)"]
    assert "trained for 3 s of wall time on one machine (" in markdown
    assert "- Budget: training stops at the first step" in markdown


def test_a_time_budget_refuses_parallel_runs(tmp_path):
    command = [
        sys.executable, "-m", "experiments.leaderboard", "--budget=minutes:1", "--parallel=2",
        "--dry_run", f"--workdir={tmp_path}",
    ]  # fmt: skip
    run = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert "error: --parallel=2 with --budget=minutes:1: a wall-time budget needs --parallel=1" in (
        run.stderr
    )
    assert os.listdir(tmp_path) == []


def test_data_kind_reads_the_preprocessing():
    base = {"binarize": "none", "dequantize": False, "scale": "unit", "logit_alpha": 0.0}
    assert leaderboard.data_kind({**base, "binarize": "dynamic"}) == "binarized"
    assert leaderboard.data_kind({**base, "binarize": "fixed"}) == "binarized"
    assert leaderboard.data_kind({**base, "dequantize": True, "logit_alpha": 0.05}) == (
        "dequantized"
    )
    assert leaderboard.data_kind({**base, "scale": "symmetric"}) == "[-1, 1] intensities"
    assert leaderboard.data_kind(base) == "[0, 1] intensities"


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_the_trainer_refuses_is_not_applicable(tmp_path):
    """A real trainer process on a config that fails its data-dependent check: the launch
    fails (FAILED marker) and the row says not applicable with the trainer's message."""
    (spec,) = leaderboard.leaderboard_runs(
        [("RealNVP", "configs/realnvp.py")], "digits8x8", 3, 0, 0
    )
    binary = (("preprocess.binarize", "fixed"), ("preprocess.dequantize", False),
              ("preprocess.logit_alpha", 0.0))  # fmt: skip
    spec = sweep.RunSpec(spec.name, spec.config, spec.overrides + binary, spec.labels)
    root = str(tmp_path)
    assert leaderboard.check_runs([spec], root) == {}
    codes = sweep.execute([spec], root, progress=False)
    assert codes == {"realnvp": 1}
    (row,) = leaderboard.leaderboard_rows([spec], {"realnvp": "RealNVP"}, root)
    assert row["status"] == "not applicable"
    assert row["reason"].startswith("config.model='flow' models continuous densities")


@pytest.mark.slow
def test_leaderboard_command_line_trains_tabulates_and_resumes(tmp_path):
    root = tmp_path / "leaderboard"
    command = [
        sys.executable,
        "-m",
        "experiments.leaderboard",
        "--models=vae,made",
        "--budget=steps:3",
        "--sample_quality_samples=50",
        "--dataset=digits8x8",
        f"--workdir={root}",
        f"--out={tmp_path / 'results'}",
    ]

    def run():
        return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)

    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("# pending") == 2
    markdown = (root / "leaderboard.md").read_text()
    assert markdown.startswith("# Leaderboard: digits8x8\n")
    table = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    assert len(table) == 2
    number = r"-?\d+(\.\d+)?"
    for line, model, estimator in zip(table, ("MADE", "VAE"), ("exact", "iwae-5000"), strict=True):
        cells = line.strip("| ").split(" | ")
        assert cells[:3] == [model, f"`configs/{model.lower()}.py`", "binarized"]
        assert re.fullmatch(f"{number} ± {number}", cells[3]), line
        assert cells[5] == estimator and cells[9:11] == ["3 steps", "3 (100)"]
        for cell in (cells[4], cells[6], cells[7], cells[8], cells[12]):
            assert re.fullmatch(number, cell), line
        assert re.fullmatch(rf"{number} s", cells[11]), line
    for name in ("made", "vae"):
        results = json.loads((root / name / "eval.json").read_text())
        assert results["step"] == 3 and results["sample_quality_num_samples"] == 50
    with Image.open(root / "leaderboard_samples.png") as figure:
        assert figure.size == (800, 400)  # 2 panels
    assert (tmp_path / "results" / "leaderboard.md").read_text() == markdown
    eval_mtime = os.path.getmtime(root / "vae" / "eval.json")
    second = run()  # resumes: both runs are finished, nothing is trained again
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("# finished") == 2
    assert os.path.getmtime(root / "vae" / "eval.json") == eval_mtime
