"""Where the labels come from: one parser per format, each giving image name -> class; the index is applied here.

Formats of ``--label-file``, told apart by their content (the first line that is not blank):

- ``<file name> <class index>`` lines (the ModelZoo's ``val_label.txt``, Caffe's ``val.txt``), or
  ``<file name> <WNID>`` lines;
- Kaggle's ``LOC_val_solution.csv`` (header ``ImageId,PredictionString``; the label is the first WNID of
  ``PredictionString``; ImageId has no extension);
- one WNID per line, line i for image ``ILSVRC2012_val_<i:08d>`` (TensorFlow's
  ``imagenet_2012_validation_synset_labels.txt``): 50,000 lines.

``--devkit`` (``ILSVRC2012_devkit_t12.tar.gz`` or its extracted folder): ``data/meta.mat`` maps each
ILSVRC2012_ID (meta.mat's order, 1..1000, not the sorted order) to its WNID, and
``data/ILSVRC2012_validation_ground_truth.txt`` holds the ID of image i on line i.

Whatever the format, an image's label is its synset's index in the class list (the 1,000 ImageNet synsets in
sorted order unless ``--class-list`` says otherwise). A label source may cover more images than the data holds
(a subset of the val set): such labels are counted, not an error.
"""

from __future__ import annotations

import csv
import io
import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from t2t_vit.data.sources import DatasetError

VAL_IMAGES = 50_000
VAL_CLASSES = 1_000
VAL_PER_CLASS = 50
META_MEMBER = "data/meta.mat"
GROUND_TRUTH_MEMBER = "data/ILSVRC2012_validation_ground_truth.txt"
_WNID = re.compile(r"n\d{8}")


IMAGENET_SYNSETS_FILE = Path(__file__).with_name("imagenet_synsets.txt")


class LabelError(DatasetError):
    """A label source is unreadable or does not fit the classes or the val set."""


def read_class_list(path: str | os.PathLike | None = None) -> list[str]:
    """Class names, one per line; the index of a class is its line number from 0.

    Without ``path``: the 1000 ImageNet synsets in sorted order (the order every ImageNet model uses).
    """
    source = Path(path) if path is not None else IMAGENET_SYNSETS_FILE
    try:
        names = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    except OSError as error:
        raise LabelError(f"cannot read the class list {source}: {error.strerror}") from None
    if not names:
        raise LabelError(f"the class list {source} is empty")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise LabelError(f"the class list {source} repeats {', '.join(duplicates[:5])}")
    return names


def val_name(number: int) -> str:
    """The val image of a 1-based position: ``ILSVRC2012_val_00000001``."""
    return f"ILSVRC2012_val_{number:08d}"


@dataclass
class Labels:
    """Labels by image: the key is a file name, a relative path, or a name without extension."""

    by_key: dict[str, int]
    description: str
    files: list[Path] = field(default_factory=list)  # what was read, for the manifest's digests

    def __post_init__(self) -> None:
        # Keys that carry a folder (PaddleClas-style 'val/ILSVRC2012_val_00000001.JPEG 65') also answer to their
        # file name, and its stem, where no other key has the same one: --data-dir may be that folder itself.
        self.by_file_name: dict[str, str] = {}
        seen: dict[str, int] = {}
        bases: dict[str, int] = {}
        for key in self.by_key:
            if "/" in key:
                base = key.rsplit("/", 1)[-1]
                bases[base] = bases.get(base, 0) + 1
                for alias in {base, os.path.splitext(base)[0]}:
                    seen[alias] = seen.get(alias, 0) + 1
                    self.by_file_name[alias] = key
        for alias, count in seen.items():
            if count > 1 or alias in self.by_key:
                del self.by_file_name[alias]
        self.repeated_file_names = sum(count > 1 for count in bases.values())

    def key_of(self, relative: str) -> str | None:
        """The key that labels the image at ``relative``: its relative path, file name, or file name's stem, or a
        key with a folder prefix whose file name (or stem) is that and unique among the keys."""
        base = relative.rsplit("/", 1)[-1]
        stem = os.path.splitext(base)[0]
        for key in (relative, base, stem):
            if key in self.by_key:
                return key
        return self.by_file_name.get(base) or self.by_file_name.get(stem)

    def name_forms(self) -> str:
        """How the keys look, for a message: an example, and whether they carry a folder."""
        example = next(iter(self.by_key), "nothing")
        if "/" not in example:
            return f"names like {example!r}"
        folder = example.rsplit("/", 1)[0]
        unique = "" if not self.repeated_file_names else (f"; {self.repeated_file_names} of their file names repeat "
                                                          f"under different folders, so those match only by full path")
        return (f"names like {example!r}, with a folder prefix {folder + '/'!r} (matched by the file name when it is "
                f"unique{unique})")


