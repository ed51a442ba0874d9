#!/usr/bin/env python3
"""CPU throughput of every inference path against the machine's f32 MatMul ceiling, in one run.

    python3 benchmarks/bench_backends.py --rounds 3 --json bench_backends.json

Measures, interleaved over ``--rounds`` rounds (this machine is shared and drifts), images/s at batch
1 and 8 for: PyTorch eager (the einsum reference model), onnxruntime and OpenVINO f32 on the ``sum``,
``matmul`` and ``einsum`` exports, each loaded and called the plain way (one batch at a time on every
thread), and the runner's default path (``T2T_ViT_infer.py`` with no ``--backend``, ``--streams`` or
``--micro-batch``, on
the export form ``T2T_ViT_eval.sh`` uses, through the runner's own pipeline: one stream per thread,
each batch in micro-batches). Two more rows give the runner's settings to the onnxruntime matmul and
OpenVINO einsum paths, so the gain of the settings and the gain of the export form can be told apart.

Each measurement: ``--warmup`` untimed batches, then ``--repeats`` windows of at least ``--window``
images (and at least two batches per stream) run back to back, images/s per window (wall clock),
median; the table shows the median over rounds.
Threads are pinned to the usable cores. The ceiling is a 2048x2048 f32 MatMul through OpenVINO on the
same threads, measured in each round; the model's FLOPs per image are counted from the matmul export's
graph (2 x M x K x N over every MatMul, at batch 1). The default path's outputs are compared with
PyTorch (max abs difference). Weights are random: speed does not depend on them.
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

from t2t_vit.model.flops import graph_flops  # noqa: E402,F401 - the count lives in the package
from t2t_vit.runtime.backends import DEFAULT_BACKEND, default_streams, load_backend  # noqa: E402
from t2t_vit.runtime.timing import default_micro_batch, pipeline_batches  # noqa: E402

CPU_FORM = "matmul"  # the export T2T_ViT_eval.sh gives the CPU runner
BATCHES = (1, 8)


def matmul_ceiling(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """GFLOP/s of a large f32 MatMul through OpenVINO on ``threads`` threads."""
    import openvino

    from t2t_vit.version_bridge import openvino_core, openvino_ops

    ops = openvino_ops("the MatMul ceiling")
    rng = np.random.default_rng(0)
    left = ops.parameter([size, size], np.float32)
    product = ops.matmul(left, ops.constant(rng.random((size, size), dtype=np.float32)), False, False)
    compiled = openvino_core("the MatMul ceiling").compile_model(openvino.Model([product], [left]), "CPU",
                                             {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    data = rng.random((size, size), dtype=np.float32)
    request.infer({0: data})
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        request.infer({0: data})
        times.append(time.perf_counter() - started)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def graph_gflops(onnx_path: Path) -> float:
    """GFLOP per image of a 224-input graph (:func:`graph_flops`)."""
    return graph_flops(onnx_path)[0]


class TorchPath:
    name = "pytorch eager (einsum)"

    def __init__(self, model):
        self.model = model

    def run(self, batch):
        import torch

        with torch.no_grad():
            return [self.model(torch.from_numpy(batch)).numpy()]


    def run_many(self, batch, count):
        for _ in range(count):
            self.run(batch)


class RuntimePath:
    """A backend run as the runner runs it: ``streams`` at once, each batch in pieces of ``micro``."""

    def __init__(self, name, backend, onnx_path, threads, batch, streams=1, micro=None, precision="fp32",
                 keep_dtype=None, accumulate="fp32"):
        self.name, self.batch, self.micro = name, batch, micro or batch
        self.backend = load_backend(backend, onnx_path, threads, self.micro, streams, precision, keep_dtype,
                                    accumulate)

    def run(self, batch):
        return next(iter(pipeline_batches(self.backend, [batch], self.batch, self.micro)))[0]

    def run_many(self, batch, count):
        for _ in pipeline_batches(self.backend, (batch for _ in range(count)), self.batch, self.micro):
            pass


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every backend benchmark here shares: rounds, windows, warm-up, threads, JSON."""
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="interleaved rounds (default: 3)")
    parser.add_argument("--repeats", type=int, default=3, metavar="N",
                        help="timed windows per measurement (default: 3)")
    parser.add_argument("--window", type=int, default=16, metavar="N",
                        help="images per timed window, at least two batches per stream (default: 16)")
    parser.add_argument("--warmup", type=int, default=2, metavar="N", help="untimed batches first (default: 2)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)), metavar="N",
                        help="threads for every path (default: the usable cores)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def window_batches(images: int, batch: int, streams: int) -> int:
    """Batches in a timed window: at least ``images`` images, and two batches per stream."""
    return max(2 * streams, -(-images // batch))


def images_per_s(path, batch: np.ndarray, warmup: int, repeats: int, window: int) -> float:
    """Median over ``repeats`` windows of images/s, each window ``window`` batches back to back."""
    path.run_many(batch, warmup)
    speeds = []
    for _ in range(repeats):
        started = time.perf_counter()
        path.run_many(batch, window)
        speeds.append(window * len(batch) / (time.perf_counter() - started))
    return statistics.median(speeds)


def run_stage_benchmarks(workers: int) -> dict:
    """The preprocess and postprocess benchmarks of this folder, their JSON results keyed by stage."""
    import importlib.util
    import json

    found = {}
    for stage, extra in (("preprocess", ["--workers", str(workers)]), ("postprocess", [])):
        script = Path(__file__).with_name(f"bench_{stage}.py")
        spec = importlib.util.spec_from_file_location(f"bench_{stage}", script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "result.json"
            module.main([*extra, "--json", str(output)])
            found[stage] = json.loads(output.read_text())
    return found


def main(argv: list[str] | None = None) -> int:
    import torch

    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--with-stages", action="store_true",
                        help="also run bench_preprocess.py and bench_postprocess.py and put their figures in the JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    streams = default_streams(args.threads)

    torch.manual_seed(0)
    reference = create_model("einsum")
    weights = reference.state_dict()
    scratch = Path(tempfile.mkdtemp(prefix="bench_backends_"))
    exports = {}
    for form, opset in (("sum", 11), ("matmul", 11), ("einsum", 12)):
        model = create_model(form)
        model.load_state_dict(weights)
        exports[form] = scratch / f"{form}.onnx"
        export_onnx(model, exports[form], opset=opset, verify_batch_sizes=(1,))
    gflops = graph_gflops(exports["matmul"])

    rng = np.random.default_rng(0)
    inputs = {batch: rng.standard_normal((batch, 3, 224, 224)).astype(np.float32) for batch in BATCHES}
    results: dict[str, dict[int, list[float]]] = {}
    ceilings: list[float] = []
    max_abs_diff: dict[int, float] = {}
    paths_by_batch = {}
    for batch in BATCHES:  # compiled once per batch (OpenVINO compiles a static batch)
        paths = [TorchPath(reference)]
        for backend in ("onnxruntime", "openvino"):
            for form in ("sum", "matmul", "einsum"):
                paths.append(RuntimePath(f"{backend} {form}", backend, exports[form], args.threads, batch))
        micro = default_micro_batch(batch)
        for backend, form in (("onnxruntime", "matmul"), ("openvino", "einsum")):
            paths.append(RuntimePath(f"{backend} {form}, runner settings", backend, exports[form], args.threads,
                                     batch, streams, micro))
        default = RuntimePath(f"runner default ({DEFAULT_BACKEND} {CPU_FORM})", DEFAULT_BACKEND, exports[CPU_FORM],
                              args.threads, batch, streams, micro)
        paths.append(default)
        paths_by_batch[batch] = paths
        expected = paths[0].run(inputs[batch])[0]
        got = [outputs[0] for outputs, _, _ in pipeline_batches(default.backend, [inputs[batch]] * streams, batch,
                                                                 micro)]
        max_abs_diff[batch] = max(float(np.max(np.abs(output - expected))) for output in got)
    for round_index in range(args.rounds):
        ceilings.append(matmul_ceiling(args.threads))
        for batch in BATCHES:
            paths = paths_by_batch[batch]
            for path in (paths if round_index % 2 == 0 else paths[::-1]):
                speed = images_per_s(path, inputs[batch], args.warmup, args.repeats,
                                     window_batches(args.window, batch, streams))
                results.setdefault(path.name, {}).setdefault(batch, []).append(speed)
        print(f"round {round_index + 1}/{args.rounds} done (ceiling {ceilings[-1]:.0f} GFLOP/s)", file=sys.stderr)

    ceiling = statistics.median(ceilings)
    ceiling_images = ceiling / gflops
    medians = {name: {batch: statistics.median(values) for batch, values in by_batch.items()}
               for name, by_batch in results.items()}
    eager = medians[TorchPath.name]
    print(f"f32 MatMul ceiling {ceiling:.0f} GFLOP/s (median of {args.rounds}); model {gflops:.2f} GFLOP/image "
          f"(counted from the graph) -> ceiling {ceiling_images:.1f} images/s; {args.threads} threads, "
          f"runner settings: {streams} streams, micro-batch {default_micro_batch(8)} at bs8")
    print("| path | images/s bs1 | bs8 | % of ceiling bs1 | bs8 | x eager bs1 | bs8 |")
    print("|---|---|---|---|---|---|---|")
    table = []
    for name, by_batch in medians.items():
        row = {"path": name, **{f"images_per_s_bs{b}": by_batch[b] for b in BATCHES},
               **{f"ceiling_fraction_bs{b}": by_batch[b] / ceiling_images for b in BATCHES},
               **{f"x_eager_bs{b}": by_batch[b] / eager[b] for b in BATCHES}}
        table.append(row)
        print(f"| {name} | {by_batch[1]:.1f} | {by_batch[8]:.1f} | {100 * row['ceiling_fraction_bs1']:.0f} % | "
              f"{100 * row['ceiling_fraction_bs8']:.0f} % | {row['x_eager_bs1']:.2f} | {row['x_eager_bs8']:.2f} |")
    print(f"runner default vs PyTorch: max abs diff {max_abs_diff[1]:.2e} (bs1), {max_abs_diff[8]:.2e} (bs8)")
    stages = run_stage_benchmarks(args.threads) if args.with_stages else {}
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "backends", "ceiling_gflops": ceiling, "ceilings": ceilings,
                               "gflop_per_image": gflops, "streams": streams, "ceiling_images_per_s": ceiling_images,
                               "micro_batch": {str(b): default_micro_batch(b) for b in BATCHES}, "rows": table,
                               "rounds": {name: {str(b): v for b, v in by.items()} for name, by in results.items()},
                               "max_abs_diff_vs_pytorch": max_abs_diff, "stages": stages,
                               **provenance(vars(args))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
