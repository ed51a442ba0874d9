#!/usr/bin/env python3
"""The NPU fp16 emulation against fp32 onnxruntime on the same export and runner settings, in one run.

    python3 benchmarks/bench_npu_fp16.py --json bench_npu_fp16.json
    python3 benchmarks/bench_npu_fp16.py --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir ../shared/data/imagenet-sample

The `sum` export (the Ascend form) of random weights with unit-scale projections (the tests' scaled
weights, whose performer underflows fp16) or of --pth-path, with gen_cfg.py's keep list. Paths, each
on onnxruntime with the CPU runner's settings (streams, micro-batches), interleaved over --rounds:
fp32; the emulation with the keep list; the same with fp16 accumulation (the pessimistic bracket,
agreement only); the emulation with nothing kept (ATC without --keep_dtype).
Printed: images/s at batch 1 and 8 and the emulation's ratio to fp32 (the goal is >= 0.5x), and, on
real images (the 26 shipped ones by default), non-finite logits, max |difference| to fp32 and top-1
agreement for each keep set.
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

from bench_backends import RuntimePath, add_timing_arguments, images_per_s, window_batches  # noqa: E402
from bench_int8 import DEFAULT_DATA, load_images  # noqa: E402
from t2t_vit.runtime.backends import default_streams  # noqa: E402
from t2t_vit.runtime.timing import default_micro_batch  # noqa: E402

BATCHES = (1, 8)


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.model.checkpoint import load_checkpoint
    from t2t_vit.config import resolve_data_config
    from t2t_vit.model.export import export_onnx
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes, write_keep_dtype
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--pth-path", metavar="FILE", help="checkpoint (default: random unit-scale weights)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"images for the agreement figures (default: {DEFAULT_DATA})")
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    streams = default_streams(args.threads)

    model = create_model("sum")
    if args.pth_path:
        load_checkpoint(model, args.pth_path)
        weights = f"checkpoint {args.pth_path}"
    else:
        model.load_state_dict(scaled_random_state_dict(create_model("einsum"), seed=0))
        weights = "random (scaled_random_state_dict, seed 0)"
    scratch = Path(tempfile.mkdtemp(prefix="bench_npu_fp16_"))
    onnx_path, keep_path = scratch / "sum.onnx", scratch / "keep_dtype.cfg"
    export_onnx(model, onnx_path, opset=11, data_config=resolve_data_config(), verify_batch_sizes=(1,))
    keep_count = write_keep_dtype(keep_path, keep_dtype_nodes(onnx_path))
    empty_keep = scratch / "empty.cfg"
    empty_keep.write_text("")

    settings = [("fp32", "fp32", None, "fp32"), (f"npu-fp16, {keep_count} kept", "npu-fp16", keep_path, "fp32"),
                (f"npu-fp16, {keep_count} kept, fp16 accumulation (bracket)", "npu-fp16", keep_path, "fp16"),
                ("npu-fp16, nothing kept", "npu-fp16", empty_keep, "fp32")]
    images, names = load_images(args.data_dir, None)
    print(f"{len(images)} images from {args.data_dir}; weights: {weights}; {args.threads} threads", file=sys.stderr)

    # Agreement on real images, at batch 8 with the runner's settings.
    logits = {}
    for name, precision, keep, accumulate in settings:
        path = RuntimePath(name, "onnxruntime", onnx_path, args.threads, 8, streams, default_micro_batch(8),
                           precision, keep, accumulate)
        padded = np.concatenate([images, np.repeat(images[:1], -len(images) % 8, axis=0)])
        logits[name] = np.concatenate([path.run(padded[start:start + 8])[0]
                                       for start in range(0, len(padded), 8)])[:len(images)]
    reference = logits["fp32"]
    agreement = {}
    for name, values in logits.items():
        finite = np.isfinite(values).all(axis=1)
        diff = np.abs(values - reference)[finite]
        agreement[name] = {"nonfinite_images": int((~finite).sum()),
                           "max_abs_diff": float(diff.max()) if diff.size else None,
                           "top1_agreement": float((values.argmax(1) == reference.argmax(1))[finite].mean())
                           if finite.any() else 0.0}

    speeds: dict[int, dict[str, list[float]]] = {batch: {setting[0]: [] for setting in settings[:2]}
                                                 for batch in BATCHES}
    paths = {batch: {name: RuntimePath(name, "onnxruntime", onnx_path, args.threads, batch, streams,
                                       default_micro_batch(batch), precision, keep, accumulate)
                     for name, precision, keep, accumulate in settings[:2]} for batch in BATCHES}
    for round_index in range(args.rounds):
        for batch in BATCHES:
            order = list(paths[batch].items())
            for name, path in order if round_index % 2 == 0 else order[::-1]:
                data = images[:batch] if len(images) >= batch else np.repeat(images[:1], batch, axis=0)
                window = window_batches(args.window, batch, streams)
                speeds[batch][name].append(images_per_s(path, data, args.warmup, args.repeats, window))

    medians = {batch: {name: statistics.median(values) for name, values in by_name.items()}
               for batch, by_name in speeds.items()}
    emulated = settings[1][0]
    print("| path | images/s bs1 | bs8 |\n|---|---|---|")
    for name in medians[1]:
        print(f"| {name} | {medians[1][name]:.2f} | {medians[8][name]:.2f} |")
    ratios = {batch: medians[batch][emulated] / medians[batch]["fp32"] for batch in BATCHES}
    print(f"emulation / fp32: {ratios[1]:.2f}x (bs1), {ratios[8]:.2f}x (bs8); goal >= 0.5x")
    print("| keep set | non-finite images | max abs diff to fp32 | top-1 agreement |\n|---|---|---|---|")
    for name, figures in agreement.items():
        diff = "-" if figures["max_abs_diff"] is None else f"{figures['max_abs_diff']:.4g}"
        print(f"| {name} | {figures['nonfinite_images']} of {len(images)} | {diff} | "
              f"{100 * figures['top1_agreement']:.1f} % |")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "npu_fp16", "weights": weights, "images": len(images),
                               "images_per_s": medians, "rounds": speeds, "ratio": ratios, "agreement": agreement,
                               **provenance(vars(args))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
