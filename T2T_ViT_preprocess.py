#!/usr/bin/env python3
"""Stage 1: ImageNet val images -> one .bin per image (float32 NCHW, or uint8 NHWC), a label file and a manifest.

    python3 T2T_ViT_preprocess.py --data-dir /data/imagenet/val --out-dir prep_bins --gt-path label.npy
    python3 T2T_ViT_preprocess.py --data-dir /data/imagenet/val --out-dir prep_bins_uint8 --gt-path label.npy \\
        --dtype uint8
    python3 T2T_ViT_preprocess.py --data-dir ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz \\
        --out-dir prep_bins --gt-path label.npy
    python3 T2T_ViT_preprocess.py --data-dir /data/imagenet/val --out-dir prep_bins_384 --gt-path label.npy \\
        --img-size 384                     # for 83.3_T2T_ViT_14.pth.tar (t2t_vit_14_384)

Input (--data-dir), as ImageNet val is downloaded or sorted:
  DIR/<synset>/<image>        the class index is the synset's position among the 1000 ImageNet synsets
                              in sorted order (shipped with the toolkit); any subset of the classes works
  ILSVRC2012_img_val.tar      the official archive, read in place (.tar.gz/.tgz as one stream): nothing is
  + --devkit DEVKIT             extracted; labels from ILSVRC2012_devkit_t12.tar.gz or its folder (meta.mat
                                maps the ground truth's IDs, in meta.mat's order, to synsets)
  a flat folder + --devkit, or + --label-file FILE: '<file name> <class index>' lines (val_label.txt),
                              Kaggle's LOC_val_solution.csv, or one WNID per line (told apart by content)
Images that the labels do not name, files without an image extension and hidden files (.DS_Store) are
left out and listed in the manifest; labels of images that are absent (a subset) are only counted.

Each image is converted to RGB and transformed exactly as timm's eval transform for the model's data
config (resize the shorter side to 248 bicubic, centre-crop 224, normalise; with --img-size 384, the
input of 83.3_T2T_ViT_14.pth.tar, resize 426 and crop 384, as upstream's main.py --img-size 384): the
bins equal timm.data.create_transform(**config)(Image.open(p).convert('RGB')) byte for byte. Output:
OUT_DIR/<name>.bin (602,112 bytes at 224: little-endian float32, shape 1x3xSxS), OUT_DIR/manifest.json
(which records the data config: a model of another input size refuses the bins), and the label file (a
.npy structured array of (name, label); keep it outside OUT_DIR).

--dtype uint8 stops before the normalisation: each bin is the resized, cropped RGB image, 150,528 bytes
at 224 (uint8, shape 1xSxSx3, NHWC), a quarter of the disk. It runs on the uint8 export
(T2T_ViT_pth2onnx.py --input-dtype uint8) on the CPU, and on an .om built with T2T_ViT_atc.sh --aipp
on the NPU, both of which normalise inside; /255, -mean, /std of it gives the float32 bin exactly.

Images that cannot be decoded (empty, truncated, not an image) are listed and the run exits 1 without
writing the label file, unless --skip-bad leaves them out. Re-running resumes: complete bins are kept,
incomplete ones redone. Nothing is ever dropped.
"""

from __future__ import annotations

import sys

from t2t_vit import cli


def build_parser():
    from t2t_vit.data.preprocess import default_workers

    parser = cli.make_parser(__doc__)
    cli.add_data_arguments(parser)
    files = parser.add_argument_group("files written")
    files.add_argument("--out-dir", required=True, metavar="DIR", help="folder for the .bin files and manifest.json")
    files.add_argument("--gt-path", required=True, metavar="LABELS.npy", help="label file to write (outside --out-dir)")
    files.add_argument("--dtype", choices=["float32", "uint8"], default="float32",
                       help="float32: normalised NCHW bins (the ModelZoo layout); uint8: the cropped NHWC image, "
                            "a quarter of the size, normalised by the uint8 export or AIPP (default: float32)")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                     help=f"parallel processes, 0 = in this process (default: {default_workers()}, the usable cores)")
    run.add_argument("--limit", type=int, metavar="N",
                     help="process a deterministic subset of N images, spread over the classes (default: all)")
    run.add_argument("--skip-bad", action="store_true",
                     help="leave undecodable images out of the label file (listed in the manifest) instead of failing")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    config = parser.add_argument_group("data config (default: the model's own)")
    config.add_argument("--img-size", type=int, default=224, metavar="S",
                        help="the model's input size: 224 for every published T2T-ViT but 83.3_T2T_ViT_14.pth.tar "
                             "(t2t_vit_14_384), which takes 384 (default: 224)")
    config.add_argument("--crop-pct", type=float, metavar="F", help="centre-crop fraction (default: 0.9)")
    config.add_argument("--interpolation", choices=["bicubic", "bilinear", "nearest", "lanczos"],
                        help="resize filter (default: bicubic)")
    cli.add_verbosity(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be 0 or more")
    if not 32 <= args.img_size <= 1024 or args.img_size % 16:
        parser.error(f"--img-size {args.img_size}: T2T-ViT takes a multiple of 16 from 32 to 1024 "
                     f"(the published checkpoints take 224 or 384)")

    def action() -> None:
        from t2t_vit.config import resolve_data_config
        from t2t_vit.data.preprocess import run_preprocess

        data_config = resolve_data_config({"crop_pct": args.crop_pct, "interpolation": args.interpolation},
                                          img_size=args.img_size)
        report = run_preprocess(args.data_dir, args.out_dir, args.gt_path, data_config, label_file=args.label_file,
                                class_list=args.class_list, devkit=args.devkit, workers=args.workers, limit=args.limit,
                                skip_bad=args.skip_bad, progress=False if args.no_progress else None,
                                run_args=vars(args), dtype=args.dtype)
        print(f"{report.summary()}; bins in {report.out_dir}, labels in {report.gt_path}")

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
