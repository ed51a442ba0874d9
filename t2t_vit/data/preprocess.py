"""The preprocess stage: images -> one bin per image, a label file and a manifest; parallel and resumable.

Resuming: every bin is written under a temporary name and renamed when complete. The manifest
(``<out-dir>/manifest.json``) is written before the first bin, with the data config and the planned
name -> source mapping, with each source's size and modification time (compared for equality, as
the identity of its content). A re-run with the same config and data dir skips every bin that exists
with the right size and the same source entry in that mapping, redoes the rest (an image replaced
under the same name included), and removes temporary files that a killed run left behind. A run
stopped by Ctrl-C or an error leaves the manifest's status ``interrupted`` or ``failed``. The bins
and the label file are the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from t2t_vit import ToolkitError
from t2t_vit.files import check_output_folder, nearest_existing, remove_if_present, remove_partial_files
from t2t_vit.progress import format_bytes, plural
from t2t_vit.data.dataset import (Discovery, EvalTransform, ImageItem, coverage_note, decode_rgb, discover_images,
                                  read_class_list, select_subset, write_labels)
from t2t_vit.data.bins import (BIN_DTYPES, BIN_LAYOUTS, MANIFEST_FORMAT, MANIFEST_NAME, bin_size, bins_dtype,
                               read_manifest, write_bin, write_manifest)
from t2t_vit.data.sources import SourceFile, close_handles, file_stamp, read_image, stream_members

log = logging.getLogger(__name__)

_LISTED = 10

_transform: EvalTransform | None = None  # one per worker process, built by _set_transform


@dataclass
class Outcome:
    """What happened to one image."""

    index: int
    status: str  # "written", "done" (already there), "bad"
    detail: str = ""  # why it is bad, or a warning about how it was converted


@dataclass
class PreprocessReport:
    """The result of a run, as a flat record for printing and the manifest."""

    out_dir: str
    gt_path: str | None
    selected: int
    written: int
    already_done: int
    bad: list[dict[str, str]] = field(default_factory=list)
    ignored: int = 0
    unlabelled: int = 0
    absent_labels: int = 0
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        left_out = plural(self.ignored, "non-image file") + (f" and {plural(self.unlabelled, 'image')} without a label"
                                                         if self.unlabelled else "")
        absent = f"; {plural(self.absent_labels, 'label')} of images not in the data" if self.absent_labels else ""
        return (f"{plural(self.selected, 'image')}: {self.written} written, {self.already_done} already done, "
                f"{len(self.bad)} undecodable, {left_out} left out{absent}; "
                f"{self.images_per_s:.1f} images/s over {self.seconds:.1f} s")


def _set_transform(data_config: Mapping[str, Any]) -> None:
    global _transform
    _transform = EvalTransform(data_config)


def _decode(path) -> tuple[Any, str]:
    """Decode to RGB as timm's dataset does; returns the image and a note on anything lossy."""
    from PIL import Image

    with warnings.catch_warnings(record=True) as caught:
        # Pillow's decompression-bomb guard stays on: past 2x MAX_IMAGE_PIXELS it raises (the image is
        # listed as bad); past MAX_IMAGE_PIXELS it warns, and the warning is kept as a note.
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        rgb, mode = decode_rgb(path)
    notes = [str(warning.message) for warning in caught if issubclass(warning.category, Image.DecompressionBombWarning)]
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        notes.append(f"{mode} image: Pillow's RGB conversion clips values above 255 (as timm's loader does)")
    return rgb, "; ".join(notes)


def _reason(error: Exception) -> str:
    """Why an image is bad, in one line. Pillow's "cannot identify image file" ends with the file's path, or for an
    archive member the repr of a BytesIO (an address that changes every run); the list beside it names the file."""
    text = f"{type(error).__name__}: {error}".splitlines()[0][:300]
    return re.sub(r"^(UnidentifiedImageError: cannot identify image file) .*$", r"\1", text)


def _process(task: tuple[int, SourceFile | bytes, str, str]) -> Outcome:
    index, source, target, dtype = task
    if isinstance(source, SourceFile) and source.archive is None and not Path(source.location).is_file():
        return Outcome(index, "bad", "not a regular file (directory, broken link or device)")
    try:
        image, note = _decode(read_image(source))
        array = _transform(image, dtype)
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - Pillow raises many kinds on broken files; all mean "bad"
        return Outcome(index, "bad", _reason(error))
    write_bin(target, array)
    return Outcome(index, "written", note)


