#!/usr/bin/env python3
"""Full-scale rehearsal of the main job: T2T_ViT_eval.sh on N images, timed per stage, with the cost of 50,000.

    python3 benchmarks/bench_mainjob.py                          # 2,000 images, batch sizes 1 4 8 16 32 64
    python3 benchmarks/bench_mainjob.py --images 500 --compare-accuracy-all --json bench_mainjob.json

The images are the 26 real ones shipped in tests/data, linked again and again under distinct names
(``<synset>_<words>_rNNNNN.JPEG``) into a val layout; the checkpoint has random weights unless
--pth-path is given (speed does not depend on the weights). The job runs as a user runs it, in a
subprocess, from an empty work dir. Reported: wall time per stage (from eval_summary.json), the
job's wall time, the peak memory of its largest process, the disk of the bins and of the whole work
dir, and the extrapolation to the 50,000 ImageNet val images (preprocess and the accuracy pass scale
with the images; the export and the throughput runs do not).

The job runs with its default uint8 bins. Then the preprocess stage alone (T2T_ViT_preprocess.py, as a
user runs it) makes the same images' bins in each dtype, uint8 and float32 (the ModelZoo layout), into
fresh folders: their disk and preprocess time are printed side by side, with the ratios.

--compare-accuracy-all then runs the job again in the same work dir with --accuracy-all, which reuses
the bins, the exports and the one accuracy pass and adds a pass at every other batch size: what the
job did before it measured CPU accuracy once. The ratio of the two jobs' inference times is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SHIPPED = REPO_ROOT / "tests" / "data" / "imagenet-sample"
FULL_VAL = 50_000


def disk_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` hold (links not followed)."""
    return sum(entry.stat().st_size for entry in folder.rglob("*") if entry.is_file() and not entry.is_symlink())


def run_job(work: Path, args: list[str]) -> tuple[float, dict]:
    env = {**os.environ, "PYTHON": sys.executable}
    started = time.perf_counter()
    result = subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_eval.sh"), "--work-dir", str(work), *args], env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: the main job failed (exit {result.returncode})")
    return wall, json.loads((work / "eval_summary.json").read_text())


def inference_seconds(stages: dict[str, float]) -> tuple[float, float]:
    """Seconds in accuracy passes and in throughput runs."""
    accuracy = sum(seconds for stage, seconds in stages.items() if stage.startswith("accuracy at"))
    throughput = sum(seconds for stage, seconds in stages.items() if stage.startswith("throughput at"))
    return accuracy, throughput


