"""T2T_ViT_preprocess.py end to end: outputs, bad inputs, resuming, kill -9, config changes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import T2T_ViT_preprocess
from conftest import REPO_ROOT, SAMPLE_COUNT, make_val_tree, reference_transform
from t2t_vit.data.dataset import read_class_list
from t2t_vit.job.demo import replicate_val_tree

BIN_BYTES = 602_112


def run(*args: str) -> int:
    return T2T_ViT_preprocess.main([*map(str, args), "--no-progress", "-q"])


def _bins(out_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(out_dir.glob("*.bin"))}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, sample_images):
    """All shipped real images through the script, as a user runs it."""
    root = tmp_path_factory.mktemp("full")
    val = make_val_tree(root / "val", sample_images)
    assert run("--data-dir", val, "--out-dir", root / "bins", "--gt-path", root / "label.npy", "--workers", 2) == 0
    return root


def test_every_bin_equals_timm_and_every_label_is_the_synset_index(full_run, sample_images):
    synsets = read_class_list()
    table = np.load(full_run / "label.npy", allow_pickle=False)
    assert len(table) == SAMPLE_COUNT  # nothing dropped
    by_name = {path.stem: path for path in sample_images}
    for name, label in zip(table["name"].tolist(), table["label"].tolist()):
        assert label == synsets.index(name.split("_")[0])
        data = (full_run / "bins" / f"{name}.bin").read_bytes()
        assert len(data) == BIN_BYTES
        assert data == reference_transform(by_name[name]).astype("<f4").tobytes(), name
    assert set(by_name) == set(table["name"].tolist())  # names are the file stems, the quote one included


def test_manifest_records_config_sources_and_versions(full_run):
    manifest = json.loads((full_run / "bins" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["data_config"]["crop_pct"] == 0.9 and manifest["data_config"]["interpolation"] == "bicubic"
    assert len(manifest["data_config_hash"]) == 16
    assert manifest["bin"] == {"dtype": "float32", "layout": "NCHW", "byte_order": "little", "order": "C",
                               "shape": [1, 3, 224, 224], "bytes": BIN_BYTES}
    assert manifest["source_root"] == str((full_run / "val").resolve())
    entry = manifest["images"]["n02966687_carpenter's_kit"]
    assert entry["source"] == "n02966687/n02966687_carpenter's_kit.JPEG"
    assert entry["label"] == 477  # line 478 of the sorted list
    source = full_run / "val" / entry["source"]
    assert (entry["source_bytes"], entry["source_mtime_ns"]) == (source.stat().st_size, source.stat().st_mtime_ns)
    assert manifest["counts"]["selected"] == manifest["counts"]["in_label_file"] == SAMPLE_COUNT
    assert {"numpy", "pillow", "python", "t2t_vit"} <= set(manifest["versions"])


def _bad_input_tree(root: Path, sample_images) -> Path:
    """One class folder holding every awkward input of the issue next to two ordinary images."""
    folder = root / "val" / "n01440764"
    folder.mkdir(parents=True)
    for image in sample_images[:2]:
        (folder / image.name).symlink_to(image)
    real = sample_images[5].read_bytes()
    (folder / "zero_bytes.JPEG").touch()
    (folder / "truncated.JPEG").write_bytes(real[: len(real) // 3])
    (folder / "text.JPEG").write_text("not an image\n")
    (folder / "directory.JPEG").mkdir()  # a folder, whatever its name: searched for images, holds none
    (folder / "broken_link.JPEG").symlink_to(root / "nowhere.JPEG")
    with Image.open(sample_images[5]) as image:
        image.save(folder / "png_inside.JPEG", format="PNG")
        image.convert("CMYK").save(folder / "cmyk.JPEG", format="JPEG")
    Image.fromarray((np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50)).save(folder / "sixteen_bit.png")
    Image.new("RGB", (1, 1), (200, 10, 30)).save(folder / "one_pixel.JPEG")
    (folder / "notes.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"\0\1")
    return root / "val"


BAD = {"zero_bytes", "truncated", "text", "broken_link"}
DECODABLE = {"png_inside", "cmyk", "sixteen_bit", "one_pixel"}


def test_bad_inputs_fail_listed_then_skip_bad_leaves_them_out(tmp_path, sample_images, capsys):
    val = _bad_input_tree(tmp_path, sample_images)
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels, "--workers", 2) == 1
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("error: 4 of 10 images could not be decoded") and "--skip-bad" in error
    for name in BAD:
        assert f"{name}.JPEG" in error
    assert not labels.exists()  # no label file for a failed run
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and {entry["name"] for entry in manifest["bad"]} == BAD
    assert [note["name"] for note in manifest["conversion_notes"]] == ["sixteen_bit"]
    assert "clips values above 255" in manifest["conversion_notes"][0]["note"]

    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels, "--workers", 2, "--skip-bad") == 0
    table = np.load(labels, allow_pickle=False)
    good = DECODABLE | {image.stem for image in sample_images[:2]}
    assert set(table["name"].tolist()) == good and set(table["label"].tolist()) == {0}
    assert {path.stem for path in out.glob("*.bin")} == good  # no bin for an undecodable image
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and {entry["name"] for entry in manifest["bad"]} == BAD
    reasons = {entry["name"]: entry["reason"] for entry in manifest["bad"]}
    assert reasons["text"] == "UnidentifiedImageError: cannot identify image file"  # the name is beside it
    assert sorted(manifest["ignored"]) == ["n01440764/.DS_Store", "n01440764/notes.txt"]
    assert manifest["counts"]["already_done"] == 6 and manifest["counts"]["written"] == 0
    for name in DECODABLE:  # decodable oddities are converted to RGB exactly as timm's loader does
        source = val / "n01440764" / (f"{name}.png" if name == "sixteen_bit" else f"{name}.JPEG")
        assert (out / f"{name}.bin").read_bytes() == reference_transform(source).tobytes(), name


def test_unreadable_file_is_listed_as_bad(tmp_path, sample_images, monkeypatch):
    # As root a chmod-000 file is still readable, so the permission error is injected.
    val = make_val_tree(tmp_path / "val", sample_images[:3])
    victim = next(val.rglob("*.JPEG"))
    real_open = Image.open

    def guarded_open(path, *args, **kwargs):
        if Path(path) == victim:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    assert run("--data-dir", val, "--out-dir", tmp_path / "bins", "--gt-path", tmp_path / "l.npy",
               "--workers", 0, "--skip-bad") == 0
    manifest = json.loads((tmp_path / "bins" / "manifest.json").read_text())
    assert [entry["reason"] for entry in manifest["bad"]] == ["PermissionError: [Errno 13] Permission denied: "
                                                              f"'{victim}'"]


def test_decompression_bomb_guard_stays_on(tmp_path, sample_images, monkeypatch):
    val = make_val_tree(tmp_path / "val", sample_images[:2])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the samples are all far above 2 x 10,000 pixels
    assert run("--data-dir", val, "--out-dir", tmp_path / "bins", "--gt-path", tmp_path / "l.npy",
               "--workers", 0) == 1
    manifest = json.loads((tmp_path / "bins" / "manifest.json").read_text())
    assert all(entry["reason"].startswith("DecompressionBombError") for entry in manifest["bad"])
    assert len(manifest["bad"]) == 2


@pytest.mark.parametrize("case, pattern", [
    ("missing_dir", "does not exist"),
    ("empty_dir", "no images found"),
    ("gt_inside_out", "is inside --out-dir"),
    ("gt_not_npy", "must end in .npy"),
    ("limit_zero", "--limit must be at least 1"),
])
def test_unusable_arguments(tmp_path, case, pattern, capsys):
    data, out, gt = tmp_path / "val", tmp_path / "bins", tmp_path / "label.npy"
    if case != "missing_dir":
        data.mkdir()
    if case == "gt_inside_out":
        gt = out / "label.npy"
    if case == "gt_not_npy":
        gt = tmp_path / "label.txt"
    extra = ["--limit", "0"] if case == "limit_zero" else []
    assert run("--data-dir", data, "--out-dir", out, "--gt-path", gt, *extra) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and pattern in error and error.count("\n") == 1


def test_resume_redoes_missing_and_incomplete_bins_only(tmp_path, sample_images, full_run):
    val = make_val_tree(tmp_path / "val", sample_images[:12])
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels, "--workers", 2) == 0
    first, first_labels = _bins(out), labels.read_bytes()
    names = sorted(first)
    (out / names[0]).unlink()
    (out / names[1]).unlink()
    (out / names[2]).write_bytes(first[names[2]][:1000])  # as if written without the atomic rename
    (out / f".{names[3]}.abc123.partial").write_bytes(b"half")
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels, "--workers", 2) == 0
    assert _bins(out) == first and labels.read_bytes() == first_labels
    assert not list(out.glob(".*.partial"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 3 and manifest["counts"]["already_done"] == 9


@pytest.mark.slow
def test_kill_9_then_rerun_is_byte_identical(tmp_path, sample_images, full_run):
    command, out, labels = _replicated_run(tmp_path, sample_images, "--workers", "1", "-q")
    process = subprocess.Popen(command)
    _wait_for_bins(out, 40)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = len(list(out.glob("*.bin")))
    assert 40 <= done_at_kill < 160, "the run must be killed mid-way"
    assert not labels.exists()
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"  # kill -9 leaves no chance
    time.sleep(0.5)  # let the orphaned worker finish the image it holds
    assert subprocess.run(command).returncode == 0
    bins = _assert_replicas_equal_originals(out, full_run)
    table = np.load(labels, allow_pickle=False)
    assert sorted(table["name"].tolist()) == sorted(name[:-4] for name in bins)


def _replicated_run(tmp_path: Path, sample_images, *options: str) -> tuple[list[str], Path, Path]:
    """The preprocess command over 160 images: the shipped ones linked again under distinct names, so a copy's bin
    equals its original's; returns it with its out-dir and label file."""
    val = tmp_path / "val"
    replicate_val_tree(val, sample_images, 160)
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    return ([sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), "--data-dir", str(val), "--out-dir", str(out),
             "--gt-path", str(labels), "--no-progress", *options], out, labels)


