"""The build record of an .om: ``<model>.om.json``, written by ``T2T_ViT_atc.sh`` after each ATC build.

It says what the .om was built from, so the main job uses an .om only for the export, keep set, AIPP and bins it
was built for, and the runner refuses bins an .om does not take before ais_bench starts. This module is its one
writer (``python -m t2t_vit.ascend.om_record``, which ``T2T_ViT_atc.sh`` calls) and its one reader
(:func:`read_record`); docs/formats.md lists :data:`FIELDS`, and a test keeps the two equal.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from t2t_vit import ToolkitError, cli

FIELDS = ("onnx", "onnx_sha256", "keep_dtype", "keep_dtype_sha256", "aipp", "aipp_sha256", "input_dtype",
          "om_sha256", "soc_version", "batch_size", "dynamic_batch_sizes", "input_shape")


@dataclass(frozen=True)
class OmRecord:
    """One build: the files it was made from (paths and SHA-256), what it takes, and the .om's own SHA-256.

    ``batch_size`` is None for a dynamic-batch .om, whose ``dynamic_batch_sizes`` lists its gears (a static
    .om's record leaves that field out; it reads as None); ``input_shape`` is ``3,S,S``; ``aipp`` and ``aipp_sha256`` are None without ``--aipp``.
    """

    onnx: str
    onnx_sha256: str
    keep_dtype: str
    keep_dtype_sha256: str
    aipp: str | None
    aipp_sha256: str | None
    input_dtype: str
    om_sha256: str
    soc_version: str
    batch_size: int | None
    dynamic_batch_sizes: tuple[int, ...] | None
    input_shape: str

    @property
    def input_side(self) -> int | None:
        """S of ``3,S,S`` (None when the record has no usable shape)."""
        text = str(self.input_shape or "")
        return int(text.split(",")[-1]) if text.replace(",", "").isdigit() else None


def record_path(om_path: str | Path) -> Path:
    return Path(f"{om_path}.json")


def read_record(om_path: str | Path) -> OmRecord | None:
    """The build record beside ``om_path``, or None when there is none or it cannot be read (the .om is then
    treated as unrecorded). A record from before a field existed reads that field's default."""
    try:
        raw = json.loads(record_path(om_path).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    gears = raw.get("dynamic_batch_sizes")
    values: dict[str, Any] = {name: raw.get(name) for name in FIELDS}
    values["input_dtype"] = raw.get("input_dtype") or "float32"
    values["dynamic_batch_sizes"] = tuple(int(gear) for gear in gears) if gears else None
    values["batch_size"] = None if raw.get("batch_size") is None else int(raw["batch_size"])
    return OmRecord(**values)


def write_record(om_path: str | Path, record: OmRecord) -> Path:
    """Write ``record`` beside ``om_path`` atomically; returns its path."""
    from t2t_vit.provenance import write_json

    values = asdict(record)
    if record.dynamic_batch_sizes is None:  # a static .om's record has no gears at all (as it always had)
        del values["dynamic_batch_sizes"]
    else:
        values["dynamic_batch_sizes"] = list(record.dynamic_batch_sizes)
    path = record_path(om_path)
    write_json(path, {name: values[name] for name in FIELDS if name in values})
    return path


def build_record(om_path: Path, onnx: Path, keep_dtype: Path, aipp: Path | None, soc_version: str,
                 batch_size: int | None, gears: Sequence[int] | None, input_shape: str) -> OmRecord:
    """The record of a build that just made ``om_path`` (every SHA-256 computed now)."""
    from t2t_vit.files import sha256_file

    return OmRecord(onnx=str(onnx), onnx_sha256=sha256_file(onnx), keep_dtype=str(keep_dtype),
                    keep_dtype_sha256=sha256_file(keep_dtype), aipp=None if aipp is None else str(aipp),
                    aipp_sha256=None if aipp is None else sha256_file(aipp),
                    input_dtype="uint8" if aipp is not None else "float32", om_sha256=sha256_file(om_path),
                    soc_version=soc_version, batch_size=batch_size,
                    dynamic_batch_sizes=tuple(gears) if gears else None, input_shape=input_shape)


def _gears(text: str) -> list[int]:
    try:
        return [int(gear) for gear in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of batch sizes: {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m t2t_vit.ascend.om_record",
                                     description="Write the build record OM.json of an .om that ATC just built "
                                                 "(T2T_ViT_atc.sh runs this after each build).")
    parser.add_argument("--om", type=Path, required=True, metavar="OM", help="the .om ATC wrote")
    parser.add_argument("--onnx", type=Path, required=True, metavar="ONNX", help="the ONNX it was built from")
    parser.add_argument("--keep-dtype", type=Path, required=True, metavar="CFG", help="the keep_dtype.cfg given")
    parser.add_argument("--aipp", type=Path, metavar="CFG", help="the aipp.cfg given (--insert_op_conf), if any")
    parser.add_argument("--soc-version", required=True, metavar="SOC", help="ATC's --soc_version")
    parser.add_argument("--input-shape", required=True, metavar="C,S,S", help="the image shape after the batch")
    sizes = parser.add_mutually_exclusive_group(required=True)
    sizes.add_argument("--batch-size", type=int, metavar="N", help="the static batch size")
    sizes.add_argument("--dynamic-batch-sizes", type=_gears, metavar="'N N ...'", help="the gears of a dynamic .om")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def action() -> None:
        for path in (args.om, args.onnx, args.keep_dtype) + ((args.aipp,) if args.aipp else ()):
            if not path.is_file():
                raise ToolkitError(f"{path} does not exist")
        record = build_record(args.om, args.onnx, args.keep_dtype, args.aipp, args.soc_version, args.batch_size,
                              args.dynamic_batch_sizes, args.input_shape)
        try:
            write_record(args.om, record)
        except OSError as error:
            raise ToolkitError(f"could not write {record_path(args.om)}: {error}") from None

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
