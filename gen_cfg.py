#!/usr/bin/env python3
"""Stage 3: ONNX -> keep_dtype.cfg, the node names ATC must keep in fp32 (its --keep_dtype file).

    python3 gen_cfg.py T2T_ViT_14.onnx keep_dtype.cfg

Writes the name of every node of each performer attention subgraph, from the Split that cuts kqv into
k, q, v to the Div that normalises by D, one per line. T2T-ViT-14 has two. The ONNX must be the sum
export (T2T_ViT_pth2onnx.py --performer sum, the default): an Einsum export is refused, because ATC
puts a TransData before Einsum and --keep_dtype then has no effect, and so is the matmul export (the
CPU form; keeping MatMul in fp32 is unverified on the NPU). A graph without a performer is an error,
never an empty file.
"""

from __future__ import annotations

import sys

from t2t_vit import cli


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("onnx_path", metavar="ONNX", help="the exported model (sum form)")
    parser.add_argument("cfg_path", metavar="CFG", help="keep_dtype file to write, e.g. keep_dtype.cfg")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        from t2t_vit.keep_dtype import keep_dtype_nodes, write_keep_dtype

        subgraphs = keep_dtype_nodes(args.onnx_path)
        count = write_keep_dtype(args.cfg_path, subgraphs)
        spans = ", ".join(f"{s.split} .. {s.div} ({len(s.nodes)} nodes)" for s in subgraphs)
        print(f"wrote {args.cfg_path}: {count} node names in {len(subgraphs)} performer subgraphs: {spans}")

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(main())
