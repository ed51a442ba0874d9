"""T2T_ViT_doctor.py up to the process boundary: stand-in npu-smi (an Atlas 300I Pro and Duo), atc, CANN's
environment, and ais_bench / aclruntime packages of each era's option table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from test_atc import NPU_SMI, NPU_SMI_DUO
from t2t_vit.ascend.doctor import parse_npu_smi

SCRIPT = REPO_ROOT / "T2T_ViT_doctor.py"
# numpy 2 is a blocker below Python 3.13 (CANN's Python packages need numpy 1.x): the pinned set has it.
NUMPY_FITS_CANN = int(np.__version__.split(".")[0]) < 2 or sys.version_info >= (3, 13)


def _script_text(text):
    """The table npu-smi prints, from a stand-in's heredoc."""
    return text.split("<<'T'\n", 1)[1].rsplit("\nT\n", 1)[0]


def test_npu_smi_of_a_pro_and_a_duo_gives_each_chip_with_its_logical_id():
    (pro,) = parse_npu_smi(_script_text(NPU_SMI))
    assert pro == {"device": 0, "npu_id": 0, "chip_id": 0, "name": "310P3", "health": "OK", "bus_id": "0000:3B:00.0"}
    duo = parse_npu_smi(_script_text(NPU_SMI_DUO))
    assert [(chip["device"], chip["npu_id"], chip["chip_id"], chip["name"]) for chip in duo] == [
        (0, 2, 0, "310P3"), (1, 2, 1, "310P3")]
    assert {chip["bus_id"] for chip in duo} == {"0000:01:00.0"}  # one card, two chips


@pytest.fixture
def host(tmp_path):
    """A fake Ascend host: bin/ with npu-smi and atc, a toolkit home, and a site dir for ais_bench's wheels."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npu-smi").write_text(NPU_SMI_DUO)
    (bin_dir / "atc").write_text("#!/usr/bin/env bash\nexit 0\n")
    for tool in ("npu-smi", "atc"):
        (bin_dir / tool).chmod(0o755)
    toolkit = tmp_path / "ascend-toolkit" / "latest"
    toolkit.mkdir(parents=True)
    (toolkit / "ascend_toolkit_install.info").write_text("package_name=Ascend-cann-toolkit\nversion=8.0.RC2\n")
    site = tmp_path / "site"
    for package in ("aclruntime", "ais_bench"):
        (site / package).mkdir(parents=True)
        (site / package / "__init__.py").write_text("")
    return tmp_path


def _ais_help(host, divide_input):
    options = "--model --input --output --device" + (" --divide_input" if divide_input else "")
    (host / "site" / "ais_bench" / "__main__.py").write_text(f"print('usage: ais_bench {options}')\n")


def run(host, *args, cann=True, tools=True, packages=True):
    env = {key: value for key, value in os.environ.items() if key != "ASCEND_TOOLKIT_HOME"}
    env["PATH"] = ":".join(([str(host / "bin")] if tools else []) + ["/usr/bin", "/bin"])
    env["PYTHONPATH"] = ":".join(([str(host / "site")] if packages else []) + [str(REPO_ROOT)])
    if cann:
        env["ASCEND_TOOLKIT_HOME"] = str(host / "ascend-toolkit" / "latest")
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, cwd=host)


@pytest.mark.parametrize("divide_input", [True, False], ids=["todays_ais_bench", "older_ais_bench"])
def test_a_duo_host_lists_both_chips_and_what_its_ais_bench_does(host, divide_input):
    _ais_help(host, divide_input)
    result = run(host, "--json", "-")
    assert result.returncode == (0 if NUMPY_FITS_CANN else 1), result.stderr
    report = json.loads(result.stdout)
    assert [(chip["device"], chip["name"]) for chip in report["chips"]] == [(0, "310P3"), (1, "310P3")]
    assert report["soc_version"] == "Ascend310P3"
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["numpy"]["found"].startswith(np.__version__)
    assert checks["numpy"]["status"] == ("ok" if NUMPY_FITS_CANN else "blocker")
    assert checks["ais_bench"]["status"] == checks["aclruntime"]["status"] == "ok"
    assert report["ais_bench"]["multi_device"] == ("divide_input" if divide_input else "older")
    assert checks["ais_bench --device 0,1"]["status"] == ("ok" if divide_input else "warn")
    assert checks["atc"]["found"].endswith("CANN 8.0.RC2") and checks["CANN environment"]["status"] == "ok"
    if not NUMPY_FITS_CANN:
        assert report["first_blocker"]["check"] == "numpy" and "numpy<2" in result.stderr


def test_a_pro_host_with_everything_says_the_flow_can_run(host):
    (host / "bin" / "npu-smi").write_text(NPU_SMI)
    _ais_help(host, True)
    result = run(host)
    if NUMPY_FITS_CANN:
        assert result.returncode == 0, result.stderr
        assert "the NPU flow can run: --soc-version Ascend310P3, --device 0" in result.stdout
    else:
        assert result.returncode == 1 and "numpy: " in result.stderr
    assert "| chip: --device 0 | 310P3, NPU 0 chip 0, Bus-Id 0000:3B:00.0, health OK | ok |" in result.stdout


def test_without_cann_it_exits_1_naming_set_env_and_what_the_cpu_path_offers(host):
    result = run(host, "--json", str(host / "doctor.json"), cann=False, tools=False, packages=False)
    assert result.returncode == 1
    error = result.stderr.splitlines()
    assert error[-1].startswith("error: the NPU flow cannot run here: CANN environment: ASCEND_TOOLKIT_HOME is not set")
    assert "set_env.sh" in error[-1] and "no CANN here" in result.stderr and "CPU path still runs every stage" in \
        result.stderr
    report = json.loads((host / "doctor.json").read_text())
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert statuses["atc"] == statuses["npu-smi"] == statuses["ais_bench"] == statuses["aclruntime"] == "blocker"
    assert report["chips"] == [] and report["ready"] is False and "versions" in report


def test_the_disk_check_sizes_the_bins_of_the_data_given(host):
    data = host / "val"
    data.mkdir()
    for index in range(3):
        (data / f"img{index}.JPEG").write_bytes(b"x")
    _ais_help(host, True)
    report = json.loads(run(host, "--json", "-", "--data-dir", str(data), "--img-size", "384").stdout)
    (disk,) = [check for check in report["checks"] if check["check"] == "disk"]
    assert "3 images need 1.3 MB of uint8 bins, 5.3 MB of float32" in disk["found"] and disk["status"] == "ok"
    result = run(host, "--img-size", "100")
    assert result.returncode == 2 and "--img-size must be a multiple of 16" in result.stderr
