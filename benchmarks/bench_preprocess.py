#!/usr/bin/env python3
"""Preprocess throughput: this toolkit's stage against the reference path, in one run.

    python3 benchmarks/bench_preprocess.py --workers 2          # the 26 shipped images, each linked 8 times
    python3 benchmarks/bench_preprocess.py --data-dir ../shared/data/imagenet-sample --copies 1

Reference path: timm's ``create_transform(**data_config)`` in a torch DataLoader with the same number
of workers, the main process writing the same bins. Both paths process every image from scratch
into a fresh folder; the rounds alternate between them (this machine is shared and drifts) and the
median images/s of each is reported, with their ratio. The bins of the two paths are compared byte
for byte. A flat folder of ImageNet JPEGs named ``<synset>_*.JPEG`` is laid out as val/<synset>/ first,
each image linked ``--copies`` times under distinct names.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2t_vit.config import resolve_data_config  # noqa: E402
from t2t_vit.data.preprocess import default_workers, run_preprocess  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "tests" / "data" / "imagenet-sample"


def layout(source: Path, root: Path, copies: int = 1) -> Path:
    """val/<synset>/<file> symlinks for a folder of <synset>_*.JPEG files (or the folder itself if laid out)."""
    from t2t_vit.job.demo import replicate_val_tree

    if any(path.is_dir() for path in source.iterdir()):
        return source
    images = sorted(source.glob("*.JPEG"))
    replicate_val_tree(root, images, len(images) * copies)
    return root


def reference_path(data_dir: Path, out_dir: Path, workers: int, data_config: dict) -> int:
    import timm.data
    import torch
    from PIL import Image

    from t2t_vit.data.dataset import discover_images

    items = discover_images(data_dir).items
    transform = timm.data.create_transform(**data_config)

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(items)

        def __getitem__(self, index):
            with Image.open(items[index].path) as image:
                return transform(image.convert("RGB")), index

    loader = torch.utils.data.DataLoader(Images(), batch_size=16, num_workers=workers)
    out_dir.mkdir(parents=True)
    for images, indices in loader:
        for image, index in zip(images.numpy(), indices.tolist()):
            image[None].astype("<f4").tofile(out_dir / f"{items[index].name}.bin")
    return len(items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(SHIPPED), metavar="DIR",
                        help="images (default: the 26 shipped in tests/data/imagenet-sample)")
    parser.add_argument("--copies", type=int, default=8, metavar="N",
                        help="link each image of a flat folder N times (default: 8)")
    parser.add_argument("--workers", type=int, default=default_workers(), metavar="N",
                        help=f"workers for both paths (default: {default_workers()})")
    parser.add_argument("--rounds", type=int, default=3, metavar="N", help="alternating rounds (default: 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)

    import timm.data  # noqa: F401 - imported before timing, as the toolkit's own imports are
    import torch

    torch.set_num_threads(1)  # as in a DataLoader worker; the main process only writes files
    data_config = resolve_data_config()
    timings: dict[str, list[float]] = {"toolkit": [], "reference": []}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        data_dir = layout(Path(args.data_dir), scratch / "val", args.copies)
        count = 0
        for round_index in range(args.rounds):
            for path in ("toolkit", "reference") if round_index % 2 == 0 else ("reference", "toolkit"):
                out = scratch / f"{path}_{round_index}"
                started = time.perf_counter()
                if path == "toolkit":
                    report = run_preprocess(data_dir, out, scratch / f"labels_{round_index}.npy", data_config,
                                            workers=args.workers, progress=False)
                    count = report.written
                else:
                    count = reference_path(data_dir, out, args.workers, data_config)
                timings[path].append(count / (time.perf_counter() - started))
        ours = {p.name: p.read_bytes() for p in sorted((scratch / "toolkit_0").glob("*.bin"))}
        theirs = {p.name: p.read_bytes() for p in sorted((scratch / "reference_0").glob("*.bin"))}
        identical = ours == theirs
        shutil.rmtree(scratch / "val", ignore_errors=True)

    medians = {path: statistics.median(values) for path, values in timings.items()}
    ratio = medians["toolkit"] / medians["reference"]
    print(f"{count} images, {args.workers} workers, {args.rounds} alternating rounds (median images/s, end to end)")
    print("| path | images/s | rounds |\n|---|---|---|")
    for path, values in timings.items():
        print(f"| {path} | {medians[path]:.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    print(f"ratio toolkit / reference: {ratio:.2f}x; bins byte-identical: {identical}")
    if args.json:
        from t2t_vit.provenance import provenance, write_json

        write_json(args.json, {"benchmark": "preprocess", "images": count, "workers": args.workers,
                               "images_per_s": medians, "rounds": timings, "ratio": ratio,
                               "bins_identical": identical, **provenance(vars(args))})
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
