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
    marker = r'(; platform_machine (==|!=) "aarch64")?'  # one file for both architectures (docs/install.md, "On an Arm host")
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.+-]*" + marker, line) for line in lines), lines
    names = {line.split("==")[0].lower() for line in lines}
    assert {"torch", "torchvision", "timm", "onnx", "onnxruntime", "numpy", "pillow", "tqdm", "pytest"} <= names


def test_stage_outputs_in_the_repo_root_are_ignored(tmp_path):
    import subprocess

    written = ["prep_bins/a.bin", "prep_bins_uint8/a.bin", "om/aipp.cfg", "aipp.cfg",
               "result/bs1/a_0.bin", "result/bs1_summary.json", "label.npy", "T2T_ViT_14.onnx",
               "keep_dtype.cfg", "acc_bs1.json", "T2T_ViT_bs1.om", "T2T_ViT_bs1.om.json", "work/eval_summary.json",
               "fp16_report.csv", "keep_dtype_min.cfg"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert sorted(result.stdout.split()) == sorted(written)
    kept = ["t2t_vit/runtime/runner.py", "tests/data/imagenet-sample/n01871265_tusker.JPEG"]
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


def test_one_requirements_file_gives_aarch64_a_cpu_torch():
    """Environment markers: on aarch64 the last CPU-only torch of the registry (2.10; later aarch64 wheels are CUDA
    builds) with its torchvision, and no OpenVINO; everything else pinned alike on both architectures."""
    from packaging.requirements import Requirement

    lines = [line for line in (REPO_ROOT / "requirements.txt").read_text().splitlines() if line.strip()]
    requirements = [Requirement(line) for line in lines]

    def resolved(machine):
        chosen = [r for r in requirements if r.marker is None or r.marker.evaluate({"platform_machine": machine})]
        names = [r.name.lower() for r in chosen]
        assert len(names) == len(set(names)), names  # one pin per package on each architecture
        return {r.name.lower(): str(r.specifier) for r in chosen}

    arm, x86 = resolved("aarch64"), resolved("x86_64")
    assert (arm["torch"], arm["torchvision"]) == ("==2.10.0", "==0.25.0")
    assert (x86["torch"], x86["torchvision"]) == ("==2.14.1", "==0.29.1")
    assert "openvino" not in arm and "openvino" in x86
    assert {name: pin for name, pin in arm.items() if not name.startswith("torch")} == \
        {name: pin for name, pin in x86.items() if not name.startswith("torch") and name != "openvino"}
