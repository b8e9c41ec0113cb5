"""Atomic file output: a good file is never replaced by a partial one.

Every output is first written to a temporary file in the destination's directory, then
moved over the destination with ``os.replace``, which is atomic on POSIX file systems.
A run that fails or is killed leaves the previous file untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Create or replace ``path`` with what ``write(temporary_path)`` writes.

    Args:
        path: the destination; its directory must exist.
        write: called with the path of a fresh, empty temporary file next to ``path``.

    Raises:
        OSError: if the temporary file cannot be created or moved; ``path`` is then
            unchanged, and so it is when ``write`` raises.
    """
    path = Path(path)
    temporary = _create_temporary(path)
    # A writer may replace the file it is given (safetensors does, with mode 0600):
    # the mode the umask gave the fresh file is restored before the move.
    mode = temporary.stat().st_mode & 0o777
    try:
        write(str(temporary))
        os.chmod(temporary, mode)
        with open(temporary, "rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Create or replace ``path`` with ``text``, UTF-8 encoded, atomically."""
    write_atomic(path, lambda temporary: Path(temporary).write_text(text, "utf-8"))


def _create_temporary(path: Path) -> Path:
    """An empty new file next to ``path``, readable as the umask allows.

    ``tempfile.mkstemp`` would make it private (mode 0600), and the replaced output
    would keep that mode; ``os.open`` with 0666 applies the umask as any new file does.
    """
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(handle)
        return temporary
    raise FileExistsError(f"no free temporary name next to {str(path)!r}")
