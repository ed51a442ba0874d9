#!/usr/bin/env python3
"""What an interruption costs: a CPU accuracy pass killed at 75 % and resumed, against one uninterrupted pass.

    python3 benchmarks/bench_resume.py --images 160 --batch 8 --json bench_resume.json

The `matmul` export (the CPU form) of random weights runs over --images uint8 bins made from the shipped
images (repeated under new names), with T2T_ViT_infer.py --resume as the main job runs it, in three
processes measured in one run: an uninterrupted pass; a pass killed with SIGKILL once 75 % of its outputs
are on disk; its re-run. Printed: the seconds of each, the ratio (killed + re-run) / uninterrupted (the
goal is at most 1.1), how many outputs the re-run reused, whether every result equals the uninterrupted
run's bit for bit, and how long a second job takes to be refused on a held work dir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

SHIPPED = REPO_ROOT / "tests" / "data" / "imagenet-sample"


def make_bins(scratch: Path, images: int) -> Path:
    """``images`` uint8 bins: the shipped images preprocessed once, then copied under new names."""
    import T2T_ViT_preprocess

    val = scratch / "val"
    for path in sorted(SHIPPED.glob("*.JPEG")):
        (val / path.name.split("_")[0]).mkdir(parents=True, exist_ok=True)
        (val / path.name.split("_")[0] / path.name).symlink_to(path)
    assert T2T_ViT_preprocess.main(["--data-dir", str(val), "--out-dir", str(scratch / "made"), "--gt-path",
                                    str(scratch / "label.npy"), "--dtype", "uint8", "--no-progress", "-q"]) == 0
    made = sorted((scratch / "made").glob("*.bin"))
    bins = scratch / "bins"
    bins.mkdir()
    for index in range(images):
        shutil.copyfile(made[index % len(made)], bins / f"ILSVRC2012_val_{index + 1:08d}.bin")
    return bins


def export(scratch: Path) -> Path:
    from t2t_vit.config import resolve_data_config
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    model = create_model("matmul")
    model.load_state_dict(scaled_random_state_dict(create_model("einsum"), seed=0))
    path = scratch / "matmul_uint8.onnx"
    export_onnx(model, path, data_config=resolve_data_config(), verify_batch_sizes=(1,), input_dtype="uint8")
    return path


def command(model: Path, bins: Path, output: Path, batch: int) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "T2T_ViT_infer.py"), "--model", str(model), "--input", str(bins),
            "--output", str(output), "--output_dirname", f"bs{batch}", "--batchsize", str(batch), "--resume",
            "--no-progress", "-q"]


def timed_run(arguments: list[str], kill_at: int | None = None, watch: Path | None = None) -> float:
    """Seconds of one process; with ``kill_at``, it is killed (SIGKILL) once ``watch`` holds that many outputs."""
    started = time.perf_counter()
    process = subprocess.Popen(arguments, stdout=subprocess.DEVNULL)
    while kill_at is not None and process.poll() is None:
        if watch.is_dir() and sum(1 for _ in watch.glob("*_0.bin")) >= kill_at:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    code = process.wait()
    seconds = time.perf_counter() - started
    if kill_at is None and code != 0:
        raise SystemExit(f"{' '.join(arguments)} failed with exit code {code}")
    return seconds


def refusal_seconds(scratch: Path) -> float:
    """How long a second main job takes to stop on a work dir another job holds."""
    from t2t_vit.files import exclusive_lock

    work = scratch / "held"
    with exclusive_lock(work / "demo", "--work-dir"):  # the demo's own work dir
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "T2T_ViT_eval.py", "--work-dir", str(work), "--demo"],
                                capture_output=True, text=True, cwd=REPO_ROOT)
        seconds = time.perf_counter() - started
    if result.returncode != 1 or len(result.stderr.strip().splitlines()) != 1:
        raise SystemExit(f"the second job was not refused with one line: {result.returncode} {result.stderr}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--images", type=int, default=160, metavar="N", help="bins in the pass (default: 160)")
    parser.add_argument("--batch", type=int, default=8, metavar="N", help="batch size (default: 8)")
    parser.add_argument("--kill-at", type=float, default=0.75, metavar="F",
                        help="share of the outputs on disk when the pass is killed (default: 0.75)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_resume_"))
    bins, model = make_bins(scratch, args.images), export(scratch)

    whole = timed_run(command(model, bins, scratch / "whole", args.batch))
    kill_at = int(args.images * args.kill_at)
    killed_dir = scratch / "resumed" / f"bs{args.batch}"
    killed = timed_run(command(model, bins, scratch / "resumed", args.batch), kill_at, killed_dir)
    on_disk = sum(1 for _ in killed_dir.glob("*_0.bin"))
    rerun = timed_run(command(model, bins, scratch / "resumed", args.batch))
    summary = json.loads((scratch / "resumed" / f"bs{args.batch}_summary.json").read_text())
    reference = {path.name: path.read_bytes() for path in (scratch / "whole" / f"bs{args.batch}").glob("*_0.bin")}
    resumed = {path.name: path.read_bytes() for path in killed_dir.glob("*_0.bin")}
    figures = {
        "images": args.images, "batch": args.batch, "uninterrupted_s": round(whole, 2),
        "killed_s": round(killed, 2), "outputs_on_disk_when_killed": on_disk, "rerun_s": round(rerun, 2),
        "ratio": round((killed + rerun) / whole, 3),
        "reused_outputs": summary["cpu_runner"]["resume"]["reused_outputs"],
        "computed_samples": summary["cpu_runner"]["resume"]["computed_samples"],
        "bit_identical": resumed == reference and len(reference) == args.images,
        "second_job_refused_s": round(refusal_seconds(scratch), 3),
        "cpu": next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                    ""), "cores": len(os.sched_getaffinity(0)),
    }
    print(f"uninterrupted pass: {whole:.1f} s; killed at {on_disk}/{args.images} outputs after {killed:.1f} s; "
          f"re-run {rerun:.1f} s ({figures['reused_outputs']} outputs reused, {figures['computed_samples']} computed)")
    print(f"(killed + re-run) / uninterrupted = {figures['ratio']:.3f} (goal: at most 1.1); results bit-identical: "
          f"{figures['bit_identical']}; a second job on a held work dir stopped after "
          f"{figures['second_job_refused_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if figures["bit_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
