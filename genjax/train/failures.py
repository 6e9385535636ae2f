"""What a failed run tells its user: one `error:` line naming the step or file and what to do;
the traceback, and the libraries' own error logs, go to `workdir/error.log`.

    try:
        train_and_evaluate(config, workdir)
    except Exception as error:
        line = failures.error_line(error, workdir)   # None: not a failure we know; re-raise
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import os
import re
import sys
import threading
import traceback

from genjax.train.checkpoint import CheckpointMismatchError, CorruptCheckpointError, saved_steps
from genjax.train.loop import TrainingDivergedError

ERROR_LOG = "error.log"
# Where a full disk shows in TensorStore's messages (orbax reports them as ValueError).
_NO_SPACE = "No space left on device"
_FAILED_PATH = re.compile(r'Failed (?:writing|to write)[^"]*"([^"]+)"')


def _chain(error: BaseException):
    """The error, then its causes and contexts (what it was raised from or while handling)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _full_disk_path(error: BaseException) -> str | None:
    """The file a full disk failed to write ('' if none is named); None if the disk is not
    full."""
    full, paths = False, []
    for cause in _chain(error):
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            full = True
            paths.append(cause.filename)
        elif _NO_SPACE in str(cause):
            full = True
            match = _FAILED_PATH.search(str(cause))
            paths.append(match.group(1) if match else None)
    return next((path for path in paths if path), "") if full else None


def _first(error: BaseException, kind: type) -> BaseException | None:
    return next((cause for cause in _chain(error) if isinstance(cause, kind)), None)


def describe(error: BaseException, workdir: str) -> str | None:
    """One line for a failure a person can act on; None for any other error (a bug)."""
    newest = max(saved_steps(workdir), default=None)
    resume = (
        f"run the same command again to resume from the newest checkpoint (step {newest})"
        if newest
        else "run the same command again (there is no checkpoint yet)"
    )
    diverged = _first(error, TrainingDivergedError)
    if diverged is not None:
        return (
            f"training diverged: {diverged} Lower config.learning_rate or set "
            f"config.grad_clip_norm, then {resume}."
        )
    path = _full_disk_path(error)
    if path is not None:
        return (
            f"no space left on the device writing {path or 'to --workdir=' + repr(workdir)}. "
            f"Nothing saved before is lost; free space, then {resume}."
        )
    for kind in (CorruptCheckpointError, CheckpointMismatchError):
        found = _first(error, kind)
        if found is not None:
            return str(found)
    os_error = _first(error, OSError)
    if os_error is not None:
        return f"{os_error.strerror or os_error} ({os_error.filename or workdir}); then {resume}."
    return None


@contextlib.contextmanager
def reading_checkpoints():
    """For the entry points that only read a run (evaluate, sample): a missing, corrupt or
    mismatched checkpoint exits with one `error:` line."""
    try:
        yield
    except (CorruptCheckpointError, CheckpointMismatchError, FileNotFoundError) as error:
        hint = ""
        if isinstance(error, CorruptCheckpointError):
            hint = (
                " Pass --step=<an older step>, or rerun experiments.train, which moves it aside "
                "and resumes from the newest intact one."
            )
        sys.exit(f"error: {error}{hint}")


def exit_now(line: str, status: int = 1) -> None:
    """Prints the error line and exits without running exit handlers: after a failed write
    they only repeat it (TensorBoard's writer flushing to a full disk)."""
    sys.stdout.flush()
    print(line, file=sys.stderr, flush=True)
    os._exit(status)


def write_log(error: BaseException, workdir: str) -> str | None:
    """Appends the error's traceback to workdir/error.log; returns the path (None if even that
    cannot be written, e.g. on a full disk)."""
    path = os.path.join(workdir, ERROR_LOG)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    text = "".join(traceback.format_exception(error))
    return path if _append(path, f"\n=== {stamp} pid {os.getpid()}\n{text}") else None


def error_line(error: BaseException, workdir: str) -> str | None:
    """'error: <what happened and what to do> (traceback: workdir/error.log)' for a failure
    `describe` knows, after logging its traceback; None otherwise."""
    line = describe(error, workdir)
    if line is None:
        return None
    log = write_log(error, workdir)
    return f"error: {line}" + (f" (traceback: {log})" if log else "")


class LibraryErrorsToFile(logging.Filter):
    """Keeps orbax's and asyncio's error records (the background save threads' tracebacks,
    "Task exception was never retrieved", "Event loop is closed") off the terminal: they go to
    workdir/error.log, and the run's own `error:` line says what happened."""

    def __init__(self, workdir: str):
        super().__init__()
        self.path = os.path.join(workdir, ERROR_LOG)

    def filter(self, record: logging.LogRecord) -> bool:
        library = record.name == "asyncio" or f"{os.sep}orbax{os.sep}" in record.pathname
        if not library or record.levelno < logging.ERROR:
            return True
        try:
            with open(self.path, "a") as f:
                f.write(
                    f"{record.levelname} {record.pathname}:{record.lineno}: {record.getMessage()}\n"
                )
                if record.exc_info:
                    f.write("".join(traceback.format_exception(*record.exc_info)))
        except OSError:
            pass
        return False


class _NoiseToFile:
    """A stderr wrapper: a traceback whose last line is library shutdown noise (TensorStore
    calling back into an event loop orbax has closed after a failed save) goes to the error log;
    everything else passes through as written. Tracebacks are held per thread: several
    TensorStore threads print at once."""

    NOISE = ("RuntimeError: Event loop is closed",)
    _HEADER = "Traceback (most recent call last):"

    def __init__(self, stream, path: str):
        self._stream = stream
        self._path = path
        self._held: dict[int, str] = {}  # thread id -> the traceback it is printing

    def write(self, text: str) -> int:
        thread = threading.get_ident()
        held = self._held.get(thread, "")
        if not held and not text.startswith(self._HEADER):
            return self._stream.write(text)
        held += text
        lines = held.split("\n")
        last = lines[-2] if len(lines) > 1 else ""  # the last complete line
        if last and not last.startswith((" ", self._HEADER, "During handling", "The above")):
            self._held.pop(thread, None)
            if last.strip() in self.NOISE:
                _append(self._path, held)
            else:
                self._stream.write(held)
        else:
            self._held[thread] = held
        return len(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _append(path: str, text: str) -> bool:
    """Appends text to the log; False if it cannot (a full disk, a missing workdir)."""
    try:
        with open(path, "a") as f:
            f.write(text)
    except OSError:
        return False
    return True


def quiet_library_errors(workdir: str) -> None:
    """Sends orbax's, asyncio's and TensorStore's failure noise to workdir/error.log: installs
    `LibraryErrorsToFile` on the root logger's handlers (absl's among them) and wraps
    sys.stderr in `_NoiseToFile`."""
    flt = LibraryErrorsToFile(workdir)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    sys.stderr = _NoiseToFile(sys.stderr, os.path.join(workdir, ERROR_LOG))
