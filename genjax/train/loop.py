"""The training loop: any registered family, any dataset, 1 to N devices, resumable.

    train_and_evaluate(config, workdir)  # validate, train (resuming), evaluate, write eval.json

Everything a run writes lives in `workdir`: `config.json`, `checkpoints/`, `metrics.jsonl`,
`tensorboard/`, `samples/*.png`, `loss_curves.png`, `eval.json` and, for families with
first-layer filters (RBM, DBN, DBM on images), `filters.png`, and the family's own figures
(`Model.figures`: reconstructions, chains).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time

import jax
import numpy as np
from absl import logging
from tqdm.auto import tqdm

from genjax import models
from genjax.core import parallel, util
from genjax.core.util import write_json_atomic
from genjax.data import load_dataset, toy2d
from genjax.evaluate import likelihood, plots, probe, sample_scorer
from genjax.train import config as config_lib
from genjax.train import lock, preemption
from genjax.train.checkpoint import Checkpointer
from genjax.train.metrics import MetricWriter

EVAL_FILE = "eval.json"
# What eval.json records of the training (the train loop's, see `_train`), as against the
# evaluation's own numbers; a re-evaluation of the same step keeps them.
TRAINING_RECORD = ("train_seconds", "max_train_seconds", "stopped_by", "train_machine")
FILTERS_FILE = "filters.png"
# Test examples handed to `Model.figures` (reconstructions and the like).
FIGURE_EXAMPLES = 16
# fold_in values of the evaluation key streams (per-example keys, and once-per-evaluation
# constants); train steps fold in their step (< 2**31 - 2).
_EVAL_STREAM = 2**31 - 1
_SAMPLE_QUALITY_SEED = 2**20  # `Experiment.sample` seed of the scored samples (grids use 0)


# Dispatched but unfinished train steps. A few keep the device busy while the host prepares
# the next batch; without a bound, hundreds queue up, and on CPU "devices" (forced host
# devices sharing one thread pool) XLA's runtime can then leave one device's half of an
# all-reduce unscheduled until its rendezvous timeout aborts the process.
MAX_STEPS_IN_FLIGHT = 2


class TrainingDivergedError(FloatingPointError):
    """A training metric became NaN or infinite; nothing after it was checkpointed."""


class Experiment:
    """One config's dataset, model, mesh and compiled per-device programs.

    The mesh spans every device of every process, or the given `devices` (the benchmark
    measures 1 of N devices this way).
    """

    def __init__(self, config, devices=None):
        self.config = config
        self.dataset = load_dataset(config)
        self.spec = self.dataset.spec
        try:  # checks that need the data (e.g. a Bernoulli model on unbinarized data)
            self.model = models.build(config, self.spec)
            if config.sample_quality_samples:
                sample_scorer.check_supported(
                    self.spec.name,
                    self.spec.example_shape,
                    self.spec.num_classes,
                    config.sample_quality_samples,
                )
        except ValueError as error:
            raise config_lib.ConfigError(str(error)) from error
        self.mesh = parallel.make_mesh(devices)
        self._example_x = np.zeros((1, *self.spec.example_shape), np.float32)
        abstract_state = jax.eval_shape(
            self.model.create_state, jax.random.key(config.seed), self._example_x
        )
        self.state_spec = parallel.state_partition_spec(abstract_state, self.model.sharded_extras)
        self.train_step = parallel.data_parallel(
            self.model.train_step, self.mesh, donate_state=True, state_spec=self.state_spec
        )
        self._eval_steps = {
            final: parallel.data_parallel(
                functools.partial(self._eval_step, final=final),
                self.mesh,
                num_replicated=2,
                sharded_out=True,
                state_spec=self.state_spec,
            )
            for final in (False, True)
        }
        self._sample = jax.jit(self.model.sample, static_argnums=2)
        self._scorer = None  # built on first use: it may train the feature classifier

    @property
    def examples_per_step(self) -> int:
        """Training examples one train step consumes: `config.batch_size` per batch, times the
        family's `train_batches_per_step` (a GAN's critic steps), drawn as one batch."""
        return self.config.batch_size * self.model.train_batches_per_step

    def init_state(self):
        """A new step-0 state on the mesh: replicated, except the model's sharded extras.

        A model with `init_batch_size` is initialised on that many real training examples.
        """
        key = jax.random.key(self.config.seed)
        example_x = self._example_x
        if self.model.init_batch_size:
            example_x = self.dataset.init_batch(self.model.init_batch_size)
        state = jax.jit(self.model.create_state)(key, example_x)
        return parallel.place(state, self.mesh, self.state_spec)

    def _eval_step(self, state, key, batch, final):
        keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(batch["index"])
        outputs = self.model.eval_step(state, batch, keys, final)
        return {**outputs, "mask": batch["mask"]}  # travels with the outputs to the host

    def evaluate(self, state, final: bool, split: str = "test") -> dict:
        """Runs the model's evaluation over one whole split; returns its summary.

        Per-example outputs are computed data-parallel, gathered, stripped of padding and
        handed to `model.summarize`. The key depends only on the run's base key, so two
        evaluations of one state agree exactly.
        """
        key = jax.random.fold_in(state.key, _EVAL_STREAM)
        constants_key = jax.random.fold_in(state.key, _EVAL_STREAM - 1)
        constants = jax.device_get(self.model.evaluation_constants(state, constants_key, final))
        step_fn = self._eval_steps[final]
        chunks = []
        batch_size = self.config.eval_batch_size
        batches = tqdm(
            self.dataset.eval_batches(split, batch_size),
            total=self.dataset.num_batches(split, batch_size),
            desc=f"evaluating ({'final' if final else 'monitor'}, {split})",
            unit="batch",
            leave=False,
            disable=not (final and self.config.progress_bar and _is_main_process()),
        )
        for batch in batches:
            outputs = parallel.gather(step_fn(state, key, parallel.shard_batch(batch, self.mesh)))
            keep = np.asarray(outputs.pop("mask")) > 0
            chunks.append({name: np.asarray(value)[keep] for name, value in outputs.items()})
        outputs = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
        summary = self.model.summarize(outputs, final, constants)
        if final:
            summary.update(self.linear_probe(state))
        if self.config.sample_quality_samples:
            summary.update(self.sample_quality(state, progress=final))
        if final and "test_nll_nats" in summary:
            dequantized = bool(self.config.preprocess.dequantize)
            summary.update(likelihood.data_space_fields(summary, self.spec, dequantized))
        return summary

    def linear_probe(self, state) -> dict:
        """For a family with `features` on labelled data: the test accuracy of a logistic
        regression fitted on the training split's features (`probe_accuracy`) and of the same
        probe on the model-space inputs (`probe_pixels_accuracy`); {} otherwise."""
        features_fn = jax.jit(self.model.features)
        if (
            self.spec.num_classes is None
            or jax.eval_shape(features_fn, state, self._example_x) is None
        ):
            return {}
        inputs, features, labels = {}, {}, {}
        for split in ("train", "test"):
            batches = list(self.dataset.labelled_batches(split, self.config.eval_batch_size))
            inputs[split] = np.concatenate([batch["x"] for batch in batches])
            features[split] = np.concatenate(
                [np.asarray(features_fn(state, batch["x"])) for batch in batches]
            )
            labels[split] = np.concatenate([batch["label"] for batch in batches])
        seed = self.config.seed
        return {
            "probe_accuracy": probe.linear_probe_accuracy(
                features["train"], labels["train"], features["test"], labels["test"], seed=seed
            ),
            "probe_pixels_accuracy": probe.linear_probe_accuracy(
                inputs["train"], labels["train"], inputs["test"], labels["test"], seed=seed
            ),
        }

    def sample(self, state, num: int | None = None, seed: int = 0) -> np.ndarray:
        """Samples from the model, mapped back to the data's unit-interval space."""
        num = self.config.num_samples if num is None else num
        if num <= 0:
            raise ValueError(f"number of samples must be positive, got {num}")
        key = jax.random.fold_in(jax.random.fold_in(state.key, _EVAL_STREAM), 1 + seed)
        samples = np.asarray(self._sample(state, key, num))
        return self.dataset.preprocessor.to_unit(samples)

    def sample_quality(self, state, num: int | None = None, progress: bool = False) -> dict:
        """Sample-quality metrics of `num` (default `config.sample_quality_samples`) samples
        against the test split (`genjax.evaluate.sample_scorer`); the same draws every call."""
        num = self.config.sample_quality_samples if num is None else num
        if self._scorer is None:
            self._scorer = sample_scorer.SampleScorer(
                self.spec.name,
                self.dataset.data_dir,
                self.dataset.unit_examples("test"),
                progress=progress and self.config.progress_bar and _is_main_process(),
            )
        samples = self.sample(state, num, seed=_SAMPLE_QUALITY_SEED)
        return self._scorer(samples, self.model.sample_labels(num))

    def save_samples(self, state, path: str) -> None:
        """A sample grid (images) or a scatter against test points (2-D data) as PNG."""
        samples = self.sample(state)
        if self.spec.is_image:
            plots.save_image_grid(samples, path)
        else:
            reference = self.dataset.preprocessor.to_unit(
                next(self.dataset.eval_batches("test", 1000))["x"]
            )
            plots.save_scatter_2d(samples, path, reference=reference, title="samples vs test")


