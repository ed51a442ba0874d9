"""A pass on the NPU: the ais_bench command lines of a pass (one ais_bench, or one per chip for an ais_bench that
cannot split a device list), run with its output reaching the user as it comes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from t2t_vit.aisbench import device_folders
from t2t_vit.job.invocation import Invocation
from t2t_vit.job.request import JobError


def run_ais_bench(invocation: Invocation, devices: list[int] | None, multi_device: str | None) -> str | None:
    """Run a pass through ais_bench: one process for one device or for an ais_bench that splits a device list
    itself (--divide_input); else one ais_bench per chip, each with its share of the bins and its own folder.
    Returns what a single ais_bench printed (passed through as it came), None for one per chip."""
    processes: list[subprocess.Popen] = []
    failed, printed = [], None
    try:
        commands = ais_bench_commands(invocation, devices, multi_device)
        capture = len(commands) == 1
        for command in commands:
            print(" ".join(command), flush=True)
            pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE) if capture else {}
            processes.append(subprocess.Popen(command, **pipes))
        if capture:
            printed = pass_through(processes[0])
        for command, process in zip(commands, processes):
            if process.wait() != 0:
                failed.append(command[command.index("--device") + 1] if "--device" in command else "0")
    finally:
        for process in processes:  # interrupted, or a command that would not start: no chip is left running
            if process.poll() is None:
                process.terminate()
                process.wait()
        shutil.rmtree(shares_dir(invocation), ignore_errors=True)
    if failed:
        where = f" (device {', '.join(failed)})" if len(commands) > 1 else ""
        raise JobError(f"ais_bench failed on {invocation.model} at batch {invocation.batch}{where} (its messages are "
                       f"above)")
    return printed


def pass_through(process: subprocess.Popen) -> str:
    """Copy a process's stdout and stderr to ours as they come (progress bars included), and return both."""
    import threading

    captured: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    def copy(name: str) -> None:
        source = getattr(process, name)
        sink = getattr(sys, name)
        while True:
            chunk = os.read(source.fileno(), 1 << 16)
            if not chunk:
                break
            captured[name].extend(chunk)
            if hasattr(sink, "buffer"):
                sink.flush()
                sink.buffer.write(chunk)
                sink.buffer.flush()
            else:
                sink.write(chunk.decode(errors="replace"))

    threads = [threading.Thread(target=copy, args=(name,), daemon=True) for name in captured]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return "".join(text.decode(errors="replace") for text in captured.values())


def ais_bench_wall_rate(printed: str, result_dir: Path, devices: list[int], pure_samples: int | None) -> float | None:
    """The devices' images per wall-clock second together, from the ``start_time``/``end_time`` that today's
    ais_bench prints for each device (its timed runs, after warm-up). Each device's images: ``pure_samples``
    (batch x loop) in pure inference, else the outputs in its folder. None where the lines are missing."""
    from t2t_vit.runtime.multidevice import wall_rate_of_lines

    samples = {device: pure_samples if pure_samples is not None else
               sum(1 for _ in (result_dir / name).glob("*_0.bin"))
               for name, device in zip(device_folders(devices), devices)}
    return wall_rate_of_lines(printed.splitlines(), samples)


def shares_dir(invocation: Invocation) -> Path:
    """Where the chips' shares of the bins are linked while a pass runs one ais_bench per chip."""
    return invocation.output / f".{invocation.output_dirname}_inputs"


def ais_bench_commands(invocation: Invocation, devices: list[int] | None,
                       multi_device: str | None) -> list[list[str]]:
    """The ais_bench command lines of a pass. A dynamic-batch .om gets the gear (--dymBatch). A device list goes
    whole to an ais_bench with --divide_input (it splits the inputs into device<N>_<i>/); an older one, which runs
    every input on every chip into one folder or splits into device<N>/, gets one command per chip instead: the
    chip's share of the bins (links in a folder beside the results) and --output_dirname device<N>_<i> in the
    pass's folder, the layout today's ais_bench writes."""
    base = [sys.executable, "-m", "ais_bench"]
    bins_dir = invocation.inputs
    if not devices or len(devices) < 2:
        one = devices[0] if devices else 0
        return [[*base, *invocation.arguments(), *(["--device", str(one)] if one else [])]]
    if multi_device == "divide_input":
        divide = ["--divide_input", "true"] if bins_dir is not None else []
        return [[*base, *invocation.arguments(), "--device", ",".join(map(str, devices)), *divide]]
    from t2t_vit.runtime.multidevice import split_inputs
    from t2t_vit.runtime.batching import list_input_files

    files = list_input_files([str(bins_dir)]) if bins_dir is not None else []  # in the order the CPU runner splits
    if bins_dir is not None and len(files) < len(devices):
        raise JobError(f"{len(files)} bins for {len(devices)} devices: give at least one image a device")
    shares = split_inputs(files, len(devices)) if files else [[]] * len(devices)
    commands = []
    for name, device, share in zip(device_folders(devices), devices, shares):
        share_dir = None
        if share:
            share_dir = shares_dir(invocation) / name
            share_dir.mkdir(parents=True, exist_ok=True)
            for path in share:
                (share_dir / path.name).symlink_to(path.resolve())
        chip = invocation.for_share(share_dir, invocation.output / invocation.output_dirname, name)
        commands.append([*base, *chip.arguments(), "--device", str(device)])
    return commands


