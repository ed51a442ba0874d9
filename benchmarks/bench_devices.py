#!/usr/bin/env python3
"""Two CPU runner processes of one core each (``--device 0,1 --divide_input``) against one of two cores, in one run.

    python3 benchmarks/bench_devices.py --images 48 --rounds 3 --json bench_devices.json

The CPU export the main job runs (``matmul``, T2T-ViT-14 by default, random weights) over --images float32 bins,
at batch 1 and 8, interleaved over --rounds rounds (the order reversed every other round): one process with the
usable cores as threads, and one process per core, each with its share of the inputs and one thread. The figure
is wall-clock images/s over the whole pass (start of the first process to the end of the last, model loading
included, as a user waits for it) and, beside it, the sum of the processes' own compute rates (what ais_bench's
``summary throughput`` adds up). Printed: both, and the ratio of the processes' wall-clock rate to one process's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BATCHES = (1, 8)


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict
    from t2t_vit.runtime.multidevice import run_devices
    from t2t_vit.runtime.runner import run_inference
    from t2t_vit.model.variants import BY_NAME, NAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=NAMES, default="t2t_vit_14", metavar="NAME",
                        help="the variant (default: t2t_vit_14)")
    parser.add_argument("--images", type=int, default=48, metavar="N", help="bins per pass (default: 48)")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="interleaved rounds (default: 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        parser.error("this compares one process with one per core: it needs at least 2 usable cores")
    spec = BY_NAME[args.model]
    scratch = Path(tempfile.mkdtemp(prefix="bench_devices_"))
    model = create_model(spec.form("matmul"), spec)
    model.load_state_dict(scaled_random_state_dict(model, seed=0))
    onnx_path = scratch / "model.onnx"
    export_onnx(model, onnx_path, data_config=spec.data_config(), verify_batch_sizes=(1,))
    bins = scratch / "bins"
    bins.mkdir()
    rng = np.random.default_rng(0)
    for index in range(args.images):
        rng.standard_normal((1, 3, spec.img_size, spec.img_size)).astype("<f4").tofile(bins / f"img{index:05d}.bin")
    common = {"model": str(onnx_path), "outfmt": "BIN", "loop": 1, "warmup_count": 1, "progress": False}
    devices = list(range(cores))
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for round_index in range(args.rounds):
        ways = [("one process", batch) for batch in BATCHES] + [("per core", batch) for batch in BATCHES]
        for way, batch in ways if round_index % 2 == 0 else ways[::-1]:
            started = time.perf_counter()
            if way == "one process":
                result = run_inference(inputs=[str(bins)], output=str(scratch / "out"), output_dirname="one",
                                       batchsize=batch, threads=cores, **common)
                compute = result.throughput
            else:
                runs = run_devices(devices, True, [str(bins)], str(scratch / "out"), "many", cores,
                                   {**common, "batchsize": batch})
                compute = sum(run.throughput for run in runs)
            wall = args.images / (time.perf_counter() - started)
            results.setdefault((way, batch), []).append((wall, compute))
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    print(f"{spec.name}, {args.images} images, {cores} cores: one process x {cores} threads against {cores} processes "
          f"x 1 thread (--device {','.join(map(str, devices))} --divide_input)")
    print("| batch | one process: wall images/s | compute images/s | per core: wall images/s | sum of compute "
          "images/s | per core / one process (wall) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for batch in BATCHES:
        one = [statistics.median(values) for values in zip(*results["one process", batch])]
        many = [statistics.median(values) for values in zip(*results["per core", batch])]
        rows.append({"batch": batch, "one_process_wall": one[0], "one_process_compute": one[1],
                     "per_core_wall": many[0], "per_core_compute_sum": many[1], "ratio_wall": many[0] / one[0]})
        print(f"| {batch} | {one[0]:.2f} | {one[1]:.2f} | {many[0]:.2f} | {many[1]:.2f} | {many[0] / one[0]:.2f}x |")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "devices", "model": spec.name, "rows": rows, **provenance(vars(args))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
