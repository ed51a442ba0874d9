"""Datasets, the evaluation transform, and the files the preprocess stage writes.

Formats (one writer and one reader each, here):

- **bin**: one file per image, ``<name>.bin``, raw, C order, in one of two forms (the manifest's
  ``bin`` records which):

  - ``float32`` (the ModelZoo layout, the default): little-endian float32, NCHW (1, 3, H, W) =
    602,112 bytes at 224 px, the normalised image, exactly timm's eval transform;
  - ``uint8``: the resized, centre-cropped RGB image before normalisation, NHWC (1, H, W, 3) =
    150,528 bytes at 224 px. :func:`normalise` turns it into the float32 bin byte for byte; the
    uint8 ONNX export (and AIPP on the NPU) normalises inside the model.
- **label file** (``--gt-path``, ``.npy``): a structured array with fields ``name`` (unicode) and
  ``label`` (int32), one row per image, in processing order; loads with ``allow_pickle=False``.
- **names**: ``<name>`` is the image's file stem when all stems are unique and contain no ``.``;
  otherwise every ``.`` becomes ``_``, and images whose names still collide get ``_`` plus the first 8
  hex digits of the SHA-1 of their path relative to the data dir. ais_bench names each output after
  its input up to the first dot, so a name never contains one.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from t2t_vit.data.labels import VAL_CLASSES, VAL_IMAGES, VAL_PER_CLASS, read_class_list, read_label_source
from t2t_vit.data.sources import DatasetError, SourceFile, images_of, open_source
from t2t_vit.progress import plural

__all__ = ["DatasetError", "read_class_list"]  # defined beside the readers; imported from here by their callers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageItem:
    """One image to process: where its bytes are, what it is called in the output, and its class index."""

    file: SourceFile
    relative: str
    name: str
    label: int

    @property
    def path(self) -> Path:
        """The file's path, or for an archive member its name inside the archive."""
        return Path(self.file.location)


@dataclass
class Discovery:
    """What a data source holds: the images to process, what was left out (and why), and where labels came from."""

    layout: str  # "class_folders" (the folder above an image names its class) or "labelled" (a label source)
    items: list[ImageItem]
    ignored: list[str]  # files that are not images (hidden files, other extensions)
    unlabelled: list[str] = field(default_factory=list)  # images the label source does not cover: left out
    absent_labels: int = 0  # labels of images that are not in the source (a subset of the val set)
    labelled: int = 0  # images the label source names (0 for class folders)
    source: dict[str, Any] = field(default_factory=dict)  # what identifies the source (sources.*.identity)
    labels: str = ""  # where the labels came from
    label_files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- discovery

def discover_images(data_dir: str | os.PathLike, label_file: str | os.PathLike | None = None,
                    class_names: Sequence[str] | None = None, devkit: str | os.PathLike | None = None) -> Discovery:
    """Find the images of a data source (a folder or a tar archive, :mod:`t2t_vit.data.sources`) and their labels.

    Labels come from the folder above each image, a class name (``DIR/<class>/<image>``, the ImageNet val
    layout; images may sit in sub-folders of the class folder; in an archive, the first folder of the member's
    path that is a class), or from a label source (``label_file`` or ``devkit``, :mod:`t2t_vit.data.labels`), which
    names the images: images it does not cover are left out and reported, and labels of images that are absent
    are counted. Hidden files and files without an image extension are left out and reported in ``ignored``.
    Items come sorted by their path relative to the source. Reads only: nothing is written.
    """
    source = open_source(data_dir)
    class_names = list(class_names) if class_names is not None else read_class_list()
    labels = read_label_source(label_file, devkit, class_names)
    images, ignored = images_of(source.files())
    discovery = Discovery(layout="class_folders" if labels is None else "labelled", items=[], ignored=ignored,
                          source=source.identity(), labels=labels.description if labels else "class folders",
                          label_files=[str(path) for path in labels.files] if labels else [])
    if labels is None:
        found = _class_folder_items(source, images, class_names, discovery)
    else:
        found = _labelled_items(images, labels, discovery)
    if not found and discovery.unlabelled:
        raise DatasetError(f"none of the {len(discovery.unlabelled)} images of {source.root} is named in "
                           f"{discovery.labels}: the images are named like {discovery.unlabelled[0]!r} (relative to "
                           f"{source.root}), the labels have {labels.name_forms()}")
    if not found:
        left_out = len(ignored) + len(discovery.unlabelled)
        raise DatasetError(f"no images found in {source.root}" + (f" ({left_out} other files left out)"
                                                                  if left_out else ""))
    names = assign_names([file.relative for file, _ in found])
    discovery.items = [ImageItem(file=file, relative=file.relative, name=name, label=label)
                       for (file, label), name in zip(found, names)]
    _report(discovery, len(class_names))
    return discovery


