"""Every script refuses bad input with a message and a non-zero exit, and leaves the file system as it was:
no out-dir, work dir, lock or half-written file is created by a command that is refused."""

from __future__ import annotations

import os
import subprocess
import sys
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
    "eval-flat-no-labels": ("T2T_ViT_eval.sh", ["--pth-path", "flat/a.JPEG", "--data-dir", "flat", "--work-dir",
                                                "work"], "give --devkit"),
    "eval-missing-data": ("T2T_ViT_eval.sh", ["--pth-path", "flat/a.JPEG", "--data-dir", "none", "--work-dir",
                                              "work"], "does not exist"),
    "atc-no-keep-list": ("T2T_ViT_atc.sh", ["--onnx", "flat/a.JPEG", "--out-dir", "om"], "keep_dtype.cfg does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_refused_command_leaves_no_path_behind(case, tmp_path, sample_images):
    script, args, message = CASES[case]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.JPEG").write_bytes(sample_images[0].read_bytes())
    before = tree(tmp_path)
    result = run_script(script, *args, cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert tree(tmp_path) == before
