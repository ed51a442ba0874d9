"""Scoring result files: top-1 / top-5 matched by name, and the comparison of two result sets.

Result files are the runner's (and ais_bench's) outputs ``<name>_0.<bin|npy|txt>`` for output 0. A
result holds the sample's 1000 logits: raw float32 (``bin``), a ``.npy`` array of 1000 floats, or text
of 1000 numbers (ais_bench's TXT: ``%f`` values separated by spaces).

Tie rule: a sample is top-k correct when fewer than k other classes score at least as high as its true
class, so a class tied with the true one counts against it: logits that are all equal (a dead output, or
TXT results rounded to zeros) score 0 %, never 100 %. (The ModelZoo's argsort and timm's topk break ties by
class index, which scores all-equal logits at about chance; this rule never reports more than they do.) A
sample with a NaN or infinite logit is counted as wrong (and reported).

Degenerate outputs: rows whose logits are all equal (``constant``) and rows that equal another image's row
exactly (``repeated``) are counted and named in one warning. A result set where most rows are constant or
one and the same vector is refused (:class:`ConstantOutputError`) unless ``allow_constant``: such figures
describe the output, not the model.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from t2t_vit import ToolkitError
from t2t_vit.data.dataset import read_labels

log = logging.getLogger(__name__)

NUM_CLASSES = 1000
RESULT_FORMATS = ("bin", "npy", "txt")
_RESULT_NAME = re.compile(r"^(?P<name>.+)_(?P<output>\d+)\.(?P<fmt>bin|npy|txt)$", re.IGNORECASE)
_MODELZOO_NAME = re.compile(r"^(?P<index>\d+)(?:_output)?_0\.(?:bin|npy|txt)$", re.IGNORECASE)
_LISTED = 5
_LISTED_CHANGED = 20


class ResultError(ToolkitError):
    """Result files or labels that cannot be scored."""


class ConstantOutputError(ResultError):
    """Most results are constant, or one and the same vector: the output is dead, not the model wrong."""


TIE_RULE = "top-k correct when fewer than k other classes score at least as high as the true class (ties count against it)"


@dataclass
class Scores:
    """Top-k accuracy over a set of samples, in percent."""

    count: int
    top1: float
    top5: float
    correct_top1: int
    correct_top5: int
    nonfinite: list[str]


# ------------------------------------------------------------------------------------------------ reading

def find_results(result_dir: str | os.PathLike, output_index: int = 0) -> dict[str, Path]:
    """``name -> path`` for every ``<name>_<output_index>.<bin|npy|txt>`` in ``result_dir``; for a folder of
    ais_bench's device folders that split the images (``device<N>/`` or ``device<N>_<i>/``), of them all.

    Raises:
        ResultError: no results; device folders that each hold every image (score them with
            :func:`device_layout` one by one) or that overlap in part.
    """
    root = Path(result_dir)
    if not root.is_dir():
        raise ResultError(f"result dir {root} does not exist or is not a directory")
    found = _results_in(root, output_index)
    if found:
        return found
    layout = device_layout(root, output_index)
    if layout is None:
        raise ResultError(f"no result files <name>_{output_index}.bin|npy|txt in {root}")
    if layout.kind == "copies":
        raise ResultError(f"the device folders of {root} ({', '.join(layout.folders)}) each hold every image: score "
                          f"them one by one (T2T_ViT_postprocess.py --result-dir {root} does)")
    return {name: path for results in layout.folders.values() for name, path in results.items()}


@dataclass
class DeviceLayout:
    """ais_bench's output for several devices: ``kind`` ``split`` (each image in one folder) or ``copies`` (every
    folder holds every image: ais_bench without ``--divide_input`` on some versions); ``folders`` maps each
    device folder's name to its results, in device order."""

    kind: str
    folders: dict[str, dict[str, Path]]


