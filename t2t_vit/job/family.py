"""The family table: every variant measured in one or more work dirs, side by side, with the accuracy-speed frontier.

It reads what the main job keeps per variant (``WORK/eval_summary_<variant>.json``) and runs no inference. A
row is one variant on one runner (the CPU runtime, or ais_bench on the NPU): its published name and checkpoint,
top-1 / top-5, the NPU emulation's top-1 and flips where measured, the keep set's size, params and GFLOPs,
images/s at each batch size (the card's figure, and each chip's on a Duo), its best batch size and when it was
measured. Rows are compared only within a group of the same images (the label file's SHA-256 and the image count)
and the same runner; a group measured on other images or another runner is listed apart, and the table says so.

``family_summary.json`` holds ``rows``, ``groups`` (each with its ``data``, ``runner``, ``variants``, ``frontier``
and, given a floor, ``choice``), ``notes`` and ``work_dirs``; ``family_summary.png`` plots top-1 against the best
images/s, one point per row, the frontier of each group drawn through its points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from t2t_vit import ToolkitError
from t2t_vit.job.request import VARIANT_SUMMARY

FAMILY_JSON = "family_summary.json"
FAMILY_PNG = "family_summary.png"
VARIANT_GLOB = VARIANT_SUMMARY.format("*")


def variant_summaries(work_dir: Path) -> list[Path]:
    """The per-variant summaries a work dir holds, newest last."""
    return sorted(Path(work_dir).glob(VARIANT_GLOB), key=lambda path: path.stat().st_mtime)


def read_summaries(work_dirs: Sequence[Path]) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for work_dir in work_dirs:
        if not Path(work_dir).is_dir():
            raise ToolkitError(f"--work-dir {work_dir} does not exist or is not a folder")
        paths = variant_summaries(work_dir)
        if not paths:
            raise ToolkitError(f"--work-dir {work_dir} holds no variant's summary ({VARIANT_GLOB}): run the main job "
                               f"there first (bash T2T_ViT_eval.sh ... --work-dir {work_dir})")
        for path in paths:
            try:
                summary = json.loads(path.read_text())
            except (OSError, ValueError) as error:
                raise ToolkitError(f"{path} is unreadable ({error}): run the main job for that variant again") from None
            if not isinstance(summary, dict) or "rows" not in summary or "model" not in summary:
                raise ToolkitError(f"{path} is not a summary of the main job")
            found.append((path, summary))
    return found


def family_rows(found: list[tuple[Path, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per variant and runner of each summary."""
    rows = []
    for path, summary in found:
        runners: dict[str, list[dict[str, Any]]] = {}
        for row in summary["rows"]:
            runners.setdefault(row["runner"], []).append(row)
        for runner, measured in runners.items():
            rows.append(family_row(path, summary, runner, measured))
    return rows


def family_row(path: Path, summary: dict[str, Any], runner: str, measured: list[dict[str, Any]]) -> dict[str, Any]:
    variant, npu = summary.get("variant") or {}, summary.get("npu_emulation") or {}
    speed = {int(row["batch_size"]): float(row["images_per_s"]) for row in measured}
    best = max(speed, key=lambda batch: speed[batch])
    first = next(row for row in measured if int(row["batch_size"]) == best)  # the accuracy of what would ship
    return {"variant": summary["model"]["model"], "title": variant.get("title", summary["model"]["model"]),
            "checkpoint": Path(summary.get("checkpoint") or "").name,
            "checkpoint_sha256": summary.get("checkpoint_sha256"),
            "runner": runner, "top1": first["top1"], "top5": first["top5"], "images": first["count"],
            "fp16_top1": npu.get("top1"), "fp16_flips": npu.get("top1_flips"), "keep_set": npu.get("keep_dtype_nodes"),
            "params_m": variant.get("params_m"), "gflops": variant.get("gflops"), "images_per_s": speed,
            "per_device": {int(row["batch_size"]): row["per_device"] for row in measured if row.get("per_device")},
            "best_batch": best, "best_images_per_s": speed[best], "measured": measured_when(summary, measured),
            "data": summary.get("data") or {}, "demo": bool(summary.get("demo")), "summary": str(path)}


def measured_when(summary: dict[str, Any], measured: list[dict[str, Any]]) -> str | None:
    """When the row's newest figure was measured: a reused figure keeps the date of the run that measured it."""
    dates = [row.get(key) or summary.get("date") for row in measured
             for key in ("accuracy_reused_from", "throughput_reused_from")]
    return max((date for date in dates if date), default=None)


