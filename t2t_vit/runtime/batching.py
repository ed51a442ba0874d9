"""The runner's inputs, as ais_bench reads them: the files of --input in natural order, grouped into batches
(the last short group padded with copies of its first file), or zeros / random data for pure inference.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from t2t_vit import ToolkitError
from t2t_vit.files import NPY_MAGIC, file_head, looks_like_text


PURE_DATA_TYPES = ("zero", "random")


PURE_INFER_NAME = "pure_infer_data"  # ais_bench's name for pure-inference input, so outputs are pure_infer_data_<i>


INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")


class RunnerError(ToolkitError):
    """Inputs or arguments the runner cannot use."""


def natural_key(text: str) -> list:
    """ais_bench's sort key: digit runs compare as numbers, the rest case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"([0-9]+)", text)]


def list_input_files(inputs: Sequence[str]) -> list[Path]:
    """The input files, in the order ais_bench takes them."""
    paths = [Path(item) for item in inputs if item]
    if not paths:
        raise RunnerError("--input is empty")
    if len(paths) == 1 and not paths[0].exists():
        raise RunnerError(f"--input {paths[0]} does not exist")
    if paths[0].is_dir():
        if len(paths) != 1:
            raise RunnerError(f"--input names {len(paths)} folders; the model has one input, give one folder")
        entries = [Path(entry.path) for entry in os.scandir(paths[0])
                   if entry.name.endswith(INPUT_SUFFIXES) and entry.is_file()]
        if not entries:
            raise RunnerError(f"--input folder {paths[0]} holds no .bin or .npy files")
        return sorted(entries, key=lambda path: natural_key(str(path)))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise RunnerError(f"--input: {', '.join(missing[:5])} {'does' if len(missing) == 1 else 'do'} not exist "
                          f"or {'is' if len(missing) == 1 else 'are'} not a file or folder")
    return paths


STRAY_HINT = "ais_bench and this runner read every .bin and .npy file of an input folder: move it out"


def _data_bytes(path: Path) -> int:
    if path.suffix.lower() == ".npy":
        start = file_head(path)
        if not start.startswith(NPY_MAGIC):
            looks = "a text file" if looks_like_text(start) else "not a numpy array file"
            raise RunnerError(f"input {path} is named .npy but is {looks} (it starts {start[:24]!r}): a stray file? "
                              f"{STRAY_HINT}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise RunnerError(f"input {path} is a damaged .npy file ({str(error).splitlines()[0][:120]}); "
                              f"{STRAY_HINT}, or make it again") from None
        if array.dtype.names is not None:
            raise RunnerError(f"input {path} is a table with fields {', '.join(array.dtype.names)} (a label file?), "
                              f"not model input: {STRAY_HINT}")
        return int(array.nbytes)
    return path.stat().st_size


def plan_groups(files: Sequence[Path], sample_bytes: int, batch: int) -> tuple[int, list[list[Path | None]]]:
    """How many files make one batch, and the groups (``None`` = a padding slot)."""
    sizes = [_data_bytes(path) for path in files]
    for path, size in zip(files, sizes):
        if size not in (sample_bytes, sample_bytes * batch):
            raise RunnerError(f"input {path} has {size} bytes: neither one sample ({sample_bytes}) nor one batch "
                              f"of {batch} ({sample_bytes * batch}); if it is a stray file, {STRAY_HINT}")
    per_batch = batch if sizes[0] == sample_bytes else 1
    for path, size in zip(files, sizes):
        if size != sizes[0]:
            raise RunnerError(f"input {path} has {size} bytes, unlike {files[0]} ({sizes[0]}): every input file must "
                              f"hold the same number of samples")
    groups: list[list[Path | None]] = []
    for start in range(0, len(files), per_batch):
        group: list[Path | None] = list(files[start:start + per_batch])
        groups.append(group + [None] * (per_batch - len(group)))
    return per_batch, groups


def pure_infer_data(shape: tuple[int, ...], dtype: np.dtype, kind: str = "zero") -> np.ndarray:
    """ais_bench's pure-inference input: zeros, or random bytes (0..255 each) read as the model's dtype."""
    if kind == "zero":
        return np.zeros(shape, dtype=dtype)
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.random.default_rng().integers(0, 256, count, dtype=np.uint8).view(dtype).reshape(shape)
