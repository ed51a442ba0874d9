"""The family table as a person reads it (Markdown, one table per group of comparable rows) and as a plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t2t_vit.job.family import FAMILY_JSON, FAMILY_PNG


def cell(value: Any, form: str = "{:.2f}") -> str:
    return "-" if value is None else form.format(value)


def markdown(family: dict[str, Any]) -> str:
    rows = family["rows"]
    batches = sorted({batch for row in rows for batch in row["images_per_s"]})
    lines = []
    for index, group in enumerate(family["groups"]):
        members = [row for row in rows if row["group"] == index]
        data = group["data"]
        where = f"{data['images']} images (labels {str(data['labels_sha256'])[:12]}), runner {group['runner']}"
        head = "apart, not compared with the first group: " if index else ""
        lines += ["", f"{head}{where}" + (" - DEMO, random weights" if any(
            row["demo"] for row in members) else ""),
                  "| variant | checkpoint | top-1 (%) | top-5 (%) | fp16 top-1 (%) (flips) | keep set | params (M) | "
                  "GFLOP (2 per MAC) | " + " | ".join(f"bs{batch} images/s" for batch in batches)
                  + " | best | frontier | measured |",
                  "|---" * (11 + len(batches)) + "|"]
        for row in sorted(members, key=lambda row: -row["best_images_per_s"]):
            fp16 = "-" if row["fp16_top1"] is None else f"{row['fp16_top1']:.2f} ({row['fp16_flips']})"
            speeds = " | ".join(speed_cell(row, batch) for batch in batches)
            lines.append(f"| {row['variant']} ({row['title']}) | {row['checkpoint']} | {row['top1']:.2f} | "
                         f"{row['top5']:.2f} | {fp16} | {cell(row['keep_set'], '{}')} | {cell(row['params_m'])} | "
                         f"{cell(row['gflops'])} | {speeds} | {row['best_images_per_s']:.1f} at bs{row['best_batch']} "
                         f"| {'yes' if row['on_frontier'] else ''} | {str(row['measured'])[:16]} |")
        if group.get("choice"):
            lines.append(f"\nchoice: {group['choice']['why']}")
    lines += ["", *family["notes"], "best: the batch size with the most images/s; frontier: no other variant of the "
              "group is both as accurate and as fast (images/s: pure inference, as ais_bench computes it)"]
    return "\n".join(line for line in lines if line is not None).strip("\n")


def speed_cell(row: dict[str, Any], batch: int) -> str:
    if batch not in row["images_per_s"]:
        return "-"
    chips = row["per_device"].get(batch)
    each = " (" + " + ".join(f"{entry['images_per_s']:.1f}" for entry in chips) + ")" if chips else ""
    return f"{row['images_per_s'][batch]:.1f}{each}"


def plot(family: dict[str, Any], path: Path) -> None:
    """top-1 against the best images/s, one point per row; each group's frontier drawn through its points; rows
    apart (other images or runner) hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t2t_vit.files import atomic_output

    figure, axes = plt.subplots(figsize=(8, 5))
    for index, group in enumerate(family["groups"]):
        members = [row for row in family["rows"] if row["group"] == index]
        label = f"{group['runner']}, {group['data']['images']} images" + (" (apart)" if index else "")
        axes.scatter([row["best_images_per_s"] for row in members], [row["top1"] for row in members], label=label,
                     facecolors="none" if index else f"C{index}", edgecolors=f"C{index}", zorder=3, clip_on=False)
        for rank, row in enumerate(sorted(members, key=lambda row: row["best_images_per_s"])):
            axes.annotate(row["variant"], (row["best_images_per_s"], row["top1"]), textcoords="offset points",
                          xytext=(5, 5 + 9 * (rank % 3)), fontsize=8)  # staggered: close points stay legible
        edge = sorted((row for row in members if row["on_frontier"]), key=lambda row: row["best_images_per_s"])
        axes.plot([row["best_images_per_s"] for row in edge], [row["top1"] for row in edge], linestyle="--",
                  marker="o", markersize=13, markerfacecolor="none", color=f"C{index}", alpha=0.6, clip_on=False,
                  label=f"frontier ({group['runner']}, {group['data']['images']} images)")
    axes.set_xlabel("images/s at the best batch size (pure inference)")
    axes.set_ylabel("top-1 (%)")
    axes.set_ylim(*top1_limits([row["top1"] for row in family["rows"]]))
    axes.set_title("T2T-ViT family: accuracy against speed")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    with atomic_output(path) as temp_path:
        figure.savefig(temp_path, format="png", dpi=100)
    plt.close(figure)


def top1_limits(values: list[float]) -> tuple[float, float]:
    """The top-1 axis: the values with a margin, at least 2 points tall, never below 0 % or above 100 % (equal
    values, such as random weights' 0 %, would otherwise get an axis of -0.04 to 0.04)."""
    low, high = (min(values), max(values)) if values else (0.0, 100.0)
    margin = max(1.0, 0.1 * (high - low))
    return max(0.0, low - margin), min(100.0, high + margin)


def write_family(family: dict[str, Any], out_dir: Path) -> list[Path]:
    """family_summary.json, and the plot where matplotlib is installed; returns what was written."""
    from t2t_vit.provenance import write_json
    from t2t_vit.version_bridge import installed

    written = [Path(out_dir) / FAMILY_JSON]
    write_json(written[0], family)
    if installed("matplotlib"):
        plot(family, Path(out_dir) / FAMILY_PNG)
        written.append(Path(out_dir) / FAMILY_PNG)
    return written
