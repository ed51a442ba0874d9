#!/usr/bin/env python3
"""CPU throughput of every published T2T-ViT against the machine's f32 MatMul ceiling and a peer, in one run.

    python3 benchmarks/bench_variants.py --rounds 3 --upstream /path/to/T2T-ViT --json bench_variants.json
    python3 benchmarks/bench_variants.py --variants t2t_vit_7 t2t_vit_t_14 --rounds 1   # a few, no peer

For each variant (random weights: speed does not depend on them), three graphs at batch 1 and 8:

- ``after``: the CPU export ``T2T_ViT_eval.sh`` runs (the ``matmul`` form of a performer variant, the one softmax
  form of a transformer-token variant), its soft splits as convolutions (``export_onnx(splits="conv")``);
- ``before``: the same export with the soft splits as the exporter writes ``nn.Unfold`` (``splits="unfold"``);
- ``peer`` (with ``--upstream DIR``, a checkout of upstream's T2T-ViT; default ``$T2T_VIT_UPSTREAM``): upstream's
  own model, exported by the same TorchScript exporter (opset 12: its performer is an Einsum), run on OpenVINO f32
  with the better of its LATENCY and THROUGHPUT hints.

``before`` and ``after`` run the runner's default way (``T2T_ViT_infer.py`` with no ``--backend``, ``--streams`` or
``--micro-batch``). Variant by variant, its paths are measured interleaved over ``--rounds`` rounds (the order
reversed every other round), each figure the median of ``--repeats`` windows of back-to-back batches, then the median over rounds; the
ceiling (a 2048x2048 f32 MatMul through OpenVINO on the same threads, as ``bench_backends.py`` measures it) is
measured in every round.

A variant's ceiling in images/s is the MatMul ceiling divided by its FLOPs per image, counted from its ``before``
graph at its input size (its MatMuls; a dense convolution counts too, a one-hot grouped one does not: it copies);
the ratio is images/s over that. The attention's share (MatMuls of two activations: q k^T and the weighted sum of
v) is printed, since the 384 input's 577 tokens make the blocks' attention grow with the square of the tokens.
The op inventory counts the nodes of each variant's ``sum`` export, the one ATC gets (``--no-inventory``: not).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import statistics
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_SPEC = importlib.util.spec_from_file_location("bench_backends", Path(__file__).with_name("bench_backends.py"))
bench_backends = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bench_backends)

BATCHES = (1, 8)
GRAPHS = ("before", "after", "peer")
SPLITS = {"before": "unfold", "after": "conv"}
INVENTORY_OPS = ("Gather", "Transpose", "Reshape", "Conv", "Cast")
PEER_OPSET = 12  # upstream's performer computes with torch.einsum: ONNX Einsum exists from opset 12


def op_inventory(onnx_path: Path) -> dict:
    """Node counts of an export, in all and in its tokens-to-token module (the nodes its output is computed from,
    found by structure: :func:`t2t_vit.ascend.keep_dtype.tokens_to_token_nodes`): the ops of :data:`INVENTORY_OPS`."""
    from t2t_vit.ascend.keep_dtype import tokens_to_token_nodes
    from t2t_vit.model.export import load_onnx

    graph = load_onnx(onnx_path).graph
    nodes = list(graph.node)
    every = collections.Counter(node.op_type for node in nodes)
    module = collections.Counter(nodes[index].op_type for index in tokens_to_token_nodes(graph))
    return {"nodes": len(nodes), "t2t_nodes": sum(module.values()),
            **{op: every[op] for op in INVENTORY_OPS}, **{f"t2t_{op}": module[op] for op in INVENTORY_OPS}}


def export_variant(spec, folder: Path, graph: str, form: str | None = None, tag: str = "") -> Path:
    """Our export of ``spec`` (``form``: the CPU form by default) with random weights, its soft splits as ``graph``
    (before / after) has them; verified at batch 1, as every export is."""
    import torch

    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model

    torch.manual_seed(0)
    form = form or spec.form(bench_backends.CPU_FORM)
    model = create_model(form, spec)
    path = folder / f"{spec.name}_{form}_{graph}{tag}.onnx"
    export_onnx(model, path, data_config=spec.data_config(), verify_batch_sizes=(1,), splits=SPLITS[graph])
    return path


def export_peer(spec, folder: Path, upstream: Path) -> Path:
    """Upstream's own model of ``spec`` (its builder, its initialisation) through the same TorchScript exporter."""
    import torch
    from timm.models import register_model

    import t2t_vit.model.network
    from t2t_vit.version_bridge import export_onnx_torchscript

    builder, arguments = spec.name.replace("_384", ""), ({"img_size": 384} if spec.img_size == 384 else {})
    sys.path.insert(0, str(upstream))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("models.t2t_vit")
            model = getattr(module, builder)(**arguments).eval()
            for ours in t2t_vit.model.network.BUILDERS.values():  # upstream's import took over the timm names
                register_model(ours)
    finally:
        sys.path.remove(str(upstream))
    path = folder / f"{spec.name}_upstream.onnx"
    dummy = torch.zeros(1, 3, spec.img_size, spec.img_size)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx_torchscript(model, (dummy,), str(path), opset_version=PEER_OPSET, input_names=["image"],
                                output_names=["class"], dynamic_axes={"image": {0: "batch"}, "class": {0: "batch"}},
                                do_constant_folding=True)
    return path


