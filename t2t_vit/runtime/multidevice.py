"""``--device 0,1`` on the CPU, as today's ais_bench does it on a card: one process per device.

Each device's process gets its share of the threads and runs every input, or, with ``--divide_input``, its
share of them (contiguous, in input order, the first ``len % devices`` devices one more each). Results go to
``<output>/<output_dirname>/device<N>_<i>/`` and summaries to ``<output>/<output_dirname>/device<N>_<i>_summary.json``
(``i`` is the device's position in the list), the layout ``T2T_ViT_postprocess.py`` reads. Afterwards the lines
ais_bench prints: ``i:<i> device_<N> throughput:<x> start_time:<t0> end_time:<t1>`` per device and ``summary
throughput:<sum>`` (a sum of per-device compute rates, not a wall-clock rate: the card's figure, never one chip's).
As in ais_bench, ``start_time`` and ``end_time`` bound each device's timed runs (after its warm-up), so the devices'
images per wall-clock second together follow from those lines alone: ``wall_rate_of_lines`` reads them from either.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from t2t_vit.aisbench import device_folder
from t2t_vit.runtime.batching import RunnerError


@dataclass
class DeviceRun:
    """What one device's process did."""

    index: int
    device: int
    inputs: int
    throughput: float
    start: float
    end: float
    lines: list[str]
    result_dir: str | None
    summary_path: str | None
    timed_span: tuple[float, float] | None = None  # epoch seconds of its timed runs (t2t_vit.runtime.runner.RunResult)
    timed_samples: int = 0


def split_inputs(files: Sequence[Path], jobs: int) -> list[list[Path]]:
    """Contiguous shares in input order, the first ``len(files) % jobs`` one file longer."""
    size, extra = divmod(len(files), jobs)
    shares, start = [], 0
    for job in range(jobs):
        end = start + size + (1 if job < extra else 0)
        shares.append(list(files[start:end]))
        start = end
    return shares


def thread_shares(threads: int, jobs: int) -> list[int]:
    """The threads of each device's process: an even share, at least one each."""
    size, extra = divmod(threads, jobs)
    return [max(1, size + (1 if job < extra else 0)) for job in range(jobs)]


def _child(queue, index: int, device: int, kwargs: dict[str, Any], display_all_summary: bool) -> None:
    from t2t_vit import ToolkitError
    from t2t_vit.runtime.runner import run_inference

    try:
        start = time.time()
        result = run_inference(**kwargs)
        queue.put((index, DeviceRun(index, device, len(result.filesinfo), result.throughput, start, time.time(),
                                    result.performance_lines(display_all_summary),
                                    None if result.result_dir is None else str(result.result_dir),
                                    None if result.summary_path is None else str(result.summary_path),
                                    result.timed_span, result.timed_samples)))
    except ToolkitError as error:
        queue.put((index, f"device {device}: {error}"))
    except BaseException as error:  # noqa: BLE001 - a bug: its text goes to the parent, which fails the run
        queue.put((index, f"device {device}: {type(error).__name__}: {error}"))


