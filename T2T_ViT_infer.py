#!/usr/bin/env python3
"""Stage 4 on the CPU: a drop-in for `python3 -m ais_bench` that runs the ONNX model with onnxruntime or OpenVINO.

    python3 T2T_ViT_infer.py --model T2T_ViT_14.onnx --input prep_bins --output result --output_dirname bs8 \\
        --outfmt BIN --batchsize 8
    python3 T2T_ViT_infer.py --model T2T_ViT_14.onnx --batchsize 8 --loop 100     # pure inference, throughput

Every ais_bench option with its spellings, short forms and value forms, and the same batching,
padding, output names and summary JSON (see the README's table of what each option does on the CPU),
so the Ascend commands work with only the program name and model file changed. A dynamic-batch ONNX
runs at --batchsize (or --dymBatch); a static one at its own batch. An .om model is handed to ais_bench
itself when it is installed, in ais_bench's own spellings. Extra options: --backend, --threads,
--streams, --micro-batch and --no-progress.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys

from t2t_vit import cli


def build_parser(only_given: bool = False) -> argparse.ArgumentParser:
    """The runner's parser; ``only_given`` leaves ais_bench options the command line does not give unset."""
    from t2t_vit.aisbench import add_ais_options
    from t2t_vit.runtime.backends import BACKENDS, DEFAULT_BACKEND
    from t2t_vit.ascend.npu_precision import PRECISIONS

    parser = cli.make_parser(__doc__)
    add_ais_options(parser, only_given)
    cpu = parser.add_argument_group("CPU runner (never handed to ais_bench)")
    cpu.add_argument("--backend", choices=BACKENDS,
                     help=f"CPU runtime (default: {DEFAULT_BACKEND}; onnxruntime on aarch64, where only it is "
                          f"installed, and with --precision npu-fp16)")
    cpu.add_argument("--precision", choices=PRECISIONS, default="fp32",
                     help="fp32, or npu-fp16: what the .om computes under ATC's default force_fp16, every node "
                          "rounded to fp16 except those of --keep-dtype (default: fp32)")
    cpu.add_argument("--keep-dtype", metavar="CFG",
                     help="with --precision npu-fp16: the keep_dtype.cfg given to ATC (default: none kept, as ATC "
                          "without --keep_dtype)")
    cpu.add_argument("--npu-accumulate", choices=("fp32", "fp16"), default="fp32",
                     help="with --precision npu-fp16: fp16 is the pessimistic bracket, where ReduceSum, ReduceMean "
                          "and Softmax's sum also accumulate in fp16 (MatMul stays on the cube's fp32) (default: "
                          "fp32)")
    cpu.add_argument("--threads", type=int, metavar="N", help="runtime threads (default: the usable cores)")
    cpu.add_argument("--streams", type=int, metavar="N",
                     help="batches run at once, each on threads/N threads (default: one per thread, the fastest "
                          "here, or one per batch run if there are fewer; 1 gives each batch every thread, "
                          "ais_bench's one-at-a-time timing)")
    cpu.add_argument("--micro-batch", type=int, metavar="N",
                     help="images per backend run within a batch; must divide --batchsize (default: 2 when it "
                          "divides the batch, else 1; --micro-batch equal to --batchsize runs whole batches)")
    cpu.add_argument("--resume", action="store_true",
                     help="continue an interrupted pass in OUTPUT/OUTPUT_DIRNAME: batches whose outputs were written "
                          "whole by the same model, runner, batch size and inputs are kept, the rest run; results "
                          "of another pass there are removed (ais_bench has no such option: without it the runner "
                          "behaves exactly as ais_bench)")
    cpu.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    cli.add_verbosity(parser)
    return parser


def ais_bench_command(argv: list[str]) -> list[str]:
    """The command that hands this command line to ais_bench: only its options, in its spellings and value forms."""
    from t2t_vit.aisbench import handover_command

    given = vars(build_parser(only_given=True).parse_args(argv))
    return [sys.executable, "-m", "ais_bench", *handover_command(given)]


