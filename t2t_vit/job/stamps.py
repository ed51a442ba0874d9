"""The job's fingerprints and stamps: what decides whether an earlier run's artefact is reused.

A pass's stamp, ``WORK/result/bs<N>.stamp.json`` or ``WORK/perf/bs<N>.stamp.json``, records the key it was made
with (variant, the model file's SHA-256, runner, batch size, the exact bins, ...) and its date; it is written
only once the pass is complete (:func:`write_stamp`) and read by :func:`read_stamp`, here and nowhere else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

STAMP_SUFFIX = ".stamp.json"


class Digests:
    """SHA-256 of files, computed once per file content within a run (keyed on path, size, mtime, inode)."""

    def __init__(self) -> None:
        self._known: dict[tuple, str] = {}

    def __call__(self, path: str | os.PathLike) -> str:
        from t2t_vit.files import sha256_file

        stat = os.stat(path)
        key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if key not in self._known:
            self._known[key] = sha256_file(path)
        return self._known[key]


def bins_fingerprint(bins_dir: Path, labels_path: Path, digest: Digests) -> str:
    """What identifies the exact inputs of a pass: every bin's name, size and modification time (a rewritten
    bin gets a new one; this is an identity, never an order), the label file's content, and the data source and
    label sources the bins' manifest records (an archive's size and time, the SHA-256 of each label file)."""
    import hashlib

    from t2t_vit.data.bins import read_manifest

    entries = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
                     for entry in os.scandir(bins_dir) if entry.name.endswith(".bin") and entry.is_file())
    manifest = read_manifest(bins_dir) or {}
    text = json.dumps({"bins": entries, "labels": digest(labels_path), "source": manifest.get("source"),
                       "label_sources": manifest.get("label_sources")})
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: Path) -> dict[str, Any] | None:
    """A stamp or summary, or None when it is missing or unreadable (the artefact is then redone)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


NOT_MADE = "not made yet"  # no stamp: a first run in this work dir (or one stopped before it stamped)


def running_why(reason: str) -> str:
    """How a pass that runs says why: nothing on a first run, the reason when it runs again."""
    return "running" if reason == NOT_MADE else f"running again: {reason}"


def stamp_mismatch(recorded: dict[str, Any] | None, key: dict[str, Any]) -> str:
    """Why an artefact cannot be reused ('' when it can)."""
    if recorded is None:
        return NOT_MADE
    changed = [_KEY_WORDS.get(name, name) for name in key if recorded.get(name) != key[name]]
    return f"made with another {', '.join(changed)}" if changed else ""


_KEY_WORDS = {"devices": "--device list", "variant": "variant", "model_sha256": "model file (its SHA-256 differs)", "bins": "set of bins, labels or data source",
              "runner": "runner", "batch": "batch size", "loop": "--loop", "threads": "--threads",
              "machine": "machine", "kind": "kind of pass", "keep_dtype_sha256": "keep_dtype.cfg"}


def read_stamp(path: Path) -> dict[str, Any] | None:
    """A pass's stamp, or None when it is missing or unreadable (the pass is then redone)."""
    return read_json(path)


def write_stamp(path: Path, key: dict[str, Any]) -> None:
    """Stamp a complete pass with its key and the date (not part of the key: it marks reused figures)."""
    from t2t_vit.provenance import now, write_json

    write_json(path, {**key, "date": now()})
