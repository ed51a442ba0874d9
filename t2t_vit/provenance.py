"""Provenance recorded with every result: library versions, machine, time, arguments."""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from typing import Any, Iterable, Mapping

from t2t_vit import __version__
from t2t_vit.files import write_text_atomic
from t2t_vit.version_bridge import package_version

DEFAULT_PACKAGES = ("numpy", "pillow", "torch", "torchvision", "timm", "onnx", "onnxruntime", "openvino")


def versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (those not installed are left out), plus Python and the toolkit."""
    found = {"python": platform.python_version(), "t2t_vit": __version__}
    for package in packages:
        version = package_version(package)
        if version is not None:
            found[package] = version
    return found


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"hostname": platform.node(), "cpu": cpu, "cores": len(os.sched_getaffinity(0)),
            "os": f"{platform.system()} {platform.release()}", "arch": platform.machine()}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def provenance(args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The block every JSON result carries."""
    return {"created": now(), "command": " ".join([os.path.basename(sys.argv[0]), *sys.argv[1:]]),
            "args": {key: value for key, value in (args or {}).items()}, "versions": versions(),
            "machine": machine()}


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (non-JSON values such as paths become strings)."""
    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
