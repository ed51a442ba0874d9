#!/usr/bin/env python3
"""Stage 2: T2T-ViT checkpoint -> ONNX with input ``image`` (N,3,S,S) and output ``class`` (N,1000).

    python3 T2T_ViT_pth2onnx.py --pth-path 81.5_T2T_ViT_14.pth.tar --onnx-path t2t_vit_14_sum.onnx
    python3 T2T_ViT_pth2onnx.py --pth-path 83.3_T2T_ViT_14.pth.tar --onnx-path t2t_vit_14_384_sum.onnx  # S = 384
    python3 T2T_ViT_pth2onnx.py --pth-path 81.5_T2T_ViT_14.pth.tar --onnx-path t2t_vit_14_matmul_uint8.onnx \\
        --input-dtype uint8 --performer matmul      # for uint8 bins on the CPU

Every ImageNet T2T-ViT upstream publishes is taken (t2t_vit_7, _10, _12, _14, _19, _24, t2t_vit_14_384,
t2t_vit_t_14, _t_19, _t_24): the variant and its input size S are read from the checkpoint's tensor shapes,
and --model NAME confirms it (a checkpoint of another variant is then refused). The checkpoint may be the
published one (a timm CheckpointSaver dict; EMA weights are preferred), a dict with ``state_dict`` /
``state_dict_ema`` / ``model``, or a bare state dict, with or without ``module.`` prefixes. It must fit its
variant exactly. The batch axis is dynamic. The performer attention is written without Einsum unless
``--performer einsum``: ``sum`` (default) is the form the Ascend flow and ``gen_cfg.py`` expect, ``matmul``
the fastest on CPUs. The transformer-token variants (t2t_vit_t_*) have softmax attention and no performer:
they have one form, and --performer does not apply. The file is checked with onnx.checker and compared with
PyTorch in onnxruntime before it is moved into place; its metadata names the variant.

--input-dtype uint8 makes ``image`` uint8 (N,S,S,3), the bins of T2T_ViT_preprocess.py --dtype uint8,
normalised inside the graph in timm's order (/255, -mean, /std, to NCHW) before the float graph; it is
compared with PyTorch on the same images normalised by timm's steps. It is for the CPU: on the NPU the
float export with T2T_ViT_atc.sh --aipp takes the same uint8 bins.
"""

from __future__ import annotations

import argparse
import sys

from t2t_vit import cli


def build_parser() -> argparse.ArgumentParser:
    from t2t_vit.model.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, INPUT_DTYPES, MAX_OPSET, MIN_OPSET
    from t2t_vit.model.variants import DEFAULT_PERFORMER, NAMES, PERFORMER_FORMS, WEIGHT_CHOICES

    parser = cli.make_parser(__doc__)
    files = parser.add_argument_group("files")
    files.add_argument("--pth-path", required=True, metavar="CKPT", help="checkpoint to export (.pth / .pth.tar)")
    files.add_argument("--onnx-path", required=True, metavar="OUT.onnx", help="ONNX file to write")
    files.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto",
                       help="which weights of a training checkpoint: auto = EMA if present, else the plain "
                            "state_dict (default: auto)")
    files.add_argument("--model", choices=NAMES, metavar="NAME",
                       help="the variant the checkpoint must be (default: the one its shapes are): "
                            + ", ".join(NAMES))
    export = parser.add_argument_group("export")
    export.add_argument("--performer", choices=PERFORMER_FORMS, default=DEFAULT_PERFORMER,
                        help="form of the performer attention: sum = Mul+ReduceSum for ATC/keep_dtype, "
                             "matmul = fastest on CPU, einsum = reference, needs opset >= 12 "
                             f"(default: {DEFAULT_PERFORMER})")
    export.add_argument("--input-dtype", choices=INPUT_DTYPES, default="float32",
                        help="float32: normalised NCHW input (the ModelZoo layout); uint8: the cropped NHWC image, "
                             "normalised inside (for --dtype uint8 bins on the CPU) (default: float32)")
    export.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {MIN_OPSET}..{MAX_OPSET} (default: {DEFAULT_OPSET})")
    export.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="ABS",
                        help="fail if onnxruntime and PyTorch logits differ by more than this "
                             f"(default: {DEFAULT_TOLERANCE:g})")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        import logging

        from t2t_vit.model.export import export_checkpoint
        from t2t_vit.model.variants import SOFTMAX_FORM

        if args.performer == "einsum":
            logging.getLogger("T2T_ViT_pth2onnx").warning(
                "the einsum export is for CPUs only: ATC accepts Einsum for a fixed list of two-input equations, and "
                "three of the performer's four (btm,bm->bt, btn,btm->bnm, btm,bnm->btn) are not on it; export "
                "--performer sum for the Ascend flow")
        report, weights_key = export_checkpoint(args.pth_path, args.onnx_path, args.performer, args.weights,
                                                args.opset, args.tolerance, input_dtype=args.input_dtype,
                                                model_name=args.model)
        size = report.metadata.get("t2t_vit.img_size", "224")
        print(f"wrote {report.onnx_path}: model={report.metadata.get('t2t_vit.model')} input={args.input_dtype} "
              f"{size}x{size} {'attention=softmax' if report.performer == SOFTMAX_FORM else 'performer=' + report.performer} opset={report.opset} "
              f"weights={weights_key or 'bare state dict'}, {report.verification}")

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