def _is_main_process() -> bool:
    return jax.process_index() == 0


class _MetricBuffer:
    """Per-step device metrics, fetched in blocks so the host does not sync every step."""

    def __init__(self):
        self.pending: list[tuple[int, dict]] = []
        self.fetched: list[tuple[int, dict]] = []
        self.last_time = time.perf_counter()

    def add(self, step: int, metrics: dict) -> None:
        """Records a dispatched step; waits until at most `MAX_STEPS_IN_FLIGHT` are unfinished."""
        self.pending.append((step, metrics))
        if len(self.pending) > MAX_STEPS_IN_FLIGHT:
            jax.block_until_ready(self.pending[-MAX_STEPS_IN_FLIGHT - 1][1])

    def verify(self) -> None:
        """Fetches pending steps and raises TrainingDivergedError at the first non-finite one.

        Called before every checkpoint, so no checkpoint ever holds a diverged state.
        """
        for step, metrics in jax.device_get(self.pending):
            for name, value in metrics.items():
                if not np.all(np.isfinite(value)):
                    raise TrainingDivergedError(
                        f"{name}={float(np.asarray(value))} at step {step}; training stopped "
                        "before any checkpoint could include it."
                    )
            self.fetched.append((step, metrics))
        self.pending = []

    def flush(self) -> dict:
        """Verifies, then returns the mean of every metric since the last flush, and steps/s."""
        self.verify()
        now = time.perf_counter()
        fetched = self.fetched
        mean = {name: float(np.mean([m[name] for _, m in fetched])) for name in fetched[0][1]}
        mean["perf/steps_per_sec"] = len(fetched) / max(now - self.last_time, 1e-9)
        self.fetched, self.last_time = [], now
        return mean

    def restart_clock(self) -> None:
        """Excludes evaluation, sampling and checkpointing time from steps/s."""
        self.last_time = time.perf_counter()


