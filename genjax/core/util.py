"""Small helpers every floor shares: atomic file writes, CSV text, number predicates."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import BinaryIO

import numpy as np


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Calls ``write(file)`` on a temporary file next to ``path``, then renames it to ``path``,
    so a reader (or a run killed mid-write) never sees half a file.

    Creates the parent directory if needed; on any error the temporary file is removed and an
    existing ``path`` is left untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    file_descriptor, temp_path = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(file_descriptor, "wb") as temp_file:
            write(temp_file)
        os.chmod(temp_path, 0o644)  # mkstemp creates 0600 files
        os.replace(temp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temp_path)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically (`write_atomically`)."""
    write_atomically(path, lambda file: file.write(text.encode()))


def write_json_atomic(path: str | os.PathLike, payload: Mapping) -> None:
    """Writes ``payload`` as indented, key-sorted JSON atomically; NumPy values become lists
    and Python numbers."""
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=_json) + "\n")


def _json(value):
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def csv_text(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """CSV text of ``rows`` with a header of ``columns``; missing or None cells are empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {key: "" if row.get(key) is None else row[key] for key in columns} for row in rows
    )
    return buffer.getvalue()


def is_int(value) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float (NaN and infinities included), not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite_number(value) -> bool:
    """`is_number` and finite."""
    return is_number(value) and math.isfinite(value)