def _check_previous(previous: Mapping[str, Any] | None, config_hash: str, source_root: str,
                    dtype: str) -> dict[str, Any]:
    """Refuse an out-dir made with another data config, data dir or bin dtype; return its name -> entry mapping."""
    if previous is None:
        return {}
    previous_dtype = bins_dtype(previous)
    if previous_dtype != dtype:
        raise ToolkitError(f"the out-dir holds {previous_dtype} bins, this run writes {dtype} (--dtype): use a new "
                           f"--out-dir, or remove the old bins and {MANIFEST_NAME}")
    if previous.get("data_config_hash") != config_hash:
        raise ToolkitError(f"the out-dir holds bins made with another data config ({previous.get('data_config')}); "
                           f"use a new --out-dir, or remove the old bins and {MANIFEST_NAME}")
    if previous.get("source_root") != source_root:
        raise ToolkitError(f"the out-dir holds bins made from {previous.get('source_root')}, not {source_root}; "
                           f"use a new --out-dir")
    return dict(previous.get("images", {}))


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


@dataclass
class PreprocessPlan:
    """What a run will do, decided before the first image: the images, their manifest entries, the work still to
    do and what an earlier run already did, and the manifest as it stands."""

    items: list[ImageItem]
    entries: dict[str, dict[str, Any]]
    tasks: list[tuple[int, SourceFile, str, str]]  # (index, source, target, dtype) of the bins to write
    outcomes: list[Outcome]  # the bins already done
    manifest: dict[str, Any]
    found: int  # images in the data dir, before --limit
    discovery: Discovery


def run_preprocess(data_dir: str | os.PathLike, out_dir: str | os.PathLike, gt_path: str | os.PathLike,
                   data_config: Mapping[str, Any], label_file: str | os.PathLike | None = None,
                   class_list: str | os.PathLike | None = None, workers: int | None = None,
                   limit: int | None = None, skip_bad: bool = False, progress: bool | None = None,
                   run_args: Mapping[str, Any] | None = None, remove_extra_bins: bool = False,
                   dtype: str = "float32", devkit: str | os.PathLike | None = None,
                   discovery: Discovery | None = None) -> PreprocessReport:
    """Preprocess every image of ``data_dir`` into ``out_dir`` and write the label file ``gt_path``.

    Args:
        data_dir: ``DIR/<synset>/<image>``, or a flat folder or a tar archive with ``label_file`` or ``devkit``.
        out_dir: where the bins and the manifest go (created if needed). One run at a time: a second run on
            the same out-dir stops at once (:func:`t2t_vit.files.exclusive_lock`).
        gt_path: the label file (``.npy``); must not be inside ``out_dir``.
        data_config: the resolved data config (:func:`t2t_vit.model.network.resolve_data_config`).
        label_file: a label file in one of :mod:`t2t_vit.data.labels`' formats.
        devkit: the ILSVRC2012 devkit (its ``.tar.gz`` or folder), whose ground truth labels the val images.
        class_list: class names, one per line, instead of the ImageNet synsets.
        workers: processes; 0 runs in this process. Default: the usable cores.
        limit: process a deterministic subset of this many images, spread over the classes.
        skip_bad: leave undecodable images out (listed in the manifest) instead of failing.
        progress: False: no progress display; None or True: a bar on a terminal, else a line every 5 %.
        run_args: the command-line arguments, recorded in the manifest.
        remove_extra_bins: delete bins of the out-dir that this run does not plan (the main job owns its
            out-dir; the stand-alone script only warns about them).
        dtype: ``float32``, the normalised NCHW image (the ModelZoo layout), or ``uint8``, the cropped NHWC
            image before normalisation (a quarter of the bytes; for the uint8 export or AIPP).
        discovery: what :func:`t2t_vit.data.dataset.discover_images` found for these arguments, when the caller already
            looked (it is not looked for again).

    Raises:
        ToolkitError: bad input, or undecodable images without ``skip_bad`` (after every good image
            has been written, so a re-run with ``--skip-bad`` only writes the label file).
    """
    from t2t_vit.files import exclusive_lock

    started = time.perf_counter()
    out_dir, gt_path, data_config = Path(out_dir), Path(gt_path), dict(data_config)
    check_request(data_config, out_dir, gt_path, dtype, limit)
    class_names = read_class_list(class_list)
    if discovery is None:  # reads only: a refusal leaves no trace
        discovery = discover_images(data_dir, label_file, class_names, devkit)
    check_destination(out_dir, gt_path, discovery, data_config, dtype, limit)
    with exclusive_lock(out_dir, "--out-dir"):
        plan = plan_preprocess(discovery, out_dir, gt_path, data_config, class_list, len(class_names), limit,
                               remove_extra_bins, dtype, run_args)
        try:
            work_seconds = _run_tasks(plan.tasks, data_config, default_workers() if workers is None else workers,
                                      progress, plan.outcomes, out_dir, discovery.source)
        except BaseException as error:
            plan.manifest["status"] = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            plan.manifest["seconds"] = round(time.perf_counter() - started, 3)
            write_manifest(out_dir, plan.manifest)
            raise
        return finish_preprocess(plan, out_dir, gt_path, skip_bad, work_seconds, started)


