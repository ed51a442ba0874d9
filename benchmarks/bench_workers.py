#!/usr/bin/env python3
"""What the guarded pool costs: the preprocess stage's own work through ``t2t_vit.workers.guarded_map`` against
the same work through ``multiprocessing.Pool.imap_unordered`` (chunks of 4, as the stage used before the guard),
in one run, and how fast a dead worker ends the run.

    python3 benchmarks/bench_workers.py                      # the 26 shipped images, each linked 8 times
    python3 benchmarks/bench_workers.py --data-dir ../shared/data/imagenet-sample --copies 2

Both paths decode, transform and write the same bins (uint8 by default) into fresh folders; the rounds alternate
(this machine is shared and drifts) and the median images/s of each is reported, with their ratio. Then a run
whose task kills its own worker (SIGKILL, as the OOM killer does) is timed from the kill to the error.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_preprocess import SHIPPED, layout  # noqa: E402
from t2t_vit.data import preprocess  # noqa: E402
from t2t_vit.config import resolve_data_config  # noqa: E402
from t2t_vit.data.dataset import discover_images  # noqa: E402
from t2t_vit.workers import WorkerDied, guarded_map  # noqa: E402


def tasks_for(data_dir: Path, out_dir: Path, dtype: str) -> list:
    out_dir.mkdir(parents=True)
    return [(index, item.file, str(out_dir / f"{item.name}.bin"), dtype)
            for index, item in enumerate(discover_images(data_dir).items)]


def through_pool(tasks: list, workers: int, data_config: dict) -> None:
    with multiprocessing.Pool(workers, preprocess._set_transform, (data_config,)) as pool:
        for _ in pool.imap_unordered(preprocess._process, tasks, chunksize=4):
            pass


def through_guard(tasks: list, workers: int, data_config: dict) -> None:
    for _ in guarded_map(preprocess._process, tasks, workers, "preprocess", preprocess._set_transform, (data_config,)):
        pass


KILL_RECORD = "BENCH_WORKERS_KILLED_AT"


def _kill_self(task: int) -> int:
    if task == 20:
        Path(os.environ[KILL_RECORD]).write_text(repr(time.time()))  # when the worker dies, for the parent
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.01)
    return task


def seconds_to_notice_a_death(workers: int, scratch: Path) -> float:
    """From a worker's SIGKILL to the WorkerDied in the parent (the old pool waited here forever)."""
    os.environ[KILL_RECORD] = str(scratch / "killed_at")
    try:
        for _ in guarded_map(_kill_self, range(1000), workers, "bench"):
            pass
    except WorkerDied:
        return time.time() - float((scratch / "killed_at").read_text())
    raise SystemExit("error: the killed worker went unnoticed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=SHIPPED, metavar="DIR",
                        help="ImageNet JPEGs, flat (<synset>_*.JPEG) or val/<synset>/ (default: the shipped 26)")
    parser.add_argument("--copies", type=int, default=8, metavar="N", help="links per image (default: 8)")
    parser.add_argument("--workers", type=int, default=preprocess.default_workers(), metavar="N",
                        help="processes (default: the usable cores)")
    parser.add_argument("--rounds", type=int, default=5, metavar="N", help="rounds per path (default: 5)")
    parser.add_argument("--dtype", choices=["uint8", "float32"], default="uint8", help="bins (default: uint8)")
    args = parser.parse_args(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench_workers_"))
    try:
        data_dir = layout(args.data_dir, scratch / "val", args.copies)
        data_config = resolve_data_config()
        rates: dict[str, list[float]] = {"multiprocessing.Pool": [], "guarded pool": []}
        runners = {"multiprocessing.Pool": through_pool, "guarded pool": through_guard}
        for round_index in range(args.rounds):
            for name, runner in runners.items():
                tasks = tasks_for(data_dir, scratch / f"{round_index}_{len(rates[name])}_{name[0]}", args.dtype)
                started = time.perf_counter()
                runner(tasks, args.workers, data_config)
                rates[name].append(len(tasks) / (time.perf_counter() - started))
        images = len(discover_images(data_dir).items)
        for name, values in rates.items():
            print(f"{name}: {statistics.median(values):.1f} images/s (median of {args.rounds} rounds of {images} "
                  f"images, {args.workers} workers, {args.dtype} bins)")
        ratio = statistics.median(rates["guarded pool"]) / statistics.median(rates["multiprocessing.Pool"])
        print(f"guarded pool / multiprocessing.Pool: {ratio:.3f}x")
        print(f"a worker killed with SIGKILL ends the run after {seconds_to_notice_a_death(args.workers, scratch):.3f} s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