def _wait_for_bins(out: Path, count: int) -> None:
    deadline = time.monotonic() + 60
    while len(list(out.glob("*.bin"))) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def _assert_replicas_equal_originals(out: Path, full_run: Path) -> dict[str, bytes]:
    originals, bins = _bins(full_run / "bins"), _bins(out)
    assert len(bins) == 160
    for name, data in bins.items():
        assert data == originals[re.sub(r"_r\d{5}\.bin$", ".bin", name)], name
    return bins


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` and that run the same command (the pool's forked workers)."""
    command = Path(f"/proc/{pid}/cmdline").read_bytes()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if entry.name.isdigit() and int(fields[1]) == pid and (entry / "cmdline").read_bytes() == command:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.slow
def test_a_killed_worker_ends_the_run_and_the_same_command_resumes(tmp_path, sample_images, full_run):
    # what the OOM killer does on a long run: kill -9 of one worker, the parent left alive
    command, out, labels = _replicated_run(tmp_path, sample_images, "--workers", "2")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_bins(out, 20)
    workers = _children(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    killed_at = time.monotonic()
    _, err = process.communicate(timeout=60)  # before the guarded pool, the parent waited here forever
    assert process.returncode == 1 and time.monotonic() - killed_at < 60
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [line for line in err.splitlines() if line.strip()], err  # one line, no traceback
    assert errors[0].startswith("error: a preprocess worker was killed (signal 9: SIGKILL, out of memory?)")
    assert "run the same command again to resume" in errors[0]
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    assert len(list(out.glob("*.bin"))) < 160 and not labels.exists()
    assert subprocess.run(command, capture_output=True).returncode == 0
    _assert_replicas_equal_originals(out, full_run)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_ctrl_c_marks_the_manifest_interrupted(tmp_path, sample_images, monkeypatch, capsys):
    import t2t_vit.data.preprocess as preprocess

    val = make_val_tree(tmp_path / "val", sample_images[:4])
    calls = []

    def interrupted(task):
        calls.append(task)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_process(task)

    real_process = preprocess._process
    monkeypatch.setattr(preprocess, "_process", interrupted)
    out = tmp_path / "bins"
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", tmp_path / "label.npy", "--workers", 0) == 130
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert capsys.readouterr().err.strip().endswith("run the same command again to resume")
    assert len(list(out.glob("*.bin"))) == 1 and not (tmp_path / "label.npy").exists()


def test_a_disk_too_small_for_the_bins_is_refused_before_anything_is_written(tmp_path, sample_images, monkeypatch,
                                                                             capsys):
    import shutil
    from collections import namedtuple

    val = make_val_tree(tmp_path / "val", sample_images[:4])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2_000_000, 2_000_000))
    assert run("--data-dir", val, "--out-dir", tmp_path / "bins", "--gt-path", tmp_path / "label.npy") == 1
    error = capsys.readouterr().err
    assert error.startswith("error: the bins need 2.4 MB (4 images x 602,112 bytes, less those already there) and ")
    assert "has 2.0 MB free: free space or give another --out-dir (uint8 bins, --dtype uint8, take a quarter" in error
    assert not (tmp_path / "bins").exists() and not (tmp_path / "label.npy").exists()


def test_a_replaced_source_image_is_processed_again(tmp_path, sample_images):
    val = make_val_tree(tmp_path / "val", sample_images[:3])
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels) == 0
    first = _bins(out)
    target = next(val.rglob(sample_images[0].name))
    old_time = target.lstat().st_mtime
    target.unlink()
    target.write_bytes(sample_images[1].read_bytes())  # another picture under the same name, with an older time
    os.utime(target, (old_time - 3600, old_time - 3600))
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["written"] == 1 and manifest["counts"]["already_done"] == 2
    name = sample_images[0].stem + ".bin"
    assert _bins(out)[name] == first[sample_images[1].stem + ".bin"] != first[name]


def test_another_config_or_data_dir_into_the_same_out_dir_is_refused(tmp_path, sample_images, capsys):
    val = make_val_tree(tmp_path / "val", sample_images[:2])
    other = make_val_tree(tmp_path / "other", sample_images[2:4])
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels) == 0
    capsys.readouterr()
    assert run("--data-dir", val, "--out-dir", out, "--gt-path", labels, "--crop-pct", "0.875") == 1
    assert "made with another data config" in capsys.readouterr().err
    assert run("--data-dir", other, "--out-dir", out, "--gt-path", labels) == 1
    assert "use a new --out-dir" in capsys.readouterr().err


def test_limit_and_flat_layout(tmp_path, sample_images):
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = []
    for index, image in enumerate(sample_images[:6]):
        name = f"ILSVRC2012_val_{index + 1:08d}.JPEG"
        (flat / name).symlink_to(image)
        lines.append(f"{name} {index * 100}")
    (tmp_path / "val_label.txt").write_text("\n".join(lines) + "\n")
    out, labels = tmp_path / "bins", tmp_path / "label.npy"
    assert run("--data-dir", flat, "--label-file", tmp_path / "val_label.txt", "--out-dir", out, "--gt-path", labels,
               "--limit", "4") == 0
    table = np.load(labels, allow_pickle=False)
    assert table["name"].tolist() == [f"ILSVRC2012_val_{i:08d}" for i in range(1, 5)]
    assert table["label"].tolist() == [0, 100, 200, 300]


def test_help_names_the_seed_flags():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "T2T_ViT_preprocess.py"), "--help"],
                            capture_output=True, text=True, check=True)
    for flag in ("--data-dir DIR", "--out-dir DIR", "--gt-path LABELS.npy", "--skip-bad", "--workers N", "--limit N"):
        assert flag in result.stdout


def test_an_undecodable_archive_member_is_not_described_by_a_memory_address():
    import io

    from PIL import Image

    from t2t_vit.data.preprocess import _reason

    try:
        Image.open(io.BytesIO(b"not an image\n"))  # how an archive member is decoded
    except Exception as error:  # noqa: BLE001
        assert " at 0x" in str(error)  # Pillow's own text: the BytesIO's repr
        assert _reason(error) == "UnidentifiedImageError: cannot identify image file"
    else:
        raise AssertionError("Pillow decoded a text file")
    assert _reason(ValueError("a\nb")) == "ValueError: a"
