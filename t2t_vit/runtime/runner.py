"""An ais_bench-compatible inference runner for the CPU: the same inputs, batching, file names and summary.

Rules (ais_bench's, FACTS section 4):

- ``--input`` is one folder (its ``*.bin`` / ``*.npy`` files, natural-sorted by path) or a
  comma-separated list of files. Every file holds one sample or one whole batch (all the same size);
  one-sample files are grouped ``batch`` at a time, and the last short group is padded with copies of
  that group's first file. No output is written for a padding slot.
- Output ``i`` of the sample from ``<dir>/<stem>.<ext...>`` is ``<output>/<output_dirname>/<stem up to
  the first dot>_<i>.<bin|npy|txt>``; the summary JSON is ``<output>/<output_dirname>_summary.json``.
  Without ``--output_dirname`` the folder is named by the start time, ``%Y_%m_%d-%H_%M_%S``.
- ``throughput = 1000 * batch / mean(compute time in ms)``, compute time being the time of the
  backend's run of one batch. Without ``--input`` the inputs are zeros (pure inference).

On the CPU a batch runs in micro-batches (default: 2 images when 2 divides the batch), and with
``streams`` > 1 (default: one per thread, or one per backend run when there are fewer runs than
threads) that many run at once, each on its own share of the threads: small pieces on one thread
each keep the cores busy and their data in cache. Outputs are joined back per batch, so files and
names are as ais_bench writes them. The compute time of a batch is then its share of the wall time:
its own duration scaled so that all of them add up to the wall time of the run (:func:`per_batch_times`),
so the throughput formula still gives images per second of wall time and min / max / percentiles describe
batches, not the bursts in which streams finish; each batch's own duration is kept as ``request_latency``.

Every check on the inputs runs before the first output is written. Outputs are written under a
hidden temporary name and renamed, so an interrupted run leaves no half-written result.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from t2t_vit.files import remove_partial_files
from t2t_vit.runtime.backends import Backend, default_streams, load_backend
from t2t_vit.runtime.batching import (PURE_DATA_TYPES, PURE_INFER_NAME, RunnerError, list_input_files, plan_groups,
                                      pure_infer_data)
from t2t_vit.runtime.input_checks import check_inputs_match
from t2t_vit.runtime.outputs import (OUTPUT_FORMATS, check_unique_names, output_file_name, save_output,
                                     serialise_output, split_output)
from t2t_vit.runtime.timing import (PERCENTILE, completion_intervals, default_micro_batch, per_batch_times, pipeline,
                                    pipeline_batches, time_stats)

log = logging.getLogger(__name__)

CPU_RUNNER_KEY = "cpu_runner"  # the summary's one key beyond ais_bench's


@dataclass
class RunResult:
    batch: int
    compute_ms: list[float]
    streams: int = 1
    micro_batch: int = 1
    request_ms: list[float] = field(default_factory=list)
    h2d_ms: list[float] = field(default_factory=list)
    d2h_ms: list[float] = field(default_factory=list)
    filesinfo: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    result_dir: Path | None = None
    summary_path: Path | None = None
    timed_span: tuple[float, float] | None = None  # epoch seconds of the timed runs' start and end
    timed_samples: int = 0  # samples the timed runs inferred (padding excluded; loop times each group)

    @property
    def throughput(self) -> float:
        mean = float(np.mean(self.compute_ms)) if self.compute_ms else 0.0
        return 1000.0 * self.batch / mean if mean else 0.0

    def performance_lines(self, display_all_summary: bool = False) -> list[str]:
        """ais_bench's Performance Summary, line for line (H2D and D2H lines with ``display_all_summary``)."""
        def line(name: str, values: Sequence[float]) -> str:
            stats = time_stats(values)
            return (f"[INFO] {name} (ms): min = {stats['min']}, max = {stats['max']}, mean = {stats['mean']}, "
                    f"median = {stats['median']}, percentile({PERCENTILE}%) = {stats[f'percentile({PERCENTILE}%)']}")

        mean = time_stats(self.compute_ms)["mean"]
        return [
            "[INFO] -----------------Performance Summary------------------",
            *([line("H2D_latency", self.h2d_ms)] if display_all_summary else []),
            line("NPU_compute_time", self.compute_ms),
            *([line("D2H_latency", self.d2h_ms)] if display_all_summary else []),
            f"[INFO] throughput 1000*batchsize.mean({self.batch})/NPU_compute_time.mean({mean}): {self.throughput}",
            "[INFO] ------------------------------------------------------",
        ]