def read_label_source(label_file: str | os.PathLike | None, devkit: str | os.PathLike | None,
                      class_names: Sequence[str]) -> Labels | None:
    """The labels the user gave (``--label-file`` or ``--devkit``; at most one), or None."""
    if label_file is not None and devkit is not None:
        raise LabelError("give either --label-file or --devkit, not both")
    if devkit is not None:
        return read_devkit(Path(devkit), class_names)
    if label_file is not None:
        return read_label_file(Path(label_file), class_names)
    return None


# ------------------------------------------------------------------------------------------ --label-file

def read_label_file(path: Path, class_names: Sequence[str]) -> Labels:
    """Parse ``--label-file`` in whichever of its formats it is (see the module's docstring)."""
    lines = _text_lines(path, "--label-file")
    first = next((line.strip().lstrip("\ufeff") for line in lines if line.strip()), None)
    if first is None:
        raise LabelError(f"--label-file {path} is empty")
    index = {name: position for position, name in enumerate(class_names)}
    if first.startswith("ImageId,"):
        by_wnid, kind = _kaggle(lines, path), "Kaggle LOC_val_solution.csv"
    elif _WNID.fullmatch(first):
        by_wnid, kind = _positional(lines, path, "WNID", _WNID.fullmatch), "one WNID per line"
    elif first.isdigit():
        raise LabelError(f"--label-file {path} holds bare numbers, one per line: ILSVRC2012_IDs of the devkit's ground "
                         f"truth, in meta.mat's order, not class indices. Give the devkit instead: --devkit "
                         f"ILSVRC2012_devkit_t12.tar.gz (or its extracted folder)")
    else:
        return Labels(_pairs(lines, path, index), f"--label-file {path} (<file name> <class> lines)", [path])
    return Labels(_to_index(by_wnid, index, path), f"--label-file {path} ({kind})", [path])