def _now() -> float:
    """The train clock's time source (seconds); tests replace it with a fake clock."""
    return time.perf_counter()


class TrainClock:
    """Seconds spent training, counted across launches, for `config.max_train_seconds`.

    The clock runs from just before a launch's first train step (so it includes compiling the
    train step and drawing batches) and is paused around monitoring evaluations, sample grids
    and checkpoint saves; setup before the loop (loading the data, restoring a checkpoint) and
    the final evaluation are not counted. `spent` is the time earlier launches had counted up
    to the checkpoint this launch resumes from (saved with every checkpoint), so work lost
    after that checkpoint is not counted and its redoing is.
    """

    def __init__(self, spent: float = 0.0):
        self._spent = float(spent)
        self._started = _now()

    def seconds(self) -> float:
        """Training seconds so far, earlier launches included."""
        return self._spent + _now() - self._started

    @contextlib.contextmanager
    def paused(self):
        """Excludes the time spent inside the `with` block."""
        seconds = self.seconds()
        try:
            yield
        finally:
            self._spent, self._started = seconds, _now()


def train_machine() -> str:
    """The machine a run trained on, as its eval.json records it: "1 cpu device(s) (cpu), 2
    host CPU cores" (a time budget means something only on a named machine)."""
    device = jax.devices()[0]
    return (
        f"{jax.device_count()} {device.platform} device(s) ({device.device_kind}), "
        f"{os.cpu_count()} host CPU cores"
    )


