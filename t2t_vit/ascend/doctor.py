"""The host check before the first NPU run: what the Ascend flow needs, what is here, and each fix.

Every check is a row ``{"check", "found", "status", "fix"}``; ``status`` is ``ok``, ``warn`` (the flow runs, but
mind this), ``blocker`` (the NPU flow cannot run) or ``info``. The chips come from ``npu-smi info``, whose rows go in
pairs per chip (FACTS: ``| <NPU id>  <Name> | <Health> | ...`` then ``| <Chip id>  <Device id> | <Bus-Id> | ...``;
an Atlas 300I Duo shows two chips under one NPU id and Bus-Id); the Device column is the logical id that
``--device`` takes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from t2t_vit.config import DEFAULT_IMG_SIZE
from t2t_vit.version_bridge import package_version

SET_ENV = "/usr/local/Ascend/ascend-toolkit/set_env.sh"
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "torchvision", "numpy", "onnx", "timm", "Pillow", "tqdm")
CPU_RUNTIMES = ("onnxruntime", "openvino")
_NPU_ROW = re.compile(r"^\|\s*(?P<npu>\d+)\s+(?P<name>[0-9]*[A-Za-z][A-Za-z0-9]*)\s*\|\s*(?P<health>[^|]*?)\s*\|")
_CHIP_ROW = re.compile(r"^\|\s*(?P<chip>\d+)\s+(?P<device>\d+)\s*\|\s*(?P<bus>[0-9A-Fa-f:.]+)\s*\|")


def row(check: str, found: str, status: str = "ok", fix: str = "") -> dict[str, str]:
    return {"check": check, "found": found, "status": status, "fix": fix}


# --------------------------------------------------------------------------------------------- versions

def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text.split("+")[0])[:3])


def _satisfies(version: str, spec: str) -> bool:
    """``version`` against a ``>=a,<b`` range (the only operators requirements-host.txt uses)."""
    for clause in filter(None, (part.strip() for part in spec.split(","))):
        operator, bound = re.match(r"(>=|<=|==|<|>)\s*(.+)", clause).groups()
        have, want = _version_tuple(version), _version_tuple(bound)
        ok = {">=": have >= want, "<": have < want, "<=": have <= want, ">": have > want, "==": have == want}[operator]
        if not ok:
            return False
    return True


def host_ranges(python: tuple[int, int] | None = None) -> dict[str, str]:
    """The supported range of each package for this Python, from requirements-host.txt (the Ascend host's line)."""
    python = python or sys.version_info[:2]
    ranges = {}
    for line in (REPO_ROOT / "requirements-host.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        requirement, _, marker = line.partition(";")
        match = re.match(r'\s*python_version\s*(<|>=)\s*"(\d+)\.(\d+)"', marker) if marker else None
        if match:
            bound = (int(match[2]), int(match[3]))
            if (python < bound) != (match[1] == "<"):
                continue
        name, spec = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement.strip()).groups()
        ranges[name] = spec
    return ranges


def python_checks() -> list[dict[str, str]]:
    rows = []
    python = ".".join(map(str, sys.version_info[:3]))
    supported = (3, 7) <= sys.version_info[:2] <= (3, 13)
    rows.append(row("Python", f"{python} ({sys.executable})", "ok" if supported else "blocker",
                    "" if supported else "use a Python 3.7 to 3.13 (CANN supports 3.7 to 3.11)"))
    ranges = host_ranges()
    for package in PACKAGES:
        version, spec = package_version(package), ranges.get(package, "")
        if version is None:
            rows.append(row(package, "not installed", "blocker", "pip install -r requirements-host.txt"))
        elif spec and not _satisfies(version, spec):
            fix = ("CANN's Python packages need numpy < 2: pip install 'numpy<2'" if package == "numpy"
                   else f"pip install '{package}{spec}' (the supported range)")
            rows.append(row(package, f"{version}, outside {spec}", "blocker", fix))
        else:
            rows.append(row(package, f"{version} (supported: {spec or 'any'})"))
    return rows


# ------------------------------------------------------------------------------------------------- CANN

def cann_checks(environ: dict[str, str] | None = None) -> list[dict[str, str]]:
    environ = dict(os.environ if environ is None else environ)
    home = environ.get("ASCEND_TOOLKIT_HOME", "")
    rows = [row("CANN environment", f"ASCEND_TOOLKIT_HOME={home}" if home else "ASCEND_TOOLKIT_HOME is not set",
                "ok" if home else "blocker", "" if home else f"source CANN's set_env.sh first: . {SET_ENV}")]
    atc = shutil.which("atc", path=environ.get("PATH"))
    if atc is None:
        rows.append(row("atc", "not on PATH", "blocker", f"install the CANN toolkit and source its set_env.sh: . {SET_ENV}"))
    else:
        rows.append(row("atc", f"{atc}, CANN {cann_version(home) or 'version unknown'}"))
    return rows


def cann_version(home: str) -> str | None:
    """The toolkit's version, from the install info file beside it (``version=8.0.RC2``)."""
    for name in ("ascend_toolkit_install.info", "version.info", "version.cfg"):
        path = Path(home) / name if home else None
        if path is not None and path.is_file():
            match = re.search(r"^\s*version\s*=\s*(\S+)", path.read_text(errors="replace"), re.MULTILINE)
            if match:
                return match[1]
    return None


# --------------------------------------------------------------------------------------------- ais_bench

def ais_bench_checks() -> tuple[list[dict[str, str]], dict[str, Any]]:
    """Whether ais_bench and aclruntime import, and which multi-device behaviour that ais_bench has."""
    rows, info = [], {"ais_bench": None, "aclruntime": None, "multi_device": None}
    for package in ("aclruntime", "ais_bench"):
        if importlib.util.find_spec(package) is None:
            rows.append(row(package, "not importable", "blocker",
                            "install the aclruntime and ais_bench wheels built for your CANN (the ais_bench README's "
                            "wheel links), into this Python"))
        else:
            info[package] = package_version(package) or "installed"
            rows.append(row(package, f"{info[package]}"))
    if info["ais_bench"] is None:
        return rows, info
    behaviour, found = multi_device_behaviour()
    info["multi_device"] = behaviour
    rows.append(row("ais_bench --device 0,1", found, "ok" if behaviour == "divide_input" else "warn",
                    "" if behaviour == "divide_input" else
                    "an older ais_bench: run one process per chip with its own bins and --output folder, or "
                    "install today's ais_bench"))
    return rows, info


def multi_device_behaviour(timeout: float = 60.0) -> tuple[str, str]:
    """``divide_input`` (splits the inputs only with --divide_input, into device<N>_<i>/: today's ais_bench) or
    ``older`` (no such option: every input on every chip into one folder, or always split into device<N>/), read
    from its option table (``python -m ais_bench --help``)."""
    try:
        result = subprocess.run([sys.executable, "-m", "ais_bench", "--help"], capture_output=True, text=True,
                                timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        return "unknown", f"its --help did not answer ({error})"
    options = result.stdout + result.stderr
    if re.search(r"--divide[_-]input", options):
        return "divide_input", "splits the inputs only with --divide_input (device<N>_<i>/ folders)"
    return "older", ("no --divide_input option: an older ais_bench, which either runs every input on every chip into "
                     "one folder or always splits them into device<N>/")


# ------------------------------------------------------------------------------------------------ the chips

def parse_npu_smi(text: str) -> list[dict[str, Any]]:
    """The chips of ``npu-smi info``: each with its NPU id, chip id, logical device id, name, health and Bus-Id."""
    chips, pending = [], None
    for line in text.splitlines():
        npu = _NPU_ROW.match(line)
        if npu:
            pending = npu
            continue
        chip = _CHIP_ROW.match(line)
        if chip and pending is not None:
            chips.append({"device": int(chip["device"]), "npu_id": int(pending["npu"]), "chip_id": int(chip["chip"]),
                          "name": pending["name"], "health": pending["health"], "bus_id": chip["bus"]})
            pending = None
    return chips


def chip_checks(environ: dict[str, str] | None = None) -> tuple[list[dict[str, str]], list[dict[str, Any]], str | None]:
    environ = dict(os.environ if environ is None else environ)
    smi = shutil.which("npu-smi", path=environ.get("PATH"))
    if smi is None:
        return [row("npu-smi", "not found", "blocker", "install the Ascend NPU driver (npu-smi comes with it)")], [], None
    try:
        result = subprocess.run([smi, "info"], capture_output=True, text=True, timeout=60, env=environ)
    except (OSError, subprocess.TimeoutExpired) as error:
        return [row("npu-smi info", f"failed ({error})", "blocker", "check the NPU driver: npu-smi info")], [], None
    chips = parse_npu_smi(result.stdout)
    if result.returncode != 0 or not chips:
        return [row("npu-smi info", f"exit {result.returncode}, no chip found", "blocker",
                    "check the NPU driver and the card: npu-smi info")], [], None
    rows = []
    for chip in chips:
        healthy = chip["health"].upper() == "OK"
        rows.append(row(f"chip: --device {chip['device']}", f"{chip['name']}, NPU {chip['npu_id']} chip "
                        f"{chip['chip_id']}, Bus-Id {chip['bus_id']}, health {chip['health']}",
                        "ok" if healthy else "warn", "" if healthy else "npu-smi info -t health -i <NPU id>"))
    names = sorted({chip["name"] for chip in chips})
    soc = f"Ascend{names[0]}" if len(names) == 1 else None
    rows.append(row("--soc_version", soc or f"chips of several kinds ({', '.join(names)})",
                    "ok" if soc else "warn", "" if soc else "pass T2T_ViT_atc.sh --soc-version for the chip you build for"))
    if len(chips) > 1:
        rows.append(row("devices", f"{len(chips)} chips: --device {','.join(str(chip['device']) for chip in chips)} "
                        f"uses them all (one process per chip)", "info"))
    return rows, chips, soc


# ---------------------------------------------------------------------------------------------------- disk

def disk_checks(data_dir: str | None, work_dir: str, img_size: int) -> list[dict[str, str]]:
    from t2t_vit import ToolkitError
    from t2t_vit.files import check_output_folder, nearest_existing
    from t2t_vit.progress import format_bytes
    from t2t_vit.data.sources import SourceError, images_of, open_source

    try:
        check_output_folder(work_dir, "--work-dir")
    except ToolkitError as error:
        return [row("disk", str(error), "blocker", "give a --work-dir on a disk this user can write")]
    where = nearest_existing(Path(work_dir))
    free = shutil.disk_usage(where).free
    if not data_dir:
        return [row("disk", f"{format_bytes(free)} free at {where}", "info",
                    "give --data-dir to size the bins the dataset needs")]
    try:
        images, _ = images_of(open_source(data_dir).files())
    except SourceError as error:
        return [row("disk", str(error), "blocker", "give the folder or tar of your ImageNet val images")]
    uint8, float32 = len(images) * img_size * img_size * 3, len(images) * img_size * img_size * 12
    found = (f"{format_bytes(free)} free at {where}; {len(images):,} images need {format_bytes(uint8)} of uint8 "
             f"bins, {format_bytes(float32)} of float32")
    if free < uint8:
        return [row("disk", found, "blocker", "free space or give another --work-dir")]
    if free < float32:
        return [row("disk", found, "warn", "enough for uint8 bins (the default) only")]
    return [row("disk", found)]


def runtime_checks() -> list[dict[str, str]]:
    rows = []
    for package in CPU_RUNTIMES:
        version = package_version(package)
        rows.append(row(f"CPU runtime {package}", version or "not installed", "info",
                        "" if version else f"optional: pip install {package} for the CPU path"))
    return rows


# --------------------------------------------------------------------------------------------------- report

def diagnose(data_dir: str | None = None, work_dir: str = "work", img_size: int = DEFAULT_IMG_SIZE) -> dict[str, Any]:
    """Every check, the chips, and whether the NPU flow can run (the first blocker named)."""
    cann = cann_checks()
    chip_rows, chips, soc = chip_checks()
    ais_rows, ais = ais_bench_checks()
    checks = cann + chip_rows + ais_rows + python_checks() + disk_checks(data_dir, work_dir, img_size) + runtime_checks()
    blockers = [check for check in checks if check["status"] == "blocker"]
    has_cann = all(check["status"] != "blocker" for check in cann)
    return {"ready": not blockers, "first_blocker": blockers[0] if blockers else None, "cann": has_cann,
            "checks": checks, "chips": chips, "soc_version": soc, "ais_bench": ais}


def cpu_path_note(report: dict[str, Any]) -> str:
    runtimes = [check["check"].split()[-1] for check in report["checks"]
                if check["check"].startswith("CPU runtime") and check["found"] != "not installed"]
    offer = (f"on {' and '.join(runtimes)}" if runtimes else "once a CPU runtime is installed (pip install openvino)")
    return (f"no CANN here: the NPU flow cannot run on this host. The CPU path still runs every stage {offer}: "
            f"bash T2T_ViT_eval.sh --pth-path CK --data-dir VAL (accuracy, throughput, --emulate-npu's fp16)")


def table(checks: Sequence[dict[str, str]]) -> list[str]:
    lines = ["| check | found | status | fix |", "|---|---|---|---|"]
    lines += [f"| {c['check']} | {c['found']} | {c['status']} | {c['fix']} |" for c in checks]
    return lines