@dataclass
class RunOptions:
    """Everything one run is asked to do: ais_bench's options, then the CPU runner's own. Checked once, by
    :meth:`check`, before anything is loaded or written.

    ``progress`` False shows nothing; None or True a bar on a terminal, else a line every 5 %.
    ``on_progress(images_done, images_total, seconds)`` is called after every batch run. ``argv`` is
    the summary's ``args`` (ais_bench writes its ``sys.argv``); ``options`` (the parsed options) goes,
    with the CPU runner's own figures, under the summary's one extra key, ``cpu_runner``.
    ``pure_data_type`` ``random`` fills pure-inference inputs with random bytes, as ais_bench does;
    ``output_batchsize_axis`` is the axis outputs are split along, one part per input file.
    ``precision`` npu-fp16 runs the NPU's force_fp16 emulation (onnxruntime), keeping the nodes of
    the ``keep_dtype`` file in fp32. ``resume`` continues an interrupted pass (:mod:`t2t_vit.runtime.resume`).
    """

    model: str
    inputs: Sequence[str] | None = None
    output: str | None = None
    output_dirname: str | None = None
    outfmt: str = "BIN"
    batchsize: int | None = None
    loop: int = 1
    warmup_count: int = 1
    backend_name: str | None = None  # None: the default CPU runtime (backends.choose_backend)
    threads: int | None = None
    progress: bool | None = None
    argv: Sequence[str] | None = None
    streams: int | None = None
    micro_batch: int | None = None
    on_progress: Callable[[int, int, float], None] | None = None
    pure_data_type: str = "zero"
    output_batchsize_axis: int = 0
    debug: bool = False
    options: dict[str, Any] | None = None
    precision: str = "fp32"
    keep_dtype: str | None = None
    accumulate: str = "fp32"
    resume: bool = False

    def check(self) -> None:
        """Refuse option values the runner cannot use, naming the one at fault."""
        self.outfmt = self.outfmt.upper()
        if self.outfmt not in OUTPUT_FORMATS:
            raise RunnerError(f"--outfmt {self.outfmt} is not one of {', '.join(OUTPUT_FORMATS)}")
        for flag, value, least in (("--loop", self.loop, 1), ("--warmup_count", self.warmup_count, 0),
                                   ("--batchsize", self.batchsize, 1), ("--threads", self.threads, 1),
                                   ("--streams", self.streams, 1), ("--micro-batch", self.micro_batch, 1)):
            if value is not None and value < least:
                raise RunnerError(f"{flag} must be at least {least}, got {value}")
        if self.micro_batch and self.batchsize and self.batchsize % self.micro_batch:
            raise RunnerError(f"--micro-batch {self.micro_batch} must divide --batchsize {self.batchsize}")
        if self.precision != "npu-fp16" and self.keep_dtype is not None:
            raise RunnerError("--keep-dtype goes with --precision npu-fp16 (it lists the nodes ATC keeps in fp32)")
        if self.precision != "npu-fp16" and self.accumulate != "fp32":
            raise RunnerError("--npu-accumulate goes with --precision npu-fp16")
        if self.pure_data_type not in PURE_DATA_TYPES:
            raise RunnerError(f"--pure_data_type {self.pure_data_type} is not one of {', '.join(PURE_DATA_TYPES)}")
        if self.resume and not (self.output and self.output_dirname and self.inputs):
            raise RunnerError("--resume continues the pass in OUTPUT/OUTPUT_DIRNAME: give --input, --output and "
                              "--output_dirname")
        if not Path(self.model).is_file():
            raise RunnerError(f"--model {self.model} does not exist")


@dataclass
class RunPlan:
    """What a run will do, decided before its first batch: the groups of input files, the batch and its pieces,
    the streams, where outputs go, and (with resume) which groups are already done."""

    files: list[Path]
    groups: list[list[Path | None]]
    per_batch: int  # input files per batch
    batch: int
    micro: int
    threads: int
    streams: int
    result_dir: Path | None = None
    summary_path: Path | None = None
    todo: list[int] = field(default_factory=list)  # indexes of the groups to run

    @property
    def samples_per_file(self) -> int:
        return self.batch // self.per_batch

    def real_samples(self, group_index: int) -> int:
        """Samples of a group that come from a file (padding slots excluded)."""
        if not self.files:
            return self.batch
        return self.samples_per_file * sum(path is not None for path in self.groups[group_index])

    def output_names(self, group_index: int, outputs: int, outfmt: str) -> list[tuple[int, Path, int, Path]]:
        """``(slot, input file, output index, output path)`` of every output a group writes."""
        return [(slot, path, index, self.result_dir / output_file_name(path, index, outfmt))
                for slot, path in enumerate(self.groups[group_index]) if path is not None
                for index in range(outputs)]


