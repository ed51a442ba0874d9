"""A demo for a fresh machine: synthetic images and a randomly initialised checkpoint in the upstream layout.

    python3 -m t2t_vit.job.demo --out-dir work/demo [--model t2t_vit_7]

Writes ``<out-dir>/val/<synset>/<image>.JPEG`` (small synthetic pictures in a few ImageNet class
folders, of varied sizes, one grayscale) and ``<out-dir>/random_<variant>.pth.tar`` (the published
checkpoint's layout: ``state_dict``, ``state_dict_ema``, ``epoch``, ``arch``, ``args`` as a Namespace),
so every stage can run end to end without ImageNet. The weights are random: the accuracy means nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from t2t_vit import cli
from t2t_vit.config import MODEL_NAME

DEMO_SYNSETS = ("n01440764", "n01443537", "n02085620", "n04037443")


def make_images(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` synthetic JPEGs spread over :data:`DEMO_SYNSETS` (gradients with a coloured disc)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        synset = DEMO_SYNSETS[index % len(DEMO_SYNSETS)]
        width, height = int(rng.integers(160, 420)), int(rng.integers(160, 420))
        y, x = np.mgrid[0:height, 0:width]
        base = rng.uniform(0, 255, 3)
        pixels = np.stack([(base[c] + 80 * np.sin(x / (20 + 10 * c)) + 60 * np.cos(y / 30)) % 256
                           for c in range(3)], axis=-1)
        cy, cx, radius = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, min(width, height) / 4
        pixels[(y - cy) ** 2 + (x - cx) ** 2 < radius ** 2] = rng.uniform(0, 255, 3)
        image = Image.fromarray(pixels.astype(np.uint8))
        if index == 1:
            image = image.convert("L")  # ImageNet has grayscale JPEGs too
        folder = root / synset
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"demo_{index:04d}.JPEG"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def replicate_val_tree(root: Path, images: Sequence[Path], count: int) -> list[Path]:
    """``count`` images in the ImageNet val layout ``root/<synset>/<file>``, made by linking ``images`` (named
    ``<synset>_<words>.JPEG``) again and again under distinct names: a large val set from a few real images."""
    root = Path(root)
    if not images:
        raise ValueError("no images to replicate")
    paths = []
    for index in range(count):
        image = Path(images[index % len(images)])
        copy = index // len(images)
        folder = root / image.name.split("_", 1)[0]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (image.name if copy == 0 else f"{image.stem}_r{copy:05d}{image.suffix}")
        path.symlink_to(image.resolve())
        paths.append(path)
    return paths


def make_checkpoint(path: Path, seed: int = 0, model: str = MODEL_NAME) -> Path:
    """A randomly initialised variant (T2T-ViT-14 by default) saved as the published checkpoint is laid out."""
    import torch

    from t2t_vit.model.network import create_model

    from t2t_vit.files import atomic_output

    torch.manual_seed(seed)
    weights = create_model("einsum", model).state_dict()
    with atomic_output(path) as temp_path:
        torch.save({"state_dict": weights, "state_dict_ema": weights, "epoch": 0, "arch": model, "version": 2,
                    "args": argparse.Namespace(model=model, demo=True)}, temp_path)
    return path


def demo_paths(out_dir: Path, model: str = MODEL_NAME) -> tuple[Path, Path]:
    """Where :func:`make_demo` puts the checkpoint of ``model`` and the val folder."""
    return Path(out_dir) / f"random_{model}.pth.tar", Path(out_dir) / "val"


def make_demo(out_dir: Path, images: int = 16, model: str = MODEL_NAME) -> tuple[Path, Path]:
    """The demo's checkpoint of ``model`` and val folder under ``out_dir`` (made once, reused after); returns both
    paths (:func:`demo_paths`)."""
    out_dir = Path(out_dir)
    checkpoint, val = demo_paths(out_dir, model)
    if val.is_dir() and len(list(val.rglob("*.JPEG"))) != images:
        shutil.rmtree(val)  # made for another --demo-images
    if not val.is_dir():  # made beside, then renamed: an interrupted run leaves no half-made folder
        partial = out_dir / ".val.partial"
        shutil.rmtree(partial, ignore_errors=True)
        make_images(partial, images)
        partial.rename(val)
    if not checkpoint.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        make_checkpoint(checkpoint, model=model)
    return checkpoint, val


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="where the demo data goes")
    parser.add_argument("--images", type=int, default=16, metavar="N", help="synthetic images (default: 16)")
    parser.add_argument("--model", default=MODEL_NAME, metavar="NAME",
                        help="the variant of the random checkpoint (default: t2t_vit_14)")
    args = parser.parse_args(argv)
    from t2t_vit.model.variants import BY_NAME

    if args.model not in BY_NAME:
        parser.error(f"--model {args.model}: use one of {', '.join(BY_NAME)}")
    checkpoint, val = make_demo(Path(args.out_dir), args.images, args.model)
    print(f"demo data: {val} ({args.images} synthetic images), checkpoint {checkpoint} (random weights: "
          f"the accuracy means nothing)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.entry(main))