def main(argv: list[str] | None = None) -> int:
    from t2t_vit.aisbench import check_ais_rules

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    check_ais_rules(parser, vars(args))
    if args.dymBatch and args.batchsize and args.dymBatch != args.batchsize:
        parser.error(f"--dymBatch {args.dymBatch} and --batchsize {args.batchsize} disagree: give one of them")
    if args.keep_dtype and args.precision != "npu-fp16":
        parser.error("--keep-dtype goes with --precision npu-fp16")
    if args.npu_accumulate != "fp32" and args.precision != "npu-fp16":
        parser.error("--npu-accumulate goes with --precision npu-fp16")
    if args.precision == "npu-fp16" and args.backend == "openvino":
        parser.error("--precision npu-fp16 runs on onnxruntime: OpenVINO's f16 hint silently computes in f32 on CPUs "
                     "without native fp16, so it cannot show what the NPU computes; leave out --backend openvino")
    if args.dymBatch < 0:
        parser.error(f"--dymBatch must be 0 (off) or a batch size, got {args.dymBatch}")

    def action() -> int | None:
        import logging

        from t2t_vit.aisbench import npu_only_warnings
        from t2t_vit.runtime.backends import choose_backend
        from t2t_vit.runtime.runner import run_inference
        from t2t_vit.runtime.input_checks import check_om_inputs
        from t2t_vit.runtime.batching import RunnerError
        from t2t_vit.files import check_model_file, check_output_folder

        check_model_file(args.model, "--model", "om" if args.model.endswith(".om") else "onnx")
        if args.output:
            check_output_folder(args.output, "--output")
        if args.model.endswith(".om"):
            check_om_inputs(args.model, args.input.split(",") if args.input else None, args.dymBatch)
            if args.resume:
                logging.getLogger("T2T_ViT_infer").warning("--resume is the CPU runner's: ais_bench runs the whole pass")
            if importlib.util.find_spec("ais_bench") is None:
                raise RunnerError(f"{args.model} is an offline model for the Ascend NPU; it runs through ais_bench, "
                                  f"which is not installed here. Install the aclruntime and ais_bench wheels built "
                                  f"for your CANN version, or give the .onnx model to run on the CPU")
            return subprocess.run(ais_bench_command(argv)).returncode
        log = logging.getLogger("T2T_ViT_infer")
        inputs = args.input.split(",") if args.input else None
        several = isinstance(args.device, list) and len(args.device) > 1
        if several:  # chosen once, here (one run chooses its runtime after checking its bins against the model)
            if inputs and os.path.isfile(args.model):  # bins the model does not take: refused before anything else
                from t2t_vit.runtime.input_checks import check_inputs_match
                from t2t_vit.runtime.batching import list_input_files

                check_inputs_match(args.model, list_input_files(inputs))
            args.backend = choose_backend(args.backend, args.precision)
        elif args.backend is not None:
            choose_backend(args.backend, args.precision)  # a runtime asked for but not installed: said first
        for warning in npu_only_warnings(vars(args)):
            log.warning("%s", warning)
        common = dict(model=args.model, outfmt=args.outfmt, batchsize=args.dymBatch or args.batchsize, loop=args.loop,
                      warmup_count=args.warmup_count, backend_name=args.backend, argv=[sys.argv[0], *argv],
                      streams=args.streams, micro_batch=args.micro_batch, pure_data_type=args.pure_data_type,
                      output_batchsize_axis=args.output_batchsize_axis, debug=args.debug, options=vars(args),
                      precision=args.precision, keep_dtype=args.keep_dtype, accumulate=args.npu_accumulate,
                      resume=args.resume)
        if several:
            from t2t_vit.runtime.multidevice import run_devices, summary_lines

            runs = run_devices(args.device, args.divide_input, inputs, args.output, args.output_dirname,
                               args.threads, {**common, "progress": False}, args.display_all_summary)
            for run in runs:
                print("\n".join(run.lines))
                if run.summary_path is not None:
                    print(f"[INFO] device {run.device}: {run.inputs} samples, results in {run.result_dir}, summary "
                          f"{run.summary_path}")
            print("\n".join(summary_lines(runs)))
            return None
        if args.divide_input:
            log.warning("--divide_input goes with a --device list; one device runs every input")
        result = run_inference(inputs=inputs, output=args.output, output_dirname=args.output_dirname,
                               threads=args.threads, progress=False if args.no_progress else None, **common)
        for line in result.performance_lines(args.display_all_summary):
            print(line)
        if result.summary_path is not None:
            print(f"[INFO] {len(result.filesinfo)} samples, results in {result.result_dir}, summary "
                  f"{result.summary_path}")
        return None

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
