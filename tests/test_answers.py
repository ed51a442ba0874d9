"""A user's mistakes, run as a user runs them: every script answers in one line with a non-zero exit, writes
nothing, and does so before any heavy package (torch, onnx, a runtime, matplotlib) is imported. Here those
packages are replaced by ones that fail when imported, so a check that comes after such an import fails the test.
A Python without the toolkit's packages gets one line from every script too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

HEAVY = ("torch", "torchvision", "timm", "onnx", "onnxruntime", "openvino", "matplotlib")
PROC_HOLDS_NO_FILES = os.path.isdir("/proc") and os.statvfs("/proc").f_blocks == 0


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.fixture(scope="module")
def heavy_refused(tmp_path_factory) -> Path:
    """A folder of stand-ins for the heavy packages, each failing loudly when imported."""
    root = tmp_path_factory.mktemp("heavy_refused")
    for name in HEAVY:
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(f"raise RuntimeError('{name} was imported before the refusal')\n")
    return root


def run(script: str, args: list[str], cwd: Path, pythonpath: str, python: list[str] | None = None):
    command = (["bash", str(REPO_ROOT / script)] if script.endswith(".sh")
               else [*(python or [sys.executable]), str(REPO_ROOT / script)])
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": pythonpath}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def user_files(tmp_path, sample_images):
    """A user's folder: class-folder images, an empty folder, a flat folder, a text file, a fake checkpoint (the
    zip header of torch.save's format is enough for what is told before torch), the start of an ONNX file, bins."""
    (tmp_path / "val" / "n01440764").mkdir(parents=True)
    (tmp_path / "val" / "n01440764" / "a.JPEG").write_bytes(sample_images[0].read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.JPEG").write_bytes(sample_images[0].read_bytes())
    (tmp_path / "notes.txt").write_text("checkpoint: ask Li for the 81.5 one\n")
    (tmp_path / "ck.pth.tar").write_bytes(b"PK\x03\x04" + b"\0" * 26 + b"ck/data.pkl" + b"\0" * 64)
    (tmp_path / "a.onnx").write_bytes(b"\x08\x07" + b"\0" * 32)  # begins as an ONNX model does
    (tmp_path / "bins").mkdir()
    (tmp_path / "bins" / "a.bin").write_bytes(b"\0" * 16)
    return tmp_path


CASES = {
    "eval-misspelled-data-dir": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "vall",
                                                     "--work-dir", "work"], "--data-dir vall does not exist"),
    "eval-empty-folder": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "empty", "--work-dir", "work"],
                          "no images found in"),
    "eval-missing-label-file": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "flat", "--label-file",
                                                    "val_label.txt", "--work-dir", "work"],
                                "cannot read --label-file val_label.txt"),
    "eval-missing-checkpoint": ("T2T_ViT_eval.sh", ["--pth-path", "81.5.pth.tar", "--data-dir", "val"],
                                "checkpoint 81.5.pth.tar does not exist"),
    "eval-text-as-checkpoint": ("T2T_ViT_eval.sh", ["--pth-path", "notes.txt", "--data-dir", "val"],
                                "checkpoint notes.txt is not a PyTorch checkpoint (it is a text file, starting "),
    "pth2onnx-text-as-checkpoint": ("T2T_ViT_pth2onnx.py", ["--pth-path", "notes.txt", "--onnx-path", "out.onnx"],
                                    "checkpoint notes.txt is not a PyTorch checkpoint (it is a text file"),
    "pth2onnx-missing-checkpoint": ("T2T_ViT_pth2onnx.py", ["--pth-path", "81.5.pth.tar", "--onnx-path", "out.onnx"],
                                    "--pth-path 81.5.pth.tar does not exist"),
    "gen_cfg-checkpoint-as-onnx": ("gen_cfg.py", ["ck.pth.tar", "keep.cfg"],
                                   "ONNX ck.pth.tar is a PyTorch checkpoint, not an ONNX model: export it first"),
    "gen_cfg-text-as-onnx": ("gen_cfg.py", ["notes.txt", "keep.cfg"], "is a text file, starting 'checkpoint: ask"),
    "infer-checkpoint-as-model": ("T2T_ViT_infer.py", ["--model", "ck.pth.tar", "--input", "bins", "--output", "out"],
                                  "--model ck.pth.tar is a PyTorch checkpoint, not an ONNX model"),
    "infer-text-as-model": ("T2T_ViT_infer.py", ["--model", "notes.txt", "--input", "bins", "--output", "out"],
                            "--model notes.txt is a text file"),
    "infer-missing-om": ("T2T_ViT_infer.py", ["--model", "om/T2T_ViT_bs8.om", "--input", "bins", "--output", "out"],
                         "--model om/T2T_ViT_bs8.om does not exist"),
    "postprocess-missing-labels": ("T2T_ViT_postprocess.py", ["--result-dir", "bins", "--gt-path", "label.npy"],
                                   "cannot read --gt-path label.npy"),
    "doctor-missing-data-dir": ("T2T_ViT_doctor.py", ["--data-dir", "vall"], "--data-dir vall does not exist"),
}
VIRTUAL = "/proc/t2t_vit_nope"
PROC_CASES = {
    "eval-work-dir-on-proc": ("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "val", "--work-dir",
                                                  VIRTUAL], f"--work-dir {VIRTUAL} cannot be created: /proc is on a "
                                                            f"virtual file system"),
    "preprocess-out-dir-on-proc": ("T2T_ViT_preprocess.py", ["--data-dir", "val", "--out-dir", VIRTUAL, "--gt-path",
                                                             "label.npy"], f"--out-dir {VIRTUAL} cannot be created"),
    "preprocess-label-file-on-proc": ("T2T_ViT_preprocess.py", ["--data-dir", "val", "--out-dir", "bins_out",
                                                                "--gt-path", f"{VIRTUAL}/label.npy"],
                                      f"the folder of --gt-path {VIRTUAL} cannot be created"),
    "pth2onnx-onnx-on-proc": ("T2T_ViT_pth2onnx.py", ["--pth-path", "ck.pth.tar", "--onnx-path", f"{VIRTUAL}/a.onnx"],
                              f"the folder of --onnx-path {VIRTUAL} cannot be created"),
    "infer-output-on-proc": ("T2T_ViT_infer.py", ["--model", "om/none.om", "--output", VIRTUAL], "does not exist"),
    "doctor-work-dir-on-proc": ("T2T_ViT_doctor.py", ["--work-dir", VIRTUAL], f"--work-dir {VIRTUAL} cannot be "
                                                                              f"created"),
}


