"""Multi-process runs: one process per host (or per GPU), joined by `jax.distributed`.

    distributed.initialize(coordinator_address, num_processes, process_id)  # before any JAX work

The settings come from, in order: the arguments (the entry points' flags `--coordinator_address`,
`--num_processes`, `--process_id`); the environment (`JAX_COORDINATOR_ADDRESS`,
`JAX_NUM_PROCESSES`, `JAX_PROCESS_ID`); or, with `auto=True` (`--distributed=auto`), JAX's own
detection of a Cloud TPU slice, SLURM, Open MPI or Kubernetes. With none of them the run is a
single process and nothing is initialised.

After it, `jax.devices()` lists every process's devices: the trainer's mesh spans them all,
each process reads its own share of every batch (`genjax.data.pipeline`), the parameters stay
identical in every process, orbax writes one checkpoint series (each process its own shards,
the primary process the metadata) and only process 0 writes logs, plots and `eval.json`. On
the CPU the processes' collectives go over TCP (gloo), which is how the tests run two
processes on one machine.
"""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


class SettingsError(ValueError):
    """Incomplete or invalid multi-process settings."""


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise SettingsError(f"${name}={value!r} must be an integer") from None


def settings(
    coordinator_address: str = "", num_processes: int | None = None, process_id: int | None = None
) -> tuple[str, int | None, int | None]:
    """The explicit settings: each argument, else its environment variable; checked."""
    address = coordinator_address or os.environ.get(ENV_COORDINATOR, "")
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    index = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    given = {
        "--coordinator_address": bool(address),
        "--num_processes": count is not None,
        "--process_id": index is not None,
    }
    if any(given.values()) and not all(given.values()):
        missing = [name for name, present in given.items() if not present]
        raise SettingsError(
            f"a multi-process run needs --coordinator_address (host:port of process 0), "
            f"--num_processes and --process_id (or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, "
            f"${ENV_PROCESS_ID}); missing: {', '.join(missing)}"
        )
    if count is not None:
        if count < 1:
            raise SettingsError(f"--num_processes={count} must be a positive integer")
        if not 0 <= index < count:
            raise SettingsError(f"--process_id={index} must be in [0, --num_processes={count})")
    return address, count, index


def initialize(
    coordinator_address: str = "",
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """Joins this process to a multi-process run; returns whether one was initialised.

    Must run before anything touches a JAX device. See the module docstring for where the
    settings come from.
    """
    address, count, index = settings(coordinator_address, num_processes, process_id)
    if address:
        jax.distributed.initialize(address, num_processes=count, process_id=index)
        return True
    if auto:
        jax.distributed.initialize()  # raises, naming what it needs, outside a known cluster
        return True
    return False