def device_layout(result_dir: str | os.PathLike, output_index: int = 0) -> DeviceLayout | None:
    """The device folders of ``result_dir`` (None when it has none with results), and how they share the images.

    Raises:
        ResultError: folders that overlap in part (neither a split nor copies), in one line.
    """
    root = Path(result_dir)
    from t2t_vit.aisbench import parse_device_folder

    folders = sorted((entry for entry in os.scandir(root) if entry.is_dir() and parse_device_folder(entry.name)),
                     key=lambda entry: (parse_device_folder(entry.name)[0], entry.name))
    results = {entry.name: found for entry in folders for found in [_results_in(Path(entry.path), output_index)]
               if found}
    if not results:
        return None
    names = [set(found) for found in results.values()]
    if len(results) > 1 and all(other == names[0] for other in names[1:]):
        return DeviceLayout("copies", results)
    if sum(len(found) for found in names) == len(set().union(*names)):
        return DeviceLayout("split", results)
    first, second = next((x, y) for x, y in itertools.combinations(results, 2) if set(results[x]) & set(results[y]))
    a, b = results[first], results[second]
    shared = sorted(set(a) & set(b))
    raise ResultError(f"the device folders of {root} overlap in part: {first} and {second} share {len(shared)} "
                      f"images ({_listed(shared)}) and differ in {len(set(a) ^ set(b))}; each image must be in one "
                      f"folder (ais_bench --divide_input) or in all of them: remove the folders of other runs")


def evaluate_copies(layout: DeviceLayout, result_dir: str | os.PathLike, evaluate) -> tuple[dict, MatchedSet, list]:
    """Score device folders that each hold every image one by one (``evaluate(folder)`` gives :func:`evaluate`'s
    pair) and compare each with the first. Returns the first's figures, with ``layout`` ``copies`` and
    ``per_device`` (one row per folder: its top-1, top-5, count and, after the first, its top-1 agreement with
    the first and max |logit difference|), the first's matched set, and the rows."""
    rows: list[dict[str, Any]] = []
    first: tuple[dict[str, Any], MatchedSet] | None = None
    for folder in layout.folders:
        results, matched = evaluate(Path(result_dir) / folder)
        row = {"device_folder": folder, "top1": results["top1"], "top5": results["top5"], "count": results["count"]}
        if first is None:
            first = (results, matched)
        else:
            names, mine, theirs, _ = align(first[1], matched, allow_missing=False)
            agreement = compare(names, mine, theirs)
            row.update({"top1_agreement": agreement["top1_agreement"], "max_abs_diff": agreement["max_abs_diff"]})
        rows.append(row)
    results, matched = first
    results.update({"layout": "copies", "per_device": rows})
    return results, matched, rows


def has_results(result_dir: str | os.PathLike, output_index: int = 0) -> bool:
    """Whether ``result_dir`` (an existing folder) holds result files itself, not only in device folders."""
    root = Path(result_dir)
    return not root.is_dir() or bool(_results_in(root, output_index))


def _results_in(root: Path, output_index: int) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for entry in os.scandir(root):
        match = _RESULT_NAME.match(entry.name)
        if not match or int(match["output"]) != output_index or not entry.is_file():
            continue
        name = match["name"]
        if name in found:
            raise ResultError(f"{root} holds two results for {name}: {found[name].name} and {entry.name}")
        found[name] = Path(entry.path)
    return found


def read_logits(paths: Sequence[Path], values_per_file: int = NUM_CLASSES) -> np.ndarray:
    """Read result files into a float32 array of shape (len(paths), values_per_file).

    Raises:
        ResultError: naming the first file whose size or content is not ``values_per_file`` numbers.
    """
    logits = np.empty((len(paths), values_per_file), dtype=np.float32)
    expected_bytes = values_per_file * 4
    for row, path in enumerate(paths):
        suffix = path.suffix.lower()
        if suffix == ".bin":
            with open(path, "rb", buffering=0) as handle:
                got = handle.readinto(memoryview(logits[row]).cast("B"))
                if got != expected_bytes or handle.read(1):
                    size = path.stat().st_size
                    raise ResultError(f"{path} has {size} bytes, expected {expected_bytes} "
                                      f"({values_per_file} float32 logits)")
        else:
            try:
                values = (np.load(path, allow_pickle=False) if suffix == ".npy"
                          else np.array(path.read_text().split(), dtype=np.float64))
            except (OSError, ValueError) as error:
                raise ResultError(f"{path} is not a readable result ({error})") from None
            if values.size != values_per_file or not np.issubdtype(values.dtype, np.floating):
                raise ResultError(f"{path} holds {values.size} values of {values.dtype}, expected "
                                  f"{values_per_file} floating-point logits")
            logits[row] = values.reshape(-1)
    return logits


