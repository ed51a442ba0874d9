#!/usr/bin/env python3
"""CPU throughput of every published T2T-ViT against the machine's f32 MatMul ceiling, in one run.

    python3 benchmarks/bench_variants.py --rounds 3 --json bench_variants.json
    python3 benchmarks/bench_variants.py --variants t2t_vit_7 t2t_vit_t_14 --rounds 1   # a few

For each variant (random weights: speed does not depend on them): the CPU export ``T2T_ViT_eval.sh``
runs (the ``matmul`` form of a performer variant, the one softmax form of a transformer-token variant),
run the runner's default way (``T2T_ViT_infer.py`` with no ``--backend``, ``--streams`` or
``--micro-batch``) at batch 1 and 8. The variants are measured interleaved over ``--rounds`` rounds (the
order reversed every other round), each figure the median of ``--repeats`` windows of back-to-back
batches, then the median over rounds; the ceiling (a 2048x2048 f32 MatMul through OpenVINO on the same
threads, as ``bench_backends.py`` measures it) is measured in every round.

A variant's ceiling in images/s is the MatMul ceiling divided by its MatMul FLOPs per image, counted
from its own graph at its input size; the ratio is images/s over that. The FLOPs are split into the
attention's (MatMuls of two activations: q k^T and the weighted sum of v, in the blocks and in the
tokens-to-token module) and the rest (MatMuls with a weight), since the 384 input's 577 tokens make the
blocks' attention grow with the square of the token count.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_SPEC = importlib.util.spec_from_file_location("bench_backends", Path(__file__).with_name("bench_backends.py"))
bench_backends = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_backends)

BATCHES = (1, 8)


def graph_flops(onnx_path: Path, side: int) -> tuple[float, float]:
    """GFLOP per image of the graph's MatMuls at batch 1: (all, those of two activations: the attention's)."""
    from t2t_vit.version_bridge import openvino_core, openvino_shapes

    model = openvino_core("counting a graph's FLOPs").read_model(str(onnx_path))
    model.reshape({model.inputs[0].any_name: [1, 3, side, side]})
    total = attention = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        left, out = openvino_shapes(op)
        inner = left[-2] if op.get_attributes().get("transpose_a") else left[-1]
        flops = 2 * int(np.prod(out)) * inner
        total += flops
        weights = {op.input_value(index).get_node().get_type_name() for index in range(2)}
        if not weights & {"Constant", "Convert"}:  # both operands computed: q k^T, attn v
            attention += flops
    return total / 1e9, attention / 1e9


def export_variant(spec, folder: Path) -> Path:
    """The CPU export of ``spec`` with random weights (verified at batch 1, as every export is)."""
    import torch

    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model

    torch.manual_seed(0)
    model = create_model(spec.form(bench_backends.CPU_FORM), spec)
    path = folder / f"{spec.name}.onnx"
    export_onnx(model, path, data_config=spec.data_config(), verify_batch_sizes=(1,))
    return path


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.runtime.backends import DEFAULT_BACKEND, default_streams
    from t2t_vit.runtime.timing import default_micro_batch
    from t2t_vit.model.variants import BY_NAME, NAMES

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    bench_backends.add_timing_arguments(parser)
    parser.add_argument("--variants", nargs="+", choices=NAMES, default=list(NAMES), metavar="NAME",
                        help="the variants to measure (default: all ten)")
    args = parser.parse_args(argv)
    streams = default_streams(args.threads)
    specs = [BY_NAME[name] for name in args.variants]
    scratch = Path(tempfile.mkdtemp(prefix="bench_variants_"))
    rng = np.random.default_rng(0)
    flops, paths, inputs = {}, {}, {}
    for spec in specs:
        onnx_path = export_variant(spec, scratch)
        flops[spec.name] = graph_flops(onnx_path, spec.img_size)
        for batch in BATCHES:
            inputs[spec.name, batch] = rng.standard_normal((batch, 3, spec.img_size, spec.img_size)).astype(np.float32)
            paths[spec.name, batch] = bench_backends.RuntimePath(
                f"{spec.name} bs{batch}", DEFAULT_BACKEND, onnx_path, args.threads, batch, streams,
                default_micro_batch(batch))
        print(f"exported {spec.name}: {flops[spec.name][0]:.2f} GFLOP/image", file=sys.stderr)
    results: dict[tuple[str, int], list[float]] = {}
    ceilings = []
    for round_index in range(args.rounds):
        ceilings.append(bench_backends.matmul_ceiling(args.threads))
        order = list(paths) if round_index % 2 == 0 else list(paths)[::-1]
        for key in order:
            speed = bench_backends.images_per_s(paths[key], inputs[key], args.warmup, args.repeats,
                                                bench_backends.window_batches(args.window, key[1], streams))
            results.setdefault(key, []).append(speed)
        print(f"round {round_index + 1}/{args.rounds} done (ceiling {ceilings[-1]:.0f} GFLOP/s)", file=sys.stderr)

    ceiling = statistics.median(ceilings)
    print(f"f32 MatMul ceiling {ceiling:.0f} GFLOP/s (median of {args.rounds}: "
          f"{', '.join(f'{c:.0f}' for c in ceilings)}); runner default: {DEFAULT_BACKEND}, {streams} streams, "
          f"micro-batch {default_micro_batch(8)} at bs8; {args.threads} threads")
    print("| variant | input | GFLOP/image | attention share | ceiling images/s | images/s bs1 | bs8 | "
          "x ceiling bs1 | bs8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = []
    for spec in specs:
        total, attention = flops[spec.name]
        ceiling_images = ceiling / total
        speed = {batch: statistics.median(results[spec.name, batch]) for batch in BATCHES}
        row = {"variant": spec.name, "img_size": spec.img_size, "tokens": spec.tokens, "gflop_per_image": total,
               "attention_gflop_per_image": attention, "ceiling_images_per_s": ceiling_images,
               **{f"images_per_s_bs{b}": speed[b] for b in BATCHES},
               **{f"ceiling_ratio_bs{b}": speed[b] / ceiling_images for b in BATCHES},
               "rounds": {str(b): results[spec.name, b] for b in BATCHES}}
        rows.append(row)
        print(f"| {spec.name} | {spec.img_size} ({spec.tokens} tokens) | {total:.2f} | {100 * attention / total:.0f} % | "
              f"{ceiling_images:.1f} | {speed[1]:.1f} | {speed[8]:.1f} | {row['ceiling_ratio_bs1']:.2f} | "
              f"{row['ceiling_ratio_bs8']:.2f} |")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "variants", "ceiling_gflops": ceiling, "ceilings": ceilings,
                               "streams": streams, "backend": DEFAULT_BACKEND, "rows": rows,
                               **provenance(vars(args))})
    return 0


if __name__ == "__main__":
    sys.exit(main())
