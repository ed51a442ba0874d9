"""The repository's own promises: CI runs the README's commands."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def _setup_commands() -> list[str]:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_ci_runs_exactly_the_readme_commands():
    install, test = _setup_commands()
    ci_lines = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci_lines
    assert "python3 -m venv .venv" in ci_lines
    assert install.startswith("python3 -m venv .venv && .venv/bin/pip install -r requirements.txt")


def test_requirements_are_pinned():
    lines = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line.strip()]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+-]*", line) for line in lines), lines
    names = {line.split("==")[0].lower() for line in lines}
    assert {"torch", "torchvision", "timm", "onnx", "onnxruntime", "numpy", "pillow", "tqdm", "pytest"} <= names


def test_stage_outputs_in_the_repo_root_are_ignored(tmp_path):
    import subprocess

    written = ["prep_bins/a.bin", "prep_bins_uint8/a.bin", "om/aipp.cfg", "aipp.cfg",
               "result/bs1/a_0.bin", "result/bs1_summary.json", "label.npy", "T2T_ViT_14.onnx",
               "keep_dtype.cfg", "acc_bs1.json", "T2T_ViT_bs1.om", "T2T_ViT_bs1.om.json", "work/eval_summary.json"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert sorted(result.stdout.split()) == sorted(written)
    kept = ["t2t_vit/runner.py", "tests/data/imagenet-sample/n01871265_tusker.JPEG"]
    tracked = subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=REPO_ROOT, capture_output=True,
                             text=True)
    assert tracked.stdout == ""


def test_script_docstrings_keep_their_line_continuations():
    """A lone backslash at a line's end inside a docstring joins the lines in --help: the examples must show it."""
    import ast

    for script in sorted(REPO_ROOT.glob("*.py")):
        source = script.read_text()
        docstring = ast.get_docstring(ast.parse(source), clean=False) or ""
        raw_lines = [line for line in source.split('"""')[1].splitlines() if line.rstrip().endswith("\\")]
        assert all(line.rstrip().endswith("\\\\") for line in raw_lines), (script.name, raw_lines)
        assert docstring.count("\\\n") == len(raw_lines), script.name