def check_request(data_config: dict[str, Any], out_dir: Path, gt_path: Path, dtype: str, limit: int | None) -> None:
    """Refuse a request that cannot run, before anything is read or written."""
    EvalTransform(data_config)  # validates the config
    if gt_path.suffix != ".npy":
        raise ToolkitError(f"--gt-path {gt_path} must end in .npy (it is written with numpy.save)")
    if gt_path.resolve().parent == out_dir.resolve():
        raise ToolkitError(f"--gt-path {gt_path} is inside --out-dir: ais_bench and the runner read every .npy "
                           f"there as an input; put the label file elsewhere")
    if dtype not in BIN_DTYPES:
        raise ToolkitError(f"--dtype {dtype} is not one of {', '.join(BIN_DTYPES)}")
    if limit is not None and limit < 1:
        raise ToolkitError(f"--limit must be at least 1, got {limit}")


def check_out_of_data(folder: Path, data_path: str, flag: str, data_flag: str = "--data-dir") -> None:
    """Refuse an output folder that is, or is inside, the data folder: bins and locks never go among the images."""
    data = Path(data_path)
    if not data.is_dir():
        return  # an archive: nothing can be written inside it
    existing = nearest_existing(folder)
    target = existing.resolve() / folder.absolute().relative_to(existing)
    if target == data or data in target.parents:
        raise ToolkitError(f"{flag} {folder} is {'the data folder' if target == data else 'inside the data folder'} "
                           f"{data} ({data_flag}): the outputs would go among the images; give a folder outside it")


DISK_MARGIN_BYTES = 64 * 2**20  # the manifest, the label file, and what the file system keeps for itself


def bins_bytes_needed(out_dir: Path, count: int, bin_bytes: int) -> int:
    """Bytes that ``count`` bins of ``bin_bytes`` still need in ``out_dir`` (bins of that size already there count
    as done: a resumed run needs only the rest)."""
    present = 0
    if out_dir.is_dir():
        present = sum(1 for entry in os.scandir(out_dir)
                      if entry.name.endswith(".bin") and entry.is_file() and entry.stat().st_size == bin_bytes)
    return max(0, count - present) * bin_bytes


def check_disk(out_dir: Path, count: int, bin_bytes: int, flag: str = "--out-dir", hint: str = "") -> None:
    """Refuse a run whose bins cannot fit on the disk of ``out_dir``, before the first is written."""
    import shutil

    needed = bins_bytes_needed(out_dir, count, bin_bytes)
    where = nearest_existing(out_dir)
    free = shutil.disk_usage(where).free
    if needed + DISK_MARGIN_BYTES > free:
        raise ToolkitError(f"the bins need {format_bytes(needed)} ({count:,} images x {bin_bytes:,} bytes, less those "
                           f"already there) and {where} has {format_bytes(free)} free: free space or give another "
                           f"{flag}{hint}")


def check_destination(out_dir: Path, gt_path: Path, discovery: Discovery, data_config: Mapping[str, Any], dtype: str,
                      limit: int | None, flag: str = "--out-dir", gt_flag: str = "--gt-path") -> None:
    """The output folders are usable before anything is written: outside the data folder, writable, with room for
    the bins. ``flag`` and ``gt_flag`` name the options that set them, for the messages."""
    for folder, what in ((out_dir, flag), (gt_path.parent, f"the folder of {gt_flag}")):
        check_out_of_data(folder, discovery.source["path"], what)
        check_output_folder(folder, what)
    count = len(discovery.items) if limit is None else min(limit, len(discovery.items))
    shape = EvalTransform(data_config).bin_shape(dtype)
    check_disk(out_dir, count, bin_size(shape, dtype), flag,
               " (uint8 bins, --dtype uint8, take a quarter of the disk)" if dtype == "float32" else "")


