"""The training system end to end on the tiny VAE: resume, divergence, validation, outputs,
the time budget (with a fake clock)."""

import json
import os

import jax
import numpy as np
import pytest

from genjax import models
from genjax.core import parallel
from genjax.models.vae import VAE
from genjax.train import (
    ConfigError,
    Experiment,
    TrainingDivergedError,
    load_config,
    load_state,
    loop,
    train,
    train_and_evaluate,
)
from genjax.train.checkpoint import Checkpointer, checkpoint_dir
from tests import checks


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory):
    from configs import vae

    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    config = vae.get_config("tiny")
    config.checkpoint_every = 4
    results = train_and_evaluate(config, workdir)
    return config, workdir, results


def test_resumed_run_is_bitwise_identical(uninterrupted_run, tmp_path):
    config, reference_dir, _ = uninterrupted_run
    workdir = str(tmp_path)
    stop = config.num_steps // 2  # a log step, not a checkpoint step: the stop saves one
    assert stop % config.log_every == 0 and stop % config.checkpoint_every
    assert train_and_evaluate(config, workdir, stop_at_step=stop) is None
    assert load_state(workdir)["step"] == stop
    train_and_evaluate(config, workdir)
    resumed, reference = load_state(workdir), load_state(reference_dir)
    assert resumed["step"] == reference["step"] == config.num_steps
    checks.assert_trees_equal(resumed, reference)  # params, optimizer state, rng: all bitwise

    # The metric log reads as one run: the same train losses at the same steps.
    def train_losses(path):
        with open(os.path.join(path, "metrics.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        return [(m["step"], m["train/loss"]) for m in lines if "train/loss" in m]

    assert train_losses(workdir) == train_losses(reference_dir)


def test_run_outputs(uninterrupted_run):
    config, workdir, results = uninterrupted_run
    with open(os.path.join(workdir, "eval.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(results))
    assert saved["nll_estimator"] == f"iwae-{config.model_config.eval_importance_samples}"
    assert saved["num_test_examples"] == 355  # the whole digits8x8 test split, no padding
    assert np.isclose(saved["test_bits_per_dim"], saved["test_nll_nats"] / (64 * np.log(2)))
    assert 0 < saved["test_nll_stderr"] < 5
    # IWAE-k is a tighter bound than the ELBO estimate from the same samples.
    assert -saved["test_nll_nats"] >= saved["test_elbo"]
    for name in ("loss_curves.png", "config.json", "metrics.jsonl"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    assert os.listdir(os.path.join(workdir, "samples"))
    assert any(
        name.startswith("events") for name in os.listdir(os.path.join(workdir, "tensorboard"))
    )
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    steps = [m["step"] for m in lines if "train/loss" in m]
    assert steps == list(range(config.log_every, config.num_steps + 1, config.log_every))
    assert any("eval/elbo" in m for m in lines)
    assert saved["stopped_by"] == "num_steps" and saved["max_train_seconds"] == 0.0
    assert saved["train_seconds"] > 0 and "host CPU cores" in saved["train_machine"]


def test_load_state_needs_no_config(uninterrupted_run):
    config, workdir, _ = uninterrupted_run
    state = load_state(workdir)
    assert set(state) == {"step", "params", "opt_state", "rng", "extras"}
    leaves = jax.tree.leaves(state["params"])
    assert leaves and all(isinstance(leaf, np.ndarray) for leaf in leaves)
    older = load_state(workdir, step=config.num_steps - config.checkpoint_every)
    assert older["step"] == config.num_steps - config.checkpoint_every
    with pytest.raises(ValueError, match="saved steps"):
        load_state(workdir, step=3)


class DivergingVAE(VAE):
    """The tiny VAE whose reported loss turns NaN from step 7 on (a trainer test double)."""

    def train_step(self, state, batch):
        new_state, metrics = super().train_step(state, batch)
        nan_from_step_7 = jax.numpy.where(new_state.step >= 7, jax.numpy.nan, 0.0)
        metrics["train/loss"] = metrics["train/loss"] + nan_from_step_7
        return new_state, metrics


def test_nan_stops_training_and_keeps_last_finite_checkpoint(
    tiny_vae_config, tmp_path, monkeypatch
):
    config, workdir = tiny_vae_config, str(tmp_path)
    config.checkpoint_every = 5
    train_and_evaluate(config, workdir, stop_at_step=5)
    before = checks.tree_files(checkpoint_dir(workdir))
    monkeypatch.setitem(models.base.FAMILIES, "vae", DivergingVAE)
    with pytest.raises(TrainingDivergedError, match=r"train/loss=nan at step 7"):
        train_and_evaluate(config, workdir)
    assert checks.tree_files(checkpoint_dir(workdir)) == before  # step 5 kept, nothing newer
    assert load_state(workdir)["step"] == 5
    assert not os.path.exists(os.path.join(workdir, "eval.json"))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model", "gan9000", r"config.model='gan9000'.*allowed: \(.*'rbm'.*'vae'"),
        ("dataset", "no_such_dataset", r"config.dataset='no_such_dataset'.*mnist5k"),
        ("dataset", "toy2d/banana", r"config.dataset='toy2d/banana'.*toy2d/moons"),
        ("batch_size", 0, r"config.batch_size=0 must be a positive integer"),
        ("num_steps", -5, r"config.num_steps=-5 must be a positive integer"),
        ("optimizer", "adamax", r"config.optimizer='adamax'; allowed"),
        ("preprocess.binarize", "sometimes", r"config.preprocess.binarize='sometimes'; allowed"),
        ("model_config.objective", "cubo", r"config.model_config.objective='cubo'; allowed"),
        ("model_config.latent_sizes", (0,), r"sizes must be positive"),
        ("max_train_seconds", -1.0, r"config.max_train_seconds=-1.0 must be a non-negative"),
        ("max_train_seconds", float("inf"), r"config.max_train_seconds=inf must be a non-neg"),
    ],
)
def test_invalid_config_fails_before_touching_disk(
    tiny_vae_config, tmp_path, field, value, message
):
    config = tiny_vae_config
    *parents, leaf = field.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    with config.unlocked():
        target[leaf] = value
    workdir = tmp_path / "run"
    with pytest.raises(ConfigError, match=message):
        train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def test_batch_must_divide_device_count(tiny_vae_config):
    from genjax.train import validate

    tiny_vae_config.batch_size = 21
    with pytest.raises(
        ConfigError, match=r"config.batch_size=21 must be divisible by the device count \(2\)"
    ):
        validate(tiny_vae_config, device_count=2)


def test_a_time_budget_needs_a_single_process(tiny_vae_config):
    from genjax.train import validate

    tiny_vae_config.max_train_seconds = 60.0
    validate(tiny_vae_config, device_count=2, process_count=1)  # devices of one process: fine
    with pytest.raises(ConfigError, match=r"config.max_train_seconds=60.0 needs a single process"):
        validate(tiny_vae_config, device_count=2, process_count=2)


def test_workdir_of_a_different_model_is_refused(tiny_vae_config, tmp_path):
    workdir = str(tmp_path)
    train_and_evaluate(tiny_vae_config, workdir, stop_at_step=2)
    before = checks.tree_files(workdir)
    tiny_vae_config.model_config.latent_sizes = (8,)
    with pytest.raises(
        ConfigError, match=r"holds a run with config.model_config.latent_sizes=\[4\]"
    ):
        train_and_evaluate(tiny_vae_config, workdir)
    assert checks.tree_files(workdir) == before


@pytest.mark.slow
def test_workdir_accepts_changed_evaluation_settings(tiny_vae_config, tmp_path):
    workdir = str(tmp_path)
    train_and_evaluate(tiny_vae_config, workdir, stop_at_step=2)
    tiny_vae_config.model_config.eval_importance_samples = 32
    tiny_vae_config.model_config.eval_chunk_size = 16
    results = train_and_evaluate(tiny_vae_config, workdir)
    assert results["nll_estimator"] == "iwae-32"


@pytest.mark.parametrize(
    "field, value",
    [("binarize", "dynamic"), ("dequantize", True), ("scale", "symmetric"), ("logit_alpha", 0.05)],
)
def test_continuous_toy_data_rejects_intensity_preprocessing(
    tiny_vae_config, tmp_path, field, value
):
    config = tiny_vae_config
    config.dataset = "toy2d/moons"
    config.model_config.likelihood = "gaussian"
    config.preprocess.binarize = "none"  # the VAE configs binarize; toy data must not
    config.preprocess[field] = value
    with pytest.raises(ConfigError, match=rf"config.preprocess.{field}=.*toy2d/moons.*allowed"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_steps_compile_once(tiny_vae_config, tmp_path):
    """Every train step and evaluation reuses one compiled program (no retracing)."""
    experiment = Experiment(tiny_vae_config)
    state = train(experiment, str(tmp_path))
    experiment.evaluate(state, final=False)
    experiment.evaluate(state, final=False)
    assert experiment.train_step._cache_size() == 1
    assert experiment._eval_steps[False]._cache_size() == 1


def test_a_saved_config_without_newer_top_level_fields_loads_with_their_defaults(
    tiny_vae_config, tmp_path
):
    saved = json.loads(tiny_vae_config.to_json())
    for field in ("sample_quality_samples", "rmsprop_decay"):  # added with the GAN family
        del saved[field]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = load_config(str(tmp_path))
    assert loaded.sample_quality_samples == 0 and loaded.rmsprop_decay == 0.9
    assert json.loads(loaded.model_config.to_json()) == saved["model_config"]


# --- the time budget (config.max_train_seconds) -----------------------------------------------


@pytest.fixture
def fake_clock(monkeypatch):
    """The train clock's time source replaced by one that advances only when the loop shards a
    batch (1 s per batch: one train step, or one batch of an evaluation) and by 100 s per
    checkpoint save; nothing else (compiling, logging) takes time. Returns the clock's state."""
    now = {"seconds": 0.0}
    shard_batch, save = parallel.shard_batch, Checkpointer.save

    def timed_shard_batch(*args, **kwargs):
        now["seconds"] += 1.0
        return shard_batch(*args, **kwargs)

    def timed_save(*args, **kwargs):
        now["seconds"] += 100.0
        return save(*args, **kwargs)

    monkeypatch.setattr(loop, "_now", lambda: now["seconds"])
    monkeypatch.setattr(parallel, "shard_batch", timed_shard_batch)
    monkeypatch.setattr(Checkpointer, "save", timed_save)
    return now


def _budget_config(config):
    """The tiny VAE (20 steps, logs every 5) with a 7.5 s budget, checkpoints every 4 steps
    and a monitoring evaluation (2 test batches) every 3: with the fake clock, the budget is
    spent at step 8 only if evaluations and checkpoint saves are left out of it (counted,
    step 3's evaluation and step 4's save would end training at step 5)."""
    config.max_train_seconds = 7.5
    config.checkpoint_every = 4
    config.eval_every = 3
    return config


def _train_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [record for record in map(json.loads, f) if "train/loss" in record]


def test_time_budget_stops_checkpoints_and_evaluates(tiny_vae_config, tmp_path, fake_clock):
    config, workdir = _budget_config(tiny_vae_config), str(tmp_path)
    results = train_and_evaluate(config, workdir)
    # After step 8 the clock reads 8 s >= 7.5 s: the first step boundary past the budget.
    assert results["step"] == 8 and load_state(workdir)["step"] == 8
    assert results["stopped_by"] == "max_train_seconds"
    assert results["max_train_seconds"] == 7.5 and results["train_seconds"] == 8.0
    with open(os.path.join(workdir, "eval.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    assert "test_nll_nats" in results  # the final evaluation ran at the reached step
    assert [record["step"] for record in _train_records(workdir)] == [5, 8]  # 8 is logged last
    assert sorted(os.listdir(checkpoint_dir(workdir))) == ["4", "8"]


@pytest.mark.slow
def test_a_resumed_time_budget_counts_the_earlier_launches(tiny_vae_config, tmp_path, fake_clock):
    config, workdir = _budget_config(tiny_vae_config), str(tmp_path)
    assert train_and_evaluate(config, workdir, stop_at_step=5) is None  # 5 s spent, saved
    results = train_and_evaluate(config, workdir)  # 3 more steps, not a fresh 7.5 s
    assert (results["step"], results["train_seconds"]) == (8, 8.0)
    # A launch after the budget is spent (say the final evaluation was interrupted) trains no
    # step and evaluates the checkpoint it finds.
    os.remove(os.path.join(workdir, "eval.json"))
    seconds_before = fake_clock["seconds"]
    again = train_and_evaluate(config, workdir)
    assert (again["step"], again["train_seconds"]) == (8, 8.0)
    assert load_state(workdir)["step"] == 8
    assert [record["step"] for record in _train_records(workdir)] == [5, 8]
    assert fake_clock["seconds"] - seconds_before == 2.0  # the final evaluation's 2 batches
    # A larger budget on the same workdir continues from the time already spent.
    config.max_train_seconds = 10.0
    longer = train_and_evaluate(config, workdir)
    assert (longer["step"], longer["train_seconds"]) == (10, 10.0)


def test_num_steps_ends_a_run_before_its_time_budget(tiny_vae_config, tmp_path, fake_clock):
    tiny_vae_config.max_train_seconds = 1000.0
    results = train_and_evaluate(tiny_vae_config, str(tmp_path))
    assert results["step"] == tiny_vae_config.num_steps == 20
    assert results["stopped_by"] == "num_steps"
    # 20 steps at 1 s each; the monitoring evaluations at steps 10 and 20 are not counted.
    assert results["train_seconds"] == 20.0


def test_a_checkpoint_saved_without_a_clock_resumes_at_zero_seconds(tmp_path):
    """Checkpoints written before the clock item existed hold only `state` and `data`."""
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(checkpoint_dir(str(tmp_path)))
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.ones(2)})))
    manager.wait_until_finished()
    manager.close()
    checkpointer = Checkpointer(str(tmp_path), max_to_keep=2)
    assert checkpointer.latest_step() == 3
    assert checkpointer.restore_train_seconds(3) == 0.0
    checkpointer.close()