def run_inference(*args: Any, **kwargs: Any) -> RunResult:
    """Run a model over inputs (or ais_bench's pure-inference data) as ais_bench would; write outputs and summary.

    The arguments are :class:`RunOptions`' fields, in its order: ``model, inputs, output, output_dirname,
    outfmt, batchsize, loop, warmup_count, backend_name, threads``, then any by name.
    """
    opts = RunOptions(*args, **kwargs)
    opts.check()
    files = list_input_files(opts.inputs) if opts.inputs else []
    check_inputs_match(opts.model, files)  # bins the model does not take: refused before the runtime is chosen
    if opts.backend_name is None:
        from t2t_vit.runtime.backends import choose_backend

        opts.backend_name = choose_backend(None, opts.precision)
    backend, plan = open_backend(opts, files)
    result = RunResult(batch=plan.batch, compute_ms=[], streams=backend.streams, micro_batch=plan.micro,
                       result_dir=plan.result_dir, summary_path=plan.summary_path)
    if opts.debug:
        spec = backend.input
        print(f"[DEBUG] model {opts.model}: input {spec.name} shape {[plan.batch, *spec.sample_shape]} dtype "
              f"{spec.dtype} ({'static' if spec.static_batch else 'dynamic'} batch); outputs "
              f"{', '.join(backend.output_names)}")
    first = assemble(plan, plan.groups[0], backend.input, opts.pure_data_type)
    warm_outputs = warm_up(backend, first[:plan.micro], opts.warmup_count or (1 if opts.resume else 0))
    if plan.result_dir is not None:
        plan.result_dir.mkdir(parents=True, exist_ok=True)
    reused = prepare_resume(opts, plan, backend, warm_outputs, result) if opts.resume else 0
    run_groups(opts, plan, backend, result, first)
    if plan.summary_path is not None:
        write_summary(plan.summary_path, summary_of(opts, plan, backend, result, reused))
    return result