def assert_one_line_refusal(result, message: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def refused_leaving_nothing(script, args, message, user_files, heavy_refused):
    """Run the script as a user types it, with the heavy packages failing if imported: one line, nothing made."""
    before = tree(user_files)
    result = run(script, args, user_files, f"{heavy_refused}{os.pathsep}{REPO_ROOT}")
    assert_one_line_refusal(result, message)
    assert tree(user_files) == before
    return result


@pytest.mark.parametrize("case", list(CASES))
def test_a_mistake_is_one_line_before_any_heavy_import(case, user_files, heavy_refused):
    refused_leaving_nothing(*CASES[case], user_files, heavy_refused)


@pytest.mark.skipif(not PROC_HOLDS_NO_FILES, reason="/proc is not a virtual file system here (not Linux)")
@pytest.mark.parametrize("case", list(PROC_CASES))
def test_a_folder_that_cannot_be_created_is_not_called_a_full_disk(case, user_files, heavy_refused):
    assert "free" not in refused_leaving_nothing(*PROC_CASES[case], user_files, heavy_refused).stderr


def test_a_busy_work_dir_is_refused_before_the_checkpoint_is_read(user_files, heavy_refused):
    from t2t_vit.files import exclusive_lock

    with exclusive_lock(user_files / "work", "--work-dir"):
        refused_leaving_nothing("T2T_ViT_eval.sh", ["--pth-path", "ck.pth.tar", "--data-dir", "val", "--work-dir",
                                                    "work"], "--work-dir work is in use by another job: PID ",
                                user_files, heavy_refused)


SCRIPTS = ("T2T_ViT_preprocess.py", "T2T_ViT_pth2onnx.py", "gen_cfg.py", "T2T_ViT_infer.py",
           "T2T_ViT_postprocess.py", "T2T_ViT_eval.py", "T2T_ViT_doctor.py")
ARGS = {"T2T_ViT_preprocess.py": ["--data-dir", "val", "--out-dir", "b", "--gt-path", "l.npy"],
        "T2T_ViT_pth2onnx.py": ["--pth-path", "ck.pth.tar", "--onnx-path", "a.onnx"],
        "gen_cfg.py": ["a.onnx", "keep.cfg"], "T2T_ViT_infer.py": ["--model", "a.onnx", "--output", "out"],
        "T2T_ViT_postprocess.py": ["--result-dir", "bins", "--gt-path", "l.npy"],
        "T2T_ViT_eval.py": ["--pth-path", "ck.pth.tar", "--data-dir", "val"], "T2T_ViT_doctor.py": []}


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_python_without_the_packages_gets_one_line(script, user_files):
    """As the system python3 beside a venv runs it: no site-packages (-S), the repository importable."""
    before = tree(user_files)
    result = run(script, ARGS[script], user_files, str(REPO_ROOT), python=[sys.executable, "-S"])
    assert_one_line_refusal(result, f"this Python ({sys.executable}) has no ")
    assert tree(user_files) == before
