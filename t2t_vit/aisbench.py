"""ais_bench's command line: its option table and value forms, and the hand-over of .om models to it.

Read from ais_bench's source (Ascend tools, ``ais-bench_workload/tool/ais_bench/ais_bench/infer/__main__.py``,
``get_args``): every option, its short form, how its value is parsed and checked, its default. The CPU
runner (``T2T_ViT_infer.py``) takes all of them with the same spellings and value forms, so a ModelZoo
command line runs unchanged with the program name and the model file changed; for an ``.om`` it hands
ais_bench a command line built from this table, so whatever spelling the user typed, ais_bench's own
parser accepts it.

Each option says what the CPU runner does with it:

- ``implemented``: it has a meaning on the CPU and does it;
- ``recorded``: accepted, recorded in the summary, same results (``--run_mode``);
- ``npu``: it only means something on an NPU; accepted, with one warning line that it has no effect.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

DEVICE_RANGE = (0, 255)


# --------------------------------------------------------------------------- ais_bench's device folders

_DEVICE_FOLDER = re.compile(r"^device(?P<device>\d+)(?:_(?P<index>\d+))?$")
DEVICE_FILE_SUFFIXES = ("_summary.json", "_resume.json")  # what a run leaves beside each device's folder


def device_folder(device: int, index: int) -> str:
    """The folder today's ais_bench writes the results of the ``index``-th device of ``--device`` in."""
    return f"device{device}_{index}"


def device_folders(devices: list[int]) -> list[str]:
    """The folder of each device of a list (the main job lays older ais_bench's results out the same)."""
    return [device_folder(device, index) for index, device in enumerate(devices)]


def parse_device_folder(name: str) -> tuple[int, int | None] | None:
    """(device, index) of a device folder's name (``device3_1``; an older ais_bench's ``device3`` has no index),
    or None when ``name`` is not one."""
    match = _DEVICE_FOLDER.match(name)
    return (int(match["device"]), None if match["index"] is None else int(match["index"])) if match else None


def is_device_entry(name: str) -> bool:
    """Whether ``name`` is a device's folder or one of the files a run leaves beside it."""
    for suffix in DEVICE_FILE_SUFFIXES:
        if name.endswith(suffix):
            name = name[:-len(suffix)]
            break
    return parse_device_folder(name) is not None


# --------------------------------------------------------------------------- ais_bench's value parsers

def str2bool(text: str | bool) -> bool:
    """ais_bench's booleans: yes/true/t/y/1 or no/false/f/n/0, in any case."""
    if isinstance(text, bool):
        return text
    if text.lower() in ("yes", "true", "t", "y", "1"):
        return True
    if text.lower() in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"boolean value expected (true/false, yes/no, 1/0), got {text!r}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"integer expected, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is an invalid positive int value")
    return value


def nonnegative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is an invalid nonnegative int value")
    return value


def device_ids(text: str) -> int | list[int]:
    """One NPU id (0..255), or a comma-separated list (ais_bench then runs one process per device)."""
    low, high = DEVICE_RANGE
    values = [_int(part) for part in text.split(",")]
    for value in values:
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"device {value} is invalid: the valid range is [{low}, {high}]")
    return values if "," in text else values[0]


def outfmt(text: str) -> str:
    """NPY, BIN or TXT; ais_bench wants them in capitals, this runner also takes lower case."""
    value = text.upper()
    if value not in ("NPY", "BIN", "TXT"):
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from NPY, BIN, TXT)")
    return value


# ------------------------------------------------------------------------------------------ the table

@dataclass(frozen=True)
class AisOption:
    """One ais_bench option: its spellings (ais_bench's first), value parser, default and CPU meaning."""

    flags: tuple[str, ...]
    parse: Callable[[str], Any] | None
    default: Any
    cpu: str  # implemented, recorded or npu
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()  # more spellings this runner takes (never handed to ais_bench)
    later: bool = False  # only in the later ais_bench / ait benchmark

    @property
    def name(self) -> str:
        return self.flags[0]

    @property
    def dest(self) -> str:
        return self.flags[0].lstrip("-")


