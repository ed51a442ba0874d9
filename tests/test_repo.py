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
    marker = r'(; platform_machine (==|!=) "aarch64")?'  # one file for both architectures (README "On an Arm host")
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


def _package_imports() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at its top or inside a function."""
    import ast

    modules = {path.stem: path for path in (REPO_ROOT / "t2t_vit").glob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "t2t_vit":
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.Import):
                found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("t2t_vit.")}
        graph[name] = found - {name}
    return graph


def test_the_package_has_no_import_cycle():
    graph = _package_imports()
    assert "evaljob" in graph["evalreport"] or "evalreport" in graph["evaljob"]  # the graph is really read

    def reaches(start, target, seen):
        return any(step == target or (step not in seen and reaches(step, target, seen | {step}))
                   for step in graph.get(start, ()))

    cycles = sorted(name for name in graph if reaches(name, name, {name}))
    assert cycles == [], cycles


def test_package_functions_stay_short():
    """Steps, not sagas (STYLE.md): no function of the package over 60 lines."""
    import ast

    def length(function) -> int:  # to the last line any part of it starts on (end_lineno needs Python 3.8)
        return max(getattr(node, "lineno", function.lineno) for node in ast.walk(function)) - function.lineno + 1

    functions = [(path.name, node.name, length(node)) for path in sorted((REPO_ROOT / "t2t_vit").glob("*.py"))
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    assert len(functions) > 100 and max(size for _, _, size in functions) > 30  # the walk really measures
    assert [entry for entry in functions if entry[2] > 60] == []


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
