"""The main job's closing report: accuracy and throughput per batch size, as Markdown, JSON and a plot.

It presents what :func:`build_summary` gathers (from the resolved job, its plan and what each pass measured).

``eval_summary.json`` holds ``rows`` (one per batch size: ``batch_size``, ``top1``, ``top5``, ``count``,
``accuracy_batch_size`` (the batch size the accuracy was measured at), ``images_per_s``,
``compute_ms_mean``, ``runner``, with --device 0,1 ``per_device`` (``[{"device": N, "images_per_s": x}]``; then
``images_per_s`` is the card's figure, their sum) and ``wall_images_per_s`` (null where not measured),
``accuracy_reused_from`` and ``throughput_reused_from``: the date of the earlier run
a figure was reused from, or null when this run measured it), ``accuracy_note``, ``npu_emulation`` (with --emulate-npu), ``bins_dtype``,
``cpu_onnx``, ``model`` (the variant: ``model`` its name, ``tokens_type``, ``embed_dim``, ``depth``, ``img_size``),
``checkpoint`` and ``checkpoint_sha256``, ``data_coverage`` (what part of the labelled images the data
holds, when not all), ``caveats`` (sentences a reader of the figures must know: images left out, a check made on a
sample, batch sizes that ran on the CPU instead of the NPU, reused figures; also printed under the tables),
``left_out`` (``undecodable``: the images --skip-bad left out, each with ``name``, ``source``, ``reason``;
``non_image_files`` and ``unlabelled_images``: counts), ``stage_seconds``, and provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2t_vit.config import MODEL_NAME
from t2t_vit.job.request import VARIANT_SUMMARY

SUMMARY_JSON = "eval_summary.json"
SUMMARY_PNG = "eval_summary.png"


def measurements(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The accuracy measurements behind the rows: one per pass (the CPU's one pass covers several batch sizes),
    each with the batch sizes it stands for."""
    found: dict[tuple[int, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["accuracy_batch_size"], "ais_bench" if row["runner"] == "ais_bench" else "cpu")
        entry = found.setdefault(key, {**{name: row[name] for name in ("top1", "top5", "count")},
                                       "measured_at": row["accuracy_batch_size"], "runner": row["runner"],
                                       "reused_from": row.get("accuracy_reused_from"), "batch_sizes": []})
        entry["batch_sizes"].append(row["batch_size"])
    return list(found.values())


def when(reused_from: str | None) -> str:
    """The 'measured' column: this run, or the earlier run a figure was reused from."""
    return "this run" if reused_from is None else f"reused, from {reused_from}"


def markdown_tables(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    lines = ["| accuracy pass | stands for batch sizes | top-1 (%) | top-5 (%) | images | measured |",
             "|---|---|---|---|---|---|"]
    bad = len((summary.get("left_out") or {}).get("undecodable") or [])
    skipped = f" ({bad} undecodable left out: caveats)" if bad else ""
    lines += [f"| batch {m['measured_at']}, {m['runner']} | {', '.join(map(str, m['batch_sizes']))} | {m['top1']:.3f} | "
              f"{m['top5']:.3f} | {m['count']}{skipped} | {when(m['reused_from'])} |" for m in measurements(rows)]
    lines += ["", summary["accuracy_note"]]
    npu = summary.get("npu_emulation")
    if npu:
        lines += ["", "| NPU fp16 emulated on the CPU | top-1 (%) | top-5 (%) | images | non-finite | max abs diff to fp32 "
                  "| top-1 flips |", "|---|---|---|---|---|---|---|",
                  f"| force_fp16 + {Path(npu['keep_dtype']).name}, batch {npu['batch_size']} | {npu['top1']:.3f} | "
                  f"{npu['top5']:.3f} | {npu['count']} | {npu['nonfinite']} | {npu['max_abs_diff']:.4g} | "
                  f"{npu['top1_flips']} |"]
        if "keep_dtype_nodes" in npu:
            origin = npu["nan_origin_nothing_kept"]
            sample = f" (on the first {npu['nan_origin_images']} images)" if "nan_origin_images" in npu else ""
            found = (f"the first non-finite value comes from {origin['node']} ({origin['op_type']})"
                     + (f": {'; '.join(origin['inputs'])}" if origin["inputs"] else "")
                     if origin else "every emulated value stays finite")
            lines += ["", f"{Path(npu['keep_dtype']).name} keeps {npu['keep_dtype_nodes']} nodes in fp32. With nothing "
                          f"kept{sample}: {found}"]
    if any(r.get("per_device") for r in rows):
        lines += ["", *device_table(rows)]
    else:
        lines += ["", "| batch size | images/s | ms per batch | runner | measured |", "|---|---|---|---|---|"]
        lines += [f"| {r['batch_size']} | {r['images_per_s']:.1f} | {r['compute_ms_mean']:.1f} | {r['runner']} | "
                  f"{when(r.get('throughput_reused_from'))} |" for r in rows]
    lines += ["", "images/s: pure inference (no file reading or writing), 1000 x batch size / mean time of one batch, "
                  "as ais_bench computes it"]
    return "\n".join(lines)


def device_table(rows: list[dict[str, Any]]) -> list[str]:
    """The throughput of a multi-device run: each chip's figure (what a per-chip table such as the seed's FPS
    compares with) and the card's, their sum (ais_bench's summary throughput), with the wall-clock rate beside."""
    devices = [entry["device"] for entry in rows[0]["per_device"]]
    heads = " | ".join(f"device {device} images/s (one chip)" for device in devices)
    lines = [f"| batch size | {heads} | card images/s (sum of {len(devices)}) | wall-clock images/s together | "
             f"ms per batch (per chip) | runner | measured |", "|---" * (len(devices) + 6) + "|"]
    for r in rows:
        figures = {entry["device"]: entry["images_per_s"] for entry in r.get("per_device") or []}
        cells = " | ".join(f"{figures[device]:.1f}" if device in figures else "-" for device in devices)
        wall = r.get("wall_images_per_s")
        lines.append(f"| {r['batch_size']} | {cells} | {r['images_per_s']:.1f} | "
                     f"{'not measured' if wall is None else f'{wall:.1f}'} | {r['compute_ms_mean']:.1f} | {r['runner']} "
                     f"| {when(r.get('throughput_reused_from'))} |")
    lines += ["", f"card images/s: the sum of each device's rate over {len(devices)} devices, as ais_bench's summary "
                  f"throughput; compare one chip's column, not the card's, with a per-chip table (the seed's FPS is per "
                  f"chip). Wall-clock: every timed image over the span of all devices' timed runs (the CPU runner's, or the "
                  f"start and end times today's ais_bench prints; an older ais_bench run one per chip prints none)"]
    return lines


def stage_table(stage_seconds: dict[str, float]) -> str:
    from t2t_vit.progress import format_seconds

    lines = ["| stage | elapsed |", "|---|---|"]
    lines += [f"| {stage} | {f'{seconds:.1f} s' if seconds < 60 else format_seconds(seconds)} |"
              for stage, seconds in stage_seconds.items()]
    return "\n".join(lines)


def figure_of(rows: list[dict[str, Any]], title: str) -> Any:
    """The plot: images/s per batch size (from zero) beside top-1 / top-5 of each accuracy pass."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["batch_size"] for row in rows]
    figure, (speed, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    multi = bool(rows[0].get("per_device"))
    speed.plot(sizes, [row["images_per_s"] for row in rows], marker="o",
               label=f"card (sum of {len(rows[0]['per_device'])} devices)" if multi else None)
    if multi:
        for index, entry in enumerate(rows[0]["per_device"]):
            speed.plot(sizes, [row["per_device"][index]["images_per_s"] for row in rows], marker=".", linestyle="--",
                       label=f"device {entry['device']} (one chip)")
        speed.legend(loc="lower right")
    speed.set_xscale("log", base=2)
    speed.set_xticks(sizes, [str(size) for size in sizes])
    speed.set_ylim(bottom=0)  # from zero, so run-to-run noise does not look like a trend
    speed.set_xlabel("batch size")
    speed.set_ylabel("images/s")
    speed.set_title("throughput (pure inference)")
    speed.grid(True, alpha=0.3)
    accuracy_panel(accuracy, measurements(rows))
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def accuracy_panel(axes: Any, measured: list[dict[str, Any]]) -> None:
    """One pair of bars (top-1, top-5) per accuracy pass, each labelled with its value, so that a 0 % bar still
    says what it is; the x labels say which batch sizes a pass stands for."""
    positions = list(range(len(measured)))
    for offset, key, label in ((-0.2, "top1", "top-1"), (0.2, "top5", "top-5")):
        values = [m[key] for m in measured]
        bars = axes.bar([p + offset for p in positions], values, width=0.4, label=label)
        axes.bar_label(bars, labels=[f"{label}\n{value:.1f} %" for value in values], padding=2)  # matplotlib 3.4+
    axes.set_xticks(positions, [f"batch {m['measured_at']}\n(for {', '.join(map(str, m['batch_sizes']))})"
                                for m in measured])
    axes.set_xlim(-0.8, len(measured) - 0.2)
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 110)
    images = sorted({m["count"] for m in measured})
    axes.set_title(f"accuracy ({', '.join(map(str, images))} images)")
    axes.legend(loc="upper right")


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from t2t_vit.files import atomic_output

    figure = figure_of(rows, title)
    with atomic_output(path) as temp_path:
        figure.savefig(temp_path, format="png", dpi=100)
    plt.close(figure)


def write_report(work_dir: Path, summary: dict[str, Any]) -> None:
    """Print the tables and write eval_summary.json, eval_summary_<variant>.json and eval_summary.png; then, when
    the work dir holds more than one variant, the family table."""
    from t2t_vit.provenance import write_json
    from t2t_vit.version_bridge import installed

    variant = (summary.get("model") or {}).get("model", MODEL_NAME)
    title = f"{variant} on {summary['machine']['cpu']} ({summary['machine']['cores']} cores)"
    written = [work_dir / SUMMARY_JSON]
    if installed("matplotlib"):
        plot(summary["rows"], work_dir / SUMMARY_PNG, title + (" - DEMO, random weights" if summary["demo"] else ""))
        written.append(work_dir / SUMMARY_PNG)
    else:  # optional on an Ascend host: the tables and the JSON hold the same figures
        print(f"no {SUMMARY_PNG}: matplotlib is not installed here (pip install matplotlib)")
    write_json(work_dir / SUMMARY_JSON, summary)
    write_json(work_dir / VARIANT_SUMMARY.format(variant), summary)
    written.insert(1, work_dir / VARIANT_SUMMARY.format(variant))
    print("\n== summary")
    sha = summary.get("checkpoint_sha256")
    if summary.get("checkpoint"):
        print(f"checkpoint {summary['checkpoint']}" + (f" (sha256 {sha})" if sha else ""))
    print(f"model: {variant}" + (f", {summary['model']['img_size']}x{summary['model']['img_size']} input"
                                 if summary.get("model") else ""))
    if summary.get("data_coverage"):
        print(f"data: {summary['data_coverage']}")
    print(markdown_tables(summary))
    if summary.get("caveats"):
        print("\ncaveats:\n" + "\n".join(f"- {note}" for note in summary["caveats"]))
    if summary["note"]:
        print(f"\n{summary['note']}")
    print("\n" + stage_table(summary["stage_seconds"]))
    print(f"\nwrote {' and '.join(map(str, written))}")
    family_table(work_dir)


def family_table(work_dir: Path) -> None:
    """When the work dir holds more than one variant's summary: the family table, and family_summary.*."""
    from t2t_vit.job.family import build_family, variant_summaries
    from t2t_vit.job.family_report import markdown, write_family

    if len(variant_summaries(work_dir)) < 2:
        return
    family = build_family([work_dir])
    written = write_family(family, work_dir)
    print(f"\n== the family measured in {work_dir} (T2T_ViT_family.py)\n{markdown(family)}")
    print(f"\nwrote {' and '.join(map(str, written))}")


def left_out(manifest: dict[str, Any]) -> dict[str, Any]:
    """The images of the data that were not scored, from the bins' manifest: undecodable ones left out by
    --skip-bad (name, source, reason), and counts of non-image files and of images without a label."""
    return {"undecodable": list(manifest.get("bad") or []), "non_image_files": len(manifest.get("ignored") or []),
            "unlabelled_images": len(manifest.get("unlabelled") or [])}


def caveats(job, models: dict[int, tuple[Path, str]], rows: list[dict[str, Any]], manifest: dict[str, Any],
            npu: dict[str, Any] | None) -> list[str]:
    """What a reader of the figures must know, one sentence each: images left out, a check made on a sample, batch
    sizes that ran on the CPU although the NPU was asked for, figures reused from earlier runs."""
    from t2t_vit.job.om import have_ais_bench
    from t2t_vit.progress import plural

    notes, bad = [], manifest.get("bad") or []
    if bad:
        named = "; ".join(f"{entry['source']} ({entry['reason']})" for entry in bad[:10])
        notes.append(f"{plural(len(bad), 'undecodable image')} left out of every figure (--skip-bad): {named}"
                     + (f"; and {len(bad) - 10} more (the bins' manifest lists them)" if len(bad) > 10 else ""))
    if manifest.get("coverage"):
        notes.append(f"data: {manifest['coverage']}")
    if npu and "nan_origin_images" in npu:
        notes.append(f"NPU emulation: where the values turn non-finite with nothing kept was checked on the first "
                     f"{plural(npu['nan_origin_images'], 'image')} only (gen_cfg.py --explain checks more)")
    on_cpu = [batch for batch, (_, runner) in models.items() if runner != "ais_bench"]
    if on_cpu and (job.request.devices or job.request.om_dir is not None):
        why = ("no CANN and ais_bench on this host" if not have_ais_bench() else
               f"no .om in {job.paths.om_dir} built from this run's export")
        notes.append(f"batch {', '.join(map(str, on_cpu))} ran on the CPU ({models[on_cpu[0]][1]}), not the NPU: "
                     f"{why}; these are CPU figures")
    reused = sorted({row[key] for row in rows for key in ("accuracy_reused_from", "throughput_reused_from")
                     if row.get(key)})
    if reused:
        notes.append(f"some figures are reused from earlier runs ({', '.join(reused)}): the 'measured' columns say "
                     f"which")
    return notes


def variant_facts(job) -> dict[str, Any]:
    """The family table's columns of the variant: its published name and checkpoint, params and GFLOPs (counted
    from its float export where OpenVINO is installed; else null)."""
    from t2t_vit.model.export import read_metadata
    from t2t_vit.model.flops import count_parameters, graph_flops
    from t2t_vit.version_bridge import installed

    spec = job.spec
    gflops = graph_flops(job.paths.sum_onnx, spec.img_size)[0] if installed("openvino") else None
    recorded = read_metadata(job.paths.sum_onnx).get("params")  # the export's count (older exports: count now)
    params = int(recorded) if recorded else count_parameters(spec)
    return {"title": spec.title, "published": list(spec.checkpoints), "params_m": params / 1e6, "gflops": gflops}


def build_summary(job, models: dict[int, tuple[Path, str]], plan, state, scores: dict[int, dict[str, Any]],
                  perf: dict[int, dict[str, Any]], npu_emulation: dict[str, Any] | None = None,
                  digest=None) -> dict[str, Any]:
    """What eval_summary.json holds: a row per batch size, the accuracy from the pass that covers it, each figure
    marked with the date of the earlier run it was reused from (None: measured by this run). ``plan`` is the run's
    :class:`t2t_vit.job.plan.Plan`, ``state`` its :class:`t2t_vit.job.run.JobState`."""
    from t2t_vit.data.bins import read_manifest
    from t2t_vit.job.om import cpu_backend
    from t2t_vit.job.request import DEMO_NOTE
    from t2t_vit.provenance import machine, now, versions

    request, accuracy = job.request, plan.scored
    cpu_pass = next((item.batch for item in accuracy if item.runner != "ais_bench"), None)
    accuracy_reused = {item.batch: state.reused_from(item) for item in accuracy}
    throughput_reused = {item.batch: state.reused_from(item) for item in plan.throughput}
    rows = []
    for batch in job.batch_sizes:
        model, runner = models[batch]
        measured_at = batch if batch in scores and (request.accuracy_all or runner == "ais_bench") else cpu_pass
        accuracy_row = scores[measured_at]
        rows.append({"batch_size": batch, "top1": accuracy_row["top1"], "top5": accuracy_row["top5"],
                     "count": accuracy_row["count"], "accuracy_batch_size": measured_at,
                     "images_per_s": perf[batch]["throughput"],
                     "compute_ms_mean": perf[batch]["NPU_compute_time"]["mean"], "runner": runner,
                     "model": str(model), "accuracy_reused_from": accuracy_reused.get(measured_at),
                     "throughput_reused_from": throughput_reused.get(batch)})
        if perf[batch].get("per_device"):  # the card: images_per_s is the sum of the devices' figures
            rows[-1].update(per_device=perf[batch]["per_device"],
                            wall_images_per_s=perf[batch].get("wall_images_per_s"))
    if request.accuracy_all:
        accuracy_note = "accuracy measured at every batch size"
    elif cpu_pass is not None:
        accuracy_note = (f"CPU accuracy measured once, at batch {cpu_pass}: the CPU logits do not depend on the "
                         f"batch size (--accuracy-all measures every batch size)")
    else:
        accuracy_note = "accuracy measured at every batch size (each .om is its own compiled graph)"
    manifest = read_manifest(job.paths.bins_dir) or {}
    return {"rows": rows, "accuracy_note": accuracy_note, "npu_emulation": npu_emulation,
            "caveats": caveats(job, models, rows, manifest, npu_emulation), "left_out": left_out(manifest),
            "backend": cpu_backend(job, models), "cpu_onnx": str(job.paths.cpu_onnx), "bins_dtype": job.dtype,
            "model": job.spec.record(), "checkpoint": str(job.pth_path),
            "checkpoint_sha256": digest(job.pth_path) if digest is not None else None,
            "data_dir": str(job.data_dir), "data_coverage": manifest.get("coverage", ""),
            "demo": request.demo, "note": DEMO_NOTE if request.demo else "", "devices": job.device_list,
            "variant": variant_facts(job), "data": {"images": rows[0]["count"], "img_size": job.spec.img_size,
                                                    "labels_sha256": digest(job.paths.labels_path) if digest else None},
            "stage_seconds": state.stage_seconds, "date": now(), "machine": machine(), "versions": versions()}
