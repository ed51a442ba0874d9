#!/usr/bin/env python3
"""Which T2T-ViT to ship: every variant measured in one or more work dirs, side by side, and the choice.

    python3 T2T_ViT_family.py --work-dir work
    python3 T2T_ViT_family.py --work-dir work npu_work --min-images-per-s 500    # CPU runs here + NPU runs there
    python3 T2T_ViT_family.py --work-dir work --min-top1 80 --out-dir report

It reads what the main job (T2T_ViT_eval.sh) keeps per variant, WORK/eval_summary_<variant>.json, and runs no
inference. One row per variant and runner: its published name and checkpoint, top-1 / top-5, the NPU fp16
emulation's top-1 and flips where measured, the keep set's size, params and GFLOPs, images/s at each batch
size (the card's, and each chip's in brackets on a Duo), the best batch size, when it was measured, and whether
it is on the accuracy-speed frontier (no other variant is both as accurate and as fast). Rows are compared only
with rows of the same images (the label file's SHA-256 and the image count) and the same runner: rows measured on
other images or another runner form a group of their own, marked 'apart', and the table says so in one line.

Given a floor (--min-images-per-s, --min-top1, or both), each group names the variant that meets it with the
most accuracy (or, a top-1 floor alone, the most speed) and says why, or that none does.

Writes OUT/family_summary.json and OUT/family_summary.png (top-1 against images/s, one point per row, the
frontier drawn); OUT is --out-dir, by default the first --work-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from t2t_vit import cli


def _floor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--work-dir", type=Path, nargs="+", required=True, metavar="DIR",
                        help="work dirs of the main job (each with eval_summary_<variant>.json files)")
    parser.add_argument("--out-dir", type=Path, metavar="DIR",
                        help="where family_summary.json and .png go (default: the first --work-dir)")
    parser.add_argument("--min-top1", type=_floor, metavar="PERCENT",
                        help="a top-1 floor: name the fastest variant that reaches it")
    parser.add_argument("--min-images-per-s", type=_floor, metavar="N",
                        help="a speed floor (images/s at the variant's best batch size): name the most accurate "
                             "variant that reaches it")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        from t2t_vit.files import check_output_folder
        from t2t_vit.job.family import build_family
        from t2t_vit.job.family_report import markdown, write_family

        out_dir = args.out_dir or args.work_dir[0]
        check_output_folder(out_dir, "--out-dir")
        family = build_family(args.work_dir, args.min_top1, args.min_images_per_s)
        print(markdown(family))
        written = write_family(family, out_dir)
        print(f"\nwrote {' and '.join(map(str, written))}")

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
