"""Fields every config shares, and the checks that run before anything touches disk."""

from __future__ import annotations

import json
import os

import ml_collections

from genjax import models
from genjax.core import optim, util
from genjax.data import pipeline
from genjax.objectives import estimators

CONFIG_FILE = "config.json"
COMPUTE_DTYPES = ("float32", "bfloat16")

# Fields that must be positive integers.
_POSITIVE_FIELDS = (
    "batch_size",
    "eval_batch_size",
    "num_steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "num_samples",
)
# Fields that must be non-negative integers (0 disables the periodic work).
_NON_NEGATIVE_FIELDS = ("eval_every", "sample_every", "warmup_steps", "sample_quality_samples")


class ConfigError(ValueError):
    """An invalid config, found before any training or any write to disk."""


def base_config() -> ml_collections.ConfigDict:
    """Training-system defaults; model configs start from this and override.

    `model_config` holds the family's own (architecture, objective) fields: two runs may share
    a workdir only if `model` and `model_config` are equal.
    """
    config = ml_collections.ConfigDict()
    config.model = ""
    config.model_config = ml_collections.ConfigDict()
    config.dataset = "mnist5k"
    config.data_dir = ""  # '' -> $TFDS_DATA_DIR or ~/tensorflow_datasets
    config.preprocess = ml_collections.ConfigDict(dict(pipeline.PREPROCESS_DEFAULTS))
    config.seed = 0
    # The gradient estimator of a latent-variable model (genjax.objectives.estimators):
    # 'reparam' | 'stl' | 'dreg' | 'score' | 'vimco'; families with an exact gradient accept
    # only 'reparam' (their `Model.estimators`).
    config.estimator = "reparam"
    # The dtype of the train step's matrix products and convolutions: 'float32' | 'bfloat16'
    # (mixed precision: the parameters, optimizer state, biases, log-likelihoods and log-dets
    # stay float32). Families that implement bfloat16 list it in `Model.compute_dtypes`.
    config.compute_dtype = "float32"
    config.batch_size = 100  # global, split across devices and processes
    config.eval_batch_size = 100
    config.num_steps = 1000
    # A time budget for the run, in seconds of training (genjax.train.loop.TrainClock: the
    # train loop's wall time, the first step's compilation included, monitoring evaluations,
    # sample grids, checkpoint saves and the final evaluation excluded, summed over resumed
    # launches): training stops at the first step after it is spent, or at num_steps,
    # whichever comes first, then evaluates as usual. 0 disables it; single-process runs only.
    # Learning-rate schedules (and a staged family's stage_steps) still span num_steps.
    config.max_train_seconds = 0.0
    config.optimizer = "adam"
    config.learning_rate = 1e-3
    config.lr_schedule = "constant"
    config.lr_decay_rate = 0.1
    config.warmup_steps = 0
    config.adam_b1 = 0.9
    config.adam_b2 = 0.999
    config.adam_eps = 1e-8
    config.weight_decay = 0.0
    config.momentum = 0.9
    config.rmsprop_decay = 0.9  # the second-moment decay of optimizer='rmsprop'
    config.grad_clip_norm = 0.0  # 0 disables clipping
    config.log_every = 100
    config.eval_every = 1000
    config.checkpoint_every = 1000
    config.keep_checkpoints = 2
    # On resume, a checkpoint that does not read back intact is moved aside to
    # workdir/checkpoints_corrupt/ and the run resumes from the newest intact one; True
    # refuses instead, leaving everything in place (genjax.train.checkpoint).
    config.strict_resume = False
    config.sample_every = 0
    config.num_samples = 64
    # Samples scored at every evaluation (genjax.evaluate.sample_scorer: mode coverage on
    # toy2d mixtures, Fréchet distance and precision/recall on labelled images); 0: none.
    config.sample_quality_samples = 0
    config.progress_bar = True
    return config


def _fail(message: str) -> None:
    raise ConfigError(message)


def _check_fields(config) -> None:
    for field in _POSITIVE_FIELDS:
        value = config[field]
        if not isinstance(value, int) or value <= 0:
            _fail(f"config.{field}={value!r} must be a positive integer.")
    for field in _NON_NEGATIVE_FIELDS:
        value = config[field]
        if not isinstance(value, int) or value < 0:
            _fail(f"config.{field}={value!r} must be a non-negative integer (0 disables it).")
    budget = config.max_train_seconds
    if not util.is_number(budget) or not 0 <= budget < float("inf"):
        _fail(
            f"config.max_train_seconds={budget!r} must be a non-negative number of seconds "
            "(0 disables the time budget)."
        )
    if not config.learning_rate > 0:
        _fail(f"config.learning_rate={config.learning_rate!r} must be positive.")
    if not config.weight_decay >= 0:
        _fail(f"config.weight_decay={config.weight_decay!r} must be non-negative (0 disables it).")
    if config.optimizer not in optim.OPTIMIZERS:
        _fail(f"config.optimizer={config.optimizer!r}; allowed: {optim.OPTIMIZERS}")
    if config.lr_schedule not in optim.SCHEDULES:
        _fail(f"config.lr_schedule={config.lr_schedule!r}; allowed: {optim.SCHEDULES}")


