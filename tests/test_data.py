"""Dataset discovery, names, labels, the eval transform and the bin / label formats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import make_val_tree, reference_transform
from t2t_vit.config import resolve_data_config
from t2t_vit.data.dataset import DatasetError, EvalTransform, assign_names, discover_images, open_rgb, read_class_list, read_labels, select_subset, write_labels
from t2t_vit.data.bins import read_bin, write_bin


def test_shipped_class_list_is_the_sorted_imagenet_synsets():
    names = read_class_list()
    assert len(names) == 1000 and names == sorted(names)
    assert names[0] == "n01440764" and names[-1] == "n15075141"


@pytest.mark.parametrize("images", ["sample_images", "shared_images"], ids=["shipped26", "shared200"])
def test_transform_equals_timm_on_every_real_image(request, images):
    # Bytes, not a tolerance: every step is the same Pillow call or float32 operation as timm's.
    transform = EvalTransform(resolve_data_config())
    modes = set()
    for path in request.getfixturevalue(images):
        with Image.open(path) as image:
            modes.add(image.mode)
        ours = transform(open_rgb(path))
        assert ours.dtype == np.float32 and ours.shape == (1, 3, 224, 224)
        assert ours.tobytes() == reference_transform(path).tobytes(), path.name
    assert modes == {"RGB", "L"}  # the grayscale ones are among them


@pytest.mark.parametrize("overrides", [{"crop_pct": 0.875}, {"crop_pct": 1.25}, {"interpolation": "bilinear"},
                                       {"input_size": (3, 192, 160)}],
                         ids=["crop0.875", "crop1.25_pads", "bilinear", "non_square"])
def test_transform_equals_timm_for_other_configs(sample_images, overrides):
    import timm.data

    config = resolve_data_config(overrides)
    ours = config
    resize = timm.data.create_transform(**config).transforms[0]
    if type(resize).__name__ == "ResizeKeepRatio" and resize.interpolation.value != config["interpolation"]:
        # timm before 1.0 builds the non-square resize without the config's interpolation (its bilinear default);
        # timm 1.x passes it on. We follow timm 1.x: on an older timm, ours with bilinear must equal timm's.
        assert resize.interpolation.value == "bilinear" and "input_size" in overrides
        ours = {**config, "interpolation": "bilinear"}
    transform = EvalTransform(ours)
    for path in sample_images[::3]:
        assert transform(open_rgb(path)).tobytes() == reference_transform(path, config).tobytes(), path.name


@pytest.mark.parametrize("size", [(1, 1), (3000, 2), (2, 300), (224, 224), (248, 300)])
def test_transform_equals_timm_on_odd_sizes(tmp_path, size):
    path = tmp_path / "odd.png"
    rng = np.random.default_rng(sum(size))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    assert EvalTransform(resolve_data_config())(open_rgb(path)).tobytes() == reference_transform(path).tobytes()


def test_unsupported_configs_are_refused():
    with pytest.raises(DatasetError, match="crop_mode 'squash' is not supported"):
        EvalTransform(resolve_data_config({"crop_mode": "squash"}))
    with pytest.raises(DatasetError, match="interpolation 'random'"):
        EvalTransform(resolve_data_config({"interpolation": "random"}))


def test_bin_round_trip_and_layout(tmp_path):
    array = np.arange(3 * 4 * 5, dtype=np.float32).reshape(1, 3, 4, 5) / 7
    path = tmp_path / "x.bin"
    write_bin(path, array)
    raw = path.read_bytes()
    assert len(raw) == 240 and raw[:8] == np.array([0, 1 / 7], dtype="<f4").tobytes()  # little-endian, C order
    np.testing.assert_array_equal(read_bin(path, (1, 3, 4, 5)), array)
    with pytest.raises(DatasetError, match="has 240 bytes, expected 480"):
        read_bin(path, (1, 3, 8, 5))


def test_label_file_round_trip_without_pickle(tmp_path):
    path = tmp_path / "label.npy"
    write_labels(path, ["a", "carpenter's_kit", "ILSVRC2012_val_00000001"], [3, 0, 999])
    table = np.load(path, allow_pickle=False)
    assert table.dtype.names == ("name", "label") and table["label"].dtype == np.int32
    assert table["name"].tolist() == ["a", "carpenter's_kit", "ILSVRC2012_val_00000001"]
    assert read_labels(path)["label"].tolist() == [3, 0, 999]
    np.save(tmp_path / "plain.npy", np.arange(3))
    with pytest.raises(DatasetError, match="not a label file"):
        read_labels(tmp_path / "plain.npy")


def test_names_are_stems_when_unique_and_dotless():
    assert assign_names(["n1/a.JPEG", "n2/b.jpg"]) == ["a", "b"]


def test_names_with_dots_or_collisions_are_documented_variants():
    import hashlib

    relatives = ["n1/img.JPEG", "n2/img.JPEG", "n3/a.b.c.png", "n4/a_b_c.png", "n5/v1.2.jpg"]
    names = assign_names(relatives)
    digest = lambda relative: hashlib.sha1(relative.encode()).hexdigest()[:8]  # noqa: E731
    assert names == [f"img_{digest('n1/img.JPEG')}", f"img_{digest('n2/img.JPEG')}",
                     f"a_b_c_{digest('n3/a.b.c.png')}", f"a_b_c_{digest('n4/a_b_c.png')}", "v1_2"]
    assert not any("." in name for name in names) and len(set(names)) == len(names)


def test_discovery_of_the_val_layout(tmp_path, sample_images):
    root = make_val_tree(tmp_path / "val", sample_images[:20])
    (root / sample_images[0].name.split("_")[0] / "notes.txt").write_text("x")
    (root / sample_images[0].name.split("_")[0] / ".DS_Store").write_bytes(b"\0")
    discovery = discover_images(root)
    synsets = read_class_list()
    assert len(discovery.items) == 20 and discovery.layout == "class_folders"
    for item in discovery.items:
        assert item.label == synsets.index(item.relative.split("/")[0])  # position among all 1000, not the 20
        assert item.name == item.path.stem
    assert sorted(discovery.ignored) == sorted([f"{sample_images[0].name.split('_')[0]}/.DS_Store",
                                                f"{sample_images[0].name.split('_')[0]}/notes.txt"])


def test_non_synset_folder_is_an_error_unless_a_class_list_is_given(tmp_path, sample_images):
    root = tmp_path / "data"
    for folder in ("cat", "dog"):
        (root / folder).mkdir(parents=True)
        (root / folder / "x.jpg").symlink_to(sample_images[0])
    with pytest.raises(DatasetError, match=r"2 folders .* are not classes .*cat, dog.*--class-list"):
        discover_images(root)
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat\n")
    items = discover_images(root, class_names=read_class_list(classes)).items
    assert [(item.relative, item.label) for item in items] == [("cat/x.jpg", 1), ("dog/x.jpg", 0)]
    assert [item.name for item in items] == [f"x_{__import__('hashlib').sha1(b'cat/x.jpg').hexdigest()[:8]}",
                                             f"x_{__import__('hashlib').sha1(b'dog/x.jpg').hexdigest()[:8]}"]


def test_flat_layout_with_label_file(tmp_path, sample_images):
    root = tmp_path / "flat"
    root.mkdir()
    for index, image in enumerate(sample_images[:3]):
        (root / f"ILSVRC2012_val_{index + 1:08d}.JPEG").symlink_to(image)
    (root / "unlisted.JPEG").symlink_to(sample_images[3])
    labels = tmp_path / "val_label.txt"
    labels.write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG 970\n\n"
                      "ILSVRC2012_val_00000003.JPEG 0\n")
    discovery = discover_images(root, labels)
    assert [(i.name, i.label) for i in discovery.items] == [("ILSVRC2012_val_00000001", 65),
                                                           ("ILSVRC2012_val_00000002", 970),
                                                           ("ILSVRC2012_val_00000003", 0)]
    assert discovery.unlabelled == ["unlisted.JPEG"] and discovery.ignored == []


@pytest.mark.parametrize("content, pattern", [
    ("missing.JPEG 1\n", r"none of the 1 images of .* is named in .*: the images are named like 'a\.JPEG' \(relative "
                         r"to .*\), the labels have names like 'missing\.JPEG'"),
    ("a.JPEG\n", "expected '<file name> <class index>'"),
    ("a.JPEG 1000\n", r"class index 1000 is outside 0\.\.999"),
    ("a.JPEG 1\na.JPEG 2\n", "a.JPEG is listed twice"),
])
def test_bad_label_files(tmp_path, sample_images, content, pattern):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "a.JPEG").symlink_to(sample_images[0])
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    with pytest.raises(DatasetError, match=pattern):
        discover_images(root, labels)


@pytest.mark.parametrize("case, pattern", [
    ("missing", "does not exist"), ("file", "is neither a directory nor a tar archive"), ("empty", "no images found"),
    ("only_junk", r"no images found in .* \(2 other files left out\)"), ("loose_images", "holds images directly"),
])
def test_unusable_data_dirs(tmp_path, sample_images, case, pattern):
    root = tmp_path / "data"
    if case == "file":
        root.write_text("x")
    elif case != "missing":
        root.mkdir()
    if case == "only_junk":
        (root / "n01440764").mkdir()
        (root / "n01440764" / "readme.txt").write_text("x")
        (root / "n01440764" / ".DS_Store").write_text("x")
    if case == "loose_images":
        (root / "a.JPEG").symlink_to(sample_images[0])
    with pytest.raises(DatasetError, match=pattern):
        discover_images(root)


def test_limit_is_deterministic_and_spread_over_classes(tmp_path, sample_images):
    root = tmp_path / "val"
    for synset in ("n01440764", "n01443537", "n01484850"):
        (root / synset).mkdir(parents=True)
        for index in range(4):
            (root / synset / f"{synset}_{index}.JPEG").symlink_to(sample_images[index])
    items = discover_images(root).items
    chosen = select_subset(items, 5)
    assert [item.name for item in chosen] == ["n01440764_0", "n01440764_1", "n01443537_0", "n01443537_1",
                                              "n01484850_0"]
    assert select_subset(items, 5) == chosen and select_subset(items, 100) == items
