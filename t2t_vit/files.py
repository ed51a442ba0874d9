"""Atomic file writes: a file appears under its final name complete, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left as it was, so
    an interrupted run never leaves a file that looks complete.
    """
    path = Path(path)
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(descriptor)
    temp_path = Path(temp_name)
    temp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; give what a plain open() would
    try:
        yield temp_path
        os.replace(temp_path, path)
    finally:
        remove_if_present(temp_path)


def remove_if_present(path: str | os.PathLike) -> None:
    """Delete a file if it exists (``Path.unlink(missing_ok=)`` needs Python 3.8)."""
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_output(path) as temp_path:
        temp_path.write_text(text)


def sha256_file(path: str | os.PathLike, chunk_bytes: int = 1 << 20) -> str:
    """The SHA-256 of a file's content, as hex (what reuse decisions are keyed on, never file times)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
