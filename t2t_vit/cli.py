"""What every top-level script shares: logging set-up and turning user errors into exit codes."""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from pathlib import Path
from typing import Callable

from t2t_vit import ToolkitError

EXIT_ERROR = 1
QUIET_LOGGERS = ("matplotlib", "PIL", "onnxscript", "torch.onnx")
EXIT_INTERRUPTED = 130
INTERRUPTED = ("interrupted: nothing half-written is left, and what was finished is kept; run the same command again "
               "to resume")


def make_parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose description is the script docstring's first paragraph and whose epilog is the rest."""
    summary, _, details = doc.strip().partition("\n\n")
    return argparse.ArgumentParser(description=summary, epilog=details or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_data_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """The data options, one definition for every script that reads images (the preprocess stage, the main job)."""
    group = parser.add_argument_group("data (ImageNet val as downloaded, or sorted into class folders)")
    group.add_argument("--data-dir", required=required, type=Path, metavar="DIR|TAR",
                       help="the val images: DIR/<synset>/<image>; a flat folder; or the archive as downloaded "
                            "(ILSVRC2012_img_val.tar, also .tar.gz/.tgz), read in place, nothing extracted")
    group.add_argument("--devkit", type=Path, metavar="PATH",
                       help="labels of flat images from the ILSVRC2012 devkit: ILSVRC2012_devkit_t12.tar.gz as "
                            "downloaded or its extracted folder (data/meta.mat + the val ground truth; needs scipy)")
    group.add_argument("--label-file", type=Path, metavar="FILE",
                       help="labels of flat images: '<file name> <class index>' lines (the ModelZoo's val_label.txt), "
                            "Kaggle's LOC_val_solution.csv, or one WNID per line for the 50,000 val images; the "
                            "format is told from the content")
    group.add_argument("--class-list", type=Path, metavar="FILE",
                       help="class names, one per line, index = line number, instead of the 1000 ImageNet synsets")


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    """Add ``-v/--verbose`` and ``-q/--quiet`` to a script's parser."""
    group = parser.add_argument_group("output")
    group.add_argument("-v", "--verbose", action="store_true", help="log debugging detail")
    group.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")


class ReportFormatter(logging.Formatter):
    """Log lines that read as a report: information as it is, ``warning: ...`` for a warning, and with -v the
    debugging detail with its module."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        if record.levelno <= logging.DEBUG:
            return f"debug {record.name}: {message}"
        return message


def run(action: Callable[[], int | None], args: argparse.Namespace) -> int:
    """Configure logging, run a script's action and map failures to exit codes.

    A :class:`ToolkitError` becomes a one-line ``error: ...`` on stderr and exit code 1; Ctrl-C
    becomes exit code 130. Anything else is a bug and keeps its traceback.
    """
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.INFO
    if getattr(args, "quiet", False):
        level = logging.WARNING
    root = logging.getLogger()
    for handler in root.handlers[:]:  # a second run in one process replaces the first's set-up (force= needs 3.8)
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(ReportFormatter())
    logging.basicConfig(level=level, handlers=[handler])
    for chatty in QUIET_LOGGERS:  # third-party INFO lines (matplotlib's "generated new fontManager") are not ours
        logging.getLogger(chatty).setLevel(max(level, logging.WARNING))
    try:
        status = action()
    except ToolkitError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror} (the disk is full or a file size limit was reached): free space and "
              f"run again; what was written whole is kept", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as error:
        return import_failure(error)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0 if status is None else status


def entry(main: Callable[[], int]) -> int:
    """Every script's ``__main__``: ``sys.exit(cli.entry(main))``. A package this Python lacks, wherever it is
    first imported (building the parser included), is one line and exit code 1, not a traceback."""
    try:
        return main()
    except ImportError as error:
        return import_failure(error)


def import_failure(error: ImportError) -> int:
    """One ``error: ...`` line for a package that is missing or cannot load here; any other import error is a bug
    and keeps its traceback."""
    message = architecture_limit(error) or missing_package(error)
    if message is None:
        raise error
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


# What the host line installs (requirements-host.txt), by the module name an import uses
REQUIRED_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "numpy": "numpy", "onnx": "onnx", "timm": "timm",
                     "PIL": "Pillow", "tqdm": "tqdm", "onnxruntime": "onnxruntime", "matplotlib": "matplotlib",
                     "scipy": "scipy", "openvino": "openvino"}


def missing_package(error: ImportError) -> str | None:
    """One line for a required package this Python lacks (a shell script run with a Python the toolkit was not
    installed into); None for any other import error."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    if not isinstance(error, ModuleNotFoundError) or name not in REQUIRED_PACKAGES:
        return None
    return (f"this Python ({sys.executable}) has no {REQUIRED_PACKAGES[name]}: install the toolkit's packages into "
            f"it (pip install -r requirements-host.txt on an Ascend host, -r requirements.txt elsewhere), or run the "
            f"scripts with the Python that has them (PYTHON=/path/to/python bash T2T_ViT_*.sh)")


def architecture_limit(error: ImportError) -> str | None:
    """One line for a package whose binary this host cannot load (built for a newer glibc, or another
    architecture); None for any other import error."""
    import platform
    import re

    text = str(error)
    needed = re.search(r"GLIBC_([0-9.]+)' not found", text)
    library = re.search(r"required by ([^)\s]+)", text)
    where = f" ({library.group(1)})" if library else ""
    if needed:
        libc = " ".join(platform.libc_ver()) or "an older glibc"
        return (f"a package's binary{where} needs glibc {needed.group(1)}, and this host has {libc}: install "
                f"the versions built for it with the host line, pip install -r requirements-host.txt (README: "
                f"'On an Arm (aarch64) host', older hosts)")
    if "wrong ELF class" in text or "Exec format error" in text:
        return (f"a package's binary{where} does not load on this {platform.machine()} host ({text.splitlines()[0]}); "
                f"reinstall it for this machine: pip install --force-reinstall --no-deps PACKAGE")
    return None
