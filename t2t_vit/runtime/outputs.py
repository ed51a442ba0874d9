"""The runner's output files, named and laid out as ais_bench writes them: ``<stem>_<i>.<bin|npy|txt>``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from t2t_vit.files import atomic_output
from t2t_vit.runtime.batching import RunnerError


OUTPUT_FORMATS = ("BIN", "NPY", "TXT")


def split_output(data: np.ndarray, parts: int, axis: int, output_index: int) -> list[np.ndarray]:
    """One part per input file, cut along ``axis`` (ais_bench's --output_batchsize_axis)."""
    if axis >= data.ndim:
        raise RunnerError(f"--output_batchsize_axis {axis} is not an axis of output {output_index}, of shape "
                          f"{list(data.shape)}")
    if data.shape[axis] % parts:
        raise RunnerError(f"output {output_index} of shape {list(data.shape)} cannot be split into {parts} parts "
                          f"along axis {axis} (--output_batchsize_axis)")
    return np.array_split(data, parts, axis=axis)


def output_file_name(input_path: Path, output_index: int, outfmt: str) -> str:
    return f"{input_path.name.split('.')[0]}_{output_index}.{outfmt.lower()}"


def check_unique_names(files: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in files:
        stem = path.name.split(".")[0]
        if stem in seen:
            raise RunnerError(f"inputs {seen[stem]} and {path} would both write {stem}_0: ais_bench names outputs after "
                              f"the input name up to its first dot; rename one")
        seen[stem] = path


def save_output(path: Path, data: np.ndarray, outfmt: str) -> None:
    """Write one output as ais_bench does (BIN raw, NPY numpy, TXT rows of '%f' separated by spaces), atomically."""
    try:
        with atomic_output(path) as temp:
            temp.write_bytes(serialise_output(data, outfmt))
    except OSError as error:  # a full disk (ENOSPC) or a file size limit (EFBIG): nothing is left under the name
        raise RunnerError(f"cannot write {path}: {error.strerror or error} (is the disk full?)") from None


def serialise_output(data: np.ndarray, outfmt: str) -> bytes:
    """The bytes of one output file in ais_bench's format."""
    if outfmt == "NPY":
        buffer = io.BytesIO()
        np.save(buffer, data)
        return buffer.getvalue()
    if outfmt == "TXT":
        rows = data.reshape(-1, data.shape[-1])
        fmt = "%f" if np.issubdtype(rows.dtype, np.floating) else "%d"
        return "".join(" ".join(fmt % value for value in row) + " \n" for row in rows).encode()
    return data.tobytes()
