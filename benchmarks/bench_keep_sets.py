#!/usr/bin/env python3
"""The fp16 keep set of every published T2T-ViT, found and proven on the CPU, in one run.

    python3 benchmarks/bench_keep_sets.py --json bench_keep_sets.json
    python3 benchmarks/bench_keep_sets.py --variants t2t_vit_7 t2t_vit_t_14 --images 4
    python3 benchmarks/bench_keep_sets.py --checkpoint-dir /models   # upstream's files, by their published names

For each variant: its ``sum`` export (the Ascend form; the transformer-token variants' one softmax form),
of random weights with unit-scale projections (the tests' scaled weights, seed 0) or, with
--checkpoint-dir, of the published checkpoint found there under upstream's file name. On the first
--images images under --data-dir, preprocessed at the variant's input size, the NPU's force_fp16 is
emulated (``T2T_ViT_infer.py --precision npu-fp16``) three ways:

- nothing kept (ATC without --keep_dtype): are the logits finite, and where does the first NaN come from;
- gen_cfg.py's structural proposal: its size, max |logit difference| to f32 and top-1 agreement;
- gen_cfg.py --minimize's search (group level, then node by node, with its default criterion: finite,
  top-1 = f32 on every image, max |diff| <= 0.02): the 1-minimal set's size.

Printed as a Markdown table (and --json). Random weights are not a trained model's: a trained model's
activations, and so its fp16 headroom, differ; --checkpoint-dir measures the real ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

DEFAULT_DATA = REPO_ROOT / "tests" / "data" / "imagenet-sample"  # shipped; ../shared/data/imagenet-sample has 200


def load_images(data_dir: Path, count: int, img_size: int) -> np.ndarray:
    """The first ``count`` JPEGs under ``data_dir`` (sorted), as T2T_ViT_preprocess.py --img-size makes them."""
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb

    paths = sorted(path for path in data_dir.rglob("*") if path.suffix.lower() in (".jpeg", ".jpg", ".png"))[:count]
    if not paths:
        raise SystemExit(f"error: no images under {data_dir}")
    transform = EvalTransform(resolve_data_config(img_size=img_size))
    return np.concatenate([transform(open_rgb(path)) for path in paths])


def export_variant(spec, out: Path, checkpoint_dir: Path | None, splits: str = "conv") -> str:
    """Write the variant's sum export to ``out`` (its soft splits as ``splits``); return where its weights came from."""
    import torch

    from t2t_vit.model.checkpoint import load_model
    from t2t_vit.model.export import export_onnx
    from t2t_vit.model.network import create_model, scaled_random_state_dict

    for name in spec.checkpoints if checkpoint_dir else ():
        path = checkpoint_dir / name
        if path.is_file():
            model, _, _ = load_model(path, spec.form("sum"), "auto", spec.name)
            export_onnx(model, out, data_config=spec.data_config(), splits=splits)
            return f"checkpoint {name}"
    torch.manual_seed(0)  # the performers' fixed projections w are drawn when the model is built, and kept
    model = create_model(spec.form("sum"), spec)
    model.load_state_dict(scaled_random_state_dict(model, seed=0))
    export_onnx(model, out, data_config=spec.data_config(), verify_batch_sizes=(1,), splits=splits)
    return "random (scaled, seed 0)"


def measure(spec, images: np.ndarray, onnx_path: Path, threads: int | None) -> dict:
    from t2t_vit.model.export import load_onnx
    from t2t_vit.ascend.fp16_diagnosis import Criterion, KeepSetSearch, minimize_groups, minimize_nodes, nan_origin
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes

    proto = load_onnx(onnx_path)
    subgraphs = keep_dtype_nodes(onnx_path)
    proposal = [name for subgraph in subgraphs for name in subgraph.nodes]
    search = KeepSetSearch(proto, images, Criterion(0.02, 1.0), threads=threads)
    _, nothing = search.evaluate([])
    row = {"model": spec.name, "input": spec.img_size, "images": len(images),
           "attention": "performer" if spec.performer else "softmax",
           "nothing_kept_finite": nothing["nonfinite_images"] == 0,
           "nothing_kept_max_abs_diff": nothing["max_abs_diff"],
           "nothing_kept_top1_agreement": nothing["top1_agreement"]}
    if not row["nothing_kept_finite"]:
        origin = nan_origin(proto, images, threads=threads)
        row["nan_origin"] = origin["node"] if origin else None
    _, kept = search.evaluate(proposal)
    row.update({"proposal_size": len(proposal), "proposal_finite": kept["nonfinite_images"] == 0,
                "proposal_max_abs_diff": kept["max_abs_diff"], "proposal_top1_agreement": kept["top1_agreement"]})
    started = time.perf_counter()
    group_names, _ = minimize_groups(search, subgraphs)
    try:
        names, _ = minimize_nodes(search, group_names)
    except Exception as error:  # the proposal itself fails the criterion: there is nothing to minimise from
        row.update({"minimal_size": None, "minimal_note": str(error)})
    else:
        row.update({"group_level_size": len(group_names), "minimal_size": len(names),
                    "minimal_max_abs_diff": search.evaluate(names)[1]["max_abs_diff"]})
    row.update({"sets_tried": search.evaluations, "search_s": round(time.perf_counter() - started, 1)})
    return row


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | input | attention | nothing kept | proposal: names, max abs diff, top-1 = f32 | "
             "1-minimal (group level) | sets tried |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        nothing = (f"finite, max abs diff {row['nothing_kept_max_abs_diff']:.3g}" if row["nothing_kept_finite"]
                   else f"NaN (first at {row.get('nan_origin')})")
        minimal = (f"{row['minimal_size']} ({row['group_level_size']})" if row["minimal_size"] is not None
                   else row["minimal_note"])
        lines.append(f"| {row['model']} | {row['input']} | {row['attention']} | {nothing} | {row['proposal_size']}, "
                     f"{row['proposal_max_abs_diff']:.3g}, {100 * row['proposal_top1_agreement']:.0f} % | {minimal} | "
                     f"{row['sets_tried']} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.model.variants import BY_NAME, DEFAULT_SPLITS, NAMES, SPLIT_FORMS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=NAMES, default=list(NAMES), metavar="NAME",
                        help="the variants to measure (default: all ten)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA, metavar="DIR",
                        help=f"images (default: {DEFAULT_DATA})")
    parser.add_argument("--images", type=int, default=8, metavar="N", help="images per variant (default: 8)")
    parser.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                        help="upstream's checkpoints under their published names; random weights for the others")
    parser.add_argument("--threads", type=int, metavar="N", help="onnxruntime threads (default: its own)")
    parser.add_argument("--splits", choices=SPLIT_FORMS, default=DEFAULT_SPLITS,
                        help="the soft splits as the exports write them (conv) or as they did before (unfold)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error("--images must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_keep_sets_") as scratch:
        for name in args.variants:
            spec = BY_NAME[name]
            onnx_path = Path(scratch) / f"{name}.onnx"
            weights = export_variant(spec, onnx_path, args.checkpoint_dir, args.splits)
            row = measure(spec, load_images(args.data_dir, args.images, spec.img_size), onnx_path, args.threads)
            row["weights"] = weights
            rows.append(row)
            print(f"{name}: {json.dumps(row)}", flush=True)
            onnx_path.unlink()
    print()
    print("\n".join(table(rows)))
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "keep_sets", "criterion": {"tolerance": 0.02, "agreement": 1.0},
                               "rows": rows, **provenance(vars(args))})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