# --------------------------------------------------------------------------------------------- matching

@dataclass
class MatchedSet:
    """Logits and labels of the samples that have both, and what was missing on either side."""

    names: list[str]
    logits: np.ndarray
    labels: np.ndarray
    missing_results: list[str]
    unlabelled_results: list[str]
    label_mode: str


def match_results(result_dir: str | os.PathLike, gt_path: str | os.PathLike,
                  num_classes: int = NUM_CLASSES) -> MatchedSet:
    """Pair every result with its label by name (never by listing order) and read the logits.

    A plain integer label array (what the ModelZoo preprocess wrote: one row of labels per batch file,
    shape (batches, batch_size), or (N,) for batch 1) is matched by the number that starts the result
    name: ``00012_0.bin`` (or msame's ``00012_output_0.bin``) holds batch 12, and its i-th row of
    logits is scored against ``labels[12][i]``.
    """
    table = read_labels(gt_path, allow_plain=True, source="--gt-path")
    if table.dtype.names is not None:
        results = find_results(result_dir)
        label_of = {str(name): int(label) for name, label in zip(table["name"].tolist(), table["label"].tolist())}
        if len(label_of) != len(table):
            raise ResultError(f"{gt_path} lists a name more than once")
        names = sorted(set(results) & set(label_of))
        missing = sorted(set(label_of) - set(results))
        unlabelled = sorted(set(results) - set(label_of))
        logits = read_logits([results[name] for name in names], num_classes)
        labels = np.array([label_of[name] for name in names], dtype=np.int64)
        return MatchedSet(names, logits, labels, missing, unlabelled, "named")
    return _match_modelzoo(Path(result_dir), table, num_classes)


def _match_modelzoo(result_dir: Path, table: np.ndarray, num_classes: int) -> MatchedSet:
    rows = table.reshape(len(table), -1)
    per_file = rows.shape[1]
    if not result_dir.is_dir():
        raise ResultError(f"result dir {result_dir} does not exist or is not a directory")
    results: dict[int, Path] = {}
    for entry in os.scandir(result_dir):
        match = _MODELZOO_NAME.match(entry.name)
        if match:
            results[int(match["index"])] = Path(entry.path)
    if not results:
        raise ResultError(f"no numbered result files (<k>_0.bin, <k>_output_0.bin) in {result_dir} for the "
                          f"integer label array")
    indices = sorted(set(results) & set(range(len(rows))))
    logits = read_logits([results[index] for index in indices], per_file * num_classes).reshape(-1, num_classes)
    labels = rows[indices].reshape(-1).astype(np.int64)
    label = (lambda index, i: f"{index}") if per_file == 1 else (lambda index, i: f"{index}[{i}]")
    names = [label(index, i) for index in indices for i in range(per_file)]
    missing = [str(index) for index in range(len(rows)) if index not in results]
    unlabelled = [results[index].name for index in sorted(set(results) - set(range(len(rows))))]
    return MatchedSet(names, logits, labels, missing, unlabelled, "modelzoo")


# --------------------------------------------------------------------------------------------- scoring

