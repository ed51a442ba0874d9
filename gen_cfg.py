#!/usr/bin/env python3
"""Stage 3: ONNX -> keep_dtype.cfg, the node names ATC must keep in fp32 (its --keep_dtype file).

    python3 gen_cfg.py T2T_ViT_14.onnx keep_dtype.cfg

Writes the name of every node of each performer attention subgraph, from the Split that cuts kqv into
k, q, v to the Div that normalises by D, one per line. T2T-ViT-14 has two. The ONNX must be the sum
export (T2T_ViT_pth2onnx.py --performer sum, the default): an Einsum export is refused, because ATC
puts a TransData before Einsum and --keep_dtype then has no effect, and so is the matmul export (the
CPU form; keeping MatMul in fp32 is unverified on the NPU). A graph without a performer is an error,
never an empty file.

--minimize --input BINS (float32 bins, or uint8 bins, normalised here for the float export): the
smallest keep set that is still safe, found with the NPU fp16 emulation
(T2T_ViT_infer.py --precision npu-fp16) on the first --images bins: the performer nodes are cut into
groups (normaliser with eps, the sums over the features that make D and y, the sums over the tokens,
the random features), and unions of groups are tried from the smallest up; the first whose logits stay
finite, agree with the full set's top-1 on every image and stay within --tolerance of the full set's
max |difference| to fp32 is written. The table of sets tried is printed.
"""

from __future__ import annotations

import sys

from t2t_vit import cli


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("onnx_path", metavar="ONNX", help="the exported model (sum form)")
    parser.add_argument("cfg_path", metavar="CFG", help="keep_dtype file to write, e.g. keep_dtype.cfg")
    search = parser.add_argument_group("the smallest safe keep set (--minimize)")
    search.add_argument("--minimize", action="store_true", help="search for the smallest safe keep set")
    search.add_argument("--input", metavar="BINS", help="folder of preprocessed .bin files to try the sets on")
    search.add_argument("--images", type=int, default=16, metavar="N", help="bins to use (default: 16)")
    search.add_argument("--tolerance", type=float, default=0.01, metavar="T",
                        help="allowed growth of the max |logit difference| to fp32 over the full set's (default: "
                             "0.01)")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.minimize and not args.input:
        parser.error("--minimize needs --input BINS: the preprocessed images to try the keep sets on")
    if not args.minimize and args.input:
        parser.error("--input goes with --minimize")
    if args.images < 1:
        parser.error("--images must be at least 1")

    def action() -> None:
        from t2t_vit.keep_dtype import keep_dtype_nodes, write_keep_dtype

        subgraphs = keep_dtype_nodes(args.onnx_path)
        if args.minimize:
            minimize(args, subgraphs)
            return
        count = write_keep_dtype(args.cfg_path, subgraphs)
        spans = ", ".join(f"{s.split} .. {s.div} ({len(s.nodes)} nodes)" for s in subgraphs)
        print(f"wrote {args.cfg_path}: {count} node names in {len(subgraphs)} performer subgraphs: {spans}")

    return cli.run(action, args)


def minimize(args, subgraphs) -> None:
    """Search, print the table, write the smallest safe set."""
    from pathlib import Path

    from t2t_vit import ToolkitError
    from t2t_vit.files import write_text_atomic
    from t2t_vit.npu_precision import minimize_keep

    bins = sorted(Path(args.input).glob("*.bin"))[:args.images]
    if not bins:
        raise ToolkitError(f"--input {args.input} holds no .bin files")
    images = read_images_for(args.onnx_path, bins)
    names, rows = minimize_keep(args.onnx_path, subgraphs, images, args.tolerance)
    print(f"{len(images)} images; a set passes when its logits stay finite, its top-1 equals the full set's on "
          f"every image and its max |diff| to fp32 is within {args.tolerance:g} of the full set's")
    print("| groups kept | names | non-finite images | max abs diff to fp32 | top-1 = full set | passes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['groups']} | {row['names']} | {row['nonfinite_images']} | {row['max_abs_diff']:.4g} | "
              f"{100 * row['top1_agreement_with_full']:.1f} % | {'yes' if row['passes'] else 'no'} |")
    write_text_atomic(args.cfg_path, "".join(f"{name}\n" for name in names))
    print(f"wrote {args.cfg_path}: {len(names)} node names (the full set has "
          f"{sum(len(s.nodes) for s in subgraphs)})")


def read_images_for(onnx_path, bins):
    """The bins as the model's input: float32 bins as they are; uint8 bins (their manifest says so) as they are for
    the uint8 export, or normalised as timm does for the float export."""
    import numpy as np

    from t2t_vit import ToolkitError
    from t2t_vit.data import normalise, read_bin
    from t2t_vit.export import input_dtype_of, load_onnx
    from t2t_vit.preprocess import bins_dtype
    from t2t_vit.runner import bins_dtype_advice, read_inputs_manifest

    manifest = read_inputs_manifest(bins) or {}
    found_dtype = bins_dtype(manifest)
    proto = load_onnx(onnx_path)
    model_dtype = input_dtype_of(proto)
    dims = [dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim[1:]]
    if found_dtype == "float32" and model_dtype == "uint8":
        raise ToolkitError(bins_dtype_advice(found_dtype, model_dtype, bins[0].parent, onnx_path))
    if found_dtype == "uint8":
        channels, height, width = manifest["data_config"]["input_size"]
        pixels = np.concatenate([read_bin(path, (1, height, width, channels), "uint8") for path in bins])
        if model_dtype == "uint8":
            return pixels
        config = manifest["data_config"]
        return normalise(pixels, config["mean"], config["std"])
    try:
        return np.stack([np.fromfile(path, dtype="<f4").reshape(dims) for path in bins])
    except ValueError:
        raise ToolkitError(f"the bins in {bins[0].parent} are not float32 images of shape {dims}: preprocess them "
                           f"with T2T_ViT_preprocess.py") from None


if __name__ == "__main__":
    sys.exit(main())
