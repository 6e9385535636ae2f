"""Orbax checkpoints of the train state together with the input iterator's position."""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_SUBDIR = "checkpoints"
CLOCK_ITEM = "clock"  # the item holding the train clock


def checkpoint_dir(workdir: str) -> str:
    """Where a run keeps its checkpoints: `workdir/checkpoints`."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


class Checkpointer:
    """An `ocp.CheckpointManager` holding, per step, the state and the data iterator.

    Items: `state` (the `TrainState`, StandardSave), `data` (grain's iterator state, one
    file per process) and `clock` ({"train_seconds": the trainer's `TrainClock` at the save},
    JSON; checkpoints saved before it existed lack it). Saves are asynchronous; `close()`
    waits for them.
    """

    def __init__(self, workdir: str, max_to_keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(checkpoint_dir(workdir), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(
        self, step: int, state, iterator: grain.DatasetIterator, train_seconds: float = 0.0
    ) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(iterator),
            clock=ocp.args.JsonSave({"train_seconds": float(train_seconds)}),
        )
        self.manager.save(step, args=args)

    def restore_train_seconds(self, step: int) -> float:
        """The training seconds saved with `step`; 0.0 for a checkpoint saved without them."""
        if not os.path.isdir(os.path.join(self.manager.directory, str(step), CLOCK_ITEM)):
            return 0.0
        restored = self.manager.restore(step, args=ocp.args.Composite(clock=ocp.args.JsonRestore()))
        return float(restored["clock"]["train_seconds"])

    def restore(self, step: int, state_template, iterator: grain.DatasetIterator | None = None):
        """Restores `step` into the structure and shardings of `state_template`.

        If `iterator` is given its position is restored in place too.
        """
        abstract_state = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(iterator)
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        return restored["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds at least one finished checkpoint (touches nothing)."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return False
    return any(name.isdigit() for name in os.listdir(directory))


def load_state(workdir: str, step: int | None = None) -> dict[str, Any]:
    """A saved train state as a nested dict of NumPy arrays, without the config.

    Works whatever the number of devices the checkpoint was saved from: the arrays are
    restored onto one local device, following the checkpoint's own metadata.

    Args:
      workdir: a run's working directory.
      step: which checkpoint; the latest when None.

    Returns:
      {'step', 'params', 'opt_state', 'rng', 'extras'} with NumPy leaves.
    """
    if not has_checkpoint(workdir):
        raise FileNotFoundError(f"no checkpoint in {checkpoint_dir(workdir)!r}")
    handlers = {
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
    }
    with ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=handlers) as manager:
        step = manager.latest_step() if step is None else step
        if step not in manager.all_steps():
            raise ValueError(f"step={step} is not saved; saved steps: {manager.all_steps()}")
        metadata = manager.item_metadata(step)["state"]
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(
            lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata
        )
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))
        )
    return jax.tree.map(np.asarray, restored["state"])