def ranks(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """How many other classes score at least as high as the true class, per sample (-1 for non-finite rows)."""
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ResultError(f"labels must be within 0..{logits.shape[1] - 1}, found {labels.min()}..{labels.max()}")
    true = logits[np.arange(len(labels)), labels]
    at_least = (logits >= true[:, None]).sum(axis=1) - 1  # the true class itself is not counted
    finite = np.isfinite(logits).all(axis=1)
    return np.where(finite, at_least, -1)


@dataclass
class Degenerate:
    """Rows that say nothing about the model: constant ones, and ones equal to another image's row."""

    constant: list[str]
    repeated: list[str]
    largest_group: int  # rows in the largest set of rows equal to each other (constant rows included)
    count: int

    @property
    def dead(self) -> bool:
        """Most rows are constant or one and the same vector."""
        return 2 * max(len(self.constant), self.largest_group) > self.count

    def describe(self) -> str:
        parts = []
        if self.constant:
            parts.append(f"{len(self.constant)} of {self.count} results have constant logits (every class the same "
                         f"value: a dead output?): {_listed(self.constant)}")
        if self.repeated:
            parts.append(f"{len(self.repeated)} are identical to another image's result"
                         f"{f' (the largest set of equal results: {self.largest_group})' if self.largest_group > 2 else ''}"
                         f": {_listed(self.repeated)}")
        return "; ".join(parts)


def degenerate_rows(names: Sequence[str], logits: np.ndarray) -> Degenerate:
    """Find the constant rows and the rows equal to another row (by their bytes)."""
    finite = np.isfinite(logits).all(axis=1)
    constant_mask = finite & (logits.max(axis=1) == logits.min(axis=1))
    rows = np.ascontiguousarray(logits)
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).reshape(len(rows))
    _, group_of, group_sizes = np.unique(as_bytes, return_inverse=True, return_counts=True)
    size_of_row = group_sizes[np.reshape(group_of, -1)]  # each row's group size (1: no other row equals it)
    largest = int(group_sizes.max()) if len(group_sizes) else 0
    repeated = np.flatnonzero((size_of_row > 1) & ~constant_mask)
    return Degenerate(constant=[names[row] for row in np.flatnonzero(constant_mask)],
                      repeated=[names[row] for row in repeated], largest_group=largest if largest > 1 else 0,
                      count=len(logits))


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:_LISTED]) + (", ..." if len(names) > _LISTED else "")


def score(names: Sequence[str], logits: np.ndarray, labels: np.ndarray) -> Scores:
    """Top-1 and top-5 accuracy under the tie rule of this module (:data:`TIE_RULE`); non-finite rows are wrong."""
    rank = ranks(logits, labels)
    valid = rank >= 0
    correct1 = int(np.sum(valid & (rank < 1)))
    correct5 = int(np.sum(valid & (rank < 5)))
    count = len(labels)
    nonfinite = [names[i] for i in np.flatnonzero(~valid)]
    return Scores(count=count, top1=100.0 * correct1 / count if count else 0.0,
                  top5=100.0 * correct5 / count if count else 0.0, correct_top1=correct1, correct_top5=correct5,
                  nonfinite=nonfinite)