class HintPath:
    """OpenVINO f32 on ``threads`` threads with a performance hint, the batch fixed, its requests kept busy."""

    def __init__(self, name, onnx_path, threads, batch, side, hint):
        import openvino

        from t2t_vit.version_bridge import openvino_core

        core = openvino_core("the peer")
        model = core.read_model(str(onnx_path))
        model.reshape({model.inputs[0].any_name: [batch, 3, side, side]})
        self.name, self.hint = name, hint
        self.compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_NUM_THREADS": threads,
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        self.jobs = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.queue = openvino.AsyncInferQueue(self.compiled, self.jobs)

    def run_many(self, batch, count):
        for _ in range(count):
            self.queue.start_async({0: batch})
        self.queue.wait_all()


def export_all(specs, args, scratch: Path, upstream: Path | None):
    """Every variant's graphs (before, after, peer), its FLOPs and its op inventory."""
    onnx, flops, inventory = {}, {}, {}
    for spec in specs:
        onnx[spec.name] = {graph: export_variant(spec, scratch, graph) for graph in SPLITS}
        flops[spec.name] = bench_backends.graph_flops(onnx[spec.name]["before"], spec.img_size)
        if args.inventory:
            inventory[spec.name] = {}
            for graph in SPLITS:
                path = export_variant(spec, scratch, graph, spec.form("sum"), "_inventory")
                inventory[spec.name][graph] = op_inventory(path)
                path.unlink()
        if upstream is not None:
            onnx[spec.name]["peer"] = export_peer(spec, scratch, upstream)
        print(f"exported {spec.name}: {flops[spec.name][0]:.2f} GFLOP/image", file=sys.stderr, flush=True)
    return onnx, flops, inventory


def variant_paths(spec, onnx: dict, args, streams: int) -> dict:
    """One variant's paths to time, (graph, batch[, hint]) -> path: compiled per variant, so that only one
    variant's models are in memory at a time."""
    from t2t_vit.runtime.backends import DEFAULT_BACKEND
    from t2t_vit.runtime.timing import default_micro_batch

    paths = {}
    for batch in BATCHES:
        for graph in SPLITS:
            paths[graph, batch] = bench_backends.RuntimePath(
                f"{spec.name} {graph} bs{batch}", DEFAULT_BACKEND, onnx[graph], args.threads, batch, streams,
                default_micro_batch(batch))
        for hint in ("LATENCY", "THROUGHPUT") if "peer" in onnx else ():
            paths["peer", batch, hint] = HintPath(f"{spec.name} peer {hint} bs{batch}", onnx["peer"], args.threads,
                                                  batch, spec.img_size, hint)
    return paths


def measure(specs, onnx: dict, args, streams: int) -> tuple[dict, list[float]]:
    """Variant by variant, interleaved rounds of its paths (the order reversed every other round), the ceiling
    measured before each round; returns the images/s per (variant, graph, batch[, hint]) and the ceilings."""
    rng = np.random.default_rng(0)
    results: dict[tuple, list[float]] = {}
    ceilings = []
    for spec in specs:
        paths = variant_paths(spec, onnx[spec.name], args, streams)
        inputs = {batch: rng.standard_normal((batch, 3, spec.img_size, spec.img_size)).astype(np.float32)
                  for batch in BATCHES}
        for round_index in range(args.rounds):
            ceilings.append(bench_backends.matmul_ceiling(args.threads))
            for key in list(paths) if round_index % 2 == 0 else list(paths)[::-1]:
                batch = key[1]
                jobs = getattr(paths[key], "jobs", streams)
                speed = bench_backends.images_per_s(paths[key], inputs[batch], args.warmup, args.repeats,
                                                    bench_backends.window_batches(args.window, batch, jobs))
                results.setdefault((spec.name, *key), []).append(speed)
        del paths
        print(f"measured {spec.name} ({args.rounds} rounds; ceiling {ceilings[-1]:.0f} GFLOP/s)", file=sys.stderr,
              flush=True)
    return results, ceilings


def variant_row(spec, flops, results, ceiling: float) -> dict:
    total, attention = flops
    ceiling_images = ceiling / total
    row = {"variant": spec.name, "img_size": spec.img_size, "tokens": spec.tokens, "gflop_per_image": total,
           "attention_gflop_per_image": attention, "ceiling_images_per_s": ceiling_images}
    for batch in BATCHES:
        for graph in GRAPHS:
            if graph == "peer":
                keys = {hint: (spec.name, "peer", batch, hint) for hint in ("LATENCY", "THROUGHPUT")}
                hints = {hint: statistics.median(results[key]) for hint, key in keys.items() if key in results}
                if not hints:
                    continue
                row[f"peer_hint_bs{batch}"] = max(hints, key=hints.get)
                speed = max(hints.values())
            else:
                speed = statistics.median(results[spec.name, graph, batch])
            row[f"{graph}_images_per_s_bs{batch}"] = speed
            row[f"{graph}_ceiling_ratio_bs{batch}"] = speed / ceiling_images
        if f"peer_images_per_s_bs{batch}" in row:
            row[f"after_peer_ratio_bs{batch}"] = row[f"after_images_per_s_bs{batch}"] / row[f"peer_images_per_s_bs{batch}"]
    return row


