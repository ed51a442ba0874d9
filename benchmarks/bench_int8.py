#!/usr/bin/env python3
"""Stretch, never the default: an int8 CPU path against the f32 default, speed and agreement in one run.

    python3 benchmarks/bench_int8.py --json bench_int8.json
    python3 benchmarks/bench_int8.py --pth-path 81.5_T2T_ViT_14.pth.tar     # the published weights

The int8 path is onnxruntime's dynamic quantization of the ``matmul`` export: every MatMul's weights
stored as int8 (per output channel with ``--per-channel``), activations quantized to uint8 at run time.
It is compared with the runner's default f32 path (OpenVINO, ``matmul`` export) and with onnxruntime
f32 on the same export, all three run with the runner's settings (one stream per thread, micro-batches):

- agreement, on real ImageNet images (the 26 shipped ones by default) preprocessed exactly as the toolkit does: max abs
  difference of the logits, top-1 agreement, and how often the f32 top-1 class is in the int8 top-5
  (with how many distinct classes the f32 top-1 takes, since random weights may favour a few);
- speed: images/s at batch 1 and 8, the paths interleaved over ``--rounds`` rounds, each measurement
  the median of ``--repeats`` windows of at least ``--window`` images (two batches per stream at
  least); the speed-up is over the f32 default.

Without ``--pth-path`` the weights are random with unit-scale projections
(``t2t_vit.model.network.scaled_random_state_dict``). Quantization error depends on the weights, so the
agreement figures then only show the method works end to end; the published checkpoint's must be
measured with it.
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

from t2t_vit.runtime.backends import DEFAULT_BACKEND, default_streams  # noqa: E402
from t2t_vit.runtime.timing import default_micro_batch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_backends import RuntimePath, add_timing_arguments, images_per_s, window_batches  # noqa: E402

DEFAULT_DATA = REPO_ROOT / "tests" / "data" / "imagenet-sample"  # shipped; ../shared/data/imagenet-sample has 200
BATCHES = (1, 8)


def load_images(data_dir: Path, limit: int | None) -> tuple[np.ndarray, list[str]]:
    """Every JPEG under ``data_dir`` (sorted), preprocessed as T2T_ViT_preprocess.py does."""
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb

    paths = sorted(path for path in data_dir.rglob("*") if path.suffix.lower() in (".jpeg", ".jpg", ".png"))
    if limit:
        paths = paths[:limit]
    if not paths:
        raise SystemExit(f"error: no images under {data_dir}")
    transform = EvalTransform(resolve_data_config())
    return np.concatenate([transform(open_rgb(path)) for path in paths]), [path.name for path in paths]


def run_all(path, images: np.ndarray, batch: int) -> np.ndarray:
    """Logits of every image, ``batch`` at a time (the last batch padded with its first image)."""
    batches = []
    for start in range(0, len(images), batch):
        chunk = images[start:start + batch]
        pad = batch - len(chunk)
        batches.append(np.concatenate([chunk, np.repeat(chunk[:1], pad, axis=0)]) if pad else chunk)
    logits = [path.run(data)[0] for data in batches]
    return np.concatenate(logits)[:len(images)]


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """``other`` scored against the reference's top-1 classes, with the postprocess stage's tie rule."""
    from t2t_vit.data.metrics import ranks

    top1 = reference.argmax(axis=1)
    rank = ranks(other, top1)  # classes scoring strictly above the reference's top-1; -1 if not finite
    return {"max_abs_diff": float(np.max(np.abs(reference - other))),
            "top1_agreement": float(np.mean(rank == 0)),
            "f32_top1_in_top5": float(np.mean((rank >= 0) & (rank < 5))),
            "logit_abs_max": float(np.max(np.abs(reference))), "f32_distinct_top1": int(len(np.unique(top1)))}


def main(argv: list[str] | None = None) -> int:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from t2t_vit.model.checkpoint import load_checkpoint
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--pth-path", metavar="FILE", help="checkpoint (default: random unit-scale weights)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"images for the agreement figures (default: {DEFAULT_DATA})")
    parser.add_argument("--limit", type=int, metavar="N", help="use the first N images only")
    parser.add_argument("--per-channel", action="store_true", help="int8 scales per output channel")
    add_timing_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    streams = default_streams(args.threads)

    model = create_model("matmul")
    if args.pth_path:
        load_checkpoint(model, args.pth_path)
        weights = f"checkpoint {args.pth_path}"
    else:
        model.load_state_dict(scaled_random_state_dict(model, seed=0))
        weights = "random (scaled_random_state_dict, seed 0)"
    scratch = Path(tempfile.mkdtemp(prefix="bench_int8_"))
    f32_path, int8_path = scratch / "f32.onnx", scratch / "int8.onnx"
    export_onnx(model, f32_path, opset=11, verify_batch_sizes=(1,))
    quantize_dynamic(str(f32_path), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                     per_channel=args.per_channel)
    sizes = {"f32_mb": f32_path.stat().st_size / 1e6, "int8_mb": int8_path.stat().st_size / 1e6}

    images, names = load_images(args.data_dir, args.limit)
    print(f"{len(images)} images from {args.data_dir}; weights: {weights}", file=sys.stderr)
    paths = {}
    for batch in BATCHES:
        runs = [(f"f32 default ({DEFAULT_BACKEND} matmul)", DEFAULT_BACKEND, f32_path),
                ("f32 onnxruntime matmul", "onnxruntime", f32_path),
                ("int8 onnxruntime dynamic", "onnxruntime", int8_path)]
        paths[batch] = {name: RuntimePath(name, backend, path, args.threads, batch, streams,
                                          default_micro_batch(batch)) for name, backend, path in runs}
    default_name, ort_name, int8_name = list(paths[8])
    logits = {name: run_all(path, images, 8) for name, path in paths[8].items()}
    agree = {"int8 vs f32 default": agreement(logits[default_name], logits[int8_name]),
             "f32 onnxruntime vs f32 default": agreement(logits[default_name], logits[ort_name])}

    rng = np.random.default_rng(0)
    inputs = {batch: rng.standard_normal((batch, 3, 224, 224)).astype(np.float32) for batch in BATCHES}
    results: dict[str, dict[int, list[float]]] = {}
    for round_index in range(args.rounds):
        for batch in BATCHES:
            items = list(paths[batch].items())
            for name, path in (items if round_index % 2 == 0 else items[::-1]):
                speed = images_per_s(path, inputs[batch], args.warmup, args.repeats,
                                     window_batches(args.window, batch, streams))
                results.setdefault(name, {}).setdefault(batch, []).append(speed)
        print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
    medians = {name: {batch: statistics.median(values) for batch, values in by.items()} for name, by in results.items()}

    print(f"weights: {weights}; {len(images)} images; int8 {'per channel' if args.per_channel else 'per tensor'}; "
          f"model {sizes['f32_mb']:.0f} MB f32 -> {sizes['int8_mb']:.0f} MB int8")
    print("| path | images/s bs1 | bs8 | x f32 default bs1 | bs8 |")
    print("|---|---|---|---|---|")
    for name, by in medians.items():
        print(f"| {name} | {by[1]:.1f} | {by[8]:.1f} | {by[1] / medians[default_name][1]:.2f} | "
              f"{by[8] / medians[default_name][8]:.2f} |")
    for label, figures in agree.items():
        print(f"{label}: max abs diff {figures['max_abs_diff']:.2e} (logits up to {figures['logit_abs_max']:.1f}), "
              f"top-1 agreement {100 * figures['top1_agreement']:.1f} %, f32 top-1 in top-5 "
              f"{100 * figures['f32_top1_in_top5']:.1f} % ({figures['f32_distinct_top1']} distinct f32 top-1 classes)")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "int8", "weights": weights, "images": len(images), "streams": streams,
                               "per_channel": args.per_channel, "sizes": sizes, "agreement": agree,
                               "rows": [{"path": name, **{f"images_per_s_bs{b}": by[b] for b in BATCHES},
                                         **{f"x_f32_default_bs{b}": by[b] / medians[default_name][b]
                                            for b in BATCHES}} for name, by in medians.items()],
                               "rounds": {name: {str(b): v for b, v in by.items()} for name, by in results.items()},
                               **provenance(vars(args) | {"data_dir": str(args.data_dir)})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