def per_class(logits: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """``class index -> {count, top1, top5}`` (percent) for every class that has samples."""
    rank = ranks(logits, labels)
    table: dict[str, Any] = {}
    for label in np.unique(labels):
        mask = labels == label
        ranks_of = rank[mask]
        valid = ranks_of >= 0
        entry = {"count": int(mask.sum()), "top1": 100.0 * float(np.mean(valid & (ranks_of < 1))),
                 "top5": 100.0 * float(np.mean(valid & (ranks_of < 5)))}
        if class_names is not None and label < len(class_names):
            entry["class"] = class_names[label]
        table[str(int(label))] = entry
    return table


def compare(names: Sequence[str], logits: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """How far two scorings of the same samples are apart.

    Returns max and mean |difference| over all logits, the mean cosine similarity of the logit
    vectors, top-1 agreement (percent of samples whose arg-max class is the same; ties go to the
    lower class index) and the names whose top-1 changed. Rows with a non-finite value on either side
    are left out of these figures and counted.
    """
    finite = np.isfinite(logits).all(axis=1) & np.isfinite(other).all(axis=1)
    a, b = logits[finite].astype(np.float64), other[finite].astype(np.float64)
    difference = np.abs(a - b)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.sum(a * b, axis=1) / np.where(norms > 0, norms, 1.0)
    top1_a, top1_b = np.argmax(logits, axis=1), np.argmax(other, axis=1)
    changed = [names[i] for i in np.flatnonzero(top1_a != top1_b)]
    count = int(finite.sum())
    return {
        "count": len(names),
        "compared": count,
        "nonfinite": len(names) - count,
        "max_abs_diff": float(difference.max()) if count else float("nan"),
        "mean_abs_diff": float(difference.mean()) if count else float("nan"),
        "mean_cosine_similarity": float(cosine.mean()) if count else float("nan"),
        "top1_agreement": 100.0 * (len(names) - len(changed)) / len(names) if len(names) else float("nan"),
        "top1_changed": changed,
    }


def align(reference: MatchedSet, other: MatchedSet,
          allow_missing: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The samples scored in both sets: names, both sets' logits in the same order, and their labels."""
    position = {name: row for row, name in enumerate(other.names)}
    only_reference = [name for name in reference.names if name not in position]
    only_other = sorted(set(other.names) - set(reference.names))
    if (only_reference or only_other) and not allow_missing:
        raise ResultError(f"the two result sets differ: {len(only_reference)} samples only in the first "
                          f"({', '.join(only_reference[:_LISTED])}), {len(only_other)} only in the compared one "
                          f"({', '.join(only_other[:_LISTED])}); pass --allow-missing to compare the common ones")
    rows = [row for row, name in enumerate(reference.names) if name in position]
    names = [reference.names[row] for row in rows]
    return names, reference.logits[rows], other.logits[[position[name] for name in names]], reference.labels[rows]


def describe_missing(matched: MatchedSet) -> str:
    parts = []
    if matched.missing_results:
        parts.append(f"{len(matched.missing_results)} labels have no result ({_listed(matched.missing_results)})")
    if matched.unlabelled_results:
        parts.append(f"{len(matched.unlabelled_results)} results have no label ({_listed(matched.unlabelled_results)})")
    return " and ".join(parts)


# ------------------------------------------------------------------------------------------- the stage

def check_degenerate(names: Sequence[str], logits: np.ndarray, allow_constant: bool, where: str,
                     flag: str = "--allow-constant") -> Degenerate:
    """Warn about constant and repeated rows in one line; refuse a set that is mostly so unless ``allow_constant``."""
    found = degenerate_rows(names, logits)
    if found.dead and not allow_constant:
        raise ConstantOutputError(f"{where}: {found.describe()}; these figures would describe a dead output, not the "
                                  f"model: check the model and its input (for TXT results, their precision); pass "
                                  f"{flag} to score them anyway")
    if found.constant or found.repeated:
        log.warning("%s: %s", where, found.describe())
    return found


def evaluate(result_dir: str | os.PathLike, gt_path: str | os.PathLike, allow_missing: bool = False,
             with_per_class: bool = False, missing_hint: str = "",
             allow_constant: bool = False) -> tuple[dict[str, Any], MatchedSet]:
    """Score a result dir against the label file: the postprocess stage's figures as a flat dict.

    ``missing_hint`` ends the error about missing results: what the calling command offers (its
    ``{matched}`` is replaced by the number of matched samples).

    Raises:
        ResultError: labels without results or results without labels (unless ``allow_missing``),
            or nothing matched.
        ConstantOutputError: most results constant or one same vector (unless ``allow_constant``).
    """
    matched = match_results(result_dir, gt_path)
    problem = describe_missing(matched)
    if problem and not allow_missing:
        raise ResultError(problem + missing_hint.replace("{matched}", str(len(matched.names))))
    if not matched.names:
        raise ResultError("no result matches a label: check --result-dir and --gt-path")
    if problem:
        log.warning("%s; scoring the %d matched samples", problem, len(matched.names))
    degenerate = check_degenerate(matched.names, matched.logits, allow_constant, str(result_dir))
    scores = score(matched.names, matched.logits, matched.labels)
    if scores.nonfinite:
        log.warning("%d samples have NaN or infinite logits, counted as wrong: %s", len(scores.nonfinite),
                    ", ".join(scores.nonfinite[:_LISTED]))
    results: dict[str, Any] = {
        "top1": scores.top1, "top5": scores.top5, "count": scores.count,
        "correct_top1": scores.correct_top1, "correct_top5": scores.correct_top5,
        "nonfinite": len(scores.nonfinite), "nonfinite_names": scores.nonfinite,
        "missing_results": len(matched.missing_results), "unlabelled_results": len(matched.unlabelled_results),
        "constant": len(degenerate.constant), "constant_names": degenerate.constant[:_LISTED_CHANGED],
        "repeated": len(degenerate.repeated), "repeated_names": degenerate.repeated[:_LISTED_CHANGED],
        "label_mode": matched.label_mode, "result_dir": str(result_dir), "gt_path": str(gt_path),
        "tie_rule": TIE_RULE}
    if with_per_class:
        from t2t_vit.data.dataset import read_class_list

        class_names = read_class_list() if matched.logits.shape[1] == NUM_CLASSES else None
        results["per_class"] = per_class(matched.logits, matched.labels, class_names)
    return results, matched
