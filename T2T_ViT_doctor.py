#!/usr/bin/env python3
"""The host check before the first NPU run: one table of what the Ascend flow needs, what is here, and each fix.

    python3 T2T_ViT_doctor.py                                   # the table; exit 0 when the NPU flow can run
    python3 T2T_ViT_doctor.py --data-dir /data/imagenet/val --json doctor.json

Checks: Python and the torch / torchvision / numpy / onnx / timm versions against the supported range
(requirements-host.txt), with CANN's numpy < 2; CANN's environment (ASCEND_TOOLKIT_HOME, atc on PATH and the
toolkit's version); ais_bench and aclruntime importable, and which multi-device behaviour that ais_bench has
(--divide_input in its option table or not); npu-smi info: each chip with its NPU id, chip id, logical device
id (what --device takes) and name, on an Atlas 300I Pro or Duo, and the --soc_version that follows; the free
disk against the bins of --data-dir (uint8 and float32, at --img-size); the CPU runtimes.

Exit 0 when the NPU flow can run; 1 with the first blocker named on stderr. On a host without CANN it says so,
and what the CPU path still offers.
"""

from __future__ import annotations

import json
import sys

from t2t_vit import cli


def build_parser():
    parser = cli.make_parser(__doc__)
    parser.add_argument("--data-dir", metavar="DIR|TAR", help="the val images, to size the disk their bins need")
    parser.add_argument("--work-dir", default="work", metavar="DIR",
                        help="where the bins would go (default: work)")
    parser.add_argument("--img-size", type=int, default=224, metavar="S",
                        help="the model's input size, for the bins' size (default: 224; 384 for t2t_vit_14_384)")
    parser.add_argument("--json", metavar="FILE", help="also write the checks and the chips as JSON ('-': stdout)")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.img_size % 16 or not 32 <= args.img_size <= 1024:
        build_parser().error(f"--img-size must be a multiple of 16 from 32 to 1024, got {args.img_size}")

    def action() -> int:
        from pathlib import Path

        from t2t_vit import ToolkitError
        from t2t_vit.files import check_output_file, check_output_folder

        if args.data_dir and not Path(args.data_dir).exists():  # the user's own mistakes first, in one line
            raise ToolkitError(f"--data-dir {args.data_dir} does not exist")
        check_output_folder(args.work_dir, "--work-dir")
        if args.json and args.json != "-":
            check_output_file(args.json, "--json")
        from t2t_vit.ascend.doctor import cpu_path_note, diagnose, table
        from t2t_vit.provenance import provenance, write_json

        report = diagnose(args.data_dir, args.work_dir, args.img_size)
        if args.json == "-":
            print(json.dumps(report, indent=2))
        else:
            print("\n".join(table(report["checks"])))
            if args.json:
                write_json(args.json, {**report, **provenance(vars(args))})
        if report["ready"]:
            chips = ",".join(str(chip["device"]) for chip in report["chips"])
            print(f"the NPU flow can run: --soc-version {report['soc_version']}, --device {chips}",
                  file=sys.stderr if args.json == "-" else sys.stdout)  # stdout holds the JSON alone
            return 0
        if not report["cann"]:
            print(cpu_path_note(report), file=sys.stderr)
        blocker = report["first_blocker"]
        print(f"error: the NPU flow cannot run here: {blocker['check']}: {blocker['found']}; fix: {blocker['fix']}",
              file=sys.stderr)
        return 1

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