def train(experiment: Experiment, workdir: str, stop_at_step: int | None = None):
    """Trains from the newest intact checkpoint in `workdir` (or from scratch) and returns the
    state.

    Args:
      experiment: from `Experiment(config)`.
      workdir: the run's directory.
      stop_at_step: train only up to this step (checkpointing there) and return; a later call
        continues. None trains to `config.num_steps`.

    Training stops earlier, at any of these limits, once the time budget
    `config.max_train_seconds` (`TrainClock`) is spent.

    Raises:
      lock.WorkdirLockedError: another live run holds `workdir` (nothing is written).
      preemption.Preempted: a SIGTERM or SIGINT (to any process) stopped training after the
        step it was on was checkpointed.
      checkpoint.CorruptCheckpointError: with `config.strict_resume`, the newest checkpoint
        does not read back intact (otherwise it is moved aside, `Checkpointer`).
      TrainingDivergedError: a training metric became NaN or infinite.
    """
    return _train(experiment, workdir, stop_at_step)[0]


def _train(experiment: Experiment, workdir: str, stop_at_step: int | None = None):
    """`train`, also returning what eval.json records of the training: {"train_seconds",
    "max_train_seconds", "stopped_by": "num_steps" | "max_train_seconds" | None (stopped at
    `stop_at_step`: unfinished), "train_machine"}.

    With a time budget, the loop stops after the first step at whose dispatch the clock has
    reached `config.max_train_seconds` (the at most `MAX_STEPS_IN_FLIGHT` steps still running
    then finish, and are counted, before the final checkpoint); that step is logged,
    evaluated (if `eval_every`) and checkpointed as the last one. A launch that resumes a run
    whose budget is already spent trains no step.
    """
    with lock.hold(workdir), preemption.StopRequest() as stop:
        return _train_locked(experiment, workdir, stop_at_step, stop)


def _restore_or_init(experiment: Experiment, checkpointer: Checkpointer):
    """(start_step, state, iterator, spent seconds) of the newest intact checkpoint, or of a
    new run when there is none (corrupt ones are moved aside, `Checkpointer`)."""
    config = experiment.config
    iterator = experiment.dataset.train_iterator(experiment.examples_per_step)
    state = experiment.init_state()
    if checkpointer.latest_step() is None:
        return 0, state, iterator, 0.0
    step, restored = checkpointer.restore_latest_intact(state, iterator, config.strict_resume)
    if step is None:  # every checkpoint was corrupt: the iterator may hold a failed restore
        logging.warning("No intact checkpoint; training from scratch")
        return 0, state, experiment.dataset.train_iterator(experiment.examples_per_step), 0.0
    return step, restored, iterator, checkpointer.restore_train_seconds(step)