def plan_preprocess(discovery: Discovery, out_dir: Path, gt_path: Path, data_config: dict[str, Any], class_list,
                    num_classes: int, limit: int | None, remove_extra_bins: bool, dtype: str,
                    run_args: Mapping[str, Any] | None) -> PreprocessPlan:
    """Check the out-dir's earlier run and write the manifest marked running; the bins that are already done
    (same source image, whole) are not redone."""
    from t2t_vit.config import data_config_hash
    from t2t_vit.files import sha256_file
    from t2t_vit.provenance import provenance

    items = select_subset(discovery.items, limit)
    source_root, config_hash = discovery.source["path"], data_config_hash(data_config)
    previous_images = _check_previous(read_manifest(out_dir), config_hash, source_root, dtype)
    removed = remove_partial_files(out_dir)
    if removed:
        log.info("removed %d incomplete files left by an interrupted run", removed)
    bin_shape = EvalTransform(data_config).bin_shape(dtype)
    expected_bytes = bin_size(bin_shape, dtype)
    entries = {item.name: _image_entry(item) for item in items}
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT, "status": "running", "data_config": data_config, "data_config_hash": config_hash,
        "bin": {"dtype": dtype, "layout": BIN_LAYOUTS[dtype], "byte_order": "little", "order": "C",
                "shape": list(bin_shape), "bytes": expected_bytes},
        "source_root": source_root, "source": discovery.source, "layout": discovery.layout, "labels": discovery.labels,
        "label_sources": [{"path": path, "sha256": sha256_file(path)} for path in discovery.label_files],
        "class_list": str(class_list) if class_list else "imagenet-1k synsets (shipped)",
        "num_classes": num_classes, "gt_path": str(gt_path), "limit": limit, "images": entries,
        "ignored": discovery.ignored, "unlabelled": discovery.unlabelled, "absent_labels": discovery.absent_labels,
        "labelled": discovery.labelled, "coverage": coverage_note(discovery),
        "extra_bins": _extra_bins(out_dir, {item.name for item in items}, remove_extra_bins),
    }
    manifest.update(provenance(run_args))
    write_manifest(out_dir, manifest)
    plan = PreprocessPlan(items, entries, [], [], manifest, len(discovery.items), discovery)
    for index, item in enumerate(items):
        target = out_dir / f"{item.name}.bin"
        if (previous_images.get(item.name) == entries[item.name] and target.is_file()
                and target.stat().st_size == expected_bytes):
            plan.outcomes.append(Outcome(index, "done"))
        else:
            plan.tasks.append((index, item.file, str(target), dtype))
    if plan.outcomes:
        log.info("%d of %d bins are already done; processing the other %d", len(plan.outcomes), len(items),
                 len(plan.tasks))
    return plan


def finish_preprocess(plan: PreprocessPlan, out_dir: Path, gt_path: Path, skip_bad: bool, work_seconds: float,
                      started: float) -> PreprocessReport:
    """Write the label file (unless images were bad and not skipped) and the final manifest; report."""
    items, outcomes = plan.items, sorted(plan.outcomes, key=lambda outcome: outcome.index)
    bad = [{"name": items[o.index].name, "source": items[o.index].relative, "reason": o.detail}
           for o in outcomes if o.status == "bad"]
    notes = [{"name": items[o.index].name, "source": items[o.index].relative, "note": o.detail}
             for o in outcomes if o.status == "written" and o.detail]
    for note in notes:
        log.warning("%s: %s", note["source"], note["note"])
    good = [items[o.index] for o in outcomes if o.status != "bad"]
    report = PreprocessReport(out_dir=str(out_dir), gt_path=None, selected=len(items),
                              written=sum(o.status == "written" for o in outcomes),
                              already_done=sum(o.status == "done" for o in outcomes), bad=bad,
                              ignored=len(plan.discovery.ignored), unlabelled=len(plan.discovery.unlabelled),
                              absent_labels=plan.discovery.absent_labels, seconds=work_seconds)
    failed = bool(bad) and not skip_bad
    if not failed:
        write_labels(gt_path, [item.name for item in good], [item.label for item in good])
        report.gt_path = str(gt_path)
    plan.manifest.update({
        "status": "failed" if failed else "complete", "images": {item.name: plan.entries[item.name] for item in good},
        "bad": bad, "conversion_notes": notes,
        "counts": {"found": plan.found, "selected": len(items), "in_label_file": 0 if failed else len(good), "written": report.written,
                   "already_done": report.already_done, "bad": len(bad), "ignored": report.ignored,
                   "unlabelled": report.unlabelled, "absent_labels": report.absent_labels,
                   "extra_bins": len(plan.manifest["extra_bins"])},
        "seconds": round(time.perf_counter() - started, 3), "images_per_s": round(report.images_per_s, 2),
    })
    write_manifest(out_dir, plan.manifest)
    if failed:
        listed = "; ".join(f"{entry['source']} ({entry['reason']})" for entry in bad[:_LISTED])
        more = f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else ""
        raise ToolkitError(f"{len(bad)} of {len(items)} images could not be decoded: {listed}{more}. "
                           f"The other {len(good)} bins are written; no label file was written. Re-run with "
                           f"--skip-bad to leave the bad images out (they stay listed in {MANIFEST_NAME})")
    return report


