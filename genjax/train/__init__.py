"""The runner: the train loop, config checks, checkpoints, metric logs, multi-host runs, preemption
and the workdir lock (the step kit it drives is genjax.core)."""

from genjax.core.state import TrainState
from genjax.train.checkpoint import load_state
from genjax.train.config import ConfigError, base_config, load_config, validate
from genjax.train.loop import (
    Experiment,
    TrainingDivergedError,
    final_evaluation,
    restore_state,
    train,
    train_and_evaluate,
)

__all__ = [
    "ConfigError",
    "Experiment",
    "TrainState",
    "TrainingDivergedError",
    "base_config",
    "final_evaluation",
    "load_config",
    "load_state",
    "restore_state",
    "train",
    "train_and_evaluate",
    "validate",
]