def _text_lines(path: Path, flag: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise LabelError(f"cannot read {flag} {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise LabelError(f"{flag} {path} is not a text file") from None


def _pairs(lines: list[str], path: Path, index: dict[str, int]) -> dict[str, int]:
    """``<file name> <class index>`` or ``<file name> <WNID>`` lines."""
    labels: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise LabelError(f"{path} line {number}: expected '<file name> <class index>', got {line!r}")
        name, value = parts[0].strip(), parts[1]
        if _WNID.fullmatch(value):
            label = _class_of(value, index, path, number)
        elif value.lstrip("-").isdigit():
            label = int(value)
            if not 0 <= label < len(index):
                raise LabelError(f"{path} line {number}: class index {label} is outside 0..{len(index) - 1}")
        else:
            raise LabelError(f"{path} line {number}: expected '<file name> <class index>', got {line!r}")
        if name in labels:
            raise LabelError(f"{path} line {number}: {name} is listed twice")
        labels[name] = label
    return labels


def _kaggle(lines: list[str], path: Path) -> dict[str, tuple[str, int]]:
    """Kaggle's ``LOC_val_solution.csv``: ImageId -> the first WNID of PredictionString (with its line)."""
    rows = csv.reader(lines)
    header = [cell.strip().lstrip("\ufeff") for cell in next(rows)]
    if header[:2] != ["ImageId", "PredictionString"]:
        raise LabelError(f"{path} line 1: expected the header 'ImageId,PredictionString', got {','.join(header)!r}")
    by_wnid: dict[str, tuple[str, int]] = {}
    for number, row in enumerate(rows, start=2):
        if not row or not "".join(row).strip():
            continue
        tokens = row[1].split() if len(row) >= 2 else []
        if not row[0].strip() or not tokens:
            raise LabelError(f"{path} line {number}: expected 'ImageId,WNID x_min y_min x_max y_max ...', got "
                             f"{','.join(row)!r}")
        name = row[0].strip()
        if name in by_wnid:
            raise LabelError(f"{path} line {number}: {name} is listed twice")
        by_wnid[name] = (tokens[0], number)
    return by_wnid


def _positional(lines: list[str], path: Path, what: str, valid) -> dict[str, tuple[str, int]]:
    """One value per line, line i for val image i: exactly 50,000 lines."""
    values = [line.strip() for line in lines]
    while values and not values[-1]:
        values.pop()
    if len(values) != VAL_IMAGES:
        raise LabelError(f"{path} has {len(values):,} lines, expected {VAL_IMAGES:,} (one {what} per val image, "
                         f"line i for ILSVRC2012_val_<i>): a line lost shifts every label after it")
    for number, value in enumerate(values, start=1):
        if not valid(value):
            raise LabelError(f"{path} line {number}: expected a {what}, got {value!r}")
    return {val_name(number): (value, number) for number, value in enumerate(values, start=1)}


def _class_of(wnid: str, index: dict[str, int], path: Path | str, number: int) -> int:
    if wnid not in index:
        hint = "" if _WNID.fullmatch(wnid) else " (a WNID looks like n01440764)"
        raise LabelError(f"{path} line {number}: {wnid!r} is not a class of the class list{hint}")
    return index[wnid]


def _to_index(by_wnid: dict[str, tuple[str, int]], index: dict[str, int], path: Path) -> dict[str, int]:
    return {name: _class_of(wnid, index, path, number) for name, (wnid, number) in by_wnid.items()}


# ---------------------------------------------------------------------------------------------- --devkit

def read_devkit(path: Path, class_names: Sequence[str]) -> Labels:
    """The val labels of the ILSVRC2012 devkit (its ``.tar.gz`` as downloaded, or the extracted folder)."""
    meta_bytes, truth_bytes, files = _devkit_members(path)
    id_to_wnid = meta_leaves(meta_bytes, f"{path} ({META_MEMBER})")
    truth = f"{path} ({GROUND_TRUTH_MEMBER})"
    try:
        lines = truth_bytes.decode("ascii").splitlines()
    except UnicodeDecodeError:
        raise LabelError(f"{truth} is not a text file") from None
    by_id = _positional(lines, Path(truth), "ILSVRC2012_ID from 1 to 1000",
                        lambda value: value.isdigit() and 1 <= int(value) <= VAL_CLASSES)
    index = {name: position for position, name in enumerate(class_names)}
    labels = {name: _class_of(id_to_wnid[int(value)], index, truth, number)
              for name, (value, number) in by_id.items()}
    return Labels(labels, f"--devkit {path} (meta.mat + ground truth)", files)


def _devkit_members(path: Path) -> tuple[bytes, bytes, list[Path]]:
    """The bytes of meta.mat and of the ground truth, from the devkit archive or its folder."""
    if not path.exists():
        raise LabelError(f"--devkit {path} does not exist")
    if path.is_dir():
        found = {}
        for member in (META_MEMBER, GROUND_TRUTH_MEMBER):
            candidates = [path / member, *sorted(path.glob(f"*/{member}"))]
            match = next((candidate for candidate in candidates if candidate.is_file()), None)
            if match is None:
                raise LabelError(f"--devkit {path} has no {member} (give the folder ILSVRC2012_devkit_t12 or the "
                                 f"ILSVRC2012_devkit_t12.tar.gz as downloaded)")
            found[member] = match
        return (found[META_MEMBER].read_bytes(), found[GROUND_TRUTH_MEMBER].read_bytes(),
                [found[META_MEMBER], found[GROUND_TRUTH_MEMBER]])
    if not tarfile.is_tarfile(path):
        raise LabelError(f"--devkit {path} is neither a folder nor a tar archive (ILSVRC2012_devkit_t12.tar.gz)")
    wanted: dict[str, bytes] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                for suffix in (META_MEMBER, GROUND_TRUTH_MEMBER):
                    if member.isfile() and (member.name == suffix or member.name.endswith("/" + suffix)):
                        wanted[suffix] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise LabelError(f"--devkit {path} is unreadable ({error}); is the download complete?") from None
    missing = [suffix for suffix in (META_MEMBER, GROUND_TRUTH_MEMBER) if suffix not in wanted]
    if missing:
        raise LabelError(f"--devkit {path} has no {' or '.join(missing)}: is it ILSVRC2012_devkit_t12.tar.gz?")
    return wanted[META_MEMBER], wanted[GROUND_TRUTH_MEMBER], [path]


def meta_leaves(data: bytes, where: str) -> dict[int, str]:
    """meta.mat's ILSVRC2012_ID -> WNID of its 1,000 leaves (``num_children == 0``), checked against the
    1,000 ImageNet synsets. Read with scipy's MATLAB reader, as torchvision does."""
    from t2t_vit.version_bridge import require

    require("scipy", "reading the devkit's meta.mat (--devkit)")
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True)["synsets"]
        rows = [(int(row["ILSVRC2012_ID"]), str(row["WNID"]), int(row["num_children"])) for row in synsets]
    except Exception as error:  # noqa: BLE001 - scipy raises several kinds on a file that is not this MAT file
        raise LabelError(f"{where} is not the devkit's meta.mat (a MATLAB file with a 'synsets' struct array "
                         f"holding ILSVRC2012_ID, WNID, num_children): {type(error).__name__}: {error}") from None
    leaves = {identifier: wnid for identifier, wnid, children in rows if children == 0}
    expected = read_class_list()
    if sorted(leaves) != list(range(1, VAL_CLASSES + 1)) or sorted(leaves.values()) != expected:
        strangers = sorted(set(leaves.values()) - set(expected))
        raise LabelError(f"{where}: its {len(leaves)} leaves (num_children == 0) are not the 1,000 ImageNet synsets "
                         f"with IDs 1..1000" + (f" ({', '.join(strangers[:3])} is not one)" if strangers else ""))
    return leaves
