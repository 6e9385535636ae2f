"""Orbax checkpoints of the train state together with the input iterator's position.

Every checkpoint also holds a fingerprint of the state (two wrapping sums of each array's
32-bit words, computed on the devices before the save), so a resume knows whether what it read
back is what was written: `Checkpointer.restore_latest_intact` restores the newest checkpoint
that reads back with its fingerprint, moving each corrupt newer one aside to
`workdir/checkpoints_corrupt/<step>` (kept, never deleted) with a warning naming its step and
path, or refuses at the first corrupt one when asked to be strict.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

CHECKPOINT_SUBDIR = "checkpoints"
CORRUPT_SUBDIR = "checkpoints_corrupt"
CLOCK_ITEM = "clock"  # the item holding the train clock
FINGERPRINT_ITEM = "fingerprint"  # the item holding the state's fingerprint


class CorruptCheckpointError(RuntimeError):
    """A checkpoint that does not read back as it was written (named by step and path)."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that reads back but holds a differently shaped state (another config)."""


def checkpoint_dir(workdir: str) -> str:
    """Where a run keeps its checkpoints: `workdir/checkpoints`."""
    return os.path.join(os.path.abspath(workdir), CHECKPOINT_SUBDIR)


def _words(leaf: jax.Array) -> jax.Array:
    """An array's bits as a flat uint32 vector (narrower types widened word by word)."""
    leaf = jnp.ravel(leaf)
    if leaf.dtype == jnp.bool_ or leaf.dtype.itemsize == 1:
        return leaf.astype(jnp.uint8).astype(jnp.uint32)
    if leaf.dtype.itemsize == 2:
        return jax.lax.bitcast_convert_type(leaf, jnp.uint16).astype(jnp.uint32)
    return jnp.ravel(jax.lax.bitcast_convert_type(leaf, jnp.uint32))


def _leaf_fingerprint(leaf: jax.Array) -> jax.Array:
    """(2,) uint32: the sum of the words and the sum of word * position, both mod 2**32; any
    single changed word, or two words swapped, changes it."""
    words = _words(leaf)
    positions = jnp.arange(1, words.size + 1, dtype=jnp.uint32)
    return jnp.stack(
        [jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * positions, dtype=jnp.uint32)]
    )


@functools.cache
def _fingerprint_fn(out_sharding):
    return jax.jit(
        lambda leaves: [_leaf_fingerprint(leaf) for leaf in leaves], out_shardings=out_sharding
    )


def _path_name(path) -> str:
    return "/".join(
        str(getattr(key, "name", getattr(key, "key", getattr(key, "idx", key)))) for key in path
    )


def fingerprint(state) -> dict[str, list[int]]:
    """{leaf path: [sum, weighted sum]} of a state on its devices (every process gets it)."""
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    leaves = [leaf for _, leaf in flat]
    sharding = getattr(leaves[0], "sharding", None)
    replicated = NamedSharding(sharding.mesh, P()) if isinstance(sharding, NamedSharding) else None
    sums = jax.device_get(_fingerprint_fn(replicated)(leaves))
    return {
        _path_name(path): [int(x) for x in value]
        for (path, _), value in zip(flat, sums, strict=True)
    }