def preprocess_both(val: Path, scratch: Path, images: int) -> dict[str, dict[str, float]]:
    """The preprocess stage alone in each dtype, timed as a user runs it; bins removed after measuring."""
    figures = {}
    for dtype in ("uint8", "float32"):
        out, labels = scratch / f"bins_{dtype}", scratch / f"label_{dtype}.npy"
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), "--data-dir", str(val),
                                 "--out-dir", str(out), "--gt-path", str(labels), "--dtype", dtype, "--no-progress",
                                 "-q"])
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise SystemExit(f"error: the {dtype} preprocess failed (exit {result.returncode})")
        bins = disk_bytes(out) - (out / "manifest.json").stat().st_size
        figures[dtype] = {"seconds": seconds, "images_per_s": images / seconds, "bins_bytes": bins,
                          "bin_bytes_each": bins / images, "bins_bytes_50000": bins * FULL_VAL / images,
                          "seconds_50000": seconds * FULL_VAL / images}
        shutil.rmtree(out)
    return figures


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.job.demo import make_checkpoint, replicate_val_tree
    from t2t_vit.job.resolve import BINS_DIRS
    from t2t_vit.progress import format_seconds

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000, metavar="N", help="images (default: 2000)")
    parser.add_argument("--batch-sizes", default="1 4 8 16 32 64", metavar="'1 4 8'",
                        help="batch sizes (default: '1 4 8 16 32 64')")
    parser.add_argument("--loop", type=int, default=6, metavar="N", help="timed runs per batch size (default: 6)")
    parser.add_argument("--pth-path", metavar="CKPT", help="checkpoint (default: random weights)")
    parser.add_argument("--work-dir", type=Path, metavar="DIR", help="keep the run here (default: a temporary folder)")
    parser.add_argument("--compare-accuracy-all", action="store_true",
                        help="also run --accuracy-all in the same work dir and compare the inference times")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="bench_mainjob_"))
    work = args.work_dir or scratch / "work"
    try:
        val = scratch / "val"
        replicate_val_tree(val, sorted(SHIPPED.glob("*.JPEG")), args.images)
        checkpoint = Path(args.pth_path) if args.pth_path else make_checkpoint(scratch / "random.pth.tar")
        job_args = ["--pth-path", str(checkpoint), "--data-dir", str(val), "--batch-sizes", args.batch_sizes,
                    "--loop", str(args.loop)]
        wall, summary = run_job(work, job_args)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        stages = summary["stage_seconds"]
        bins_dir = work / BINS_DIRS["uint8"]
        bins_bytes = disk_bytes(bins_dir) - (bins_dir / "manifest.json").stat().st_size
        figures = {"images": args.images, "batch_sizes": args.batch_sizes, "loop": args.loop, "wall_s": wall,
                   "stage_seconds": stages, "peak_memory_mb": peak_mb, "bins_bytes": bins_bytes,
                   "work_dir_bytes": disk_bytes(work), "bin_bytes_each": bins_bytes / args.images}
        scale = FULL_VAL / args.images
        preprocess_s = sum(seconds for stage, seconds in stages.items() if stage.startswith("preprocess"))
        export_s = sum(seconds for stage, seconds in stages.items() if stage.startswith("export"))
        accuracy_s, throughput_s = inference_seconds(stages)
        full = {"preprocess_s": preprocess_s * scale, "export_s": export_s, "accuracy_pass_s": accuracy_s * scale,
                "throughput_s": throughput_s, "bins_bytes": bins_bytes * scale}
        full["total_s"] = full["preprocess_s"] + full["export_s"] + full["accuracy_pass_s"] + full["throughput_s"]
        figures["extrapolated_50000"] = full

        print(f"\nmain job on {args.images} images, batch sizes {args.batch_sizes}, loop {args.loop}: "
              f"{format_seconds(wall)} wall, peak memory {peak_mb:.0f} MB, bins {bins_bytes / 1e9:.2f} GB "
              f"({bins_bytes / args.images:,.0f} bytes each), work dir {figures['work_dir_bytes'] / 1e9:.2f} GB")
        print("| stage | seconds |\n|---|---|")
        for stage, seconds in stages.items():
            print(f"| {stage} | {seconds:.1f} |")
        print(f"\nextrapolated to {FULL_VAL:,} images: preprocess {format_seconds(full['preprocess_s'])}, export "
              f"{format_seconds(full['export_s'])}, the accuracy pass {format_seconds(full['accuracy_pass_s'])}, "
              f"throughput {format_seconds(full['throughput_s'])}: about {format_seconds(full['total_s'])} in all; "
              f"bins {full['bins_bytes'] / 1e9:.1f} GB")

        dtypes = preprocess_both(val, scratch, args.images)
        figures["preprocess_by_dtype"] = dtypes
        print(f"\npreprocess alone, {args.images} images, {os.cpu_count()} cores:")
        print("| bins | bytes each | disk | at 50,000 | preprocess s | images/s |\n|---|---|---|---|---|---|")
        for dtype, row in dtypes.items():
            print(f"| {dtype} | {row['bin_bytes_each']:,.0f} | {row['bins_bytes'] / 1e9:.3f} GB | "
                  f"{row['bins_bytes_50000'] / 1e9:.1f} GB | {row['seconds']:.1f} | {row['images_per_s']:.0f} |")
        print(f"uint8 / float32: disk {dtypes['uint8']['bins_bytes'] / dtypes['float32']['bins_bytes']:.3f}x "
              f"(1/{dtypes['float32']['bins_bytes'] / dtypes['uint8']['bins_bytes']:.2f}), preprocess time "
              f"{dtypes['uint8']['seconds'] / dtypes['float32']['seconds']:.2f}x")

        if args.compare_accuracy_all:
            all_wall, all_summary = run_job(work, [*job_args, "--accuracy-all"])
            all_accuracy = sum(seconds for stage, seconds in all_summary["stage_seconds"].items()
                               if stage.startswith("accuracy at"))
            # The second run reused the one pass; the passes of the old flow are all of them together.
            before_accuracy = all_accuracy + accuracy_s
            ratio_accuracy = accuracy_s / before_accuracy
            ratio_inference = (accuracy_s + throughput_s) / (before_accuracy + throughput_s)
            figures["accuracy_all"] = {"wall_s": all_wall, "stage_seconds": all_summary["stage_seconds"],
                                       "accuracy_seconds_all_batch_sizes": before_accuracy,
                                       "ratio_accuracy_time": ratio_accuracy, "ratio_inference_time": ratio_inference,
                                       "rows_agree": all(row["top1"] == summary["rows"][0]["top1"]
                                                         for row in all_summary["rows"])}
            print(f"\naccuracy passes: one pass {accuracy_s:.1f} s against {before_accuracy:.1f} s for a pass at "
                  f"every batch size: {ratio_accuracy:.2f}x (1/{1 / ratio_accuracy:.1f}); inference with the "
                  f"throughput runs: {ratio_inference:.2f}x (1/{1 / ratio_inference:.1f}); top-1 the same at every "
                  f"batch size: {figures['accuracy_all']['rows_agree']}")
        if args.json:
            from t2t_vit.provenance import provenance, write_json

            write_json(args.json, {"benchmark": "mainjob", **figures, **provenance(vars(args))})
    finally:
        if args.work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            shutil.rmtree(scratch / "val", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
