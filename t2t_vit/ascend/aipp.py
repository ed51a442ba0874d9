"""aipp.cfg for ATC's static AIPP: the NPU normalises the uint8 bins of ``T2T_ViT_preprocess.py --dtype uint8``.

    python3 -m t2t_vit.ascend.aipp --onnx T2T_ViT_14.onnx --out aipp.cfg     (T2T_ViT_atc.sh --aipp runs this)

AIPP computes, per channel i, ``out = (in - mean_chn_i - min_chn_i) * var_reci_chn_i`` on the chip. With
``mean_chn_i = 0``, ``min_chn_i = 255 * mean_i`` and ``var_reci_chn_i = 1 / (255 * std_i)`` that is
``(in / 255 - mean_i) / std_i``, timm's normalisation of the uint8 crop. The mean, std and crop size come
from the data config the ONNX file records (``t2t_vit.data_config``), so the .om normalises exactly as the
bins of the float flow were normalised. The bins already hold the crop, so AIPP crops nothing: the
source image size is the crop size. ATC is given the float export (``--performer sum``, float32 input);
the .om built with ``--insert_op_conf=aipp.cfg`` takes uint8 (N, H, W, 3).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any, Mapping

from t2t_vit import ToolkitError, cli

log = logging.getLogger(__name__)

INPUT_FORMAT = "RGB888_U8"


class AippError(ToolkitError):
    """The ONNX file cannot be given AIPP."""


def aipp_constants(data_config: Mapping[str, Any]) -> dict[str, Any]:
    """The static AIPP fields for a data config: source size (the crop), and per channel min_chn and var_reci_chn."""
    channels, height, width = (int(v) for v in data_config["input_size"])
    mean, std = list(data_config["mean"]), list(data_config["std"])
    if channels != 3 or len(mean) != 3 or len(std) != 3:
        raise AippError(f"AIPP's RGB888_U8 needs 3 channels; the data config has input_size "
                        f"{data_config['input_size']}, mean {mean}, std {std}")
    fields: dict[str, Any] = {"src_image_size_w": width, "src_image_size_h": height}
    for channel in range(3):
        fields[f"min_chn_{channel}"] = 255 * float(mean[channel])
    for channel in range(3):
        fields[f"var_reci_chn_{channel}"] = 1 / (255 * float(std[channel]))
    return fields


def _number(value: float) -> str:
    """A constant as AIPP's config takes it: 123.675, 0.0171247538316637 (15 significant digits, as a float32
    field needs far fewer; the float's own rounding noise, 123.67499999999998, is cut)."""
    return f"{value:.15g}"


def aipp_config_text(data_config: Mapping[str, Any], source: str = "") -> str:
    """The aipp.cfg (ATC --insert_op_conf) that normalises uint8 RGB crops as ``data_config`` says."""
    fields = aipp_constants(data_config)
    lines = [
        f"# Static AIPP for T2T-ViT{f', written from the data config of {source}' if source else ''}.",
        "# Input: the uint8 RGB crop of T2T_ViT_preprocess.py --dtype uint8, (N, H, W, 3).",
        "# Per channel: out = (in - mean_chn - min_chn) * var_reci_chn = (in / 255 - mean) / std.",
        "aipp_op {",
        "    aipp_mode : static",
        "    related_input_rank : 0",
        f"    input_format : {INPUT_FORMAT}",
        f"    src_image_size_w : {fields['src_image_size_w']}",
        f"    src_image_size_h : {fields['src_image_size_h']}",
        "    crop : false",
        "    csc_switch : false",
        "    rbuv_swap_switch : false",
        *(f"    mean_chn_{channel} : 0" for channel in range(3)),
        *(f"    min_chn_{channel} : {_number(fields[f'min_chn_{channel}'])}" for channel in range(3)),
        *(f"    var_reci_chn_{channel} : {_number(fields[f'var_reci_chn_{channel}'])}" for channel in range(3)),
        "}",
    ]
    return "\n".join(lines) + "\n"


def parse_aipp_config(text: str) -> dict[str, str]:
    """The ``name : value`` fields of an aipp.cfg (comments and braces left out), for checks and tests."""
    fields = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if ":" in line:
            name, value = (part.strip() for part in line.split(":", 1))
            fields[name] = value
    return fields


def data_config_for_aipp(onnx_path: str | os.PathLike) -> dict[str, Any]:
    """The data config recorded in a float32-input export; refuses the uint8 export and other input layouts."""
    from t2t_vit.config import resolve_data_config
    from t2t_vit.model.export import input_dtype_of, load_onnx, metadata_of

    proto = load_onnx(onnx_path, "--onnx")
    metadata = metadata_of(proto)
    if len(proto.graph.input) != 1:
        raise AippError(f"{onnx_path} has {len(proto.graph.input)} inputs; AIPP here is for the one image input")
    tensor_type = proto.graph.input[0].type.tensor_type
    if input_dtype_of(proto) != "float32" or metadata.get("input_dtype", "float32") != "float32":
        raise AippError(f"{onnx_path} is the uint8 export (it normalises inside): AIPP goes in front of the float "
                        f"export, which takes the normalised image. Give T2T_ViT_atc.sh --aipp the export made "
                        f"without --input-dtype uint8")
    dims = [dim.dim_value for dim in tensor_type.shape.dim]
    if "data_config" in metadata:
        data_config = json.loads(metadata["data_config"])
    else:
        data_config = resolve_data_config(img_size=dims[2] if len(dims) == 4 and dims[2] else 224)
        log.warning("%s records no data config (not exported by this toolkit?): using T2T-ViT's own at its input "
                    "size, %s", onnx_path, data_config)
    channels, height, width = (int(v) for v in data_config["input_size"])
    if dims[1:] != [channels, height, width]:
        raise AippError(f"{onnx_path} takes input of shape {dims}, not (N, {channels}, {height}, {width}) as its data "
                        f"config says")
    return data_config


def write_aipp_config(onnx_path: str | os.PathLike, cfg_path: str | os.PathLike) -> str:
    """Write aipp.cfg for ``onnx_path`` atomically; returns its text."""
    from t2t_vit.files import write_text_atomic

    text = aipp_config_text(data_config_for_aipp(onnx_path), os.path.basename(str(onnx_path)))
    write_text_atomic(cfg_path, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = cli.make_parser(__doc__)
    parser.prog = "python3 -m t2t_vit.ascend.aipp"
    parser.add_argument("--onnx", required=True, metavar="ONNX", help="the float export ATC converts (sum form)")
    parser.add_argument("--out", metavar="CFG", help="aipp.cfg to write")
    parser.add_argument("--shape", action="store_true",
                        help="print the float export's input shape C,H,W (what T2T_ViT_atc.sh gives ATC) instead")
    cli.add_verbosity(parser)
    args = parser.parse_args(argv)
    if not args.shape and not args.out:
        parser.error("--out CFG is required (or --shape)")

    def action() -> None:
        if args.shape:
            print(",".join(str(int(v)) for v in data_config_for_aipp(args.onnx)["input_size"]))
            return
        text = write_aipp_config(args.onnx, args.out)
        fields = parse_aipp_config(text)
        print(f"wrote {args.out}: {fields['input_format']} {fields['src_image_size_w']}x{fields['src_image_size_h']}, "
              f"min_chn {fields['min_chn_0']}/{fields['min_chn_1']}/{fields['min_chn_2']}, var_reci_chn "
              f"{fields['var_reci_chn_0']}/{fields['var_reci_chn_1']}/{fields['var_reci_chn_2']}")

    return cli.run(action, args)


if __name__ == "__main__":
    sys.exit(cli.entry(main))
