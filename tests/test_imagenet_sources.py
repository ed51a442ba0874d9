"""ImageNet val as users download it (the official tar + devkit, Kaggle's copy, label files): the same bins and
labels as val/<synset>/, read in place, and each classic mistake refused in one line with nothing written."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

import T2T_ViT_preprocess
from conftest import REPO_ROOT, TINY
from imagenet_layouts import VAL_IMAGES, ground_truth, leaf_order, make_layouts, meta_mat, write_devkit
from t2t_vit.data.labels import read_class_list

LAYOUTS = {  # id -> (--data-dir, label options), relative to the layouts' root (--devkit needs scipy)
    "official-tar+devkit-tgz": ("ILSVRC2012_img_val.tar", ["--devkit", "ILSVRC2012_devkit_t12.tar.gz"]),
    "official-tgz+devkit-folder": ("ILSVRC2012_img_val.tar.gz", ["--devkit", "ILSVRC2012_devkit_t12"]),
    "flat+devkit-folder": ("flat", ["--devkit", "ILSVRC2012_devkit_t12"]),
    "kaggle": ("ILSVRC/Data/CLS-LOC/val", ["--label-file", "LOC_val_solution.csv"]),
    "flat+modelzoo-val_label": ("flat", ["--label-file", "val_label.txt"]),
    "tar+wnid-per-line": ("ILSVRC2012_img_val.tar", ["--label-file", "synset_labels.txt"]),
    "tar-of-class-folders": ("val_folders.tar", []),
}


def preprocess(root: Path, data_dir: str, label_options: list[str], out: Path, *extra: str) -> int:
    label_options = [option if option.startswith("--") else str(root / option) for option in label_options]
    return T2T_ViT_preprocess.main(["--data-dir", str(root / data_dir), *label_options, "--out-dir", str(out / "bins"),
                                    "--gt-path", str(out / "label.npy"), "--dtype", "uint8", "--no-progress", "-q",
                                    *extra])


def outputs(out: Path) -> dict[str, tuple[int, str]]:
    """Image name -> (label, SHA-256 of its bin)."""
    table = np.load(out / "label.npy", allow_pickle=False)
    return {name: (int(label), hashlib.sha256((out / "bins" / f"{name}.bin").read_bytes()).hexdigest())
            for name, label in zip(table["name"].tolist(), table["label"].tolist())}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, sample_images):
    return make_layouts(tmp_path_factory.mktemp("imagenet"), sample_images)


@pytest.fixture(scope="module")
def reference(layouts, tmp_path_factory):
    """The bins and labels of val/<synset>/, the layout every other one must match."""
    out = tmp_path_factory.mktemp("reference")
    assert preprocess(layouts.root, "val", [], out, "--workers", "2") == 0
    return outputs(out)


@pytest.mark.parametrize("layout", [pytest.param(name, marks=pytest.mark.needs("scipy")) if "--devkit" in options
                                    else name for name, (_, options) in LAYOUTS.items()], ids=list(LAYOUTS))
def test_every_layout_gives_the_class_folders_bins_and_labels(layout, layouts, reference, tmp_path):
    data_dir, label_options = LAYOUTS[layout]
    assert preprocess(layouts.root, data_dir, label_options, tmp_path, "--workers", "2") == 0
    assert outputs(tmp_path) == reference
    synsets = read_class_list()
    assert all(label == synsets.index(layouts.synset_of[int(name[-8:])]) for name, (label, _) in reference.items())
    manifest = json.loads((tmp_path / "bins" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["selected"] == len(reference)


@pytest.mark.needs("scipy")
def test_labels_are_meta_mat_ids_not_id_minus_one(layouts):
    """The classic slip: ID - 1 taken as the class. ID 1 is the kit fox (n02119789), sorted index 278."""
    from t2t_vit.data.labels import read_devkit

    synsets = read_class_list()
    labels = read_devkit(layouts.root / "ILSVRC2012_devkit_t12.tar.gz", synsets).by_key
    truth = (layouts.root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").read_text()
    ids = [int(line) for line in truth.split()]
    assert len(labels) == VAL_IMAGES
    for position in (1, 2, 1000, VAL_IMAGES):
        assert labels[layouts.name(position)] == synsets.index(layouts.leaves[ids[position - 1] - 1])
    assert synsets.index(leaf_order()[0]) == 278 and leaf_order()[0] == "n02119789"
    assert sum(labels[layouts.name(p)] == ids[p - 1] - 1 for p in range(1, VAL_IMAGES + 1)) < VAL_IMAGES / 100


@pytest.mark.needs("scipy")
def test_the_tar_is_read_in_place_with_no_jpeg_written_anywhere(layouts, reference, tmp_path):
    """Run as a user would (a subprocess, two workers), with TMPDIR empty: no JPEG appears in it, in the out-dir
    or in the working folder, and the archive is untouched."""
    temp, work = tmp_path / "tmp", tmp_path / "cwd"
    temp.mkdir(), work.mkdir()
    archive = layouts.root / "ILSVRC2012_img_val.tar"
    before = (archive.stat().st_mtime_ns, hashlib.sha256(archive.read_bytes()).hexdigest())
    for data_dir in ("ILSVRC2012_img_val.tar", "ILSVRC2012_img_val.tar.gz"):
        out = tmp_path / data_dir
        result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), "--data-dir",
                                 str(layouts.root / data_dir), "--devkit",
                                 str(layouts.root / "ILSVRC2012_devkit_t12.tar.gz"), "--out-dir", str(out / "bins"),
                                 "--gt-path", str(out / "label.npy"), "--dtype", "uint8", "--workers", "2"],
                                cwd=work, env={**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(REPO_ROOT)},
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert outputs(out) == reference
        assert sorted(path.name for path in (out / "bins").iterdir() if not path.name.endswith(".bin")) == \
            [".t2t_vit.lock", "manifest.json"]
    written = [path for path in tmp_path.rglob("*") if path.is_file() and path.suffix.lower() in (".jpeg", ".jpg")]
    assert written == [] and list(temp.iterdir()) == []
    assert (archive.stat().st_mtime_ns, hashlib.sha256(archive.read_bytes()).hexdigest()) == before


def test_kill_9_then_rerun_of_a_tar_is_byte_identical(layouts, tmp_path):
    """160 members (the shipped images again under distinct names) with a val_label.txt: killed after 40 bins, a
    re-run keeps them and gives the bins and labels of an uninterrupted run."""
    from imagenet_layouts import write_tar

    flat = sorted((layouts.root / "flat").iterdir())
    members = {f"ILSVRC2012_val_{number:08d}.JPEG": flat[number % len(flat)] for number in range(1, 161)}
    archive = write_tar(tmp_path / "val.tar", members)
    labels = tmp_path / "val_label.txt"
    labels.write_text("".join(f"{member} {number % 1000}\n" for number, member in enumerate(sorted(members))))

    def command(out: Path) -> list[str]:
        return [sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), "--data-dir", str(archive), "--label-file",
                str(labels), "--out-dir", str(out / "bins"), "--gt-path", str(out / "label.npy"), "--dtype", "uint8",
                "--workers", "1", "--no-progress"]

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    assert subprocess.run(command(tmp_path / "whole"), env=env, capture_output=True).returncode == 0
    out = tmp_path / "killed"
    process = subprocess.Popen(command(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list((out / "bins").glob("*.bin"))) < 40:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = len(list((out / "bins").glob("*.bin")))
    assert 40 <= done_at_kill < 160 and not (out / "label.npy").exists(), "the run must be killed mid-way"
    result = subprocess.run(command(out), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stderr + result.stdout
    assert outputs(out) == outputs(tmp_path / "whole") and not list((out / "bins").glob("*.partial"))


def test_images_no_label_covers_are_left_out_and_absent_labels_counted(layouts, tmp_path, capsys):
    """The Kaggle CSV covers 3 images that are not there (a subset: not an error); an extra image it does not
    name is left out and reported."""
    import shutil

    kaggle = tmp_path / "val"
    shutil.copytree(layouts.root / "ILSVRC" / "Data" / "CLS-LOC" / "val", kaggle)
    shutil.copyfile(kaggle / f"{layouts.name(1)}.JPEG", kaggle / "holiday_photo.JPEG")
    assert T2T_ViT_preprocess.main(["--data-dir", str(kaggle), "--label-file", str(layouts.root / "LOC_val_solution.csv"),
                                    "--out-dir", str(tmp_path / "bins"), "--gt-path", str(tmp_path / "label.npy"),
                                    "--no-progress", "--dtype", "uint8"]) == 0
    printed = capsys.readouterr()
    assert "1 image without a label left out; 3 labels of images not in the data" in printed.out
    assert "holiday_photo.JPEG" in printed.err
    manifest = json.loads((tmp_path / "bins" / "manifest.json").read_text())
    assert manifest["unlabelled"] == ["holiday_photo.JPEG"] and manifest["absent_labels"] == 3
    assert manifest["counts"]["unlabelled"] == 1 and manifest["label_sources"][0]["sha256"] == hashlib.sha256(
        (layouts.root / "LOC_val_solution.csv").read_bytes()).hexdigest()
    assert "holiday_photo" not in np.load(tmp_path / "label.npy")["name"].tolist()


def test_label_names_with_a_folder_prefix_match_the_images_of_that_folder(layouts, reference, tmp_path):
    """PaddleClas-style lines 'val/ILSVRC2012_val_00000001.JPEG 65' with --data-dir .../val itself."""
    lines = (layouts.root / "val_label.txt").read_text().splitlines()
    (tmp_path / "val_list.txt").write_text("".join(f"val/{line}\n" for line in lines))
    data = tmp_path / "val"
    data.symlink_to(layouts.root / "flat")
    assert T2T_ViT_preprocess.main(["--data-dir", str(data), "--label-file", str(tmp_path / "val_list.txt"),
                                    "--out-dir", str(tmp_path / "bins"), "--gt-path", str(tmp_path / "label.npy"),
                                    "--dtype", "uint8", "--no-progress", "-q"]) == 0
    assert outputs(tmp_path) == reference


def test_label_names_that_match_no_image_show_both_name_forms(layouts, tmp_path, capsys):
    names = sorted(path.name for path in (layouts.root / "flat").iterdir())
    (tmp_path / "list.txt").write_text("".join(f"{folder}/{name} 1\n" for folder in ("a", "b") for name in names))
    assert T2T_ViT_preprocess.main(["--data-dir", str(layouts.root / "flat"), "--label-file",
                                    str(tmp_path / "list.txt"), "--out-dir", str(tmp_path / "bins"), "--gt-path",
                                    str(tmp_path / "label.npy"), "--no-progress", "-q"]) == 1
    error = capsys.readouterr().err
    assert f"the images are named like '{names[0]}'" in error and f"names like 'a/{names[0]}'" in error
    assert "with a folder prefix 'a/'" in error and "26 of their file names repeat under different folders" in error
    assert not (tmp_path / "bins").exists()


@pytest.mark.needs("scipy")
def test_a_full_devkit_against_fewer_images_says_how_many_of_the_50000_are_there(layouts, tmp_path, capsys):
    out = tmp_path / "out"
    assert preprocess(layouts.root, "ILSVRC2012_img_val.tar", ["--devkit", "ILSVRC2012_devkit_t12.tar.gz"], out) == 0
    note = "labels 50,000 images and the data holds 26 of them (0.1 %): every figure is over these 26"
    assert any(line.startswith("warning: ") and note in line for line in capsys.readouterr().err.splitlines())
    manifest = json.loads((out / "bins" / "manifest.json").read_text())
    assert note in manifest["coverage"] and manifest["labelled"] == 50_000


def _bad_devkit(folder: Path, layouts, case: str) -> Path:
    leaves, truth = leaf_order(), ground_truth(layouts)
    if case == "49999-lines":
        truth = "".join(truth.splitlines(keepends=True)[:-1])
    elif case in ("id-1001", "id-0"):
        lines = truth.splitlines()
        lines[1 if case == "id-1001" else 41] = "1001" if case == "id-1001" else "0"
        truth = "\n".join(lines) + "\n"
    elif case == "leaves-not-imagenet":
        leaves = [*leaves[:-1], "n99999999"]
    elif case == "999-leaves":
        leaves = leaves[:-1]
    folder.mkdir()
    archive, extracted = write_devkit(folder, meta_mat(leaves), truth)
    if case == "not-a-mat":
        (extracted / "data" / "meta.mat").write_text("MATLAB 5.0 MAT-file, but not really")
        return extracted
    return archive


@pytest.mark.parametrize("case, pattern", [
    ("49999-lines", r"ILSVRC2012_validation_ground_truth\.txt\) has 49,999 lines, expected 50,000"),
    ("id-1001", r"line 2: expected a ILSVRC2012_ID from 1 to 1000, got '1001'"),
    ("id-0", r"line 42: expected a ILSVRC2012_ID from 1 to 1000, got '0'"),
    ("leaves-not-imagenet", r"meta\.mat\): its 1000 leaves .* are not the 1,000 ImageNet synsets .*n99999999 is not one"),
    ("999-leaves", r"meta\.mat\): its 999 leaves \(num_children == 0\) are not the 1,000 ImageNet synsets"),
    ("not-a-mat", r"meta\.mat\) is not the devkit's meta\.mat"),
], ids=lambda value: value if " " not in value and "\\" not in value else "")
@pytest.mark.needs("scipy")
def test_a_bad_devkit_is_refused_in_one_line_with_nothing_written(case, pattern, layouts, tmp_path, capsys):
    devkit = _bad_devkit(tmp_path / "devkit", layouts, case)
    out = tmp_path / "out"
    assert T2T_ViT_preprocess.main(["--data-dir", str(layouts.root / "ILSVRC2012_img_val.tar"), "--devkit",
                                    str(devkit), "--out-dir", str(out / "bins"), "--gt-path", str(out / "label.npy"),
                                    "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(pattern, err), err
    assert not out.exists()  # no out-dir, no lock, no bin, no label file


@pytest.mark.parametrize("content, pattern", [
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,n99999999 1 2 3 4\n", r"line 2: 'n99999999' is not a class"),
    ("ImageId,PredictionString\nILSVRC2012_val_00000001,\n", r"line 2: expected 'ImageId,WNID x_min"),
    ("ImageId,Label\nILSVRC2012_val_00000001,n01440764\n", r"line 1: expected the header 'ImageId,PredictionString'"),
    ("n01440764\n" * 49_999, r"has 49,999 lines, expected 50,000 \(one WNID per val image"),
    ("n01440764\n" * 10 + "n0144\n" + "n01440764\n" * 49_989, r"line 11: expected a WNID, got 'n0144'"),
    ("65\n970\n" + "1\n" * 49_998, r"bare numbers, one per line: ILSVRC2012_IDs .* --devkit"),
    ("ILSVRC2012_val_00000001.JPEG n99999999\n", r"line 1: 'n99999999' is not a class"),
    ("ILSVRC2012_val_00000001.JPEG 1000\n", r"class index 1000 is outside 0\.\.999"),
    ("", r"--label-file .* is empty"),
], ids=["csv-unknown-wnid", "csv-no-box", "csv-header", "wnids-49999", "wnid-malformed", "bare-ids",
        "pair-unknown-wnid", "pair-index-1000", "empty"])
def test_a_bad_label_file_is_refused_in_one_line_with_nothing_written(content, pattern, layouts, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text(content)
    out = tmp_path / "out"
    assert T2T_ViT_preprocess.main(["--data-dir", str(layouts.root / "flat"), "--label-file", str(labels),
                                    "--out-dir", str(out / "bins"), "--gt-path", str(out / "label.npy"),
                                    "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not out.exists()


@pytest.mark.parametrize("case, pattern", [
    ("both", r"either --label-file or --devkit, not both"),
    ("truncated-tar", r"the tar archive is unreadable after \d+ members .*is the download complete"),
    ("not-a-tar", r"is neither a directory nor a tar archive"),
    ("devkit-without-meta", r"has no data/meta\.mat"),
    ("flat-tar-without-labels", r"holds 26 images and none is in a class folder: give --devkit"),
    ("flat-folder-without-labels", r"holds images directly .* give --devkit"),
])
def test_other_unusable_sources_are_refused_with_nothing_written(case, pattern, layouts, tmp_path, capsys):
    data_dir, extra = layouts.root / "ILSVRC2012_img_val.tar", ["--devkit", str(layouts.root / "ILSVRC2012_devkit_t12")]
    if case == "both":
        extra += ["--label-file", str(layouts.root / "val_label.txt")]
    elif case == "truncated-tar":
        extra = ["--label-file", str(layouts.root / "val_label.txt")]
        data_dir = tmp_path / "cut.tar"
        data_dir.write_bytes((layouts.root / "ILSVRC2012_img_val.tar").read_bytes()[:700_000])
    elif case == "not-a-tar":
        data_dir = layouts.root / "val_label.txt"
    elif case == "devkit-without-meta":
        (tmp_path / "devkit" / "data").mkdir(parents=True)
        extra = ["--devkit", str(tmp_path / "devkit")]
    elif case == "flat-tar-without-labels":
        extra = []
    elif case == "flat-folder-without-labels":
        data_dir, extra = layouts.root / "flat", []
    out = tmp_path / "out"
    assert T2T_ViT_preprocess.main(["--data-dir", str(data_dir), *extra, "--out-dir", str(out / "bins"),
                                    "--gt-path", str(out / "label.npy"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(pattern, err), err
    assert not out.exists()


def test_without_scipy_the_devkit_error_names_it(layouts, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "scipy", None)  # an import of scipy now fails, as where it is not installed
    assert T2T_ViT_preprocess.main(["--data-dir", str(layouts.root / "flat"), "--devkit",
                                    str(layouts.root / "ILSVRC2012_devkit_t12"), "--out-dir", str(tmp_path / "b"),
                                    "--gt-path", str(tmp_path / "l.npy")]) == 1
    assert "reading the devkit's meta.mat (--devkit) needs scipy, which is not installed here: pip install scipy" in \
        capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_a_full_val_set_without_50_of_each_class_is_warned_about(caplog):
    from t2t_vit.data.dataset import Discovery, ImageItem, _report
    from t2t_vit.data.sources import SourceFile

    def discovery(labels):
        items = [ImageItem(SourceFile(f"{i}.JPEG", f"{i}.JPEG"), f"{i}.JPEG", str(i), label)
                 for i, label in enumerate(labels)]
        return Discovery("labelled", items, [])

    balanced = [i % 1000 for i in range(VAL_IMAGES)]
    _report(discovery(balanced), 1000)
    assert "do not have 50 images" not in caplog.text
    _report(discovery([0, 0, *balanced[2:]]), 1000)  # image 1 moved from class 1 to class 0: both are off
    assert "50000 images, as many as the ImageNet val set, but 2 classes do not have 50 images (class 0 has 51)" \
        in caplog.text


@pytest.mark.needs("scipy")
def test_a_changed_archive_redoes_its_bins(layouts, reference, tmp_path):
    """Members are identified with their archive's size and time: a re-downloaded archive is never reused stale."""
    archive = tmp_path / "val.tar"
    archive.write_bytes((layouts.root / "ILSVRC2012_img_val.tar").read_bytes())
    arguments = (tmp_path, "val.tar", ["--devkit", str(layouts.root / "ILSVRC2012_devkit_t12")], tmp_path / "out")
    assert preprocess(*arguments, "--workers", "0") == 0
    first = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out" / "bins").glob("*.bin")}
    assert preprocess(*arguments, "--workers", "0") == 0  # unchanged: every bin kept
    assert {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out" / "bins").glob("*.bin")} == first
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    assert preprocess(*arguments, "--workers", "0") == 0
    again = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out" / "bins").glob("*.bin")}
    assert all(again[name] != first[name] for name in first) and outputs(tmp_path / "out") == reference


def test_tar_members_keep_their_names_and_order(layouts):
    from t2t_vit.data.sources import open_source

    files = open_source(layouts.root / "ILSVRC2012_img_val.tar").files()
    with tarfile.open(layouts.root / "ILSVRC2012_img_val.tar") as tar:
        assert sorted(member.name for member in tar.getmembers()) == [file.relative for file in files]
        for file in files[:3]:
            assert tar.extractfile(file.location).read() == (layouts.root / "flat" / file.relative).read_bytes()


@pytest.mark.slow
@pytest.mark.needs("scipy")
def test_the_main_job_on_the_official_pair_scores_as_on_the_folder(sample_images, tmp_path, tiny_checkpoint):
    """T2T_ViT_eval.sh --data-dir ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz: the same logits and
    scores as on val/<synset>/; a changed ground truth is never reused stale."""
    from test_eval import run_eval

    layouts = make_layouts(tmp_path / "imagenet", sample_images[:6])
    work, common = tmp_path / "work", ("--pth-path", str(tiny_checkpoint), "--batch-sizes", "2", "--loop", "1")

    def job(*data_args):
        result = run_eval(work, *common, *data_args)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        summary = json.loads((work / "eval_summary.json").read_text())
        logits = {path.name: path.read_bytes() for path in (work / f"result_{TINY}" / "bs2").glob("*_0.bin")}
        return result.stdout, summary["rows"][0], logits

    _, folder_row, folder_logits = job("--data-dir", str(layouts.root / "val"))
    official = ("--data-dir", str(layouts.root / "ILSVRC2012_img_val.tar"), "--devkit",
                str(layouts.root / "ILSVRC2012_devkit_t12.tar.gz"))
    _, tar_row, tar_logits = job(*official)
    assert len(folder_logits) == 6 and tar_logits == folder_logits
    assert {key: tar_row[key] for key in ("top1", "top5", "count")} == \
        {key: folder_row[key] for key in ("top1", "top5", "count")}
    _, flat_row, flat_logits = job("--data-dir", str(layouts.root / "flat"), "--label-file",
                                   str(layouts.root / "val_label.txt"))  # a flat folder: the options it names exist
    assert flat_logits == folder_logits and flat_row["top1"] == folder_row["top1"]
    _, _, _ = job(*official)
    stdout, _, _ = job(*official)
    assert "reusing" in stdout and "running" not in stdout  # nothing changed: everything reused
    # a full-size devkit against an archive of 6 images: the report says how many of the 50,000 are there
    coverage = "labels 50,000 images and the data holds 6 of them (0.0 %): every figure is over these 6"
    assert "data: --devkit" in stdout and coverage in stdout
    assert coverage in json.loads((work / "eval_summary.json").read_text())["data_coverage"]
    assert "| reused, from 20" in stdout  # figures of the earlier run are marked with its date
    truth = ground_truth(layouts).splitlines()
    truth[0] = str(layouts.id_of["n01440764"])  # image 1 relabelled
    write_devkit(tmp_path / "devkit2", meta_mat(layouts.leaves), "\n".join(truth) + "\n")
    stdout, row, _ = job("--data-dir", str(layouts.root / "ILSVRC2012_img_val.tar"), "--devkit",
                         str(tmp_path / "devkit2" / "ILSVRC2012_devkit_t12.tar.gz"))
    assert "made with another set of bins, labels or data source" in stdout
    table = np.load(work / "label.npy")
    assert dict(zip(table["name"].tolist(), table["label"].tolist()))[layouts.name(1)] == 0


def test_a_compressed_archive_is_listed_once_per_process_until_it_changes(layouts, tmp_path, monkeypatch):
    """Listing a .tar.gz reads all of it (6.4 GB for ImageNet val): the host check's disk row and the discovery
    after it share one listing; an archive changed since is listed again."""
    from t2t_vit.ascend.doctor import disk_checks
    from t2t_vit.data import sources

    archive = tmp_path / "val.tar.gz"
    archive.write_bytes((layouts.root / "ILSVRC2012_img_val.tar.gz").read_bytes())
    listings = []
    real = sources._listing_stream
    monkeypatch.setattr(sources, "_listing_stream", lambda *args: listings.append(args) or real(*args))
    (disk,) = disk_checks(str(archive), str(tmp_path / "work"), 224)
    first = sources.open_source(archive).files()
    assert len(listings) == 1 and f"{len(first)} images need" in disk["found"]
    first.clear()  # a caller's list is its own
    assert sources.open_source(archive).files() == sources.open_source(archive).files() != []
    assert len(listings) == 1
    os.utime(archive, ns=(archive.stat().st_atime_ns, archive.stat().st_mtime_ns + 10**9))
    sources.open_source(archive).files()
    assert len(listings) == 2