def _class_folder_items(source, images: list[SourceFile], class_names: Sequence[str],
                        discovery: Discovery) -> list[tuple[SourceFile, int]]:
    index = {name: position for position, name in enumerate(class_names)}
    flat_hint = ("give --devkit (the ILSVRC2012 devkit) or --label-file (val_label.txt, LOC_val_solution.csv, ...)"
                 ", or sort them into class folders")
    if source.kind == "tar":  # the first folder of the member's path that is a class
        found = []
        for file in images:
            label = next((index[part] for part in file.relative.split("/")[:-1] if part in index), None)
            if label is None:
                discovery.unlabelled.append(file.relative)
            else:
                found.append((file, label))
        if images and not found:
            raise DatasetError(f"--data-dir {source.root} holds {len(images)} images and none is in a class folder: "
                               f"{flat_hint}")
        return found
    loose = [file.relative for file in images if "/" not in file.relative]
    if loose:
        raise DatasetError(f"{source.root} holds images directly ({', '.join(loose[:3])}, ...): for a flat folder "
                           f"{flat_hint}")
    folders = sorted({entry.name for entry in os.scandir(source.root) if entry.is_dir() and not entry.name.startswith(".")})
    unknown = [folder for folder in folders if folder not in index]
    if unknown:
        verb = "is not a class" if len(unknown) == 1 else "are not classes"
        raise DatasetError(f"{plural(len(unknown), 'folder')} of {source.root} {verb} of the class list "
                           f"({', '.join(unknown[:5])}); ImageNet val folders are synset ids such as n01440764. "
                           f"For another dataset give --class-list FILE; for a flat folder {flat_hint}")
    return [(file, index[file.relative.split("/", 1)[0]]) for file in images]


def _labelled_items(images: list[SourceFile], labels, discovery: Discovery) -> list[tuple[SourceFile, int]]:
    found, used = [], set()
    for file in images:
        key = labels.key_of(file.relative)
        if key is None:
            discovery.unlabelled.append(file.relative)
        else:
            used.add(key)
            found.append((file, labels.by_key[key]))
    discovery.absent_labels = len(labels.by_key) - len(used)
    discovery.labelled = len(labels.by_key)
    return found


def coverage_note(discovery: Discovery) -> str:
    """What part of the labelled images the data holds ('' when it holds them all), for the log and the report."""
    if not discovery.absent_labels:
        return ""
    held = discovery.labelled - discovery.absent_labels
    return (f"{discovery.labels} labels {discovery.labelled:,} images and the data holds {held:,} of them "
            f"({100.0 * held / discovery.labelled:.1f} %): every figure is over these {held:,} (a partial download, "
            f"or a subset on purpose: not an error)")


def _report(discovery: Discovery, num_classes: int) -> None:
    """Log what was left out, what the labels cover beyond the data, and a full val set's class balance."""
    def examples(names: list[str]) -> str:
        return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")

    if discovery.ignored:
        log.warning("left out %s that %s not images: %s", plural(len(discovery.ignored), "file"),
                    "is" if len(discovery.ignored) == 1 else "are", examples(discovery.ignored))
    if discovery.unlabelled:
        log.warning("left out %s that %s does not label: %s", plural(len(discovery.unlabelled), "image"),
                    discovery.labels, examples(discovery.unlabelled))
    if discovery.absent_labels:
        coverage = coverage_note(discovery)
        if discovery.labelled == VAL_IMAGES:  # a whole val set's labels against fewer images: say how many
            log.warning("%s", coverage)
        else:
            log.info("%s", coverage)
    if len(discovery.items) == VAL_IMAGES and num_classes == VAL_CLASSES:
        counts = np.bincount([item.label for item in discovery.items], minlength=num_classes)
        off = np.flatnonzero(counts != VAL_PER_CLASS)
        if off.size:
            log.warning("%d images, as many as the ImageNet val set, but %d classes do not have %d images (class %d "
                        "has %d): are the labels in the right order?", VAL_IMAGES, off.size, VAL_PER_CLASS,
                        off[0], counts[off[0]])


def assign_names(relatives: Sequence[str]) -> list[str]:
    """Output names without dots, unique over the whole set, each depending only on its path and collisions."""
    bases = [Path(relative).stem.replace(".", "_") for relative in relatives]
    counts: dict[str, int] = defaultdict(int)
    for base in bases:
        counts[base] += 1
    names = [base if counts[base] == 1 else f"{base}_{hashlib.sha1(relative.encode()).hexdigest()[:8]}"
             for base, relative in zip(bases, relatives)]
    if len(set(names)) != len(names):  # would need two paths with equal stems and equal hash prefixes
        raise DatasetError("could not give every image a unique output name; rename the clashing files")
    return names