def table(rows: list[dict]) -> list[str]:
    """The speed table: images/s and the ratio to the ceiling before / after, and after's ratio to the peer."""
    lines = ["| variant | input | GFLOP/image | attention share | ceiling images/s | bs | before images/s (x ceiling) | "
             "after images/s (x ceiling) | peer images/s (x ceiling) | after / peer |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        for batch in BATCHES:
            cells = []
            for graph in GRAPHS:
                speed = row.get(f"{graph}_images_per_s_bs{batch}")
                cells.append("-" if speed is None else f"{speed:.1f} ({row[f'{graph}_ceiling_ratio_bs{batch}']:.2f})")
            versus = row.get(f"after_peer_ratio_bs{batch}")
            lines.append(f"| {row['variant']} | {row['img_size']} | {row['gflop_per_image']:.2f} | "
                         f"{100 * row['attention_gflop_per_image'] / row['gflop_per_image']:.0f} % | "
                         f"{row['ceiling_images_per_s']:.1f} | {batch} | {' | '.join(cells)} | "
                         f"{'-' if versus is None else f'{versus:.2f}'} |")
    return lines


def inventory_table(inventory: dict) -> list[str]:
    """Nodes of each variant's sum export before -> after: in all, then in the tokens-to-token module."""
    head = " | ".join(INVENTORY_OPS)
    lines = [f"| variant | nodes | {head} | tokens-to-token: nodes | {head} |",
             "|---|---|" + "---|" * len(INVENTORY_OPS) + "---|" + "---|" * len(INVENTORY_OPS)]
    for name, graphs in inventory.items():
        before, after = graphs["before"], graphs["after"]
        cells = [f"{before[key]} -> {after[key]}" for key in ("nodes", *INVENTORY_OPS, "t2t_nodes",
                                                               *(f"t2t_{op}" for op in INVENTORY_OPS))]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.model.variants import BY_NAME, NAMES
    from t2t_vit.runtime.backends import DEFAULT_BACKEND, default_streams
    from t2t_vit.runtime.timing import default_micro_batch

    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    bench_backends.add_timing_arguments(parser)
    parser.add_argument("--variants", nargs="+", choices=NAMES, default=list(NAMES), metavar="NAME",
                        help="the variants to measure (default: all ten)")
    parser.add_argument("--upstream", type=Path, default=os.environ.get("T2T_VIT_UPSTREAM") or None, metavar="DIR",
                        help="a checkout of upstream's T2T-ViT, for the peer (default: $T2T_VIT_UPSTREAM; none: no peer)")
    parser.add_argument("--no-inventory", dest="inventory", action="store_false",
                        help="leave out the op inventory of the sum exports")
    args = parser.parse_args(argv)
    if args.upstream is not None and not (args.upstream / "models" / "t2t_vit.py").is_file():
        parser.error(f"--upstream {args.upstream} holds no models/t2t_vit.py: give a checkout of upstream's T2T-ViT")
    specs = [BY_NAME[name] for name in args.variants]
    scratch = Path(tempfile.mkdtemp(prefix="bench_variants_"))
    streams = default_streams(args.threads)
    onnx, flops, inventory = export_all(specs, args, scratch, args.upstream)
    results, ceilings = measure(specs, onnx, args, streams)
    ceiling = statistics.median(ceilings)
    print(f"f32 MatMul ceiling {ceiling:.0f} GFLOP/s (median of {args.rounds}: {', '.join(f'{c:.0f}' for c in ceilings)}"
          f"); runner default: {DEFAULT_BACKEND}, {streams} streams, micro-batch {default_micro_batch(8)} at bs8; "
          f"{args.threads} threads; peer: {'upstream ' + str(args.upstream) if args.upstream else 'none (no --upstream)'}")
    rows = [variant_row(spec, flops[spec.name], results, ceiling) for spec in specs]
    print("\n".join(table(rows)))
    if inventory:
        print("\nOp inventory of the sum export (ATC's), before -> after:")
        print("\n".join(inventory_table(inventory)))
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        for row in rows:
            row["rounds"] = {" ".join(map(str, key[1:])): results[key] for key in results if key[0] == row["variant"]}
            row["inventory"] = inventory.get(row["variant"])
        write_json(args.json, {"benchmark": "variants", "ceiling_gflops": ceiling, "ceilings": ceilings,
                               "streams": streams, "backend": DEFAULT_BACKEND, "rows": rows,
                               **provenance({**vars(args), "upstream": str(args.upstream)})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
