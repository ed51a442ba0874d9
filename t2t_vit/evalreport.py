"""The main job's closing report: accuracy and throughput per batch size, as Markdown, JSON and a plot.

It presents what :func:`t2t_vit.evaljob.build_summary` measured, and imports nothing of the job.

``eval_summary.json`` holds ``rows`` (one per batch size: ``batch_size``, ``top1``, ``top5``, ``count``,
``accuracy_batch_size`` (the batch size the accuracy was measured at), ``images_per_s``,
``compute_ms_mean``, ``runner``), ``accuracy_note``, ``npu_emulation`` (with --emulate-npu), ``bins_dtype``,
``cpu_onnx``, ``stage_seconds``, and provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUMMARY_JSON = "eval_summary.json"
SUMMARY_PNG = "eval_summary.png"


def markdown_tables(summary: dict[str, Any]) -> str:
    rows = summary["rows"]
    lines = ["| batch size | top-1 (%) | top-5 (%) | images | measured at batch |", "|---|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['top1']:.3f} | {r['top5']:.3f} | {r['count']} | {r['accuracy_batch_size']} |"
              for r in rows]
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
            lines += ["", f"{Path(npu['keep_dtype']).name} keeps {npu['keep_dtype_nodes']} nodes in fp32. With nothing "
                          f"kept: " + (f"the first non-finite value comes from {origin['node']} ({origin['op_type']})"
                                       + (f": {'; '.join(origin['inputs'])}" if origin["inputs"] else "")
                                       if origin else "every emulated value stays finite")]
    lines += ["", "| batch size | images/s | compute ms / batch | runner |", "|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['images_per_s']:.2f} | {r['compute_ms_mean']:.1f} | {r['runner']} |"
              for r in rows]
    return "\n".join(lines)


def stage_table(stage_seconds: dict[str, float]) -> str:
    from t2t_vit.progress import format_seconds

    lines = ["| stage | elapsed |", "|---|---|"]
    lines += [f"| {stage} | {format_seconds(seconds)} ({seconds:.1f} s) |" for stage, seconds in stage_seconds.items()]
    return "\n".join(lines)


def figure_of(rows: list[dict[str, Any]], title: str) -> Any:
    """The plot: images/s per batch size (from zero) beside top-1 / top-5 per batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [row["batch_size"] for row in rows]
    figure, (speed, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    speed.plot(sizes, [row["images_per_s"] for row in rows], marker="o")
    speed.set_xscale("log", base=2)
    speed.set_xticks(sizes, [str(size) for size in sizes])
    speed.set_ylim(bottom=0)  # from zero, so run-to-run noise does not look like a trend
    speed.set_xlabel("batch size")
    speed.set_ylabel("images/s")
    speed.set_title("throughput")
    speed.grid(True, alpha=0.3)
    positions = range(len(rows))
    accuracy.bar([p - 0.2 for p in positions], [row["top1"] for row in rows], width=0.4, label="top-1")
    accuracy.bar([p + 0.2 for p in positions], [row["top5"] for row in rows], width=0.4, label="top-5")
    accuracy.set_xticks(list(positions), [str(size) for size in sizes])
    accuracy.set_xlabel("batch size")
    accuracy.set_ylabel("accuracy (%)")
    accuracy.set_ylim(0, 100)
    accuracy.set_title("accuracy")
    accuracy.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt

    from t2t_vit.files import atomic_output

    figure = figure_of(rows, title)
    with atomic_output(path) as temp_path:
        figure.savefig(temp_path, format="png", dpi=100)
    plt.close(figure)


def write_report(work_dir: Path, summary: dict[str, Any]) -> None:
    """Print the tables and write eval_summary.json and eval_summary.png."""
    from t2t_vit.provenance import write_json
    from t2t_vit.version_bridge import installed

    title = f"T2T-ViT-14 on {summary['machine']['cpu']} ({summary['machine']['cores']} cores)"
    written = [work_dir / SUMMARY_JSON]
    if installed("matplotlib"):
        plot(summary["rows"], work_dir / SUMMARY_PNG, title + (" - DEMO, random weights" if summary["demo"] else ""))
        written.append(work_dir / SUMMARY_PNG)
    else:  # optional on an Ascend host: the tables and the JSON hold the same figures
        print(f"no {SUMMARY_PNG}: matplotlib is not installed here (pip install matplotlib)")
    write_json(work_dir / SUMMARY_JSON, summary)
    print("\n== summary")
    print(markdown_tables(summary))
    if summary["note"]:
        print(f"\n{summary['note']}")
    print("\n" + stage_table(summary["stage_seconds"]))
    print(f"\nwrote {' and '.join(map(str, written))}")
