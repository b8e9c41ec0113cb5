"""Atomic file output: a good file is never replaced by a partial one.

Every output is first written to a temporary file in the destination's directory, then
moved over the destination with ``os.replace``, which is atomic on POSIX file systems.
A run that fails or is killed leaves the previous file untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Create or replace ``path`` with what ``write(temporary_path)`` writes.

    Args:
        path: the destination.
        write: called with the path of a fresh temporary file next to ``path``.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        write(temporary)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Create or replace ``path`` with ``text`` atomically."""
    write_atomic(path, lambda temporary: Path(temporary).write_text(text))