def open_backend(opts: RunOptions, files: list[Path]) -> tuple[Backend, RunPlan]:
    """Load the backend with as many streams as there will be backend runs (at most one per thread), and plan the
    groups from the model's input; a static batch or whole-batch files that give fewer runs reload it."""
    threads = opts.threads or len(os.sched_getaffinity(0))
    streams = opts.streams or default_streams(threads)
    if streams > threads:
        raise RunnerError(f"--streams {streams} needs at least as many --threads (got {threads})")
    batchsize = opts.batchsize or 1
    micro = opts.micro_batch or default_micro_batch(batchsize)
    if opts.streams is None:  # no more streams than backend runs, counted before the model is compiled
        groups_expected = -(-len(files) // batchsize) if files else 1
        streams = max(1, min(streams, groups_expected * opts.loop * (batchsize // micro)))

    def load(count: int) -> Backend:
        return load_backend(opts.backend_name, opts.model, threads, micro, count, opts.precision, opts.keep_dtype,
                            opts.accumulate)

    backend = load(streams)
    spec = backend.input
    batch = spec.static_batch or batchsize
    if spec.static_batch:  # a static model runs whole batches of its own size
        micro = batch
        if opts.batchsize and opts.batchsize != spec.static_batch:
            log.warning("the model's batch is fixed at %d; --batchsize %d is ignored", spec.static_batch,
                        opts.batchsize)
    if files:
        per_batch, groups = plan_groups(files, spec.sample_bytes, batch)
        check_unique_names(files)
        if per_batch > len(files):
            padding = per_batch - len(files)
            log.warning("batch %d is larger than the %d inputs: its one batch is %d inputs and %d padding copies "
                        "(%.0f %% of the computation; ais_bench pads the same way, and padding is not scored)",
                        per_batch, len(files), len(files), padding, 100.0 * padding / per_batch)
    else:
        per_batch, groups = batch, [[None] * batch]
    runs = len(groups) * opts.loop * (batch // micro)
    if runs < streams and opts.streams is None:  # a static batch or whole-batch files gave fewer runs
        streams = runs
        backend = load(streams)
    elif runs < streams:
        log.warning("%d backend run(s) for %d streams: some streams stay idle (use --streams %d, or a larger "
                    "--loop)", runs, streams, runs)
    plan = RunPlan(files, groups, per_batch, batch, micro, threads, streams, todo=list(range(len(groups))))
    if opts.output is not None:
        dirname = opts.output_dirname or time.strftime("%Y_%m_%d-%H_%M_%S")
        plan.result_dir = Path(opts.output) / dirname
        plan.summary_path = Path(opts.output) / f"{dirname}_summary.json"
    return backend, plan


def assemble(plan: RunPlan, group: list[Path | None], spec, pure_data_type: str = "zero") -> np.ndarray:
    """One batch of input: the group's files (a padding slot repeats the group's first file), or pure-inference
    data without files."""
    if not plan.files:
        return pure_infer_data((plan.batch, *spec.sample_shape), spec.dtype, pure_data_type)
    arrays = []
    for path in group:
        source = path if path is not None else group[0]
        data = (np.load(source, allow_pickle=False) if source.suffix.lower() == ".npy"
                else np.fromfile(source, dtype=spec.dtype))
        if data.dtype != spec.dtype:
            raise RunnerError(f"input {source} holds {data.dtype}, the model takes {spec.dtype}")
        arrays.append(data.reshape(-1))
    return np.concatenate(arrays).reshape(plan.batch, *spec.sample_shape)


def warm_up(backend: Backend, piece: np.ndarray, count: int) -> list[np.ndarray] | None:
    """``count`` untimed runs on every stream at once; the outputs of the last (None when there is none)."""
    outputs = None
    for outputs, _, _ in pipeline(backend, [piece] * (count * backend.streams)):
        pass
    return outputs


def prepare_resume(opts: RunOptions, plan: RunPlan, backend: Backend, warm_outputs: list[np.ndarray],
                   result: RunResult) -> int:
    """Keep the groups whose outputs an earlier run of this same pass wrote whole; returns how many outputs are
    reused. Another pass's results (another key) are removed, and this pass's key is written before any output."""
    from t2t_vit.runtime import resume

    key = resume.pass_key(opts, plan, backend)
    key_path = resume.key_path(plan.result_dir)
    if resume.read_key(key_path) != key:
        resume.start_over(plan.result_dir, key_path, key)
        return 0
    remove_partial_files(plan.result_dir)  # outputs an interrupted run was writing: never counted
    sizes = resume.expected_sizes(warm_outputs, plan, opts.outfmt, opts.output_batchsize_axis, serialise_output)
    plan.todo, reused = [], 0
    for group_index in range(len(plan.groups)):
        names = plan.output_names(group_index, len(warm_outputs), opts.outfmt)
        if not resume.all_whole([(target, sizes[index]) for _, _, index, target in names]):
            plan.todo.append(group_index)
            continue
        reused += len(names)
        record_outputs(result, plan, group_index, names)
    log.info("resuming %s: %d of %d batches already done, %d outputs reused", plan.result_dir,
             len(plan.groups) - len(plan.todo), len(plan.groups), reused)
    return reused


def record_outputs(result: RunResult, plan: RunPlan, group_index: int,
                   names: list[tuple[int, Path, int, Path]]) -> None:
    """Note a group's outputs in the summary's ``filesinfo`` (sample id -> input and output files)."""
    for slot, path, _, target in names:
        entry = result.filesinfo.setdefault(group_index * len(plan.groups[group_index]) + slot,
                                            {"infiles": [str(path)], "outfiles": []})
        entry["outfiles"].append(str(target))


def run_groups(opts: RunOptions, plan: RunPlan, backend: Backend, result: RunResult, first: np.ndarray) -> None:
    """Run the groups still to do, ``loop`` times each, through the streams; write each group's outputs once."""
    from t2t_vit.progress import progress_bar

    total = sum(plan.real_samples(index) for index in plan.todo) * opts.loop
    bar = progress_bar(total, f"infer bs{plan.batch}", "img", opts.progress)

    def batches() -> Iterator[np.ndarray]:
        for group_index in plan.todo:
            started = time.perf_counter()
            data = first if group_index == 0 else assemble(plan, plan.groups[group_index], backend.input,
                                                           opts.pure_data_type)
            result.h2d_ms.append(1000 * (time.perf_counter() - started))
            for _ in range(opts.loop):
                yield data

    finished, done_samples = [], 0
    with bar:
        phase_start, epoch_start = time.perf_counter(), time.time()
        for run_index, (outputs, started, done) in enumerate(pipeline_batches(backend, batches(), plan.batch,
                                                                              plan.micro)):
            result.request_ms.append(1000 * (done - started))
            finished.append(done)
            group_index = plan.todo[run_index // opts.loop]
            done_samples += plan.real_samples(group_index)
            bar.update(plan.real_samples(group_index))
            if opts.on_progress is not None:
                opts.on_progress(done_samples, total, done - phase_start)
            if opts.debug and run_index == 0:
                print("[DEBUG] outputs: " + ", ".join(f"{name} shape {list(np.shape(data))} dtype "
                                                      f"{np.asarray(data).dtype}"
                                                      for name, data in zip(backend.output_names, outputs)))
            if run_index % opts.loop == opts.loop - 1 and plan.result_dir is not None:
                started = time.perf_counter()
                write_group(opts, plan, group_index, outputs, result)
                result.d2h_ms.append(1000 * (time.perf_counter() - started))
        result.compute_ms = (result.request_ms if backend.streams == 1 and plan.micro == plan.batch
                             else per_batch_times(result.request_ms, completion_intervals(phase_start, finished)))
        result.timed_span, result.timed_samples = (epoch_start, time.time()), done_samples


def write_group(opts: RunOptions, plan: RunPlan, group_index: int, outputs: list[np.ndarray],
                result: RunResult) -> None:
    """Write a group's outputs, one part per input file, each atomically (a full disk is one error line)."""
    if not plan.files:  # pure inference: ais_bench names the outputs after its pure_infer_data input
        plan = RunPlan([Path(PURE_INFER_NAME)], [[Path(PURE_INFER_NAME)]], 1, plan.batch, plan.micro, plan.threads,
                       plan.streams, plan.result_dir)
        group_index = 0
    group = plan.groups[group_index]
    parts = [split_output(np.asarray(data), len(group), opts.output_batchsize_axis, index)
             for index, data in enumerate(outputs)]
    names = plan.output_names(group_index, len(outputs), opts.outfmt)
    for slot, _, index, target in names:
        save_output(target, parts[index][slot], opts.outfmt)
    record_outputs(result, plan, group_index, names)


def summary_of(opts: RunOptions, plan: RunPlan, backend: Backend, result: RunResult, reused: int) -> dict[str, Any]:
    """The summary JSON: exactly ais_bench's keys, then the CPU runner's own under one more."""
    from t2t_vit.provenance import versions

    computed = sum(plan.real_samples(index) for index in plan.todo) if plan.files else plan.batch
    return {
        "filesinfo": dict(sorted(result.filesinfo.items())),
        "args": list(opts.argv) if opts.argv is not None else [],
        "NPU_compute_time": time_stats(result.compute_ms),
        "H2D_latency": time_stats(result.h2d_ms),
        "D2H_latency": time_stats(result.d2h_ms),
        "throughput": result.throughput,
        "npu_compute_time_list": result.compute_ms,
        "pid": os.getpid(),
        CPU_RUNNER_KEY: {
            "backend": backend.name,
            "backend_version": backend.version,
            "threads": plan.threads,
            "streams": result.streams,
            "micro_batch": result.micro_batch,
            "request_latency": time_stats(result.request_ms),
            "batchsize": plan.batch,
            "model": str(opts.model),
            "precision": opts.precision,
            "keep_dtype": opts.keep_dtype,
            "npu_accumulate": opts.accumulate,
            "resume": {"asked": opts.resume, "reused_outputs": reused, "computed_samples": computed * opts.loop},
            "timed_span": list(result.timed_span) if result.timed_span else None,
            "timed_samples": result.timed_samples,
            "options": opts.options or {},
            "versions": versions(),
            "latency_note": "CPU runner: H2D_latency = reading and assembling a batch's input files, "
                            "D2H_latency = writing its outputs; NPU_compute_time = the backend's run of one "
                            "batch with one stream and whole batches, otherwise (batches run at once in "
                            "streams, or in micro-batches) each batch's share of the wall time (its own "
                            "duration scaled so that they add up to the wall time), so throughput is per "
                            "wall-clock second; request_latency = each "
                            "batch's own duration; with --resume, the figures cover the batches this run "
                            "computed, not the reused ones",
        },
    }


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    from t2t_vit.provenance import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_json(path, summary)
    except OSError as error:
        raise RunnerError(f"cannot write the summary {path}: {error.strerror or error} (is the disk full?)") from None
