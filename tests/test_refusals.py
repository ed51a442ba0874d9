"""Every script refuses bad input with a message and a non-zero exit, and leaves the file system as it was:
no out-dir, work dir, lock or half-written file is created by a command that is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def run_script(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = ["bash", str(REPO_ROOT / script)] if script.endswith(".sh") else [sys.executable, str(REPO_ROOT / script)]
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


CASES = {
    "preprocess-missing-data": ("T2T_ViT_preprocess.py", ["--data-dir", "/nonexistent", "--out-dir", "x",
                                                          "--gt-path", "label.npy"], "does not exist"),
    "preprocess-flat-no-labels": ("T2T_ViT_preprocess.py", ["--data-dir", "flat", "--out-dir", "x", "--gt-path",
                                                            "label.npy"], "give --devkit"),
    "preprocess-bad-label-file": ("T2T_ViT_preprocess.py", ["--data-dir", "flat", "--label-file", "flat/a.JPEG",
                                                            "--out-dir", "x", "--gt-path", "label.npy"],
                                  "not a text file"),
    "pth2onnx-missing-checkpoint": ("T2T_ViT_pth2onnx.py", ["--pth-path", "none.pth.tar", "--onnx-path",
                                                            "out/t2t.onnx"], "none.pth.tar"),
    "pth2onnx-not-a-checkpoint": ("T2T_ViT_pth2onnx.py", ["--pth-path", "flat/a.JPEG", "--onnx-path", "t2t.onnx"],
                                  "flat/a.JPEG"),
    "gen_cfg-missing-model": ("gen_cfg.py", ["none.onnx", "keep_dtype.cfg"], "none.onnx"),
    "infer-missing-model": ("T2T_ViT_infer.py", ["--model", "none.onnx", "--input", "flat", "--output", "result",
                                                 "--output_dirname", "bs1"], "none.onnx"),
    "postprocess-missing-results": ("T2T_ViT_postprocess.py", ["--result-dir", "result/bs1", "--gt-path", "label.npy",
                                                               "--results-file", "acc.json"], "label.npy"),
    "eval-missing-checkpoint": ("T2T_ViT_eval.sh", ["--pth-path", "none.pth.tar", "--data-dir", "flat",
                                                    "--work-dir", "work"], "none.pth.tar"),
    "eval-flat-no-labels": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "flat", "--work-dir",
                                                "work"], "give --devkit"),
    "eval-missing-data": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "none", "--work-dir",
                                              "work"], "does not exist"),
    # the checkpoint is checked before any image is preprocessed (minutes and GBs at full scale)
    "eval-text-as-checkpoint": ("T2T_ViT_eval.sh", ["--pth-path", "notes.txt", "--data-dir", "val", "--work-dir",
                                                    "work"], "checkpoint notes.txt is not a PyTorch checkpoint (it is "
                                                             "a text file"),
    "eval-work-dir-in-data": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "val", "--work-dir",
                                                  "val/work"], "is inside the data folder"),
    "preprocess-out-dir-in-data": ("T2T_ViT_preprocess.py", ["--data-dir", "val", "--out-dir", "val/n01440764/bins",
                                                             "--gt-path", "label.npy"], "--out-dir val/n01440764/bins is "
                                                                                        "inside the data folder"),
    "preprocess-out-dir-is-data": ("T2T_ViT_preprocess.py", ["--data-dir", "val", "--out-dir", "val", "--gt-path",
                                                             "label.npy"], "--out-dir val is the data folder"),
    "preprocess-cut-tar": ("T2T_ViT_preprocess.py", ["--data-dir", "cut.tar", "--out-dir", "x", "--gt-path",
                                                     "label.npy"], "cut.tar is truncated: it ends after 1 members "
                                                                   "without the end-of-archive blocks"),
    "atc-no-keep-list": ("T2T_ViT_atc.sh", ["--onnx", "flat/a.JPEG", "--out-dir", "om"], "keep_dtype.cfg does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_command_leaves_no_path_behind(case, tmp_path, sample_images, checkpoint_path):
    script, args, message = CASES[case]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.JPEG").write_bytes(sample_images[0].read_bytes())
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    (tmp_path / "val" / "n01440764" / "a.JPEG").write_bytes(sample_images[0].read_bytes())
    (tmp_path / "ck.pth.tar").symlink_to(checkpoint_path)
    (tmp_path / "notes.txt").write_text("checkpoint: ask Li for the 81.5 one\n")
    with tarfile.open(tmp_path / "whole.tar", "w") as archive:  # one member, then the end-of-archive blocks
        archive.add(tmp_path / "val" / "n01440764" / "a.JPEG", "val/n01440764/a.JPEG")
    with tarfile.open(tmp_path / "whole.tar") as archive:
        member = archive.getmembers()[0]
    end = member.offset_data + -(-member.size // 512) * 512  # a stopped download, cut at the member's end
    (tmp_path / "cut.tar").write_bytes((tmp_path / "whole.tar").read_bytes()[:end])
    before = tree(tmp_path)
    result = run_script(script, *args, cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()  # (a runtime note may come first: onnxruntime where OpenVINO is absent)
    assert "Traceback" not in result.stderr and [line.startswith("error: ") for line in lines][-1:] == [True], lines
    assert sum(line.startswith("error: ") for line in lines) == 1 and len(lines) <= 2, lines
    assert tree(tmp_path) == before