def select_subset(items: Sequence[ImageItem], limit: int | None) -> list[ImageItem]:
    """A deterministic subset of ``limit`` images spread over the classes: the first image of every class
    in class order, then the second of every class, and so on; returned in the original order."""
    if limit is None or limit >= len(items):
        return list(items)
    rank_in_class: dict[int, int] = defaultdict(int)
    keyed = []
    for position, item in enumerate(items):
        keyed.append((rank_in_class[item.label], item.label, position))
        rank_in_class[item.label] += 1
    chosen = sorted(position for _, _, position in sorted(keyed)[:limit])
    return [items[position] for position in chosen]


# ----------------------------------------------------------------------------------------------- transform

_PIL_FILTERS = {"nearest": "NEAREST", "bilinear": "BILINEAR", "bicubic": "BICUBIC", "lanczos": "LANCZOS",
                "box": "BOX", "hamming": "HAMMING"}


class EvalTransform:
    """timm's eval transform for a data config, computed with Pillow and numpy, bytes equal to timm's.

    timm's ``transforms_imagenet_eval`` (crop_mode ``center``) is: resize the shorter side to
    ``floor(size / crop_pct)`` keeping the aspect ratio (torchvision's rule: the longer side becomes
    ``int(new_short * long / short)``), centre-crop ``size`` (offsets ``int(round((h - size) / 2))``),
    divide by 255, subtract mean and divide by std, in float32. Every step here is the same Pillow call
    or the same float32 operation in the same order, so the result is bit-identical.
    """

    def __init__(self, data_config: Mapping[str, Any]) -> None:
        from PIL import Image

        channels, self.height, self.width = (int(v) for v in data_config["input_size"])
        if channels != 3:
            raise DatasetError(f"input_size {data_config['input_size']}: only 3-channel input is supported")
        crop_mode = data_config.get("crop_mode") or "center"
        if crop_mode != "center":
            raise DatasetError(f"crop_mode {crop_mode!r} is not supported; T2T-ViT uses 'center'")
        interpolation = data_config["interpolation"]
        if interpolation not in _PIL_FILTERS:
            raise DatasetError(f"interpolation {interpolation!r} is not one of {sorted(_PIL_FILTERS)}")
        self.resample = getattr(Image.Resampling, _PIL_FILTERS[interpolation])
        crop_pct = data_config.get("crop_pct") or 0.875
        self.scale_size = (int(np.floor(self.height / crop_pct)), int(np.floor(self.width / crop_pct)))
        self.mean = np.asarray(data_config["mean"], dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(data_config["std"], dtype=np.float32).reshape(3, 1, 1)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (1, 3, self.height, self.width)

    def bin_shape(self, dtype: str = "float32") -> tuple[int, int, int, int]:
        """The shape of one bin: (1, 3, H, W) for float32, (1, H, W, 3) for uint8."""
        return self.shape if dtype == "float32" else (1, self.height, self.width, 3)

    def resize(self, image):
        width, height = image.size
        if self.scale_size[0] == self.scale_size[1]:
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.scale_size[0], int(self.scale_size[0] * long / short)
            new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
        else:  # timm's ResizeKeepRatio for non-square targets
            ratio = min(width / self.scale_size[1], height / self.scale_size[0])
            new_width, new_height = round(width / ratio), round(height / ratio)
        if (new_width, new_height) == (width, height):
            return image
        return image.resize((new_width, new_height), self.resample)

    def center_crop(self, image):
        from PIL import Image

        width, height = image.size
        if self.width > width or self.height > height:  # torchvision pads with zeros, extra pixel right/bottom
            left = (self.width - width) // 2 if self.width > width else 0
            top = (self.height - height) // 2 if self.height > height else 0
            right = (self.width - width + 1) // 2 if self.width > width else 0
            bottom = (self.height - height + 1) // 2 if self.height > height else 0
            padded = Image.new(image.mode, (width + left + right, height + top + bottom), 0)
            padded.paste(image, (left, top))
            image, (width, height) = padded, padded.size
        top = int(round((height - self.height) / 2.0))
        left = int(round((width - self.width) / 2.0))
        return image.crop((left, top, left + self.width, top + self.height))

    def pixels(self, image) -> np.ndarray:
        """RGB PIL image -> the resized, centre-cropped uint8 image, shape (1, H, W, 3): what a uint8 bin holds."""
        return np.asarray(self.center_crop(self.resize(image)), dtype=np.uint8)[None]

    def __call__(self, image, dtype: str = "float32") -> np.ndarray:
        """RGB PIL image -> the bin's array: float32 (1, 3, H, W), normalised, or uint8 (1, H, W, 3)."""
        pixels = self.pixels(image)
        return pixels if dtype == "uint8" else normalise(pixels, self.mean, self.std)


def normalise(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images (N, H, W, 3) -> float32 (N, 3, H, W) as timm's eval transform does after the crop:
    divide by 255, subtract the mean, divide by the std, in float32 (torchvision's ToTensor + Normalize)."""
    if pixels.dtype != np.uint8 or pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise DatasetError(f"expected uint8 images of shape (N, H, W, 3), got {pixels.dtype} {pixels.shape}")
    nchw = pixels.transpose(0, 3, 1, 2).astype(np.float32, order="C")  # a new array, safe to work in place
    np.divide(nchw, np.float32(255), out=nchw)
    np.subtract(nchw, np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1), out=nchw)
    np.divide(nchw, np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1), out=nchw)
    return nchw


def decode_rgb(path) -> tuple[Any, str]:
    """Open an image (a path, or a binary file object such as an archive member's bytes) fully decoded and
    converted to RGB, as timm's dataset does (``convert('RGB')``).

    Returns the RGB image and the mode the file was stored in.
    """
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return (image if image.mode == "RGB" else image.convert("RGB")), image.mode  # RGB->RGB only copies


def open_rgb(path: str | os.PathLike):
    """The image at ``path`` as RGB (see :func:`decode_rgb`)."""
    return decode_rgb(path)[0]


# ------------------------------------------------------------------------------------------- bins, labels


def write_labels(path: str | os.PathLike, names: Iterable[str], labels: Iterable[int]) -> None:
    """Write the label file: a structured ``.npy`` of (name, label), atomically; an identical file is kept."""
    from t2t_vit.files import atomic_output

    names, labels = list(names), list(labels)
    width = max((len(name) for name in names), default=1)
    table = np.empty(len(names), dtype=[("name", f"<U{width}"), ("label", "<i4")])
    table["name"], table["label"] = names, labels
    buffer = io.BytesIO()
    np.save(buffer, table, allow_pickle=False)
    path = Path(path)
    if path.is_file() and path.read_bytes() == buffer.getvalue():
        return  # unchanged: keep the file, and its time stamp for the stages that check freshness
    with atomic_output(path) as temp_path:
        temp_path.write_bytes(buffer.getvalue())


def read_labels(path: str | os.PathLike, allow_plain: bool = False, source: str = "the label file") -> np.ndarray:
    """Read a label file written by :func:`write_labels` (structured array with ``name`` and ``label``).

    Args:
        path: the ``.npy`` file; it is loaded with ``allow_pickle=False``.
        allow_plain: also accept a plain 1-D or 2-D integer array (what the ModelZoo preprocess wrote).
        source: how error messages name the file (e.g. the flag it came from).
    """
    from t2t_vit.files import NPY_MAGIC, file_head, looks_like_text

    try:
        start = file_head(path)
    except OSError as error:
        raise DatasetError(f"cannot read {source} {path}: {error.strerror or error}") from None
    if not start.startswith(NPY_MAGIC):
        if looks_like_text(start):
            raise DatasetError(f"{source} {path} is a text file, not the label.npy that the preprocess stage writes: "
                               f"give a text label file (val_label.txt, LOC_val_solution.csv, ...) to "
                               f"T2T_ViT_preprocess.py as --label-file, and its --gt-path output here")
        raise DatasetError(f"{source} {path} is not a numpy .npy file (it starts {start[:16]!r}): give the label.npy "
                           f"that the preprocess stage wrote")
    try:
        table = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{source} {path} is a damaged .npy file ({str(error).splitlines()[0][:120]}): make it "
                           f"again with the preprocess stage") from None
    if table.dtype.names is not None:
        if not {"name", "label"} <= set(table.dtype.names):
            raise DatasetError(f"{path} has fields {table.dtype.names}, expected (name, label)")
        return table
    if allow_plain and np.issubdtype(table.dtype, np.integer) and table.ndim in (1, 2):
        return table
    if allow_plain:
        raise DatasetError(f"{path} is neither a (name, label) table nor an integer label array "
                           f"(dtype {table.dtype}, shape {table.shape})")
    raise DatasetError(f"{path} is not a label file of (name, label) rows (dtype {table.dtype})")
