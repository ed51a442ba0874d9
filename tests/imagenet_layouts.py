"""ImageNet val as users download it, made from a few real images: the official archive and devkit (a meta.mat in
the real field layout, IDs in a meta.mat order that is not the sorted one), Kaggle's copy, the ModelZoo's and
TensorFlow's label files, and the val/<synset>/ folders they must all agree with (FACTS section 10)."""

from __future__ import annotations

import io
import random
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from t2t_vit.data.labels import read_class_list
from t2t_vit.version_bridge import installed

VAL_IMAGES = 50_000
# meta.mat's first two IDs, as in the real devkit: ID 1 is the kit fox, not class 0 (n01440764)
FIRST_IDS = ("n02119789", "n02100735")
META_FIELDS = ("ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height",
               "num_train_images")


@dataclass
class Layouts:
    """Where each layout lies, and the val position of each image (image k is ILSVRC2012_val_<position>)."""

    root: Path
    positions: dict[str, int]  # shipped image stem -> position
    synset_of: dict[int, str]  # position -> the image's synset
    leaves: list[str]  # the generated meta.mat's leaves: ID i is leaves[i - 1]

    @property
    def id_of(self) -> dict[str, int]:
        return {wnid: position + 1 for position, wnid in enumerate(self.leaves)}

    def synset(self, position: int) -> str:
        """The synset of val image ``position``: the made image's, else a filler consistent with the ground truth."""
        if position in self.synset_of:
            return self.synset_of[position]
        return self.leaves[position % 1000]  # ID position % 1000 + 1

    def name(self, position: int) -> str:
        return f"ILSVRC2012_val_{position:08d}"


def leaf_order(seed: int = 0) -> list[str]:
    """The 1,000 synsets in a meta.mat-like order: ID i is entry i-1 (not the sorted order)."""
    rest = [wnid for wnid in read_class_list() if wnid not in FIRST_IDS]
    random.Random(seed).shuffle(rest)
    return [*FIRST_IDS, *rest]


def meta_mat(leaves: list[str]) -> bytes:
    """A meta.mat with the devkit's 'synsets' struct array: the leaves (IDs 1..N), then 860 inner nodes."""
    import scipy.io

    inner = 860
    table = np.zeros((len(leaves) + inner, 1), dtype=[(field, "O") for field in META_FIELDS])
    for position, wnid in enumerate(leaves):
        table[position, 0] = (np.array([[position + 1]], dtype=np.uint16), wnid, f"words {wnid}", "a leaf",
                              np.array([[0]], dtype=np.uint8), np.zeros((1, 0)), np.array([[0]], dtype=np.uint8),
                              np.array([[1300]], dtype=np.uint16))
    for offset in range(inner):
        identifier = len(leaves) + offset + 1
        table[identifier - 1, 0] = (np.array([[identifier]], dtype=np.uint16), f"n9{offset:07d}", "group", "inner",
                                    np.array([[2]], dtype=np.uint8), np.array([[1, 2]], dtype=np.uint16),
                                    np.array([[1]], dtype=np.uint8), np.array([[0]], dtype=np.uint16))
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, {"synsets": table})
    return buffer.getvalue()


def ground_truth(layouts: Layouts, lines: int = VAL_IMAGES) -> str:
    """The val ground truth: line i = the ILSVRC2012_ID of image i (images not made get a filler ID)."""
    id_of = layouts.id_of
    ids = [id_of[layouts.synset(i)] for i in range(1, lines + 1)]
    return "".join(f"{identifier}\n" for identifier in ids)


def write_devkit(folder: Path, meta: bytes, truth: str) -> tuple[Path, Path]:
    """The devkit as downloaded (.tar.gz) and as extracted (a folder), with the given meta.mat and ground truth."""
    extracted = folder / "ILSVRC2012_devkit_t12"
    (extracted / "data").mkdir(parents=True)
    (extracted / "data" / "meta.mat").write_bytes(meta)
    (extracted / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text(truth)
    (extracted / "readme.txt").write_text("devkit\n")
    archive = folder / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(extracted, arcname="ILSVRC2012_devkit_t12")
    return archive, extracted


def write_tar(archive: Path, files: dict[str, Path], mode: str = "w") -> Path:
    """A tar holding ``files`` (member name -> source), like ILSVRC2012_img_val.tar (flat)."""
    with tarfile.open(archive, mode) as tar:
        for member, source in sorted(files.items()):
            tar.add(source, arcname=member)
    return archive


def make_layouts(root: Path, images: list[Path], absent: int = 3) -> Layouts:
    """Every layout of the same images under ``root``; the label sources also cover ``absent`` images not made."""
    step = (VAL_IMAGES - 1) // len(images)
    positions = {image.stem: 1 + step * k for k, image in enumerate(images)}
    synset_of = {positions[image.stem]: image.name.split("_", 1)[0] for image in images}
    leaves = leaf_order()
    layouts = Layouts(root, positions, synset_of, leaves)
    named = {f"{layouts.name(positions[image.stem])}.JPEG": image for image in images}
    flat = root / "flat"
    flat.mkdir(parents=True)
    for member, image in named.items():
        shutil.copyfile(image, flat / member)
        folder = root / "val" / synset_of[positions[image.stem]]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, folder / member)
    write_tar(root / "ILSVRC2012_img_val.tar", {member: flat / member for member in named})
    write_tar(root / "ILSVRC2012_img_val.tar.gz", {member: flat / member for member in named}, "w:gz")
    write_tar(root / "val_folders.tar", {f"val/{synset_of[int(Path(m).stem[-8:])]}/{m}": flat / m for m in named})
    # without scipy (optional on a host) the devkit's meta.mat cannot be made: a stand-in takes its place, and the
    # tests that read the devkit are skipped (pytest.mark.needs("scipy"))
    write_devkit(root, meta_mat(leaves) if installed("scipy") else b"MATLAB 5.0 MAT-file stand-in: no scipy here",
                 ground_truth(layouts))
    kaggle = root / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    kaggle.mkdir(parents=True)
    rows = ["ImageId,PredictionString"]
    for position in sorted(synset_of) + [2, 3, 4][:absent]:
        wnid = layouts.synset(position)
        rows.append(f"{layouts.name(position)},{wnid} 10 20 200 220 {wnid} 5 6 70 80 ")
        if position in synset_of:
            shutil.copyfile(flat / f"{layouts.name(position)}.JPEG", kaggle / f"{layouts.name(position)}.JPEG")
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    synsets = read_class_list()
    (root / "val_label.txt").write_text("".join(
        f"{layouts.name(position)}.JPEG {synsets.index(layouts.synset(position))}\n"
        for position in sorted(synset_of) + [2, 3, 4][:absent]))
    (root / "synset_labels.txt").write_text("".join(
        f"{layouts.synset(position)}\n" for position in range(1, VAL_IMAGES + 1)))
    return layouts