def _train_locked(experiment, workdir, stop_at_step, stop: preemption.StopRequest):
    config = experiment.config
    end_step = config.num_steps if stop_at_step is None else min(stop_at_step, config.num_steps)
    budget = float(config.max_train_seconds)
    checkpointer = Checkpointer(workdir, config.keep_checkpoints)
    try:
        start_step, state, iterator, spent = _restore_or_init(experiment, checkpointer)
    except BaseException:
        checkpointer.close()
        raise
    if start_step:
        logging.info("Resumed from step %d in %s", start_step, workdir)
    main = _is_main_process()
    if main:
        config_lib.save_config(config, workdir)
    writer = MetricWriter(workdir, start_step, enabled=main)
    progress = tqdm(
        total=config.num_steps,
        initial=start_step,
        unit="step",
        disable=not (config.progress_bar and main),
        dynamic_ncols=True,
    )
    buffer = _MetricBuffer()
    agreement = preemption.StopAgreement(stop, experiment.mesh, lag=MAX_STEPS_IN_FLIGHT)
    main_metric = experiment.model.main_metric
    budget_spent = bool(budget) and spent >= budget
    if budget_spent:
        end_step = start_step
    clock = TrainClock(spent)
    saved_seconds = spent  # the clock at the latest checkpoint: what eval.json records
    preempted = False
    stop.deferring = True  # a signal now ends the step, checkpoints it and stops
    try:
        for step in range(start_step + 1, end_step + 1):
            batch = parallel.shard_batch(next(iterator), experiment.mesh)
            state, metrics = experiment.train_step(state, batch)
            buffer.add(step, metrics)
            progress.update(1)
            budget_spent = bool(budget) and clock.seconds() >= budget
            preempted = agreement.reached()
            last = step == end_step or budget_spent or preempted
            if step % config.log_every == 0 or last:
                summary = buffer.flush()
                writer.write(step, summary)
                progress.set_postfix({main_metric: summary.get(main_metric, float("nan"))})
            if config.eval_every and (step % config.eval_every == 0 or last) and not preempted:
                with clock.paused():
                    eval_metrics = experiment.evaluate(state, final=False)
                writer.write(
                    step,
                    {f"eval/{k}": v for k, v in eval_metrics.items() if util.is_finite_number(v)},
                )
            if config.sample_every and step % config.sample_every == 0 and main:
                with clock.paused():
                    _save_step_samples(experiment, state, workdir, step)
            if step % config.checkpoint_every == 0 or last:
                buffer.verify()
                saved_seconds = clock.seconds()
                with clock.paused():
                    checkpointer.save(step, state, iterator, train_seconds=saved_seconds)
            if step % config.log_every == 0:
                buffer.restart_clock()
            if budget_spent or preempted:
                break
    finally:
        try:  # waits for the last save: a signal meanwhile only sets the flag
            _close_all(progress.close, writer.close, checkpointer.close)
        finally:
            stop.deferring = False
    reached = int(jax.device_get(state.step))
    if preempted or agreement.drain():
        raise preemption.Preempted(reached, stop.signal_name or "a signal to another process")
    stopped_by = None
    if reached >= config.num_steps:
        stopped_by = "num_steps"
    elif budget_spent:
        stopped_by = "max_train_seconds"
        logging.info("Time budget of %.1f s spent at step %d", budget, reached)
    training = dict(
        train_seconds=saved_seconds,
        max_train_seconds=budget,
        stopped_by=stopped_by,
        train_machine=train_machine(),
    )
    return state, training


def _close_all(*closers) -> None:
    """Calls every closer, even after one fails (a full disk), then raises the first failure."""
    failure = None
    for close in closers:
        try:
            close()
        except Exception as error:  # noqa: BLE001 (re-raised below)
            failure = failure or error
    if failure is not None:
        raise failure


def _save_step_samples(experiment: Experiment, state, workdir: str, step: int) -> str:
    directory = os.path.join(workdir, "samples")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"step_{step:08d}.png")
    experiment.save_samples(state, path)
    return path


def restore_state(experiment: Experiment, workdir: str, step: int | None = None):
    """The state saved in `workdir` (latest step by default), on the experiment's mesh.

    Reads only (takes no lock, moves nothing); raises checkpoint.CorruptCheckpointError if the
    checkpoint does not read back intact.
    """
    checkpointer = Checkpointer(workdir, experiment.config.keep_checkpoints)
    try:
        step = checkpointer.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint to restore in {workdir!r}")
        return checkpointer.restore_verified(step, experiment.init_state())
    finally:
        checkpointer.close()


