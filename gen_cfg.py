#!/usr/bin/env python3
"""Stage 3: ONNX -> keep_dtype.cfg, the node names ATC must keep in fp32 (its --keep_dtype file).

    python3 gen_cfg.py T2T_ViT_14.onnx keep_dtype.cfg

Writes the name of every node of each performer attention subgraph, from the Split that cuts kqv into
k, q, v to the Div that normalises by D, one per line. T2T-ViT-14 has two. The ONNX must be the sum
export (T2T_ViT_pth2onnx.py --performer sum, the default): an Einsum export is refused, because ATC
puts a TransData before Einsum and --keep_dtype then has no effect, and so is the matmul export (the
CPU form; keeping MatMul in fp32 is unverified on the NPU). A graph without a performer is an error,
never an empty file.

--explain --input BINS: why each node is there. The fp32 graph and the NPU fp16 emulation (the
--keep-dtype set; none by default, as ATC without --keep_dtype) run on the first --images bins, and
--report (default fp16_report.csv) gets a row per node in graph order: fp32 range and fp16 headroom,
the emulated output against fp32 with the Ascend compare tools' columns (CosineSimilarity,
RelativeEuclideanDistance, ...), and the node's own error beside the accumulated one. It prints where
the first NaN comes from: the first node whose output turns non-finite while its inputs are finite,
and which input fp16 flushed or overflowed.

--minimize --input BINS: the smallest keep set that still passes on the first --images bins (no
non-finite logit, top-1 agreement with fp32 of at least --agreement, max |logit difference| to fp32 at
most --tolerance): first unions of the performers' structural groups, from the smallest up; then,
from that set, halves and then single nodes are dropped while it passes. The proof that the result is
1-minimal is printed: each of its nodes dropped alone, and the criterion that then fails.
"""

from __future__ import annotations

import sys

from t2t_vit import cli


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("onnx_path", metavar="ONNX", help="the exported model (sum form)")
    parser.add_argument("cfg_path", metavar="CFG", nargs="?",
                        help="keep_dtype file to write, e.g. keep_dtype.cfg (not with --explain)")
    fp16 = parser.add_argument_group("the NPU's fp16, emulated on preprocessed images (--explain, --minimize)")
    fp16.add_argument("--explain", action="store_true", help="a per-node fp16 report and the NaN's origin")
    fp16.add_argument("--minimize", action="store_true", help="search for the smallest safe keep set, node by node")
    fp16.add_argument("--input", metavar="BINS", help="folder of preprocessed .bin files")
    fp16.add_argument("--images", type=int, default=8, metavar="N", help="bins to use (default: 8)")
    fp16.add_argument("--keep-dtype", metavar="CFG", help="with --explain: the keep set to emulate (default: none)")
    fp16.add_argument("--report", default="fp16_report.csv", metavar="CSV",
                      help="with --explain: the per-node report to write (default: fp16_report.csv)")
    fp16.add_argument("--tolerance", type=float, default=0.02, metavar="T",
                      help="with --minimize: the largest max |logit difference| to fp32 a set may give (default: "
                           "0.02)")
    fp16.add_argument("--agreement", type=float, default=1.0, metavar="SHARE",
                      help="with --minimize: the least top-1 agreement with fp32, 0..1 (default: 1.0)")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)

    def action() -> None:
        from pathlib import Path

        from t2t_vit.files import check_input_file, check_model_file, check_output_file

        check_model_file(args.onnx_path, "ONNX")  # before onnx is imported
        for path, what in ((args.input, "--input"), (args.keep_dtype, "--keep-dtype")):
            if path and not Path(path).is_dir():
                check_input_file(path, what)
        output, what = (args.report, "--report") if args.explain else (args.cfg_path, "CFG")
        check_output_file(output, what)
        from t2t_vit.ascend.keep_dtype import describe, keep_dtype_nodes, write_keep_dtype

        if args.explain:
            explain(args)
            return
        subgraphs = keep_dtype_nodes(args.onnx_path)
        if args.minimize:
            minimize(args, subgraphs)
            return
        write_keep_dtype(args.cfg_path, subgraphs)
        print(f"wrote {args.cfg_path}: {describe(subgraphs)}")

    return cli.run(action, args)


def check_arguments(parser, args) -> None:
    if args.explain and args.minimize:
        parser.error("--explain and --minimize are two runs: give one of them")
    if (args.explain or args.minimize) and not args.input:
        parser.error(f"--{'explain' if args.explain else 'minimize'} needs --input BINS: the preprocessed images to "
                     f"run the emulation on")
    if not (args.explain or args.minimize) and args.input:
        parser.error("--input goes with --explain or --minimize")
    if args.keep_dtype and not args.explain:
        parser.error("--keep-dtype goes with --explain (--minimize searches the keep set itself)")
    if not args.explain and not args.cfg_path:
        parser.error("the keep_dtype file to write (CFG) is required")
    if args.explain and args.cfg_path:
        parser.error("--explain writes --report, not a keep_dtype file: leave out CFG")
    if args.images < 1:
        parser.error("--images must be at least 1")
    if not 0 <= args.agreement <= 1:
        parser.error(f"--agreement is a share from 0 to 1, got {args.agreement}")