def run_devices(devices: Sequence[int], divide: bool, inputs: Sequence[str] | None, output: str | None,
                output_dirname: str | None, threads: int | None, run_kwargs: dict[str, Any],
                display_all_summary: bool = False, start_method: str = "fork") -> list[DeviceRun]:
    """Run ``run_inference(**run_kwargs)`` once per device, in parallel processes; return their runs in device order.
    ``start_method`` "spawn" starts each from a fresh interpreter (for a parent that has loaded a runtime or
    torch, whose threads a fork would not carry over).

    Raises:
        RunnerError: a device's run failed (its one line), or --divide_input has fewer inputs than devices.
    """
    from t2t_vit.runtime.batching import list_input_files

    files = list_input_files(inputs) if inputs else []
    jobs = len(devices)
    if divide and files and len(files) < jobs:
        raise RunnerError(f"--divide_input: {len(files)} inputs for {jobs} devices; give at least one input a device")
    shares = split_inputs(files, jobs) if divide and files else [files] * jobs
    per_device = thread_shares(threads or len(os.sched_getaffinity(0)), jobs)
    parent = None
    if output is not None:
        parent = str(Path(output) / (output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")))
        Path(parent).mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context(start_method)  # each child opens its own backend
    queue = context.Queue()
    processes = []
    for index, device in enumerate(devices):
        kwargs = {**run_kwargs, "inputs": [str(path) for path in shares[index]] or None, "output": parent,
                  "output_dirname": device_folder(device, index) if parent else None, "threads": per_device[index]}
        process = context.Process(target=_child, args=(queue, index, device, kwargs, display_all_summary))
        process.start()
        processes.append(process)
    outcomes: dict[int, Any] = {}
    try:
        while len(outcomes) < jobs:
            try:
                index, outcome = queue.get(timeout=1.0)
            except queue_module.Empty:  # a process that ended without a word (killed, out of memory) ends the run
                for index, process in enumerate(processes):
                    if index not in outcomes and process.exitcode is not None and queue.empty():
                        code = process.exitcode
                        how = f"signal {-code}" if code < 0 else f"exit code {code}"
                        outcomes[index] = f"device {devices[index]}: its process ended with {how} before it reported"
                continue
            outcomes[index] = outcome
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
    failures = [outcome for _, outcome in sorted(outcomes.items()) if isinstance(outcome, str)]
    if failures:
        raise RunnerError("; ".join(failures))
    return [outcomes[index] for index in range(jobs)]


def wall_rate(runs: Sequence[DeviceRun]) -> float | None:
    """Images per wall-clock second of the devices together: every timed sample over the span from the first
    device's timed start to the last one's end (None when a run has no timed span)."""
    spans = [run.timed_span for run in runs]
    if not runs or any(span is None for span in spans):
        return None
    return rate_over_spans(spans, [run.timed_samples for run in runs])


def rate_over_spans(spans: Sequence[tuple[float, float]], samples: Sequence[int]) -> float | None:
    """``sum(samples)`` over the seconds from the earliest start to the latest end (None for no time at all)."""
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return sum(samples) / seconds if seconds > 0 else None


_DEVICE_LINE = re.compile(r"\bi:(?P<index>\d+) device_(?P<device>\d+) throughput:\S+ "
                          r"start_time:(?P<start>[0-9.eE+-]+) end_time:(?P<end>[0-9.eE+-]+)")


def device_spans(lines: Iterable[str]) -> dict[int, tuple[float, float]]:
    """Each device's ``(start_time, end_time)`` from the closing lines of a multi-device run (ais_bench's
    ``i:<i> device_<N> throughput:<x> start_time:<t0> end_time:<t1>``, with or without its ``[INFO]`` prefix),
    keyed by device id."""
    spans = {}
    for line in lines:
        match = _DEVICE_LINE.search(line)
        if match:
            spans[int(match["device"])] = (float(match["start"]), float(match["end"]))
    return spans


def wall_rate_of_lines(lines: Iterable[str], samples: Mapping[int, int]) -> float | None:
    """The devices' images per wall-clock second together, from a multi-device run's closing lines and each
    device's timed samples (device id -> images); None unless every device of ``samples`` printed its line."""
    spans = device_spans(lines)
    if not samples or any(device not in spans for device in samples):
        return None
    return rate_over_spans([spans[device] for device in samples], list(samples.values()))


def summary_lines(runs: Sequence[DeviceRun]) -> list[str]:
    """ais_bench's closing lines of a multi-device run; start and end bound the timed runs, as ais_bench's do
    (the whole process where a run timed nothing)."""
    lines = []
    for run in runs:
        start, end = run.timed_span or (run.start, run.end)
        lines.append(f"i:{run.index} device_{run.device} throughput:{run.throughput} start_time:{start} end_time:{end}")
    lines.append(f"[INFO] summary throughput:{sum(run.throughput for run in runs)}")
    return lines