def _image_entry(item: ImageItem) -> dict[str, Any]:
    """The manifest's record of one image: its source, label and what identifies the source's content."""
    entry: dict[str, Any] = {"source": item.relative, "label": item.label}
    try:
        entry.update(file_stamp(item.file))
    except OSError:
        pass  # unreadable or a broken link: the worker reports it as bad
    return entry


def _extra_bins(out_dir: Path, planned: set[str], remove: bool) -> list[str]:
    """Bins in ``out_dir`` that are not part of this run: removed, or kept with a warning."""
    extra = sorted(path.name for path in out_dir.glob("*.bin") if path.stem not in planned)
    if extra and remove:
        for name in extra:
            remove_if_present(out_dir / name)
        log.info("removed %d bins of %s that are not part of this run (e.g. %s)", len(extra), out_dir, extra[0])
    elif extra:
        log.warning("%s holds %d bins that are not part of this run (e.g. %s): the runner will read them too",
                    out_dir, len(extra), extra[0])
    return [] if remove else extra


def _run_tasks(tasks: list[tuple[int, SourceFile, str, str]], data_config: Mapping[str, Any], workers: int,
               progress: bool | None, outcomes: list[Outcome], out_dir: Path, source: Mapping[str, Any]) -> float:
    """Process ``tasks`` (in ``workers`` processes, through the guarded pool), appending to ``outcomes``; returns the
    seconds taken. A worker that dies ends the run at once (:class:`t2t_vit.workers.WorkerDied`)."""
    from contextlib import closing

    from t2t_vit.progress import progress_bar
    from t2t_vit.workers import WorkerDied, guarded_map

    work_started = time.perf_counter()
    with progress_bar(len(tasks), "preprocess", "img", progress) as bar:
        try:
            if workers <= 0 or len(tasks) <= 1:
                _set_transform(data_config)
                try:
                    for outcome in map(_process, _task_stream(tasks, source)):
                        outcomes.append(outcome)
                        bar.update()
                finally:
                    close_handles()
            else:
                # a compressed archive's bytes wait in memory: at most 2 chunks of 4 per worker are taken ahead
                results = guarded_map(_process, _task_stream(tasks, source), min(workers, len(tasks)), "preprocess",
                                      _set_transform, (data_config,))
                with closing(results):
                    for outcome in results:
                        outcomes.append(outcome)
                        bar.update()
        except WorkerDied as error:
            raise WorkerDied(f"{error}. The {len(outcomes)} bins finished before it are kept: run the same command "
                             f"again to resume (with fewer --workers if memory is short)") from None
        except OSError as error:
            raise ToolkitError(f"cannot write to {out_dir}: {error}") from None
    return time.perf_counter() - work_started


def _task_stream(tasks: list[tuple[int, SourceFile, str, str]],
                 source: Mapping[str, Any]) -> Iterator[tuple[int, SourceFile | bytes, str, str]]:
    """The tasks as the workers take them: as they are, or, from a compressed archive (which cannot be sought), with
    each member's bytes read in one pass of the stream (taken only as fast as the workers use them)."""
    if not source.get("compression"):
        yield from tasks
        return
    wanted = [(position, task[1]) for position, task in enumerate(tasks)]
    for position, data in stream_members(Path(source["path"]), source["compression"], wanted):
        index, _, target, dtype = tasks[position]
        yield index, data, target, dtype