def _check_family_choice(
    config, field: str, known: tuple[str, ...], implemented: tuple[str, ...], reason="", hint=""
) -> None:
    """`config.<field>` is one of the `known` values and one the family `implemented`."""
    value = config[field]
    if value not in known:
        _fail(f"config.{field}={value!r}; allowed: {known}")
    if value not in implemented:
        _fail(
            f"config.{field}={value!r} is not available for config.model={config.model!r}"
            f"{reason}; allowed: {implemented}{hint}."
        )


def _check_estimator(config, family) -> None:
    """`config.estimator` is one of the estimators the family implements."""
    _check_family_choice(
        config,
        "estimator",
        estimators.ESTIMATORS,
        family.estimators,
        reason=", which trains by its own gradient",
        hint=" (the other estimators apply to latent-variable models, config.model='vae')",
    )


def _check_compute_dtype(config, family) -> None:
    """`config.compute_dtype` is one the family implements."""
    _check_family_choice(config, "compute_dtype", COMPUTE_DTYPES, family.compute_dtypes)


def _check_devices(config, device_count: int, process_count: int) -> None:
    for field in ("batch_size", "eval_batch_size"):
        value = config[field]
        if value % device_count or value % process_count:
            _fail(
                f"config.{field}={value} must be divisible by the device count "
                f"({device_count}) and the process count ({process_count})."
            )


def _check_workdir(config, family, workdir: str) -> None:
    """A workdir may only be resumed by the same model, estimator and model_config.

    Fields the family declares evaluation-only (`Model.evaluation_fields`) may differ; fields
    added to a family later (`Model.added_field_defaults`) read as their defaults in old runs.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    with open(path) as f:
        saved = json.load(f)
    if saved.get("model") != config.model:
        _fail(
            f"--workdir={workdir!r} holds a run with config.model={saved.get('model')!r}, but "
            f"this config has config.model={config.model!r}. Use a new --workdir."
        )
    saved_estimator = saved.get("estimator", "reparam")  # runs saved before the field existed
    if saved_estimator != config.estimator:
        _fail(
            f"--workdir={workdir!r} holds a run trained with config.estimator="
            f"{saved_estimator!r}, but this config has config.estimator={config.estimator!r}. "
            "Use a new --workdir."
        )
    ignored = family.evaluation_fields
    current = json.loads(config.model_config.to_json())
    # A field added to the family after the run was saved reads as its declared default.
    saved_fields = {**family.added_field_defaults, **saved.get("model_config", {})}
    for field in sorted(set(current) | set(saved_fields)):
        if field not in ignored and saved_fields.get(field) != current.get(field):
            _fail(
                f"--workdir={workdir!r} holds a run with config.model_config.{field}="
                f"{saved_fields.get(field)!r}, but this config has config.model_config.{field}="
                f"{current.get(field)!r}. Use a new --workdir (or the saved run's config) to "
                "avoid mixing checkpoints."
            )


def validate(config, workdir: str | None = None, device_count=None, process_count=None) -> None:
    """Every check that can fail before training; raises ConfigError naming field and values.

    Reads, never writes: an invalid config leaves the disk as it was.
    """
    import jax

    device_count = jax.device_count() if device_count is None else device_count
    process_count = jax.process_count() if process_count is None else process_count
    if config.model not in models.names():
        _fail(models.unregistered_message(config.model))
    family = models.get(config.model)  # resolved once; every check below reads this one
    _check_fields(config)
    _check_estimator(config, family)
    _check_compute_dtype(config, family)
    try:
        pipeline.check_dataset_name(config.dataset)
        pipeline.check_preprocess_options(config.preprocess)
        pipeline.check_preprocess_for_dataset(config.dataset, config.preprocess)
        family.validate_config(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    _check_devices(config, device_count, process_count)
    if config.max_train_seconds and process_count > 1:
        _fail(
            f"config.max_train_seconds={config.max_train_seconds!r} needs a single process (this "
            f"run has {process_count}): each process keeps its own clock, and processes that "
            "stopped at different steps would hang; allowed with several processes: 0."
        )
    if workdir is not None:
        _check_workdir(config, family, workdir)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a run in `workdir` was trained with (its `config.json`). Fields added after
    the run was saved read as their defaults: top-level ones from `base_config`, model_config
    ones from the family's `Model.added_field_defaults`."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--workdir={workdir!r} has no {CONFIG_FILE}: not a genjax run")
    with open(path) as f:
        saved = json.load(f)
    saved = {**json.loads(base_config().to_json()), **saved}
    if saved.get("model") in models.names():
        added = models.get(saved["model"]).added_field_defaults
        saved["model_config"] = {**added, **saved.get("model_config", {})}
    return ml_collections.ConfigDict(saved)


def save_config(config, workdir: str) -> None:
    """Writes `workdir/config.json` (atomically)."""
    util.write_json_atomic(os.path.join(workdir, CONFIG_FILE), json.loads(config.to_json()))
