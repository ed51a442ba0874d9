"""The main job's closing report: accuracy and throughput per batch size, as Markdown, JSON and a plot.

    python3 -m t2t_vit.evalreport --work-dir work --batch-sizes "1 4 8" --backend openvino

Reads ``<work>/acc_bs<N>.json`` (from T2T_ViT_postprocess.py) and ``<work>/perf/bs<N>_summary.json``
(pure inference, ais_bench's summary) for each batch size, prints the two tables, and writes
``<work>/eval_summary.json`` and ``<work>/eval_summary.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def collect(work_dir: Path, batch_sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for batch_size in batch_sizes:
        accuracy = json.loads((work_dir / f"acc_bs{batch_size}.json").read_text())
        perf = json.loads((work_dir / "perf" / f"bs{batch_size}_summary.json").read_text())
        rows.append({"batch_size": batch_size, "top1": accuracy["top1"], "top5": accuracy["top5"],
                     "count": accuracy["count"], "images_per_s": perf["throughput"],
                     "compute_ms_mean": perf["NPU_compute_time"]["mean"],
                     "runner": perf.get("backend", "ais_bench")})
    return rows


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    lines = ["| batch size | top-1 (%) | top-5 (%) | images |", "|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['top1']:.3f} | {r['top5']:.3f} | {r['count']} |" for r in rows]
    lines += ["", "| batch size | images/s | compute ms / batch | runner |", "|---|---|---|---|"]
    lines += [f"| {r['batch_size']} | {r['images_per_s']:.2f} | {r['compute_ms_mean']:.1f} | {r['runner']} |"
              for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t2t_vit.files import atomic_output

    sizes = [row["batch_size"] for row in rows]
    figure, (speed, accuracy) = plt.subplots(1, 2, figsize=(10, 4))
    speed.plot(sizes, [row["images_per_s"] for row in rows], marker="o")
    speed.set_xscale("log", base=2)
    speed.set_xticks(sizes, [str(size) for size in sizes])
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
    with atomic_output(path) as temp_path:
        figure.savefig(temp_path, format="png", dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.provenance import machine, now, versions, write_json

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--work-dir", required=True, metavar="DIR")
    parser.add_argument("--batch-sizes", required=True, metavar="'1 4 8'")
    parser.add_argument("--backend", default="", metavar="NAME", help="CPU backend used (recorded)")
    parser.add_argument("--cpu-onnx", default="", metavar="FILE", help="the ONNX the CPU runner used (recorded)")
    parser.add_argument("--checkpoint", default="", metavar="FILE")
    parser.add_argument("--data-dir", default="", metavar="DIR")
    parser.add_argument("--demo", action="store_true", help="the run used demo data and random weights")
    args = parser.parse_args(argv)
    work_dir = Path(args.work_dir)
    batch_sizes = [int(size) for size in args.batch_sizes.split()]
    try:
        rows = collect(work_dir, batch_sizes)
    except (OSError, KeyError, ValueError) as error:
        print(f"error: cannot collect the results in {work_dir}: {error}", file=sys.stderr)
        return 1
    note = ("DEMO: random weights and synthetic images, the accuracy means nothing" if args.demo else "")
    summary = {"rows": rows, "backend": args.backend, "cpu_onnx": args.cpu_onnx, "checkpoint": args.checkpoint,
               "data_dir": args.data_dir, "demo": args.demo, "note": note, "date": now(), "machine": machine(),
               "versions": versions()}
    write_json(work_dir / "eval_summary.json", summary)
    title = f"T2T-ViT-14 on {summary['machine']['cpu']} ({summary['machine']['cores']} cores)"
    plot(rows, work_dir / "eval_summary.png", title + (" - DEMO, random weights" if args.demo else ""))
    print(markdown_tables(rows))
    if note:
        print(f"\n{note}")
    print(f"\nwrote {work_dir / 'eval_summary.json'} and {work_dir / 'eval_summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
