#!/usr/bin/env python3
"""The main job: every stage for a list of batch sizes, ending with accuracy and images/s tables.

    bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir /data/imagenet/val
    bash T2T_ViT_eval.sh --pth-path 81.5_T2T_ViT_14.pth.tar --data-dir ILSVRC2012_img_val.tar \\
        --devkit ILSVRC2012_devkit_t12.tar.gz      # ImageNet as downloaded, read in place
    bash T2T_ViT_eval.sh --pth-path 82.6_T2T_ViTt_24.pth.tar --data-dir /data/imagenet/val   # any variant
    bash T2T_ViT_eval.sh --demo [--model t2t_vit_7]   # no checkpoint, no dataset: synthetic images, random weights

The variant (T2T-ViT-7 ... 24, 14 at 384, the transformer-token ones) and its input size come from the
checkpoint's shapes (--model NAME confirms it); every file the job writes for a model carries its name
(below for t2t_vit_14; <name> = the variant's).

Stages, in WORK (--work-dir): preprocess once into uint8 bins (WORK/prep_bins_uint8, WORK/label.npy; with
--dtype float32 the ModelZoo's float32 bins, WORK/prep_bins; another input size than 224 adds _<size>, so
WORK/prep_bins_uint8_384: bins depend only on the data config, and variants of one input size share them);
export the sum form and its keep_dtype file for the NPU (WORK/t2t_vit_14_sum.onnx,
WORK/t2t_vit_14_keep_dtype.cfg; ATC puts AIPP in front for uint8 bins) and the matmul form for the CPU
(WORK/t2t_vit_14_matmul_uint8.onnx, which normalises inside, or WORK/t2t_vit_14_matmul.onnx for float32
bins; a transformer-token variant has one form, WORK/t2t_vit_t_14[_uint8].onnx); the accuracy pass
(WORK/result_t2t_vit_14/bs<N>, WORK/acc_t2t_vit_14_bs<N>.json); the throughput per batch size from pure inference
(WORK/perf_t2t_vit_14/bs<N>_summary.json). The tables go to stdout, WORK/eval_summary.json and WORK/eval_summary.png
(the run just made) and WORK/eval_summary_t2t_vit_14.json (the variant's, kept). Variants share a work dir: each
one's files carry its name, so a run of one never replaces another's, and when the work dir holds more than one,
the job ends with the family table (T2T_ViT_family.py: WORK/family_summary.json and .png).

With --device 0,1 every pass uses each listed chip (one ais_bench for today's, which splits the bins with
--divide_input; one per chip, each with its share, for older ones), or on the CPU one process per device; results go
to WORK/result_<name>/bs<N>/device<N>_<i>/, and throughput is per device and per card (their sum). WORK/om/T2T_ViT_dyn.om
(T2T_ViT_atc.sh --dynamic-batch) serves every batch size with --dymBatch N; a batch size that is not one of its
gears is refused before anything runs. With --om-dir or --device, T2T_ViT_doctor.py's host checks run first.

On the CPU the logits do not depend on the batch size, so accuracy is measured once (at the largest
batch size, or --accuracy-batch N; --accuracy-all runs every batch size). With ais_bench installed and
WORK/om/T2T_ViT_bs<N>.om built by T2T_ViT_atc.sh from WORK's sum export (with --aipp for uint8 bins),
each batch size runs its own .om, and accuracy is measured per batch size (each .om is its own compiled
graph). --emulate-npu adds
one accuracy pass of the NPU's fp16 emulated on the CPU (the sum export, force_fp16 + keep_dtype.cfg)
and its comparison with fp32 (for uint8 bins, on the sum form's uint8 export,
WORK/t2t_vit_14_sum_uint8.onnx, its normalised input rounded to fp16 as AIPP hands it on).

Re-running reuses what is still valid, decided by content, never by file times: bins whose manifest
records this data dir and data config and whose source images are unchanged; an ONNX whose metadata
records this checkpoint's SHA-256 and variant; results and throughput whose stamp records the variant, the
SHA-256 of the model file, the runner, the batch size and the exact bins. Anything else is redone, and the run says why.
A stage that fails stops the job with its error and exit code 1; eval_summary.json is then absent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2t_vit import cli
from t2t_vit.job.request import DEFAULT_BATCH_SIZES, DEFAULT_LOOP, DEMO_LOOP, DEMO_ROOM, JobRequest


def _batch_sizes(text: str) -> list[int]:
    sizes = []
    for part in text.replace(",", " ").split():
        if not part.isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(f"batch size '{part}' is not a positive integer (e.g. --batch-sizes "
                                             f"\"1 4 8\")")
        sizes.append(int(part))
    if not sizes:
        raise argparse.ArgumentTypeError("no batch size given (e.g. --batch-sizes \"1 4 8\")")
    return list(dict.fromkeys(sizes))


def _devices(text: str) -> list[int]:
    parts = [part.strip() for part in text.split(",")]
    if not parts or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of device ids (e.g. --device 0,1)")
    if len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"'{text}' names a device twice")
    return [int(part) for part in parts]


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from t2t_vit.model.variants import NAMES

    parser = cli.make_parser(__doc__)
    parser.prog = "T2T_ViT_eval.sh"
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--pth-path", type=Path, metavar="CKPT",
                        help="the checkpoint (81.5_T2T_ViT_14.pth.tar, or any variant upstream publishes)")
    inputs.add_argument("--model", choices=NAMES, metavar="NAME",
                        help="the variant the checkpoint must be (default: the one its shapes are); with --demo, the "
                             "variant to make (default: t2t_vit_14): " + ", ".join(NAMES))
    inputs.add_argument("--demo", action="store_true",
                        help="make synthetic images and a random checkpoint and run on them, all in WORK/demo, which "
                             "it never leaves (a real run in WORK is not touched; the accuracy means nothing)")
    inputs.add_argument("--demo-images", type=_positive, default=16, metavar="N",
                        help="synthetic images for --demo (default: 16)")
    cli.add_data_arguments(parser, required=False)
    run = parser.add_argument_group("run")
    run.add_argument("--batch-sizes", type=_batch_sizes, default=list(DEFAULT_BATCH_SIZES), metavar="'1 4 8'",
                     help="batch sizes (default: '1 4 8 16 32 64')")
    run.add_argument("--work-dir", type=Path, default=Path("work"), metavar="DIR",
                     help="where every file goes (default: work)")
    run.add_argument("--om-dir", type=Path, metavar="DIR",
                     help="offline models for ais_bench: T2T_ViT_dyn.om (T2T_ViT_atc.sh --dynamic-batch, one for every "
                          "gear, run with --dymBatch N) or T2T_ViT_bs<N>.om; given, the host check runs first "
                          "(default: WORK/om for T2T-ViT-14, WORK/om_<variant> for the others)")
    run.add_argument("--device", type=_devices, metavar="0,1",
                     help="the chips every pass uses (npu-smi's logical ids; an Atlas 300I Duo has two): one process "
                          "per chip, each image scored once; on the CPU, one process per device with its share of the "
                          "cores. Throughput is then per chip and per card (their sum). Runs the host check first "
                          "(default: one device, 0)")
    run.add_argument("--accuracy-batch", type=_positive, metavar="N",
                     help="CPU: the batch size of the one accuracy pass (default: the largest of --batch-sizes)")
    run.add_argument("--accuracy-all", action="store_true",
                     help="CPU: an accuracy pass at every batch size (they agree; this takes N times as long)")
    run.add_argument("--loop", type=_positive, metavar="N",
                     help=f"timed pure-inference runs per batch size (default: {DEFAULT_LOOP}, {DEMO_LOOP} with "
                          f"--demo)")
    run.add_argument("--emulate-npu", action="store_true",
                     help="add an accuracy pass of the NPU's fp16 (force_fp16 + keep_dtype.cfg) emulated on the CPU, "
                          "and its comparison with fp32 (once: it does not depend on the batch size)")
    run.add_argument("--dtype", choices=["uint8", "float32"], default="uint8",
                     help="bins: uint8, the cropped image (150,528 bytes each), normalised by the uint8 export on "
                          "the CPU and by AIPP on the NPU; float32, the ModelZoo's normalised bins (4x the disk) "
                          "(default: uint8)")
    run.add_argument("--allow-constant", action="store_true",
                     help="score result sets whose outputs are mostly constant or one same vector (default: error: "
                          "a dead output is not an accuracy)")
    run.add_argument("--skip-bad", action="store_true",
                     help="leave undecodable images out (listed in the bins' manifest) instead of stopping")
    run.add_argument("--workers", type=int, metavar="N",
                     help="preprocess processes, 0 = in this process (default: the usable cores)")
    add_cpu_arguments(parser)
    cli.add_verbosity(parser)
    return parser


def add_cpu_arguments(parser: argparse.ArgumentParser) -> None:
    from t2t_vit.runtime.backends import BACKENDS, DEFAULT_BACKEND

    cpu = parser.add_argument_group("CPU runner")
    cpu.add_argument("--backend", choices=BACKENDS,
                     help=f"CPU runtime (default: {DEFAULT_BACKEND}; onnxruntime on aarch64 or where only it is "
                          f"installed)")
    cpu.add_argument("--threads", type=_positive, metavar="N", help="runtime threads (default: the usable cores)")
    cpu.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = [flag for flag, value in (("--pth-path", args.pth_path), ("--data-dir", args.data_dir),
                                      ("--devkit", args.devkit), ("--label-file", args.label_file),
                                      ("--class-list", args.class_list)) if value]
    if args.demo and given:
        parser.error(f"--demo makes its own checkpoint and images; leave out {', '.join(given)}")
    if not args.demo and not (args.pth_path and args.data_dir):
        parser.error("--pth-path and --data-dir are required (or --demo)")
    if args.workers is not None and args.workers < 0:
        parser.error("--workers must be 0 or more")
    if args.accuracy_batch and args.accuracy_batch not in args.batch_sizes:
        parser.error(f"--accuracy-batch {args.accuracy_batch} is not one of --batch-sizes {args.batch_sizes}")
    request = JobRequest(pth_path=args.pth_path, data_dir=args.data_dir, label_file=args.label_file,
                         devkit=args.devkit, class_list=args.class_list,
                         work_dir=args.work_dir / DEMO_ROOM if args.demo else args.work_dir,
                         batch_sizes=args.batch_sizes, backend=args.backend,
                         loop=args.loop or (DEMO_LOOP if args.demo else DEFAULT_LOOP), om_dir=args.om_dir,
                         demo=args.demo, demo_images=args.demo_images, accuracy_batch=args.accuracy_batch,
                         accuracy_all=args.accuracy_all, skip_bad=args.skip_bad, workers=args.workers,
                         threads=args.threads, progress=False if args.no_progress else None,
                         emulate_npu=args.emulate_npu, dtype=args.dtype, allow_constant=args.allow_constant,
                         model=args.model, devices=args.device)

    def action() -> None:
        from t2t_vit.job.report import write_report
        from t2t_vit.job.run import run_job

        write_report(request.work_dir, run_job(request))

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
