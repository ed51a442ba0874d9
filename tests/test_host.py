"""The Ascend host's own Python: install files, environment-independent results, CPU runtimes optional."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import onnx
import pytest

from conftest import AIS_BENCH, REPO_ROOT, SAMPLE_DIR, make_val_tree
from test_runner import tiny_model
from t2t_vit import version_bridge

BIN_DIGESTS = REPO_ROOT / "tests" / "data" / "bin_sha256.json"


def _requirements(name):
    from packaging.requirements import Requirement

    lines = (REPO_ROOT / name).read_text().splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def _declared():
    from packaging.requirements import Requirement

    project = version_bridge.read_toml(REPO_ROOT / "pyproject.toml")["project"]
    extras = [item for items in project["optional-dependencies"].values() for item in items]
    return {requirement.name.lower(): requirement for requirement in map(Requirement, project["dependencies"] + extras)}


def test_the_host_file_holds_the_declared_ranges_and_nothing_is_pinned():
    from packaging.specifiers import SpecifierSet

    declared = _declared()
    host = _requirements("requirements-host.txt")
    assert {requirement.name.lower() for requirement in host} == set(declared) - {"openvino", "matplotlib", "pytest", "pytest-xdist", "scipy"}
    for requirement in host:
        assert all(spec.operator in (">=", "<") for spec in requirement.specifier), requirement  # ranges only
        wanted = declared[requirement.name.lower()].specifier
        if requirement.name == "numpy" and requirement.marker.evaluate({"python_version": "3.7"}):
            (lower,) = [spec for spec in wanted if spec.operator == ">="]
            assert requirement.specifier == SpecifierSet(f"{lower},<2")  # CANN needs numpy 1.x below Python 3.13
        else:
            assert requirement.specifier == wanted, requirement


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-seed.txt"])
def test_both_tested_ends_lie_in_the_declared_range(name):
    declared = _declared()
    for requirement in _requirements(name):
        (spec,) = requirement.specifier
        assert spec.operator == "==", requirement
        if requirement.name.lower() in declared:
            assert declared[requirement.name.lower()].specifier.contains(spec.version, prereleases=True), requirement


@pytest.mark.aarch64
def test_shipped_bins_are_the_recorded_bytes(tmp_path):
    """The bins of the 26 shipped images in both dtypes: the same SHA-256 at both ends of the supported range."""
    import T2T_ViT_preprocess

    recorded = json.loads(BIN_DIGESTS.read_text())
    make_val_tree(tmp_path / "val", sorted(SAMPLE_DIR.glob("*.JPEG")))
    for dtype in ("uint8", "float32"):
        assert T2T_ViT_preprocess.main(["--data-dir", str(tmp_path / "val"), "--out-dir", str(tmp_path / dtype),
                                        "--gt-path", str(tmp_path / f"label_{dtype}.npy"), "--dtype", dtype,
                                        "--workers", "0", "--no-progress", "-q"]) == 0
        made = {path.name: hashlib.sha256(path.read_bytes()).hexdigest()
                for path in sorted((tmp_path / dtype).glob("*.bin"))}
        assert len(made) == 26 and made == recorded[dtype], dtype


def test_what_goes_to_atc_is_opset_11_with_an_ir_onnx_1_12_reads(exports_by_size, tmp_path):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    from t2t_vit.ascend.npu_precision import emulate_force_fp16

    sum_export = onnx.load(str(exported_onnx["sum"]))
    assert [(entry.domain, entry.version) for entry in sum_export.opset_import] == [("", 11)]
    assert sum_export.ir_version <= 8  # ATC parses with onnx 1.12
    emulated = emulate_force_fp16(sum_export)  # a model the project builds keeps the IR it was given
    assert emulated.ir_version == sum_export.ir_version
    version_bridge.onnxruntime_session(emulated, "a test")  # and the installed onnxruntime accepts it


# ------------------------------------------------------------------------- a host without the CPU runtimes

BLOCKER = "raise ImportError('{name} is blocked by the test: a host without it')\n"


def _host_env(tmp_path, blocked=("onnxruntime", "openvino")):
    """PYTHONPATH that hides the CPU runtimes (their import fails as if not installed) and adds a stand-in
    ais_bench (the real one needs an NPU)."""
    site = tmp_path / "site"
    for name in blocked:
        (site / name).mkdir(parents=True, exist_ok=True)
        (site / name / "__init__.py").write_text(BLOCKER.format(name=name))
    (site / "ais_bench").mkdir(parents=True, exist_ok=True)
    (site / "ais_bench" / "__init__.py").write_text("")
    (site / "ais_bench" / "__main__.py").write_text(AIS_BENCH)
    return {**os.environ, "PYTHONPATH": f"{site}:{REPO_ROOT}", "AIS_BENCH_LOG": str(tmp_path / "ais_bench.log")}


def _script(env, cwd, *command):
    return subprocess.run([sys.executable, *map(str, command)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_the_ascend_flow_runs_without_onnxruntime_or_openvino(tmp_path, tiny_checkpoint):
    checkpoint_path = tiny_checkpoint  # the flow, not the model's size, is what is tested here
    from test_atc import ATC, NPU_SMI

    env = _host_env(tmp_path)
    assert _script(env, tmp_path, "-c", "import onnxruntime").returncode != 0  # the runtimes are really hidden
    make_val_tree(tmp_path / "val", sorted(SAMPLE_DIR.glob("*.JPEG"))[:4])
    steps = [
        ("T2T_ViT_preprocess.py", "--data-dir", "val", "--out-dir", "bins", "--gt-path", "label.npy", "--workers", "0"),
        ("T2T_ViT_pth2onnx.py", "--pth-path", checkpoint_path, "--onnx-path", "sum.onnx"),
        ("gen_cfg.py", "sum.onnx", "keep_dtype.cfg"),
    ]
    for script, *arguments in steps:
        result = _script(env, tmp_path, REPO_ROOT / script, *arguments)
        assert result.returncode == 0, (script, result.stderr[-2000:])
        if script == "T2T_ViT_pth2onnx.py":
            assert "not verified against PyTorch: onnxruntime is not installed" in result.stdout + result.stderr
    assert onnx.load(str(tmp_path / "sum.onnx")).opset_import[0].version == 11
    assert len((tmp_path / "keep_dtype.cfg").read_text().split()) == 76

    tools = tmp_path / "bin"
    tools.mkdir()
    for name, text in (("atc", ATC), ("npu-smi", NPU_SMI)):
        (tools / name).write_text(text)
        (tools / name).chmod(0o755)
    atc_env = {**env, "PATH": f"{tools}:{os.environ['PATH']}", "ATC_LOG": str(tmp_path / "atc.log"),
               "ATC_NAMING": "plain", "PYTHON": sys.executable}  # this host's Python, not a .venv beside the script
    result = subprocess.run(["bash", str(REPO_ROOT / "T2T_ViT_atc.sh"), "--onnx", "sum.onnx", "--batch-sizes", "4",
                             "--out-dir", "om"], env=atc_env, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--model=sum.onnx --output=om/T2T_ViT_bs4" in (tmp_path / "atc.log").read_text()

    result = _script(env, tmp_path, REPO_ROOT / "T2T_ViT_infer.py", "--model", "om/T2T_ViT_bs4.om", "--input", "bins",
                     "--output", "result", "--output_dirname", "bs4", "--outfmt", "BIN", "--batchsize", "4",
                     "--loop", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "ais_bench.log").read_text())[:2] == ["--model", "om/T2T_ViT_bs4.om"]
    result = _script(env, tmp_path, REPO_ROOT / "T2T_ViT_postprocess.py", "--result-dir", "result/bs4", "--gt-path",
                     "label.npy", "--results-file", "acc.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "acc.json").read_text())["count"] == 4

    result = _script(env, tmp_path, REPO_ROOT / "T2T_ViT_infer.py", "--model", "sum.onnx", "--input", "bins",
                     "--output", "cpu", "--batchsize", "4")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: the CPU runner needs a CPU runtime, and neither onnxruntime nor openvino is installed here: "
        "pip install openvino (the faster here) or pip install onnxruntime"]
    assert not (tmp_path / "cpu").exists()


def test_with_only_onnxruntime_the_runner_uses_it_and_says_so(tmp_path, monkeypatch, capsys):
    import T2T_ViT_infer

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError: not installed
    model = tiny_model(tmp_path / "tiny.onnx")
    assert T2T_ViT_infer.main(["--model", str(model), "--output", str(tmp_path / "out"), "--output_dirname", "r",
                               "--batchsize", "2", "--no-progress"]) == 0
    assert "running on onnxruntime: openvino, the default CPU runtime, is not installed" in capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "r_summary.json").read_text())
    assert summary["cpu_runner"]["backend"] == "onnxruntime"
    assert T2T_ViT_infer.main(["--model", str(model), "--backend", "openvino", "--batchsize", "2"]) == 1


def test_an_explicit_backend_that_is_missing_is_named(tmp_path, monkeypatch, capsys):
    import T2T_ViT_infer

    monkeypatch.setitem(sys.modules, "openvino", None)
    assert T2T_ViT_infer.main(["--model", str(tiny_model(tmp_path / "tiny.onnx")), "--backend", "openvino"]) == 1
    assert capsys.readouterr().err.strip() == ("error: --backend openvino needs openvino, which is not installed here: "
                                               "pip install openvino")


def test_the_main_job_report_without_matplotlib(tmp_path, monkeypatch, capsys):
    from t2t_vit.job import report as evalreport

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    summary = {"rows": [], "machine": {"cpu": "cpu", "cores": 2}, "demo": False, "note": "", "npu_emulation": None,
               "accuracy_note": "", "stage_seconds": {"total": 1.0}}
    monkeypatch.setattr(evalreport, "markdown_tables", lambda summary: "tables")
    evalreport.write_report(tmp_path, summary)
    assert "no eval_summary.png: matplotlib is not installed here (pip install matplotlib)" in capsys.readouterr().out
    assert (tmp_path / evalreport.SUMMARY_JSON).is_file() and not (tmp_path / evalreport.SUMMARY_PNG).exists()


def test_a_python_without_a_required_package_is_told_how_to_install_it(tmp_path, monkeypatch, capsys):
    """A shell script run with a Python the toolkit was not installed into (T2T_ViT_atc.sh with the system
    python3) gets one line naming the package and the install line, not a traceback."""
    from test_atc import write_tiny_onnx
    from t2t_vit.ascend import aipp

    write_tiny_onnx(tmp_path / "model.onnx", 224)
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails as in a Python without it
    assert aipp.main(["--onnx", str(tmp_path / "model.onnx"), "--shape"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: this Python ({sys.executable}) has no onnx: "), err
    assert "pip install -r requirements-host.txt" in err and "PYTHON=" in err
    monkeypatch.setitem(sys.modules, "PIL", None)
    from t2t_vit import cli
    import argparse

    assert cli.run(lambda: exec("from PIL import Image"), argparse.Namespace()) == 1
    assert "has no Pillow:" in capsys.readouterr().err