def final_evaluation(
    experiment: Experiment, state, workdir: str, training: dict | None = None
) -> dict:
    """The full evaluation protocol; writes `eval.json`, final samples, loss curves and the
    first-layer filters (`filters.png`, families that have them).

    eval.json holds the evaluation's summary, the state's `step` (the steps reached), `model`,
    `dataset` and the `training` record (`TRAINING_RECORD`): the one given
    (`train_and_evaluate` passes the loop's) or, for a re-evaluation (`experiments.evaluate`),
    the one an existing eval.json holds for the same step.
    """
    step = int(jax.device_get(state.step))
    if training is None:
        training = _previous_training_record(workdir, step)
    results = experiment.evaluate(state, final=True)
    results.update(training)
    results.update(step=step, model=experiment.config.model, dataset=experiment.config.dataset)
    if _is_main_process():
        write_json_atomic(os.path.join(workdir, EVAL_FILE), results)
        _save_step_samples(experiment, state, workdir, results["step"])
        _save_density_plot(experiment, state, workdir)
        _save_filters(experiment, state, workdir)
        _save_family_figures(experiment, state, workdir)
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(metrics_path):
            plots.save_loss_curves(metrics_path, os.path.join(workdir, "loss_curves.png"))
    return results


def _previous_training_record(workdir: str, step: int) -> dict:
    """The training record of `workdir`'s eval.json if it describes `step`, else {}."""
    path = os.path.join(workdir, EVAL_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        previous = json.load(f)
    if previous.get("step") != step:
        return {}
    return {key: previous[key] for key in TRAINING_RECORD if key in previous}


def _save_filters(experiment: Experiment, state, workdir: str) -> None:
    """filters.png when the family has first-layer filters (energy models on images)."""
    filters = experiment.model.first_layer_filters(state)
    if filters is not None:
        plots.save_filter_grid(np.asarray(filters), os.path.join(workdir, FILTERS_FILE))


def _save_family_figures(experiment: Experiment, state, workdir: str) -> None:
    """The family's own figures (`Model.figures`), on the first `FIGURE_EXAMPLES` test
    examples."""
    test_x = next(experiment.dataset.eval_batches("test", FIGURE_EXAMPLES))["x"]
    key = jax.random.fold_in(jax.random.fold_in(state.key, _EVAL_STREAM), 2)
    figures = experiment.model.figures(state, key, test_x, experiment.dataset.preprocessor.to_unit)
    for file_name, write in figures.items():
        write(os.path.join(workdir, file_name))


def _save_density_plot(experiment: Experiment, state, workdir: str) -> None:
    """density.png for 2-D data when the family has a density: model vs the true density."""
    spec = experiment.spec
    if spec.example_shape != (2,):
        return
    log_density = jax.jit(experiment.model.log_density)
    if jax.eval_shape(log_density, state, jax.ShapeDtypeStruct((1, 2), np.float32)) is None:
        return
    name = spec.name.removeprefix("toy2d/")
    reference = None
    if spec.name.startswith("toy2d/") and toy2d.has_density(name):
        reference = functools.partial(toy2d.log_prob, name)
    test_x = next(experiment.dataset.eval_batches("test", 1000))["x"]
    bound = float(np.ceil(np.abs(test_x).max() * 1.1))
    plots.save_density_2d(
        lambda points: log_density(state, points),
        os.path.join(workdir, "density.png"),
        bounds=(-bound, bound),
        reference_log_prob_fn=reference,
        title=f"{experiment.config.model_config.get('architecture', experiment.config.model)} "
        f"on {spec.name}",
    )


def train_and_evaluate(config, workdir: str, stop_at_step: int | None = None) -> dict | None:
    """Validates `config`, trains (resuming from `workdir`), then evaluates.

    A run is finished at `config.num_steps` or when its time budget `config.max_train_seconds`
    is spent; either way the final evaluation runs on the last checkpointed state.

    Returns the `eval.json` contents, or None when `stop_at_step` ended the run early.
    """
    config_lib.validate(config, workdir)
    experiment = Experiment(config)  # loads the data: may still fail, before any write
    os.makedirs(workdir, exist_ok=True)
    # The lock spans training and the final evaluation; a signal during the evaluation exits
    # at once with preemption.PREEMPTED_EXIT_STATUS (every trained step is checkpointed).
    with lock.hold(workdir), preemption.StopRequest():
        state, training = _train(experiment, workdir, stop_at_step)
        if training["stopped_by"] is None:
            return None
        return final_evaluation(experiment, state, workdir, training)
