"""Where the images come from: a folder, or a tar archive read in place. One small reader per source.

A reader lists the source's files as :class:`SourceFile` records (a name relative to the source, where the bytes
are, and what identifies their content between runs); :func:`open_source` picks the reader from what the user gave.
Workers read an image with :func:`read_image`, which needs no more than the record: a folder's file by path, an
uncompressed tar's member by seeking the worker's own handle of the archive to the member's offset. A compressed
tar (``.tar.gz``/``.tgz``) cannot be sought: its members are read in one pass of the stream
(:func:`stream_members`) and handed to the workers as bytes. Nothing is ever extracted to disk.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import tarfile
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

from t2t_vit import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp",
                              ".gif"})


class DatasetError(ToolkitError):
    """The data dir, label file or class list cannot be used."""


class SourceError(DatasetError):
    """The data source (--data-dir) cannot be read."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: its name relative to the source (``/``-separated) and where its bytes are.

    ``archive`` is None for a file of a folder (``location`` is then its path); for an archive member it is the
    archive's path and ``location`` the member's name, ``offset`` its data offset, ``size`` and ``mtime`` from its
    header.
    """

    relative: str
    location: str
    archive: str | None = None
    offset: int = 0
    size: int = 0
    mtime: int = 0


def is_image_name(name: str) -> bool:
    """Whether a file name is an image by its extension (hidden files, such as ``.DS_Store``, are not)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


class FolderSource:
    """A folder: every file below it, hidden folders skipped."""

    kind = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.streamed = False

    def files(self) -> list[SourceFile]:
        found = []
        for directory, subdirs, names in os.walk(self.root):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(names):
                path = Path(directory) / name
                found.append(SourceFile(relative=path.relative_to(self.root).as_posix(), location=str(path)))
        return found

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.root.resolve())}


_LISTINGS: dict[tuple[str, int, int, int], list[SourceFile]] = {}  # TarSource.files: (path, inode, bytes, mtime)


