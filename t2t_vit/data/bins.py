"""The bins and their manifest: the one reader and writer of each.

A bin is one preprocessed image, raw and C order: float32 little-endian NCHW (normalised) or uint8 NHWC (the
cropped image, for an .om with AIPP). ``<out-dir>/manifest.json`` (format ``t2t_vit.preprocess/1``) says what
the bins of a folder are: the stage that writes them (:mod:`t2t_vit.data.preprocess`) writes it through
:func:`write_manifest`, and everything that reads bins reads it through :func:`read_manifest` or
:func:`manifest_beside` (docs/formats.md lists its fields).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from t2t_vit import ToolkitError
from t2t_vit.data.sources import DatasetError


def bin_size(shape: Sequence[int], dtype: str = "float32") -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def write_bin(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array raw, C order, atomically: float32 arrays little-endian, uint8 arrays as they are."""
    from t2t_vit.files import atomic_output

    dtype = np.dtype(np.uint8) if array.dtype == np.uint8 else BIN_DTYPE
    with atomic_output(path) as temp_path:
        np.ascontiguousarray(array, dtype=dtype).tofile(temp_path)


def read_bin(path: str | os.PathLike, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
    """Read a bin written by :func:`write_bin`; its size must match ``shape`` and ``dtype``."""
    path = Path(path)
    expected = bin_size(shape, dtype)
    actual = path.stat().st_size
    if actual != expected:
        raise DatasetError(f"{path} has {actual} bytes, expected {expected} for {dtype} {tuple(shape)}")
    return np.fromfile(path, dtype=BIN_DTYPE if dtype == "float32" else np.uint8).reshape(shape)


MANIFEST_NAME = "manifest.json"


MANIFEST_FORMAT = "t2t_vit.preprocess/1"


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a bin folder, or None when it has none."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ToolkitError(f"{path} is unreadable ({error}); remove it or use a new --out-dir") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ToolkitError(f"{path} is not a manifest of this toolkit; use a new --out-dir")
    return manifest


def bins_dtype(manifest: Mapping[str, Any]) -> str:
    """The dtype of a manifest's bins (manifests from before uint8 bins hold float32)."""
    return manifest.get("bin", {}).get("dtype", "float32")


def manifest_beside(files: Sequence[Path]) -> dict[str, Any] | None:
    """The manifest.json beside the first input, as it is (its fields are read with defaults), or None when there is
    none or it is not JSON: the inputs are then checked by their own bytes."""
    from t2t_vit.data.bins import MANIFEST_NAME

    if not files:
        return None
    manifest_path = files[0].parent / MANIFEST_NAME
    if not manifest_path.is_file():
        return None
    try:
        return json.loads(manifest_path.read_text())
    except ValueError:
        return None


def bins_dtype_advice(found_dtype: str, model_dtype: str, folder: Path | str, model: str) -> str:
    """Why uint8 bins and a float32 model (or the reverse) do not go together, and what to run instead."""
    if found_dtype == "uint8":
        return (f"the inputs in {folder} are uint8 bins (the cropped image, T2T_ViT_preprocess.py --dtype uint8), but "
                f"{model} takes {model_dtype} images: export the model with T2T_ViT_pth2onnx.py --input-dtype uint8 "
                f"(on the NPU: T2T_ViT_atc.sh --aipp), or preprocess again with --dtype float32")
    return (f"the inputs in {folder} are float32 bins (normalised NCHW, T2T_ViT_preprocess.py --dtype float32), but "
            f"{model} takes uint8 NHWC images (the uint8 export, or an .om built with --aipp): preprocess with "
            f"--dtype uint8, or use the float32 export (built without --aipp)")


BIN_DTYPE = np.dtype("<f4")


BIN_DTYPES = ("float32", "uint8")


BIN_LAYOUTS = {"float32": "NCHW", "uint8": "NHWC"}


def write_manifest(out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Write a bin folder's manifest atomically (``format`` must be this module's)."""
    from t2t_vit.provenance import write_json

    if manifest.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"a manifest's format is {MANIFEST_FORMAT}, not {manifest.get('format')}")
    write_json(Path(out_dir) / MANIFEST_NAME, dict(manifest))