def load_images(args):
    from pathlib import Path

    from t2t_vit import ToolkitError

    bins = sorted(Path(args.input).glob("*.bin"))[:args.images]
    if not bins:
        raise ToolkitError(f"--input {args.input} holds no .bin files")
    from t2t_vit.ascend.fp16_diagnosis import images_for

    return images_for(args.onnx_path, bins)


def explain(args) -> None:
    """Write the per-node report and print the NaN's origin and the nodes that make the error."""
    import csv
    import io

    from t2t_vit.model.export import load_onnx
    from t2t_vit.files import write_text_atomic
    from t2t_vit.ascend.fp16_diagnosis import REPORT_COLUMNS, explain as run_explain, origin_text
    from t2t_vit.ascend.npu_precision import read_keep_list

    images = load_images(args)
    entries = read_keep_list(args.keep_dtype)
    result = run_explain(load_onnx(args.onnx_path, "ONNX"), images, entries,
                         on_image=lambda done, total: print(f"image {done}/{total} compared", flush=True))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=REPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    write_text_atomic(args.report, buffer.getvalue())
    print(f"{len(images)} images, {len(result.rows)} nodes, {result.kept} kept in fp32 "
          f"({args.keep_dtype or 'no keep_dtype file'})")
    print(f"NaN origin: {origin_text(result.origin)}")
    causes = [row for row in result.rows if row["Cause"] in ("NaN origin", "overflows", "underflows")][:10]
    causes += sorted((row for row in result.rows if row["Cause"] == "causes"),
                     key=lambda row: -row["OwnRelativeEuclideanDistance"])[:10 - len(causes)]
    print("the nodes whose own fp16 rounding makes the error (NaN origin, overflow, underflow, then the largest own "
          "errors):")
    print("| node | op | cause | own error (RED) | accumulated (RED) | cosine | non-finite | flushed share |")
    print("|---|---|---|---|---|---|---|---|")
    for row in causes:
        print(f"| {row['NodeName']} | {row['OpType']} | {row['Cause']} | {row['OwnRelativeEuclideanDistance']:.3g} | "
              f"{row['RelativeEuclideanDistance']:.3g} | {row['CosineSimilarity']:.6f} | {row['NonFinite']} | "
              f"{row['FlushToZeroShare']:.3f} |")
    print(f"wrote {args.report}: {len(result.rows)} rows, one per node in graph order")


def minimize(args, subgraphs) -> None:
    """Group-level search, then node by node; print both tables and the proof; write the 1-minimal set."""
    from t2t_vit.model.export import load_onnx
    from t2t_vit.files import write_text_atomic
    from t2t_vit.ascend.fp16_diagnosis import Criterion, KeepSetSearch, minimize_groups, minimize_nodes

    images = load_images(args)
    criterion = Criterion(args.tolerance, args.agreement)
    search = KeepSetSearch(load_onnx(args.onnx_path, "ONNX"), images, criterion, on_candidate=print)
    print(f"{len(images)} images; a set passes when its logits stay finite, its top-1 agrees with fp32 on at least "
          f"{100 * args.agreement:g} % of them and its max |diff| to fp32 is at most {args.tolerance:g}")
    group_names, rows = minimize_groups(search, subgraphs)
    print("| groups kept | names | non-finite images | max abs diff to fp32 | top-1 = fp32 | passes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['groups']} | {row['names']} | {row['nonfinite_images']} | {row['max_abs_diff']:.4g} | "
              f"{100 * row['top1_agreement']:.1f} % | {'yes' if row['passes'] else 'no'} |")
    names, proof = minimize_nodes(search, group_names)
    print(f"\n1-minimal: each of the {len(names)} nodes dropped alone fails the criterion")
    print("| dropped alone | then fails | non-finite images | max abs diff to fp32 | top-1 = fp32 |")
    print("|---|---|---|---|---|")
    for row in proof:
        print(f"| {row['dropped']} | {row['fails']} | {row['nonfinite_images']} | {row['max_abs_diff']:.4g} | "
              f"{100 * row['top1_agreement']:.1f} % |")
    full = sum(len(subgraph.nodes) for subgraph in subgraphs)
    print(f"sizes: the structural proposal {full} names, the group-level set {len(group_names)}, node by node {len(names)} "
          f"({search.evaluations} sets tried)")
    write_text_atomic(args.cfg_path, "".join(f"{name}\n" for name in names))
    print(f"wrote {args.cfg_path}: {len(names)} node names (the full set has {full})")


if __name__ == "__main__":
    sys.exit(cli.entry(main))