def _signature(tree) -> dict[str, tuple]:
    """{leaf path: (shape, dtype name)} of a state or of a checkpoint's metadata tree."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name) for path, leaf in flat}


def _first_difference(saved: dict, expected: dict) -> str:
    for name in sorted(set(saved) | set(expected)):
        if saved.get(name) != expected.get(name):
            saved_leaf, expected_leaf = saved.get(name, "absent"), expected.get(name, "absent")
            return f"{name or 'state'}: saved {saved_leaf}, expected {expected_leaf}"
    return ""


class Checkpointer:
    """An `ocp.CheckpointManager` holding, per step, the state and the data iterator.

    Items: `state` (the `TrainState`, StandardSave), `data` (grain's iterator state, one
    file per process), `clock` ({"train_seconds": the trainer's `TrainClock` at the save},
    JSON) and `fingerprint` (`fingerprint(state)`, JSON); checkpoints saved before the last two
    existed lack them. Saves are asynchronous; `close()` waits for them.
    """

    def __init__(self, workdir: str, max_to_keep: int):
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.workdir = workdir
        self.manager = ocp.CheckpointManager(
            checkpoint_dir(workdir), options=options, item_handlers=_item_handlers()
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def step_path(self, step: int) -> str:
        return os.path.join(checkpoint_dir(self.workdir), str(step))

    def save(
        self, step: int, state, iterator: grain.DatasetIterator, train_seconds: float = 0.0
    ) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(iterator),
            clock=ocp.args.JsonSave({"train_seconds": float(train_seconds)}),
            fingerprint=ocp.args.JsonSave(fingerprint(state)),
        )
        self.manager.save(step, args=args)

    def _has_item(self, step: int, item: str) -> bool:
        return os.path.isdir(os.path.join(self.step_path(step), item))

    def restore_train_seconds(self, step: int) -> float:
        """The training seconds saved with `step`; 0.0 for a checkpoint saved without them."""
        if not self._has_item(step, CLOCK_ITEM):
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

    def restore_verified(self, step: int, state_template, iterator=None):
        """`restore`, checked: raises CheckpointMismatchError if the checkpoint holds a state
        of another shape (a config change), CorruptCheckpointError if it does not read back as
        written (unreadable files, or a fingerprint that differs)."""
        path = self.step_path(step)
        where = f"the checkpoint of step {step} ({path}) is corrupt:"
        try:
            saved = self.manager.item_metadata(step)["state"]
            saved_signature = _signature(saved.tree if hasattr(saved, "tree") else saved)
        except Exception as error:  # noqa: BLE001 (any failure to read is corruption)
            raise CorruptCheckpointError(
                f"{where} its metadata is unreadable: {_one_line(error)}"
            ) from error
        difference = _first_difference(saved_signature, _signature(state_template))
        if difference:
            raise CheckpointMismatchError(
                f"the checkpoint of step {step} ({path}) holds a different state ({difference}); "
                "was the config changed (optimizer, compute_dtype, model fields)? Resume with "
                "the saved config.json, or use a new --workdir."
            )
        try:
            state = self.restore(step, state_template, iterator)
            expected = self._saved_fingerprint(step)
        except Exception as error:  # noqa: BLE001
            raise CorruptCheckpointError(f"{where} {_one_line(error)}") from error
        if expected is not None:
            actual = fingerprint(state)
            changed = [name for name in expected if actual.get(name) != expected[name]]
            if changed:
                raise CorruptCheckpointError(
                    f"{where} the arrays read back differ from those written "
                    f"({', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''})"
                )
        return state

    def _saved_fingerprint(self, step: int) -> dict | None:
        if not self._has_item(step, FINGERPRINT_ITEM):
            return None
        args = ocp.args.Composite(fingerprint=ocp.args.JsonRestore())
        return self.manager.restore(step, args=args)["fingerprint"]

    def restore_latest_intact(self, state_template, iterator=None, strict: bool = False):
        """(step, state) of the newest checkpoint that reads back intact; (None, None) if none.

        Each corrupt newer checkpoint is moved aside to `workdir/checkpoints_corrupt/<step>`
        (kept) with a warning, or, with `strict`, raises CorruptCheckpointError at the first.
        A mismatched one (another config) raises CheckpointMismatchError and moves nothing.
        The iterator, if given, is left at the restored checkpoint's position (or untouched
        position is not guaranteed when every checkpoint is corrupt: make a new one).
        """
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                return step, self.restore_verified(step, state_template, iterator)
            except CorruptCheckpointError as error:
                if strict:
                    raise CorruptCheckpointError(
                        f"{error}. Strict resume (config.strict_resume=True) stops here; "
                        "without it the run moves the checkpoint aside and resumes from the "
                        "newest intact one."
                    ) from error
                aside = self.move_aside(step)
                message = f"{error}. Moved to {aside}; resuming from the newest intact one."
                logging.info(message)
                if jax.process_index() == 0:
                    print(f"warning: {message}", file=sys.stderr, flush=True)
        return None, None

    def move_aside(self, step: int) -> str:
        """Moves the checkpoint of `step` to `workdir/checkpoints_corrupt/<step>[.N]`; returns
        where. Only process 0 moves (the directory is shared); every process reloads."""
        target = os.path.join(os.path.abspath(self.workdir), CORRUPT_SUBDIR, str(step))
        if os.path.exists(target):
            target = f"{target}.{time.time_ns()}"
        if jax.process_index() == 0:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.move(self.step_path(step), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"genjax_move_aside_{step}")
        self.manager.reload()
        return target

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _item_handlers() -> dict:
    return {
        "state": ocp.StandardCheckpointHandler(),
        "data": grain.checkpoint.CheckpointHandler(),
        CLOCK_ITEM: ocp.JsonCheckpointHandler(),
        FINGERPRINT_ITEM: ocp.JsonCheckpointHandler(),
    }


def _one_line(error: BaseException) -> str:
    """The first line of an error's message (TensorStore's run to many lines), shortened."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def saved_steps(workdir: str) -> list[int]:
    """The steps of `workdir`'s finished checkpoints, ascending (orbax's unfinished ones, in
    `*.orbax-checkpoint-tmp` folders, are not steps); reads the directory only."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` holds at least one finished checkpoint (touches nothing)."""
    return bool(saved_steps(workdir))


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
    with ocp.CheckpointManager(checkpoint_dir(workdir), item_handlers=_item_handlers()) as manager:
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
