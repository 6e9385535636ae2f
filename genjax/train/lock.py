"""One run per workdir: a lock file naming the run that owns it.

    with WorkdirLock(workdir):   # raises WorkdirLockedError while another live run holds it
        ...                      # train, checkpoint, evaluate

The lock is `workdir/run.lock`, a JSON record {host, pid, pid_start, boot_id, started,
renewed}. It is created atomically (`O_CREAT | O_EXCL`, which NFS v3+ honours too), so of two
launches racing for a free workdir exactly one wins; a background thread rewrites `renewed`
every `RENEW_SECONDS` while the run lives, and the owner deletes the file when it ends.

A lock left behind by a run that died (kill -9, a lost node) is stale and taken over with a
message: on the owner's own host (same boot) when its process is gone (or its pid now belongs to
a process started at another time); from any other host when it has not been renewed for
`STALE_SECONDS`. Readers (`experiments.evaluate`, `experiments.sample`) never take it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time

import jax
import numpy as np
from absl import logging

from genjax.core import util

LOCK_FILE = "run.lock"
RENEW_SECONDS = 30.0
# A lock on another host is stale after this long without renewal: ten missed renewals, so a
# run on a slow shared filesystem is not taken over.
STALE_SECONDS = 300.0


class WorkdirLockedError(RuntimeError):
    """The workdir is owned by another live run; nothing was written."""


_held: set[str] = set()  # workdirs this process holds (nested `hold`s share the lock)


@contextlib.contextmanager
def hold(workdir: str):
    """Holds `workdir`'s lock for the `with` block; re-entrant within a process.

    In a multi-process run process 0 takes the lock and every process learns the outcome, so
    a refused launch stops in every process.
    """
    key = os.path.abspath(workdir)
    if key in _held:
        yield
        return
    owner = WorkdirLock(workdir) if jax.process_index() == 0 else None
    error = None
    if owner is not None:
        os.makedirs(workdir, exist_ok=True)
        try:
            owner.acquire()
        except WorkdirLockedError as refused:
            error = refused
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        taken = multihost_utils.broadcast_one_to_all(np.int32(error is None))
        if not taken and error is None:
            error = WorkdirLockedError(
                f"process 0 could not take the lock of --workdir={workdir!r} (see its message)"
            )
    if error is not None:
        raise error
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        if owner is not None:
            owner.release()


def _boot_id() -> str:
    """This boot of this machine ('' where the kernel does not say): a pid means nothing across
    reboots."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot (/proc/PID/stat field 22), '' if
    unknown: with the pid it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _timestamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")


def describe(owner: dict) -> str:
    """'pid 123 on host-a, started 2026-12-07T10:00:00, last renewed 2026-12-07T10:05:00'."""
    return (
        f"pid {owner.get('pid')} on {owner.get('host')}, started "
        f"{_timestamp(owner.get('started', 0))}, last renewed {_timestamp(owner.get('renewed', 0))}"
    )


def stale_reason(owner: dict, now: float | None = None) -> str | None:
    """Why the lock's owner is gone, or None while it may be alive."""
    now = time.time() if now is None else now
    same_boot = owner.get("host") == socket.gethostname() and owner.get("boot_id") == _boot_id()
    if same_boot:
        pid = int(owner.get("pid", -1))
        if not _pid_alive(pid):
            return f"its process {pid} is gone"
        if owner.get("pid_start") and _process_start(pid) not in ("", owner["pid_start"]):
            return f"pid {pid} now belongs to another process"
        return None
    silent = now - float(owner.get("renewed", 0))
    if silent > STALE_SECONDS:
        return f"not renewed for {silent:.0f} s (stale after {STALE_SECONDS:.0f} s)"
    return None


def read_owner(workdir: str) -> dict | None:
    """The lock's record, None if there is no lock; {} if it cannot be parsed (a torn write)."""
    return _read_record(os.path.join(workdir, LOCK_FILE))


def _read_record(path: str) -> dict | None:
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return {}


class WorkdirLock:
    """Holds `workdir/run.lock` from `acquire()` (or `with`) to `release()`."""

    def __init__(self, workdir: str, renew_seconds: float = RENEW_SECONDS):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.renew_seconds = renew_seconds
        now = time.time()
        self.record = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "boot_id": _boot_id(),
            "started": now,
            "renewed": now,
        }
        self._stop = threading.Event()
        self._thread = None

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one; raises WorkdirLockedError if it is held."""
        for _ in range(3):  # a lock released or taken over between our reads: look again
            if self._create():
                break
            owner = read_owner(os.path.dirname(self.path))
            if owner is None:
                continue
            reason = stale_reason(owner) if owner else self._unreadable_reason()
            if reason is None:
                raise WorkdirLockedError(
                    f"--workdir={os.path.dirname(self.path)!r} is in use by another run "
                    f"({describe(owner) if owner else 'starting now'}); wait for it to finish "
                    "or stop it, or use another --workdir. If that run is gone, delete "
                    f"{self.path} and launch again."
                )
            if self._take_over(owner, reason):
                break
        else:
            raise WorkdirLockedError(f"could not take {self.path}: other launches keep taking it")
        self._thread = threading.Thread(target=self._renew, name="workdir-lock", daemon=True)
        self._thread.start()

    def _unreadable_reason(self) -> str | None:
        """An unparsable lock is a launch writing its record (give it time) or a torn file."""
        try:
            age = time.time() - os.path.getmtime(self.path)
        except FileNotFoundError:
            return None
        return f"its record is unreadable and {age:.0f} s old" if age > 10 else None

    def _create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as f:
            json.dump(self.record, f)
        return True

    def _take_over(self, owner: dict, reason: str) -> bool:
        """Moves the stale lock aside (one racer wins the rename) and creates ours."""
        aside = f"{self.path}.stale.{self.record['pid']}.{time.time_ns()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return False
        moved = _read_record(aside)
        os.remove(aside)
        if moved != owner:  # another launch took it over first and we moved its fresh lock
            logging.warning("workdir lock changed hands while being taken over; retrying")
            return False
        print(
            f"note: taking over {self.path} from a run that is gone "
            f"({describe(owner) if owner else 'unreadable record'}; {reason})",
            file=sys.stderr,
            flush=True,
        )
        return self._create()

    def _renew(self) -> None:
        while not self._stop.wait(self.renew_seconds):
            self.record["renewed"] = time.time()
            try:
                util.write_json_atomic(self.path, self.record)
            except OSError as error:  # a full disk: the old record stays, still ours
                logging.warning("could not renew %s: %s", self.path, error)

    def release(self) -> None:
        """Stops renewing and removes the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        owner = read_owner(os.path.dirname(self.path))
        if (
            owner
            and owner.get("pid") == self.record["pid"]
            and owner.get("host") == (self.record["host"])
        ):
            os.remove(self.path)

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()
