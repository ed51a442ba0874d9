#!/usr/bin/env python3
"""uint8 input against float32 input on the CPU runner's default path, in one run.

    python3 benchmarks/bench_uint8.py --json bench_uint8.json

The `matmul` export (the CPU form) of random weights, float32 input and uint8 input (normalised in the
graph), each on the runner's default backend and settings (streams, micro-batches), interleaved over
--rounds, with the f32 MatMul ceiling measured in the same rounds. Printed: images/s at batch 1 and 8
and the uint8 path's ratio to the float path; and, on real images (the 26 shipped ones by default),
the largest |logit difference| between uint8 bins on the uint8 export and float32 bins on the float
export, and the bytes per image of each input.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backends import (RuntimePath, add_timing_arguments, images_per_s, matmul_ceiling,  # noqa: E402
                            window_batches)
from bench_int8 import DEFAULT_DATA  # noqa: E402
from t2t_vit.runtime.backends import DEFAULT_BACKEND, default_streams  # noqa: E402
from t2t_vit.runtime.timing import default_micro_batch  # noqa: E402

BATCHES = (1, 8)
DTYPES = ("float32", "uint8")


def real_inputs(data_dir: Path, limit: int) -> dict[str, np.ndarray]:
    """The first ``limit`` JPEGs of ``data_dir`` as float32 bins and as uint8 bins would hold them."""
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb

    transform = EvalTransform(resolve_data_config())
    images = [open_rgb(path) for path in sorted(data_dir.glob("*.JPEG"))[:limit]]
    return {dtype: np.concatenate([transform(image, dtype) for image in images]) for dtype in DTYPES}


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.config import resolve_data_config
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    add_timing_arguments(parser)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help="real images for the logit comparison (default: the 26 shipped ones)")
    parser.add_argument("--images", type=int, default=26, metavar="N", help="images to compare (default: 26)")
    args = parser.parse_args(argv)
    streams = default_streams(args.threads)

    weights = scaled_random_state_dict(create_model("einsum"), seed=0)
    scratch = Path(tempfile.mkdtemp(prefix="bench_uint8_"))
    exports = {}
    for dtype in DTYPES:
        model = create_model("matmul")
        model.load_state_dict(weights)
        exports[dtype] = scratch / f"matmul_{dtype}.onnx"
        export_onnx(model, exports[dtype], data_config=resolve_data_config(), verify_batch_sizes=(1,),
                    input_dtype=dtype)

    rng = np.random.default_rng(0)
    pixels = {batch: rng.integers(0, 256, (batch, 224, 224, 3), dtype=np.uint8) for batch in BATCHES}
    feeds = {batch: {"uint8": pixels[batch], "float32": (pixels[batch].transpose(0, 3, 1, 2) / 255.0 - 0.45)
                     .astype(np.float32)} for batch in BATCHES}
    paths = {(dtype, batch): RuntimePath(f"{dtype} input", DEFAULT_BACKEND, exports[dtype], args.threads, batch,
                                         streams, default_micro_batch(batch))
             for dtype in DTYPES for batch in BATCHES}
    speeds: dict[tuple[str, int], list[float]] = {key: [] for key in paths}
    ceilings = []
    for round_index in range(args.rounds):
        ceilings.append(matmul_ceiling(args.threads))
        order = DTYPES if round_index % 2 == 0 else DTYPES[::-1]
        for batch in BATCHES:
            for dtype in order:
                speeds[dtype, batch].append(images_per_s(paths[dtype, batch], feeds[batch][dtype], args.warmup,
                                                         args.repeats, window_batches(args.window, batch, streams)))
        print(f"round {round_index + 1}/{args.rounds} done (ceiling {ceilings[-1]:.0f} GFLOP/s)", file=sys.stderr)
    medians = {key: statistics.median(values) for key, values in speeds.items()}

    inputs = real_inputs(args.data_dir, args.images)
    logits = {dtype: np.concatenate([paths[dtype, 1].run(inputs[dtype][i:i + 1])[0] for i in range(len(inputs[dtype]))])
              for dtype in DTYPES}
    diff = float(np.abs(logits["uint8"] - logits["float32"]).max())
    agreement = float((logits["uint8"].argmax(1) == logits["float32"].argmax(1)).mean())
    bytes_each = {dtype: inputs[dtype][0].nbytes for dtype in DTYPES}

    print(f"runner default ({DEFAULT_BACKEND}, matmul export, {streams} streams), {args.threads} threads; f32 MatMul "
          f"ceiling {statistics.median(ceilings):.0f} GFLOP/s (median of {args.rounds})")
    print("| input | bytes / image | images/s bs1 | bs8 |\n|---|---|---|---|")
    for dtype in DTYPES:
        print(f"| {dtype} | {bytes_each[dtype]:,} | {medians[dtype, 1]:.2f} | {medians[dtype, 8]:.2f} |")
    ratios = {batch: medians["uint8", batch] / medians["float32", batch] for batch in BATCHES}
    print(f"uint8 / float32 images/s: {ratios[1]:.3f}x (bs1), {ratios[8]:.3f}x (bs8); bytes "
          f"{bytes_each['float32'] / bytes_each['uint8']:.1f}x fewer")
    print(f"{len(inputs['uint8'])} real images: max |logit difference| {diff:.3g}, top-1 agreement "
          f"{100 * agreement:.1f} %")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "uint8", "ceilings": ceilings, "streams": streams,
                               "images_per_s": {f"{dtype}_bs{batch}": medians[dtype, batch] for dtype, batch in medians},
                               "rounds": {f"{dtype}_bs{batch}": values for (dtype, batch), values in speeds.items()},
                               "ratio_uint8_to_float32": {str(batch): ratio for batch, ratio in ratios.items()},
                               "bytes_per_image": bytes_each, "max_abs_diff": diff, "top1_agreement": agreement,
                               **provenance(vars(args))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
