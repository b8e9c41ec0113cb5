"""Tests of ocformer.atomic: outputs are replaced whole or not at all."""

import os
from pathlib import Path

import pytest

from ocformer.atomic import write_atomic, write_text_atomic


def test_write_replaces_the_file(tmp_path):
    """A successful write replaces the old content and leaves no other file."""
    path = tmp_path / "report.json"
    path.write_text("old\n")

    write_text_atomic(path, "new\n")

    assert path.read_text() == "new\n"
    assert list(tmp_path.iterdir()) == [path]


def test_failed_write_keeps_the_old_file(tmp_path):
    """A writer that fails midway leaves the old file and no temporary file."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"good")

    def half_write(temporary):
        Path(temporary).write_bytes(b"par")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half_write)

    assert path.read_bytes() == b"good"
    assert list(tmp_path.iterdir()) == [path]


def test_written_file_mode_follows_the_umask(tmp_path):
    """The output gets 0666 less the umask, even if the writer makes it private."""
    path = tmp_path / "model.safetensors"

    def private_write(temporary):
        os.remove(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)

    previous = os.umask(0o022)
    try:
        write_atomic(path, private_write)
    finally:
        os.umask(previous)

    assert path.stat().st_mode & 0o777 == 0o644
