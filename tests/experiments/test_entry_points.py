"""The command lines of experiments/ as a user runs them: train, evaluate, sample.

Each test starts `python -m experiments.<name>` in the repository root (JAX start-up and
compilation cost ~5-15 s per process), so one tiny VAE run is trained once and shared.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments import findings
from genjax.train import loop

pytestmark = pytest.mark.slow  # every test starts Python processes

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_STEPS = 12  # --config.num_steps override of the tiny config's 20 steps
TINY_VAE = "--config=configs/vae.py:tiny"


def _run(entry_point, *args):
    """Runs `python -m experiments.<entry_point> args` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{entry_point}", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _check_ok(process):
    assert process.returncode == 0, process.stderr[-3000:]


def _printed_results(stdout):
    """The JSON object an entry point prints (train prints a summary line after it)."""
    return json.loads(stdout[stdout.index("{") : stdout.rindex("}") + 1])


def _read_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny VAE trained by the command line for NUM_STEPS steps: (workdir, its results)."""
    workdir = tmp_path_factory.mktemp("entry_points") / "vae"
    process = _run("train", TINY_VAE, f"--workdir={workdir}", f"--config.num_steps={NUM_STEPS}")
    _check_ok(process)
    return workdir, process.stdout


def test_train_prints_and_writes_the_test_log_likelihood(trained_run):
    workdir, stdout = trained_run
    results = _printed_results(stdout)
    assert _read_json(workdir / "eval.json") == results
    assert results["step"] == NUM_STEPS  # the override was applied
    assert results["nll_estimator"] == "iwae-64" and results["num_test_examples"] == 355
    # A probability of binary data: nll > 0; IWAE-64 is at least the ELBO.
    assert 0 < results["test_nll_nats"] <= -results["test_elbo"]
    summary = (
        f"test log-likelihood: {-results['test_nll_nats']:.2f} nats "
        f"(+/- {results['test_nll_stderr']:.2f}, iwae-64, "
        f"{results['test_bits_per_dim']:.4f} bits/dim)"
    )
    assert summary in stdout.splitlines()
    assert _read_json(workdir / "config.json")["num_steps"] == NUM_STEPS
    with open(workdir / "metrics.jsonl") as f:
        logged = [json.loads(line) for line in f]
    assert [m["step"] for m in logged if "train/loss" in m] == [5, 10, NUM_STEPS]


def test_evaluate_without_config_rewrites_the_same_eval_json(trained_run):
    workdir, stdout = trained_run
    trained = _printed_results(stdout)
    # Over an existing eval.json of the same step, the training record is kept.
    process = _run("evaluate", f"--workdir={workdir}")
    _check_ok(process)
    assert _read_json(workdir / "eval.json") == trained
    # Without one, the run's own config.json is used and the evaluation key is fixed: the same
    # numbers, without the training record (the train loop's, which only training knows).
    os.remove(workdir / "eval.json")
    process = _run("evaluate", f"--workdir={workdir}")
    _check_ok(process)
    evaluation = {k: v for k, v in trained.items() if k not in loop.TRAINING_RECORD}
    assert set(trained) - set(evaluation) == set(loop.TRAINING_RECORD)
    assert _read_json(workdir / "eval.json") == evaluation
    assert _printed_results(process.stdout) == evaluation


def test_evaluate_config_overrides_change_the_estimator(trained_run):
    workdir, stdout = trained_run
    process = _run(
        "evaluate",
        TINY_VAE,
        f"--workdir={workdir}",
        "--config.model_config.eval_importance_samples=32",
        "--config.model_config.eval_chunk_size=32",
    )
    _check_ok(process)
    results = _printed_results(process.stdout)
    assert _read_json(workdir / "eval.json") == results
    assert results["nll_estimator"] == "iwae-32" and results["step"] == NUM_STEPS
    # Another estimate of the same model's likelihood: close to IWAE-64's, not equal to it.
    reference = _printed_results(stdout)["test_nll_nats"]
    assert results["test_nll_nats"] != reference
    assert abs(results["test_nll_nats"] - reference) < 1.0


def test_evaluate_refuses_a_config_of_another_architecture(trained_run):
    workdir, _ = trained_run
    before = (workdir / "eval.json").read_bytes()
    process = _run(
        "evaluate", TINY_VAE, f"--workdir={workdir}", "--config.model_config.latent_sizes=(8,)"
    )
    assert process.returncode != 0
    # Refused by validation, naming the field, before any checkpoint is read.
    assert "config.model_config.latent_sizes=[4]" in process.stderr
    assert "config.model_config.latent_sizes=[8]" in process.stderr
    assert (workdir / "eval.json").read_bytes() == before


def test_sample_writes_a_png_grid_and_refuses_zero_samples(trained_run, tmp_path):
    workdir, _ = trained_run
    path = tmp_path / "grids" / "nine.png"
    process = _run("sample", f"--workdir={workdir}", "--num=9", f"--out={path}")
    _check_ok(process)
    assert f"wrote 9 samples to {path}" in process.stdout
    pixels = np.asarray(Image.open(path))
    # 3 x 3 tiles of 8 x 8 pixels with 1 white pixel between neighbours: 3 * 8 + 2 = 26.
    assert pixels.shape == (26, 26) and pixels.dtype == np.uint8
    separators = [8, 17]
    assert np.all(pixels[separators, :] == 255) and np.all(pixels[:, separators] == 255)
    tiles = np.delete(np.delete(pixels, separators, axis=0), separators, axis=1)  # (24, 24)
    assert tiles.min() < 128  # the tiles hold images, not padding

    refused = tmp_path / "none.png"
    process = _run("sample", f"--workdir={workdir}", "--num=0", f"--out={refused}")
    assert process.returncode != 0
    assert "--num=0 must be positive" in process.stderr
    assert not refused.exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.model=nope", "error: config.model='nope' is not a registered model; allowed:"),
        ("--config.model=hopfield", "run it with `python -m experiments.hopfield"),
        ("--config.batch_size=0", "config.batch_size=0 must be a positive integer"),
        ("--config.compute_dtype=float16", "config.compute_dtype='float16'; allowed:"),
        ("--coordinator_address=localhost:1", "missing: --num_processes, --process_id"),
    ],
)
def test_invalid_config_exits_before_creating_the_workdir(tmp_path, override, message):
    workdir = tmp_path / "run"
    process = _run("train", TINY_VAE, f"--workdir={workdir}", override)
    assert process.returncode != 0
    assert message in process.stderr
    assert "Traceback" not in process.stderr
    assert not workdir.exists()


def test_hopfield_invalid_config_exits_before_creating_the_workdir(tmp_path):
    workdir = tmp_path / "hopfield"
    process = _run(
        "hopfield",
        "--config=configs/hopfield.py:tiny",
        f"--workdir={workdir}",
        "--config.compute_dtype=bfloat16",
    )
    assert process.returncode != 0
    assert "error: config.compute_dtype='bfloat16'; allowed: 'float32'" in process.stderr
    assert "Traceback" not in process.stderr
    assert not workdir.exists()


def test_iwae_tiny_trains_end_to_end(tmp_path):
    workdir = tmp_path / "iwae"
    process = _run("train", "--config=configs/iwae.py:tiny", f"--workdir={workdir}")
    _check_ok(process)
    model_config = _read_json(workdir / "config.json")["model_config"]
    assert model_config["objective"] == "iwae" and model_config["num_importance_samples"] == 5
    results = _read_json(workdir / "eval.json")
    assert results == _printed_results(process.stdout)
    assert results["step"] == 20 and results["nll_estimator"] == "iwae-64"
    assert 0 < results["test_nll_nats"] <= -results["test_elbo"]


def test_sample_quality_scores_a_vae_on_the_gan_scale(trained_run):
    workdir, _ = trained_run
    process = _run("sample_quality", f"--workdir={workdir}", "--num=100")
    _check_ok(process)
    scores = _read_json(workdir / "sample_quality.json")
    assert scores == _printed_results(process.stdout)
    assert scores["sample_quality_num_samples"] == 100
    assert scores["model"] == "vae" and scores["step"] == NUM_STEPS
    assert np.isfinite(scores["frechet_distance"]) and 0 <= scores["precision"] <= 1


def test_latent_figures_of_a_conditional_gan_and_refusal_of_other_families(trained_run, tmp_path):
    from configs import cgan
    from genjax.train import train_and_evaluate

    config = cgan.get_config("tiny")
    config.num_steps, config.sample_quality_samples = 4, 0
    train_and_evaluate(config, str(tmp_path / "cgan"))
    process = _run("latent", f"--workdir={tmp_path / 'cgan'}", f"--out_dir={tmp_path / 'figs'}")
    _check_ok(process)
    assert Image.open(tmp_path / "figs" / "interpolation.png").size[0] > 0
    assert Image.open(tmp_path / "figs" / "arithmetic.png").size[0] > 0
    measured = _read_json(tmp_path / "figs" / "arithmetic.json")
    assert {"ink_results", "ink_light_b", "results_read_as_b"} <= set(measured)
    assert measured["step"] == 4
    workdir, _ = trained_run
    refused = _run("latent", f"--workdir={workdir}")
    assert refused.returncode != 0 and "holds a 'vae' run" in refused.stderr


def test_snr_measures_every_estimator_and_group(trained_run, tmp_path):
    """experiments.snr on the tiny VAE: one row per (estimator, K, group), the decoder's
    statistics the same for reparam and dreg (one gradient), and a plot."""
    workdir, _ = trained_run
    out = tmp_path / "snr"
    process = _run(
        "snr",
        f"--workdir={workdir}",
        "--estimators=reparam,dreg",
        "--num_samples=1,4",
        "--num_draws=8",
        "--batch_size=2",
        f"--out={out}",
    )
    _check_ok(process)
    rows = _read_json(out / "snr.json")["rows"]
    assert {(r["estimator"], r["num_importance_samples"], r["group"]) for r in rows} == {
        (e, k, g) for e in ("reparam", "dreg") for k in (1, 4) for g in ("encoder", "decoder")
    }
    decoder = {
        (r["estimator"], r["num_importance_samples"]): r for r in rows if r["group"] == "decoder"
    }
    for k in (1, 4):
        np.testing.assert_allclose(
            decoder["dreg", k]["snr"], decoder["reparam", k]["snr"], rtol=1e-4
        )
    assert all(r["num_draws"] == 8 and r["snr"] > 0 for r in rows)
    assert (out / "snr.png").stat().st_size > 0 and "| K |" in (out / "snr.md").read_text()
    refused = _run("snr", f"--workdir={workdir}", "--estimators=magic")
    assert refused.returncode != 0 and "magic" in refused.stderr


def test_findings_dry_run_prints_every_run_and_writes_only_manifests(tmp_path):
    process = _run("findings", "--finding=all", "--dry_run", f"--workdir={tmp_path}")
    _check_ok(process)
    # Every finding's runs: burda2016's twice, as rainforth2018 measures the same runs.
    expected = sum(len(finding.runs) for finding in findings.FINDINGS.values())
    assert findings.RAINFORTH2018.runs == findings.BURDA2016.runs and expected > 2 + 2 + 4
    assert process.stdout.count("-m experiments.train") == expected
    # one run directory per finding that has its own runs (rainforth2018 measures burda2016's)
    own = sorted(f.name for f in findings.FINDINGS.values() if not f.runs_of)
    assert "rainforth2018" not in own and len(own) == len(findings.FINDINGS) - 1
    assert sorted(os.listdir(tmp_path)) == own
    assert all(os.listdir(tmp_path / name) == ["sweep.json"] for name in os.listdir(tmp_path))
    refused = _run("findings", "--finding=hinton2006", f"--workdir={tmp_path}")
    assert refused.returncode != 0 and "allowed" in refused.stderr
