"""Data parallelism in the pmap style, compiled through `jax.shard_map`.

Per-device code sees its slice of the global batch and reduces across devices with
`jax.lax.pmean(x, DATA_AXIS)`; `data_parallel` wraps it with `jax.shard_map` over a 1-D mesh
whose only axis is `DATA_AXIS` and compiles it with `jax.jit`. The same code runs on one CPU, on
N forced host devices, on a GPU or on a TPU slice.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all (or the given) devices, axis name `DATA_AXIS`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_parallel(
    per_device_fn: Callable,
    mesh: Mesh,
    *,
    num_replicated: int = 1,
    num_sharded: int = 1,
    sharded_out: bool = False,
    donate_state: bool = False,
    state_spec=None,
) -> Callable:
    """Compiles `per_device_fn(*replicated, *sharded)` as one data-parallel program.

    Args:
      per_device_fn: per-device code; its first `num_replicated` arguments are identical on
        every device (state, params, keys), the next `num_sharded` are split along their
        leading axis across the mesh (batches).
      mesh: from `make_mesh`.
      sharded_out: False when every output is replicated (train steps reduce with `pmean`);
        True when outputs are per-example arrays sharded like the batch (eval steps).
      donate_state: donate the first argument's buffers (the train state).
      state_spec: the first argument's `PartitionSpec` pytree when parts of the state are
        split over devices (see `state_partition_spec`); it then also describes the first
        output of a train step, which returns `(state, metrics)`.
    """
    first_spec = P() if state_spec is None else state_spec
    in_specs = (first_spec,) + (P(),) * (num_replicated - 1) + (P(DATA_AXIS),) * num_sharded
    if sharded_out:
        out_specs = P(DATA_AXIS)
    else:
        out_specs = P() if state_spec is None else (state_spec, P())
    # check_vma=False gives pmap semantics: a gradient with respect to replicated parameters
    # is the device's own, to be averaged with pmean. (With the default check_vma=True, JAX
    # would already sum it over devices, and a pmean on top would return N times the mean.)
    mapped = jax.shard_map(
        per_device_fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
    )
    return jax.jit(mapped, donate_argnums=(0,) if donate_state else ())


def state_partition_spec(state, sharded_extras: tuple[str, ...] = ()):
    """`PartitionSpec`s for a `TrainState`: replicated, except the named `extras` entries.

    A sharded extra (persistent Gibbs chains, say) has a leading axis of the global batch size
    and is split over `DATA_AXIS` like the batch, so device d holds and advances the chains of
    its own examples.
    """
    specs = jax.tree.map(lambda _: P(), state)
    extras = {
        name: jax.tree.map(lambda _: P(DATA_AXIS), value)
        if name in sharded_extras
        else specs.extras[name]
        for name, value in state.extras.items()
    }
    return specs.replace(extras=extras)


def place(tree, mesh: Mesh, specs=None):
    """Places a pytree on the mesh: replicated, or split as `specs` (a `PartitionSpec` tree)."""
    if specs is None:
        return replicate(tree, mesh)
    return jax.tree.map(lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec)), tree, specs)


def example_keys(key: jax.Array, first_index, local_batch_size: int) -> jax.Array:
    """One key per example of this device's slice, from the example's global position.

    Inside per-device code, example i of device d has global position
    `first_index + d * local_batch_size + i`; its key is `fold_in(key, position)`. Keys
    therefore depend on the global batch only, not on how it is split across devices, which
    is what makes an N-device run match a 1-device run.

    Returns a typed key array of shape (local_batch_size,).
    """
    device = jax.lax.axis_index(DATA_AXIS)
    positions = first_index + device * local_batch_size + jnp.arange(local_batch_size)
    return jax.vmap(lambda position: jax.random.fold_in(key, position))(positions)


def shard_batch(batch: dict, mesh: Mesh) -> dict:
    """This process's slice of a global batch (NumPy) -> global arrays split over 'data'."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    if jax.process_count() == 1:  # the slice is the whole batch: one transfer, no assembly
        return jax.device_put(batch, sharding)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def replicate(tree, mesh: Mesh):
    """Places a pytree on every device of the mesh (replicated)."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)


def gather(tree) -> dict:
    """Sharded global arrays -> NumPy on every host (all processes' examples)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def check_divisible(global_batch_size: int, field: str = "config.batch_size") -> None:
    """Raises ValueError unless the global batch splits evenly over devices and processes."""
    num_devices = jax.device_count()
    if global_batch_size <= 0 or global_batch_size % num_devices:
        raise ValueError(
            f"{field}={global_batch_size} must be a positive multiple of the device count "
            f"({num_devices}) so every device gets an equal slice."
        )
