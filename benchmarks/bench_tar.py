#!/usr/bin/env python3
"""The official val archive read in place against the same images as a folder, in one run.

    python3 benchmarks/bench_tar.py                      # the 26 shipped images, each copied 16 times (416)
    python3 benchmarks/bench_tar.py --data-dir ../shared/data/imagenet-sample --copies 2

The images are laid out as the official download has them: flat, named ILSVRC2012_val_<8 digits>.JPEG, once
as a folder (with a ModelZoo val_label.txt), once as ILSVRC2012_img_val.tar and once as a .tar.gz (each with the
same labels). The stage runs on each from scratch into a fresh out-dir, with the same workers; the rounds
rotate the order (this machine drifts) and the median images/s of each source is reported with its ratio to the
folder's. The bins of every source are compared byte for byte with the folder's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2t_vit.config import resolve_data_config  # noqa: E402
from t2t_vit.data.preprocess import default_workers, run_preprocess  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "tests" / "data" / "imagenet-sample"
SOURCES = ("folder", "tar", "tar.gz")


def lay_out(images: list[Path], copies: int, root: Path) -> dict[str, Path]:
    """The flat folder, the .tar and the .tar.gz of the same images, and the label file they share."""
    from t2t_vit.data.dataset import read_class_list

    synsets = read_class_list()
    flat = root / "val"
    flat.mkdir(parents=True)
    lines = []
    for number in range(len(images) * copies):
        image = images[number % len(images)]
        name = f"ILSVRC2012_val_{number + 1:08d}.JPEG"
        shutil.copyfile(image, flat / name)
        lines.append(f"{name} {synsets.index(image.name.split('_', 1)[0])}\n")
    (root / "val_label.txt").write_text("".join(lines))
    paths = {"folder": flat}
    for source, mode in (("tar", "w"), ("tar.gz", "w:gz")):
        paths[source] = root / f"ILSVRC2012_img_val.{source}"
        with tarfile.open(paths[source], mode) as tar:
            for path in sorted(flat.iterdir()):
                tar.add(path, arcname=path.name)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(SHIPPED), metavar="DIR",
                        help="a folder of <synset>_*.JPEG images (default: the 26 shipped in tests/data)")
    parser.add_argument("--copies", type=int, default=16, metavar="N", help="copies of each image (default: 16)")
    parser.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                        help=f"preprocess workers (default: {default_workers()})")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="rotating rounds (default: 3)")
    parser.add_argument("--dtype", choices=["float32", "uint8"], default="float32", help="bins (default: float32)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    data_config = resolve_data_config()
    timings: dict[str, list[float]] = {source: [] for source in SOURCES}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        paths = lay_out(sorted(Path(args.data_dir).glob("*.JPEG")), args.copies, scratch / "data")
        count, bins = 0, {}
        for round_index in range(args.rounds):
            order = SOURCES[round_index % 3:] + SOURCES[:round_index % 3]
            for source in order:
                out = scratch / f"{source}_{round_index}"
                started = time.perf_counter()
                report = run_preprocess(paths[source], out, scratch / f"labels_{source}_{round_index}.npy",
                                        data_config, label_file=scratch / "data" / "val_label.txt",
                                        workers=args.workers, progress=False, dtype=args.dtype)
                timings[source].append(report.written / (time.perf_counter() - started))
                count = report.written
                if round_index == 0:
                    bins[source] = {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}
                shutil.rmtree(out)
        identical = all(bins[source] == bins["folder"] for source in SOURCES)

    medians = {source: statistics.median(values) for source, values in timings.items()}
    ratios = {source: medians[source] / medians["folder"] for source in SOURCES}
    print(f"{count} images, {args.dtype} bins, {args.workers} workers, {args.rounds} rotating rounds "
          f"(median images/s, end to end: listing, labels, decoding, writing)")
    print("| source | images/s | rounds | ratio to the folder |\n|---|---|---|---|")
    for source in SOURCES:
        print(f"| {source} | {medians[source]:.1f} | {', '.join(f'{v:.1f}' for v in timings[source])} | "
              f"{ratios[source]:.2f}x |")
    print(f"ratio tar / folder: {ratios['tar']:.2f}x; tar.gz / folder: {ratios['tar.gz']:.2f}x; "
          f"bins byte-identical: {identical}")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "tar", "images": count, "workers": args.workers, "dtype": args.dtype,
                               "images_per_s": medians, "rounds": timings, "ratios": ratios,
                               "bins_identical": identical, **provenance(vars(args))})
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
