"""Stopping cleanly when a cluster asks: SIGTERM (SLURM, Kubernetes, preemptible VMs) or SIGINT.

    with StopRequest() as stop:        # installs the handlers (main thread), restores them after
        agreement = StopAgreement(stop, mesh)
        for step in ...:
            ...                        # dispatch the step
            if agreement.reached():
                ...                    # checkpoint this step, then raise Preempted(step, ...)

While the train loop runs (`stop.deferring`), the first signal only sets `stop.signal_name`: the
loop finishes the step it is on, saves a checkpoint at it, waits for the save and flushes the
logs, and `experiments.train` exits with `PREEMPTED_EXIT_STATUS` (75, EX_TEMPFAIL: "try again"),
the status a requeue script tests for. A second signal exits at once with 128 + its number.
Outside the loop (the final evaluation: every step is already saved) the first signal exits at
once with status 75.

In a multi-process run the signal usually reaches one process (the preempted host), and every
process must save at the same step or the checkpoint is torn and the collectives hang.
`StopAgreement` makes the decision collectively: each step contributes every process's flag to
a max over the mesh (a one-integer collective, dispatched with the step), and every process
reads the result of the one dispatched `lag` steps earlier, which has finished by then; all
read the same value at the same step, so all stop together. This is JAX's preemption sync
point (`multihost_utils.reached_preemption_sync_point`) made to work for SIGINT and for
signals sent to any one process, with no extra host synchronisation.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

PREEMPTED_EXIT_STATUS = 75  # sysexits.h EX_TEMPFAIL: a temporary failure, to be retried
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving a checkpoint at `step`; rerun to resume."""

    def __init__(self, step: int, signal_name: str):
        super().__init__(
            f"stopped by {signal_name} at step {step}; a checkpoint of step {step} is saved. "
            "Run the same command again to resume from it."
        )
        self.step = step
        self.signal_name = signal_name


class StopRequest:
    """SIGTERM/SIGINT handlers for the duration of a `with` block (main thread only).

    Nested `with StopRequest()` blocks share the outermost one's handlers and state.
    """

    _active: StopRequest | None = None

    def __init__(self):
        self.signal_name: str | None = None  # set by the first signal
        self.deferring = False  # True while the train loop can finish a step and save
        self._previous = {}
        self._outer: StopRequest | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if StopRequest._active is not None:
            self._outer = StopRequest._active
            return self._outer
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        StopRequest._active = self
        return self

    def __exit__(self, *exc_info) -> None:
        if self._outer is not None:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        StopRequest._active = None

    def _handle(self, signum, frame) -> None:
        del frame
        name = signal.Signals(signum).name
        if self.requested:
            _exit_now(f"second signal ({name}): exiting at once", 128 + signum)
        if not self.deferring:
            _exit_now(
                f"{name}: exiting; every trained step is checkpointed, run the same command "
                "again to finish",
                PREEMPTED_EXIT_STATUS,
            )
        self.signal_name = name
        print(
            f"genjax: {name} received: finishing this step and saving a checkpoint "
            f"(send {name} again to exit at once)",
            file=sys.stderr,
            flush=True,
        )


def _exit_now(message: str, status: int) -> None:
    print(f"genjax: {message} (status {status})", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


class StopAgreement:
    """Decides, identically in every process, the step at which training stops on a signal.

    `reached()` is called once per step by every process, and `drain()` once after the last
    step. In one process they read the signal flag itself; in several, the max over processes
    of the flags `lag` calls ago.
    """

    def __init__(self, stop: StopRequest, mesh, lag: int = 2):
        self.stop = stop
        self.lag = lag
        self.multi_process = jax.process_count() > 1
        if self.multi_process:
            self._sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
            self._num_local = len(mesh.local_devices)
            self._any = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
        self._pending = []

    def reached(self) -> bool:
        """Whether every process stops after this step (it is checkpointed first)."""
        if not self.multi_process:
            return self.stop.requested
        self._dispatch()
        if len(self._pending) <= self.lag:
            return False
        return bool(np.asarray(self._pending.pop(0)))

    def drain(self) -> bool:
        """After the last step: whether any process was signalled, including in the last `lag`
        steps that `reached` has not yet decided on."""
        if not self.multi_process:
            return self.stop.requested
        self._dispatch()
        decided = any(bool(np.asarray(flag)) for flag in self._pending)
        self._pending = []
        return decided

    def _dispatch(self) -> None:
        flags = np.full((self._num_local,), int(self.stop.requested), np.int32)
        global_flags = jax.make_array_from_process_local_data(self._sharding, flags)
        self._pending.append(self._any(global_flags))
