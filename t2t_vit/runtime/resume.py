"""Resuming an interrupted pass of the CPU runner (``T2T_ViT_infer.py --resume``; the main job always asks).

A pass is identified by its key: the model file's SHA-256, the runner (backend and its version, precision,
keep_dtype.cfg's SHA-256, accumulation, micro-batch), the batch size, the output format and split axis, and
the exact inputs (every file's path, size and modification time). The key is written to
``OUTPUT/OUTPUT_DIRNAME_resume.json`` when the pass starts, before its first output. A later run with the same
key keeps every batch whose outputs are all on disk whole: written atomically (temp file + rename, so a file
under its final name is complete) and of the size this model writes; the other batches run again, and give
the same bytes as an uninterrupted run (the same batches, micro-batches and kernels). A different key, or
none, means another pass: its results are removed and this one starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from t2t_vit.files import remove_if_present, sha256_file, write_text_atomic

KEY_SUFFIX = "_resume.json"
KEY_FORMAT = "t2t_vit.runner.resume/1"


def key_path(result_dir: Path) -> Path:
    """Where a pass's key lives: beside its result folder, as its summary does."""
    return result_dir.parent / f"{result_dir.name}{KEY_SUFFIX}"


def inputs_fingerprint(files: Sequence[Path]) -> dict[str, Any]:
    """The exact inputs: every file's path, size and modification time (a rewritten file gets a new one)."""
    entries = [[str(path), path.stat().st_size, path.stat().st_mtime_ns] for path in files]
    return {"count": len(entries), "sha256": hashlib.sha256(json.dumps(entries).encode()).hexdigest()}


def pass_key(opts, plan, backend) -> dict[str, Any]:
    """What makes two runs the same pass (``opts``: the runner's RunOptions, ``plan``: its RunPlan)."""
    return {"format": KEY_FORMAT, "model_sha256": sha256_file(opts.model),
            "runner": {"backend": backend.name, "version": backend.version, "precision": opts.precision,
                       "keep_dtype_sha256": sha256_file(opts.keep_dtype) if opts.keep_dtype else None,
                       "npu_accumulate": opts.accumulate, "micro_batch": plan.micro},
            "batch": plan.batch, "outfmt": opts.outfmt, "output_batchsize_axis": opts.output_batchsize_axis,
            "inputs": inputs_fingerprint(plan.files)}


def read_key(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def start_over(result_dir: Path, path: Path, key: dict[str, Any]) -> None:
    """Remove another pass's results, then record this pass's key (in that order: an interruption in between
    leaves no key, so the next run starts over too)."""
    remove_if_present(path)
    shutil.rmtree(result_dir, ignore_errors=True)
    result_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(key, indent=2) + "\n")


def expected_sizes(warm_outputs: Sequence[np.ndarray], plan, outfmt: str, axis: int,
                   serialise: Callable[[np.ndarray, str], bytes]) -> list[int | None]:
    """The size of one output file per output index, from a warm-up run's outputs (``plan.micro`` samples) and the
    runner's ``serialise``; None where it cannot be known in advance (TXT, whose width varies with the values)."""
    sizes: list[int | None] = []
    for data in warm_outputs:
        data = np.asarray(data)
        shape = list(data.shape)
        whole = shape[axis] * plan.batch if axis < len(shape) else 0
        if outfmt == "TXT" or whole % (plan.micro * plan.per_batch):
            sizes.append(None)
            continue
        shape[axis] = whole // (plan.micro * plan.per_batch)
        sizes.append(len(serialise(np.zeros(shape, dtype=data.dtype), outfmt)))
    return sizes


def all_whole(targets: Sequence[tuple[Path, int | None]]) -> bool:
    """Whether every output exists under its final name with the size it must have."""
    for path, size in targets:
        try:
            found = path.stat().st_size
        except OSError:
            return False
        if size is not None and found != size:
            return False
    return True
