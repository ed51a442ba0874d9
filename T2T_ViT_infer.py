#!/usr/bin/env python3
"""Stage 4 on the CPU: a drop-in for `python3 -m ais_bench` that runs the ONNX model with onnxruntime or OpenVINO.

    python3 T2T_ViT_infer.py --model T2T_ViT_14.onnx --input prep_bins --output result --output_dirname bs8 \
        --outfmt BIN --batchsize 8
    python3 T2T_ViT_infer.py --model T2T_ViT_14.onnx --batchsize 8 --loop 100     # pure inference, throughput

Same options, batching, padding, output names and summary JSON as ais_bench (see the README), so the
Ascend commands work with only the program name and model file changed. A dynamic-batch ONNX runs at
--batchsize; a static one at its own batch. An .om model is handed to ais_bench itself when it is
installed. Extra options: --backend, --threads, --streams and --micro-batch.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from t2t_vit import cli

_OWN_OPTIONS = {"--backend": True, "--threads": True, "--streams": True, "--micro-batch": True,
                "--no-progress": False, "-v": False, "--verbose": False, "-q": False, "--quiet": False}


def build_parser():
    from t2t_vit.backends import BACKENDS, DEFAULT_BACKEND
    from t2t_vit.runner import OUTPUT_FORMATS

    parser = cli.make_parser(__doc__)
    ais = parser.add_argument_group("ais_bench options")
    ais.add_argument("--model", required=True, metavar="FILE", help="model: .onnx (CPU) or .om (Ascend, via ais_bench)")
    ais.add_argument("--input", metavar="PATHS", help="a folder of .bin/.npy files, or comma-separated files "
                     "(default: none, pure inference on zeros)")
    ais.add_argument("--output", metavar="DIR", help="where results go (default: none, nothing written)")
    ais.add_argument("--output_dirname", "--output-dirname", metavar="NAME",
                     help="result folder under --output (default: the start time)")
    ais.add_argument("--outfmt", type=str.upper, choices=OUTPUT_FORMATS, default="BIN",
                     help="result format (default: BIN)")
    ais.add_argument("--batchsize", type=int, metavar="N",
                     help="batch for a dynamic-batch model (default: 1; a static model uses its own)")
    ais.add_argument("--loop", type=int, default=1, metavar="N", help="runs of each batch (default: 1)")
    ais.add_argument("--warmup_count", "--warmup-count", type=int, default=1, metavar="N",
                     help="untimed runs first (default: 1)")
    ais.add_argument("--device", type=int, default=0, metavar="ID", help="NPU id for .om models; unused on the CPU "
                     "(default: 0)")
    cpu = parser.add_argument_group("CPU runner")
    cpu.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                     help=f"CPU runtime (default: {DEFAULT_BACKEND})")
    cpu.add_argument("--threads", type=int, metavar="N", help="runtime threads (default: the usable cores)")
    cpu.add_argument("--streams", type=int, metavar="N",
                     help="batches run at once, each on threads/N threads (default: one per thread, the fastest "
                          "here, or one per batch run if there are fewer; 1 gives each batch every thread, "
                          "ais_bench's one-at-a-time timing)")
    cpu.add_argument("--micro-batch", type=int, metavar="N",
                     help="images per backend run within a batch; must divide --batchsize (default: 2 when it "
                          "divides the batch, else 1; --micro-batch equal to --batchsize runs whole batches)")
    cpu.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_verbosity(parser)
    return parser


def ais_bench_command(argv: list[str]) -> list[str]:
    """The same command line for ais_bench, without this runner's own options."""
    forwarded, skip = [], False
    for item in argv:
        if skip:
            skip = False
            continue
        option = item.split("=", 1)[0]
        if option in _OWN_OPTIONS:
            skip = _OWN_OPTIONS[option] and "=" not in item
            continue
        forwarded.append(item)
    return [sys.executable, "-m", "ais_bench", *forwarded]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)

    def action() -> int | None:
        from t2t_vit.runner import RunnerError, run_inference

        if args.model.endswith(".om"):
            if importlib.util.find_spec("ais_bench") is None:
                raise RunnerError(f"{args.model} is an offline model for the Ascend NPU; it runs through ais_bench, "
                                  f"which is not installed here. Install the aclruntime and ais_bench wheels built "
                                  f"for your CANN version, or give the .onnx model to run on the CPU")
            return subprocess.run(ais_bench_command(argv)).returncode
        result = run_inference(args.model, args.input.split(",") if args.input else None, args.output,
                               args.output_dirname, args.outfmt, args.batchsize, args.loop, args.warmup_count,
                               args.backend, args.threads, progress=False if args.no_progress else None,
                               args=vars(args), streams=args.streams, micro_batch=args.micro_batch)
        for line in result.performance_lines():
            print(line)
        if result.summary_path is not None:
            print(f"[INFO] {len(result.filesinfo)} samples, results in {result.result_dir}, summary "
                  f"{result.summary_path}")
        return None

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(main())