_B = "BOOL"
AIS_OPTIONS: tuple[AisOption, ...] = (
    AisOption(("--model", "-m"), str, None, "implemented", "model: .onnx (CPU) or .om (Ascend, via ais_bench)",
              "FILE"),
    AisOption(("--input", "-i"), str, None, "implemented",
              "a folder of .bin/.npy files, or comma-separated files (default: none, pure inference)", "PATHS"),
    AisOption(("--output", "-o"), str, None, "implemented", "where results go (default: none, nothing written)", "DIR"),
    AisOption(("--output_dirname",), str, None, "implemented",
              "result folder under --output, which it needs (default: the start time)", "NAME",
              aliases=("--output-dirname",)),
    AisOption(("--outfmt",), outfmt, "BIN", "implemented", "result format NPY, BIN or TXT (default: BIN)", "FMT"),
    AisOption(("--loop", "-l"), positive_int, 1, "implemented", "runs of each batch (default: 1)", "N"),
    AisOption(("--debug",), str2bool, False, "implemented",
              "print the model's inputs and outputs: names, shapes, dtypes (default: 0)", _B),
    AisOption(("--device", "-d"), device_ids, 0, "implemented",
              "NPU id 0..255, or a list 0,1: one process per device, each with its share of the threads, each "
              "running every input unless --divide_input (default: 0)", "ID"),
    AisOption(("--dymBatch",), _int, 0, "implemented", "the batch of a dynamic-batch model (default: 0 = "
              "--batchsize)", "N"),
    AisOption(("--dymHW",), str, None, "npu", "dynamic image size of an .om", "H,W"),
    AisOption(("--dymDims",), str, None, "npu", "dynamic dims of an .om", "DIMS"),
    AisOption(("--dymShape",), str, None, "npu", "dynamic shape of an .om", "SHAPE"),
    AisOption(("--outputSize",), str, None, "npu", "output size for dynamic shape", "SIZES"),
    AisOption(("--auto_set_dymshape_mode",), str2bool, False, "npu", "dynamic shape from the input files", _B),
    AisOption(("--auto_set_dymdims_mode",), str2bool, False, "npu", "dynamic dims from the input files", _B),
    AisOption(("--batchsize",), positive_int, None, "implemented",
              "batch for a dynamic-batch model (default: 1; a static model uses its own)", "N"),
    AisOption(("--pure_data_type",), str, "zero", "implemented",
              "pure-inference input: zero, or random bytes as ais_bench makes them (default: zero)", "TYPE",
              choices=("zero", "random")),
    AisOption(("--profiler",), str2bool, False, "npu", "NPU profiling", _B),
    AisOption(("--dump",), str2bool, False, "npu", "NPU data dump", _B),
    AisOption(("--acl_json_path",), str, None, "npu", "acl.json for profiling or dump", "FILE"),
    AisOption(("--output_batchsize_axis",), nonnegative_int, 0, "implemented",
              "axis along which outputs are split into one file per input (default: 0)", "N"),
    AisOption(("--run_mode",), str, "array", "recorded", "ais_bench's data path; the same results (default: array)",
              "MODE", choices=("array", "files", "tensor", "full")),
    AisOption(("--display_all_summary",), str2bool, False, "implemented",
              "also print H2D and D2H latency (CPU: building a batch / writing its outputs) (default: 0)", _B),
    AisOption(("--warmup_count",), nonnegative_int, 1, "implemented", "untimed runs first (default: 1)", "N",
              aliases=("--warmup-count",)),
    AisOption(("--dymShape_range",), str, None, "npu", "dynamic shape range to search", "RANGE"),
    AisOption(("--aipp_config",), str, None, "npu", "AIPP config of the later ais_bench", "FILE", later=True),
    AisOption(("--energy_consumption",), str2bool, False, "npu", "NPU energy figures (later ais_bench)", _B,
              later=True),
    AisOption(("--npu_id",), _int, None, "npu", "NPU id for energy figures (later ais_bench)", "ID", later=True),
    AisOption(("--divide_input",), str2bool, False, "implemented",
              "with a --device list: split the inputs across the devices, the first ones one more each (later "
              "ais_bench) (default: 0)", _B, aliases=("--divide-input",), later=True),
)
BY_DEST = {option.dest: option for option in AIS_OPTIONS}


def add_ais_options(parser: argparse.ArgumentParser, only_given: bool = False) -> None:
    """ais_bench's options, in a titled group, with its spellings first and this runner's aliases after.

    ``only_given``: options the command line does not give are left out of the namespace (no defaults),
    which is what the hand-over to ais_bench needs.
    """
    group = parser.add_argument_group("ais_bench options (its spellings, short forms and value forms)")
    for option in AIS_OPTIONS:
        kwargs: dict[str, Any] = {"dest": option.dest, "help": option.help,
                                  "default": argparse.SUPPRESS if only_given else option.default}
        if option.parse is not None and option.parse is not str:
            kwargs["type"] = option.parse
        if option.choices:
            kwargs["choices"] = option.choices
        if option.metavar:
            kwargs["metavar"] = option.metavar
        if option.name == "--model":
            kwargs["required"] = True
        group.add_argument(*option.flags, *option.aliases, **kwargs)


def check_ais_rules(parser: argparse.ArgumentParser, values: Mapping[str, Any]) -> None:
    """ais_bench's own checks on the parsed options, as usage errors (exit 2)."""
    if values.get("output_dirname") is not None and values.get("output") is None:
        parser.error("--output_dirname cannot be used alone: use it together with --output")
    if values.get("profiler") and values.get("dump"):
        parser.error("--profiler and --dump cannot both be true")
    if (values.get("profiler") or values.get("dump")) and values.get("output") is None:
        parser.error("--profiler and --dump need --output")


def npu_only_warnings(values: Mapping[str, Any]) -> list[str]:
    """One line for each NPU-only option given a value other than its default."""
    return [f"{option.name} {_format(values[option.dest])} has no effect on the CPU (it only means something on "
            f"an NPU); ignored" for option in AIS_OPTIONS
            if option.cpu == "npu" and values.get(option.dest, option.default) != option.default]


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def handover_command(given: Mapping[str, Any]) -> list[str]:
    """ais_bench's arguments for the options the user gave (``dest -> parsed value``), in its spellings.

    Only ais_bench's own options are handed over (this runner's are left out), each under ais_bench's
    first spelling with a value its parser accepts: booleans as true/false, --outfmt in capitals,
    device lists as 0,1.
    """
    command = []
    for option in AIS_OPTIONS:
        if option.dest in given:
            command += [option.name, _format(given[option.dest])]
    return command