def data_key(row: dict[str, Any]) -> tuple:
    data = row["data"]
    return data.get("labels_sha256"), data.get("images", row["images"])


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the same images and runner, the largest group first (it is the comparison; the others are apart):
    each row gets its ``group``, ``apart`` and ``on_frontier``."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((data_key(row), row["runner"]), []).append(row)
    ordered = sorted(groups.items(), key=lambda item: -len(item[1]))
    groups = []
    for index, (key, members) in enumerate(ordered):
        edge = frontier(members)
        for row in members:
            row.update(group=index, apart=index > 0, on_frontier=any(row is other for other in edge))
        groups.append({"data": {"labels_sha256": key[0][0], "images": key[0][1]}, "runner": key[1],
                       "variants": [row["variant"] for row in members], "frontier": [row["variant"] for row in edge]})
    return groups


def frontier(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no other beats on both top-1 and best images/s (at least as good on both, better on one), slowest
    first."""
    def beaten(row):
        return any(other is not row and other["top1"] >= row["top1"] and other["best_images_per_s"] >=
                   row["best_images_per_s"] and (other["top1"] > row["top1"] or
                                                 other["best_images_per_s"] > row["best_images_per_s"])
                   for other in rows)

    return [row for row in sorted(rows, key=lambda row: row["best_images_per_s"]) if not beaten(row)]


def choose(rows: list[dict[str, Any]], min_top1: float | None, min_images_per_s: float | None) -> dict[str, Any]:
    """The variant that meets the floors: the most accurate of those fast enough, or (a top-1 floor alone) the
    fastest of those accurate enough; the answer says why, or that none meets them."""
    floors = ([f"top-1 >= {min_top1:g} %"] if min_top1 is not None else []) + (
        [f">= {min_images_per_s:g} images/s"] if min_images_per_s is not None else [])
    meeting = [row for row in rows if (min_top1 is None or row["top1"] >= min_top1)
               and (min_images_per_s is None or row["best_images_per_s"] >= min_images_per_s)]
    if not meeting:
        fastest = max(rows, key=lambda row: row["best_images_per_s"])
        best = max(rows, key=lambda row: row["top1"])
        return {"variant": None, "why": f"none of the {len(rows)} meets {' and '.join(floors)}: the most accurate is "
                                        f"{best['variant']} ({best['top1']:.2f} %), the fastest "
                                        f"{fastest['variant']} ({fastest['best_images_per_s']:.1f} images/s)"}
    floor = " and ".join(floors)
    if len(meeting) == 1:
        pick, reason = meeting[0], f"the only one of the {len(rows)} that meets {floor}"
    elif min_images_per_s is not None:
        pick = max(meeting, key=lambda row: (row["top1"], row["best_images_per_s"]))
        reason = f"the most accurate of the {len(meeting)} that meet {floor}"
    else:
        pick = max(meeting, key=lambda row: (row["best_images_per_s"], row["top1"]))
        reason = f"the fastest of the {len(meeting)} that meet {floor}"
    figures = f"top-1 {pick['top1']:.2f} %, {pick['best_images_per_s']:.1f} images/s at batch {pick['best_batch']}"
    return {"variant": pick["variant"], "why": f"{pick['variant']}: {reason} ({figures})"}


def build_family(work_dirs: Sequence[Path], min_top1: float | None = None,
                 min_images_per_s: float | None = None) -> dict[str, Any]:
    """What family_summary.json holds."""
    from t2t_vit.provenance import now

    rows = family_rows(read_summaries(work_dirs))
    groups = group_rows(rows)
    if min_top1 is not None or min_images_per_s is not None:
        for index, group in enumerate(groups):
            group["choice"] = choose([row for row in rows if row["group"] == index], min_top1, min_images_per_s)
    return {"rows": rows, "groups": groups, "notes": group_notes(groups),
            "floors": {"min_top1": min_top1, "min_images_per_s": min_images_per_s},
            "work_dirs": [str(path) for path in work_dirs], "date": now()}


def group_notes(groups: list[dict[str, Any]]) -> list[str]:
    if len(groups) < 2:
        return []
    data = {(group["data"]["labels_sha256"], group["data"]["images"]) for group in groups}
    runners = {group["runner"] for group in groups}
    parts = [f"{len(data)} sets of images" if len(data) > 1 else "", f"{len(runners)} runners (" +
             ", ".join(sorted(runners)) + ")" if len(runners) > 1 else ""]
    said = " and ".join(part for part in parts if part)
    return [f"these rows were measured on {said}: each group is compared within itself only, the first holding the "
            f"most variants; the others are marked 'apart'"]
