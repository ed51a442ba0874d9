"""Atomic file writes (a file appears under its final name complete, or not at all), and one job per folder."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from t2t_vit import ToolkitError

LOCK_NAME = ".t2t_vit.lock"


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


def remove_partial_files(folder: str | os.PathLike) -> int:
    """Remove the temporary files :func:`atomic_output` leaves when its process is killed (``.<name>.*.partial``);
    returns how many. They never count as outputs: none is under a final name."""
    removed = 0
    for path in Path(folder).glob(".*.partial"):
        remove_if_present(path)
        removed += 1
    return removed


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


class FolderInUseError(ToolkitError):
    """Another job holds the folder's lock."""


@contextlib.contextmanager
def exclusive_lock(folder: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold ``folder`` (created if needed) for one job for the block: ``fcntl.flock`` on ``folder/.t2t_vit.lock``.

    The kernel releases the lock when its process ends, however it ends (kill -9 included), so no stale lock
    is ever left. A second job on the same folder stops at once, before changing anything, with one line that
    names the holder's PID, start time and command (``what`` names the folder's option, e.g. ``--work-dir``).
    """
    import datetime
    import fcntl
    import json
    import sys

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    HELD_LOCKS.add(descriptor)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(_holder_message(os.read(descriptor, 4096), folder, what)) from None
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = json.dumps({"pid": os.getpid(), "started": started,
                             "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]])}).encode()
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, record, 0)
        yield
    finally:
        HELD_LOCKS.discard(descriptor)
        os.close(descriptor)  # releases the lock; the file stays (removing it would race with a waiting job)


NPY_MAGIC = b"\x93NUMPY"  # how every .npy file starts


def file_head(path: str | os.PathLike, size: int = 64) -> bytes:
    """The first ``size`` bytes of a file (what it is, before a reader is let at it)."""
    with open(path, "rb") as handle:
        return handle.read(size)


def looks_like_text(head: bytes) -> bool:
    """Whether a file's first bytes are printable ASCII text (a label list, notes, an HTML page)."""
    return bool(head) and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in head)


HELD_LOCKS: set = set()  # descriptors of the locks this process holds; a forked worker closes its copies


def close_inherited_locks() -> None:
    """In a forked worker: close the copies of the parent's lock descriptors, so that a worker which outlives its
    parent never keeps the folder locked (the parent's own descriptor still holds the lock)."""
    while HELD_LOCKS:
        try:
            os.close(HELD_LOCKS.pop())
        except OSError:
            pass


def _holder_message(content: bytes, folder: Path, what: str) -> str:
    import json

    try:
        holder = json.loads(content.decode())
        who = f"PID {holder['pid']}, started {holder['started']} ({holder['command']})"
    except (ValueError, KeyError, TypeError):
        who = "a job that is still starting"
    return f"{what} {folder} is in use by another job: {who}; wait for it to finish, or use another {what}"