class TarSource:
    """A tar archive, uncompressed (members read by offset) or compressed (read as one stream); never extracted."""

    kind = "tar"

    def __init__(self, path: Path) -> None:
        self.root = path
        with open(path, "rb") as handle:
            magic = handle.read(6)
        self.compression = ("gz" if magic[:2] == b"\x1f\x8b" else "bz2" if magic[:3] == b"BZh"
                            else "xz" if magic == b"\xfd7zXZ\x00" else "")
        self.streamed = bool(self.compression)

    def files(self) -> list[SourceFile]:
        """The archive's files, sorted. Listing a compressed archive reads all of it (ImageNet val's 6.4 GB), so a
        listing is kept for this process while the archive's size and modification time stay as they were: the host
        check, the discovery and the job list it once."""
        stat = self.root.stat()
        key = (str(self.root.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in _LISTINGS:
            _LISTINGS.clear()  # one archive's listing at a time: 50,000 records
            _LISTINGS[key] = self._list()
        return list(_LISTINGS[key])

    def _list(self) -> list[SourceFile]:
        archive = str(self.root.resolve())
        found = []
        try:
            with _listing_stream(self.root, self.compression) as stream:
                with tarfile.open(fileobj=stream, mode="r|" if self.compression else "r:") as tar:
                    for member in tar:
                        if member.isfile():
                            found.append(SourceFile(relative=_member_name(member.name), location=member.name,
                                                    archive=archive, offset=member.offset_data, size=member.size,
                                                    mtime=int(member.mtime)))
                    ended = stream.end_of_archive_at(tar.offset) if found else True
        except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as error:
            raise SourceError(f"--data-dir {self.root}: the tar archive is unreadable after {len(found)} members "
                              f"({error}); is the download complete?") from None
        if not ended:
            raise SourceError(f"--data-dir {self.root} is truncated: it ends after {len(found)} members without the "
                              f"end-of-archive blocks that a whole tar has (a download stopped early?); download it "
                              f"again (ILSVRC2012_img_val.tar has 50,000 images, 6.4 GB)")
        return sorted(found, key=lambda file: file.relative)

    def identity(self) -> dict[str, Any]:
        stat = self.root.stat()
        return {"kind": self.kind, "path": str(self.root.resolve()), "bytes": stat.st_size,
                "mtime_ns": stat.st_mtime_ns, "compression": self.compression or None}


class _RecordingReader:
    """A forward reader over an archive's (decompressed) bytes that keeps the last chunks read, so that after
    tarfile has listed the members the bytes where the archive must end can be checked without reading it again."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.position = raw, 0
        self.recent: deque = deque(maxlen=3)  # (start, bytes) of the last reads: tarfile's last read holds the end

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.recent.append((self.position, data))
        self.position += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:  # tarfile seeks an uncompressed archive between headers
        self.position = self.raw.seek(offset, whence)
        self.recent.clear()
        return self.position

    def tell(self) -> int:
        return self.position

    def end_of_archive_at(self, offset: int) -> bool:
        """Whether a zero block (the end-of-archive marker) starts at ``offset``: tarfile reads the block there
        before it stops, and it stops as silently where the data end (a tar cut at a member boundary)."""
        block = b"".join(data[max(0, offset - start):max(0, offset + tarfile.BLOCKSIZE - start)]
                         for start, data in self.recent)
        return len(block) == tarfile.BLOCKSIZE and block.count(0) == tarfile.BLOCKSIZE


@contextlib.contextmanager
def _listing_stream(path: Path, compression: str) -> Iterator[_RecordingReader]:
    """The archive's tar bytes, decompressed as they are read, for listing its members once."""
    opener = {"": open, "gz": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression]
    with opener(path, "rb") as raw:
        yield _RecordingReader(raw)


def _member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def open_source(path: str | os.PathLike) -> FolderSource | TarSource:
    """The reader for ``--data-dir``: a folder, or a tar archive (``.tar``, ``.tar.gz``, ``.tgz``, ...)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"--data-dir {path} does not exist")
    if path.is_dir():
        return FolderSource(path)
    if path.is_file() and tarfile.is_tarfile(path):
        return TarSource(path)
    raise SourceError(f"--data-dir {path} is neither a directory nor a tar archive (such as ILSVRC2012_img_val.tar)")


def file_stamp(file: SourceFile) -> dict[str, int]:
    """What identifies a file's content between runs (size and modification time, compared for equality); an
    archive member also carries its archive's, so a changed archive redoes every image it holds."""
    if file.archive is None:
        stat = os.stat(file.location)
        return {"source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}
    stat = os.stat(file.archive)
    return {"source_bytes": file.size, "source_mtime_ns": file.mtime * 10**9, "offset": file.offset,
            "archive_bytes": stat.st_size, "archive_mtime_ns": stat.st_mtime_ns}


# ----------------------------------------------------------------------------------------------- reading

_handles: dict[str, int] = {}  # descriptors of the archives this process reads by offset (pread: no shared position)


def read_image(file: SourceFile | bytes) -> Path | BinaryIO:
    """What Pillow opens for one image: the path of a folder's file, or the bytes of an archive member."""
    if isinstance(file, bytes):
        return io.BytesIO(file)
    if file.archive is None:
        return Path(file.location)
    descriptor = _handles.get(file.archive)
    if descriptor is None:
        descriptor = _handles[file.archive] = os.open(file.archive, os.O_RDONLY)
    chunks, done = [], 0
    while done < file.size:
        chunk = os.pread(descriptor, file.size - done, file.offset + done)
        if not chunk:
            raise EOFError(f"the archive ends inside {file.location}")
        chunks.append(chunk)
        done += len(chunk)
    return io.BytesIO(b"".join(chunks))


def close_handles() -> None:
    """Close the archives this process opened."""
    while _handles:
        os.close(_handles.popitem()[1])


def stream_members(archive: Path, compression: str, wanted: Sequence[tuple[Any, SourceFile]]) -> Iterator[tuple[Any, bytes]]:
    """One pass over a compressed archive: (key, bytes) for each wanted (key, member), in archive order."""
    by_name: dict[str, list[Any]] = {}
    for key, file in wanted:
        by_name.setdefault(file.location, []).append(key)
    with tarfile.open(archive, f"r|{compression}") as tar:
        for member in tar:
            keys = by_name.pop(member.name, None)
            if keys is None:
                continue
            data = tar.extractfile(member).read()
            for key in keys:
                yield key, data
            if not by_name:
                return
    if by_name:
        raise SourceError(f"{archive} changed while it was read: {len(by_name)} members are gone "
                          f"(e.g. {next(iter(by_name))})")


def images_of(files: Iterable[SourceFile]) -> tuple[list[SourceFile], list[str]]:
    """Split a listing into image files and the names of the rest (hidden files and other extensions)."""
    images, other = [], []
    for file in files:
        if is_image_name(file.relative):
            images.append(file)
        else:
            other.append(file.relative)
    return images, other
