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
    """Yield a hidden temporary path beside ``path`` (its folder made if needed); rename it to ``path`` if the
    block succeeds.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is left as it was, so
    an interrupted run never leaves a file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)  # an output's folder is made as --out-dir is (checked up front)
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


def check_not_held(folder: str | os.PathLike, what: str) -> None:
    """Refuse at once a folder another job holds (:func:`exclusive_lock`), without creating or writing anything:
    what the main job checks before its slow steps, so a second job on a busy work dir answers in well under a
    second. The lock itself is taken later; a job that starts in between is still stopped there."""
    import fcntl

    try:
        descriptor = os.open(Path(folder) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return  # no lock file (or no folder): nobody holds it
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise FolderInUseError(_holder_message(os.read(descriptor, 4096), Path(folder), what)) from None
    finally:
        os.close(descriptor)  # a shared lock taken here goes with it


def check_input_file(path: str | os.PathLike, what: str) -> None:
    """Refuse, in one line and before any slow import, an input file that is missing, a folder or unreadable."""
    path = Path(path)
    if not path.exists():
        raise ToolkitError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ToolkitError(f"{what} {path} is a folder, not a file")
    if not os.access(path, os.R_OK):
        raise ToolkitError(f"{what} {path} is not readable")


CHECKPOINT = "a PyTorch checkpoint"
KIND_HINTS = {CHECKPOINT: ": export it first (T2T_ViT_pth2onnx.py)",
              "a Git LFS pointer": ": fetch the real file with git lfs pull"}


def content_kind(head: bytes) -> str | None:
    """What a file is, from its first bytes, when it is one of the kinds that get mixed up with a model (a
    checkpoint, an archive, an array, a text or an LFS pointer); None for anything else."""
    if head.startswith(b"PK\x03\x04"):
        return CHECKPOINT if b"data.pkl" in head or b"/data/" in head or b"version" in head[:200] else "a zip archive"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return CHECKPOINT
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive"
    if head[257:262] == b"ustar":
        return "a tar archive"
    if head.startswith(NPY_MAGIC):
        return "a numpy array (.npy)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if head and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return f"a text file, starting {(text.strip().splitlines() or [''])[0][:60]!r}"
    return None


def check_model_file(path: str | os.PathLike, what: str, kind: str = "onnx") -> None:
    """Refuse, before a runtime is loaded (and prints its own noise), a model file that is missing, empty, or
    plainly of another kind; ``kind`` is "onnx" (whose protobuf starts with its ir_version field, byte 0x08) or
    "om" (an offline model, not read here)."""
    check_input_file(path, what)
    head = file_head(path, 512)
    if not head and kind == "onnx":  # an .om is ais_bench's to judge (ATC stand-ins write empty ones)
        raise ToolkitError(f"{what} {path} is empty (0 bytes)")
    named = {"onnx": "an ONNX model", "om": "an offline model (.om)"}[kind]
    found = content_kind(head)
    if found and not (kind == "om" and found.startswith("a text file")):  # ais_bench judges the rest of an .om
        raise ToolkitError(f"{what} {path} is {found}, not {named}{KIND_HINTS.get(found, '')}")
    if kind == "onnx" and head[:1] != b"\x08":
        raise ToolkitError(f"{what} {path} is not {named}: it does not begin as one (first bytes {head[:8].hex()})")


def check_checkpoint_file(path: str | os.PathLike, what: str) -> None:
    """Refuse, before torch is imported, a checkpoint that is missing, empty, or plainly another kind of file (a
    text or HTML page, an LFS pointer, an array, an archive); what torch must read is checked after."""
    check_input_file(path, what)
    head = file_head(path, 512)
    if not head:
        raise ToolkitError(f"checkpoint {path} is empty (0 bytes): the download or copy did not finish")
    why = not_a_checkpoint(head)
    if why:
        raise ToolkitError(f"checkpoint {path} is not a PyTorch checkpoint ({why})")


def not_a_checkpoint(head: bytes) -> str | None:
    """Why a file whose first bytes are ``head`` is plainly not a PyTorch checkpoint ('it is a text file, starting
    ...: the download or copy went wrong'); None when it may be one (a zip or a pickle). The pre-check before
    torch and the reader's message after a failed load both say it so."""
    found = content_kind(head)
    if not found or found in (CHECKPOINT, "a zip archive"):
        return None
    return f"it is {found}{KIND_HINTS.get(found, ': the download or copy went wrong')}"


def check_output_file(path: str | os.PathLike, what: str) -> None:
    """:func:`check_output_folder` for the folder of an output file, named 'the folder of ``what``'."""
    check_output_folder(Path(path).parent, f"the folder of {what}")


def nearest_existing(path: str | os.PathLike) -> Path:
    """``path`` or its nearest ancestor that exists (where a folder to be made would go)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse, in one line and before any work, a folder that outputs cannot go to: its nearest existing ancestor
    is a file, is not writable, or is on a file system that holds no files (/proc, /sys: a folder there cannot
    be created, which is not a full disk). ``what`` names the option that set it. Creates nothing."""
    folder = Path(folder)
    existing = nearest_existing(folder)
    said = f"{what} {folder}" + (":" if existing == folder.absolute() else " cannot be created:")
    if not existing.is_dir():
        raise ToolkitError(f"{said} {existing} is a file, not a folder")
    if os.statvfs(existing).f_blocks == 0:
        raise ToolkitError(f"{said} {existing} is on a virtual file system, which holds no files; give a folder on "
                           f"a disk")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ToolkitError(f"{said} {existing} is not writable")


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
