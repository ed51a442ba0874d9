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

import io
import logging
import os
import queue
import re
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from t2t_vit import ToolkitError
from t2t_vit.runtime.backends import Backend, default_streams, load_backend
from t2t_vit.files import NPY_MAGIC, atomic_output, file_head, looks_like_text, remove_partial_files

log = logging.getLogger(__name__)

OUTPUT_FORMATS = ("BIN", "NPY", "TXT")
PURE_DATA_TYPES = ("zero", "random")
PURE_INFER_NAME = "pure_infer_data"  # ais_bench's name for pure-inference input, so outputs are pure_infer_data_<i>
CPU_RUNNER_KEY = "cpu_runner"  # the summary's one key beyond ais_bench's
INPUT_SUFFIXES = (".bin", ".BIN", ".npy", ".NPY")
PERCENTILE = 99
MICRO_BATCH = 2  # images per backend run within a batch, by default (benchmarks/bench_backends.py)


class RunnerError(ToolkitError):
    """Inputs or arguments the runner cannot use."""


def natural_key(text: str) -> list:
    """ais_bench's sort key: digit runs compare as numbers, the rest case-insensitively."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"([0-9]+)", text)]


def list_input_files(inputs: Sequence[str]) -> list[Path]:
    """The input files, in the order ais_bench takes them."""
    paths = [Path(item) for item in inputs if item]
    if not paths:
        raise RunnerError("--input is empty")
    if len(paths) == 1 and not paths[0].exists():
        raise RunnerError(f"--input {paths[0]} does not exist")
    if paths[0].is_dir():
        if len(paths) != 1:
            raise RunnerError(f"--input names {len(paths)} folders; the model has one input, give one folder")
        entries = [Path(entry.path) for entry in os.scandir(paths[0])
                   if entry.name.endswith(INPUT_SUFFIXES) and entry.is_file()]
        if not entries:
            raise RunnerError(f"--input folder {paths[0]} holds no .bin or .npy files")
        return sorted(entries, key=lambda path: natural_key(str(path)))
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise RunnerError(f"--input: {', '.join(missing[:5])} {'does' if len(missing) == 1 else 'do'} not exist "
                          f"or {'is' if len(missing) == 1 else 'are'} not a file or folder")
    return paths


STRAY_HINT = "ais_bench and this runner read every .bin and .npy file of an input folder: move it out"


def _data_bytes(path: Path) -> int:
    if path.suffix.lower() == ".npy":
        start = file_head(path)
        if not start.startswith(NPY_MAGIC):
            looks = "a text file" if looks_like_text(start) else "not a numpy array file"
            raise RunnerError(f"input {path} is named .npy but is {looks} (it starts {start[:24]!r}): a stray file? "
                              f"{STRAY_HINT}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise RunnerError(f"input {path} is a damaged .npy file ({str(error).splitlines()[0][:120]}); "
                              f"{STRAY_HINT}, or make it again") from None
        if array.dtype.names is not None:
            raise RunnerError(f"input {path} is a table with fields {', '.join(array.dtype.names)} (a label file?), "
                              f"not model input: {STRAY_HINT}")
        return int(array.nbytes)
    return path.stat().st_size


def plan_groups(files: Sequence[Path], sample_bytes: int, batch: int) -> tuple[int, list[list[Path | None]]]:
    """How many files make one batch, and the groups (``None`` = a padding slot)."""
    sizes = [_data_bytes(path) for path in files]
    for path, size in zip(files, sizes):
        if size not in (sample_bytes, sample_bytes * batch):
            raise RunnerError(f"input {path} has {size} bytes: neither one sample ({sample_bytes}) nor one batch "
                              f"of {batch} ({sample_bytes * batch}); if it is a stray file, {STRAY_HINT}")
    per_batch = batch if sizes[0] == sample_bytes else 1
    for path, size in zip(files, sizes):
        if size != sizes[0]:
            raise RunnerError(f"input {path} has {size} bytes, unlike {files[0]} ({sizes[0]}): every input file must "
                              f"hold the same number of samples")
    groups: list[list[Path | None]] = []
    for start in range(0, len(files), per_batch):
        group: list[Path | None] = list(files[start:start + per_batch])
        groups.append(group + [None] * (per_batch - len(group)))
    return per_batch, groups


def pure_infer_data(shape: tuple[int, ...], dtype: np.dtype, kind: str = "zero") -> np.ndarray:
    """ais_bench's pure-inference input: zeros, or random bytes (0..255 each) read as the model's dtype."""
    if kind == "zero":
        return np.zeros(shape, dtype=dtype)
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.random.default_rng().integers(0, 256, count, dtype=np.uint8).view(dtype).reshape(shape)


def split_output(data: np.ndarray, parts: int, axis: int, output_index: int) -> list[np.ndarray]:
    """One part per input file, cut along ``axis`` (ais_bench's --output_batchsize_axis)."""
    if axis >= data.ndim:
        raise RunnerError(f"--output_batchsize_axis {axis} is not an axis of output {output_index}, of shape "
                          f"{list(data.shape)}")
    if data.shape[axis] % parts:
        raise RunnerError(f"output {output_index} of shape {list(data.shape)} cannot be split into {parts} parts "
                          f"along axis {axis} (--output_batchsize_axis)")
    return np.array_split(data, parts, axis=axis)


def output_file_name(input_path: Path, output_index: int, outfmt: str) -> str:
    return f"{input_path.name.split('.')[0]}_{output_index}.{outfmt.lower()}"


def _check_unique_names(files: Sequence[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in files:
        stem = path.name.split(".")[0]
        if stem in seen:
            raise RunnerError(f"inputs {seen[stem]} and {path} would both write {stem}_0: ais_bench names outputs after "
                              f"the input name up to its first dot; rename one")
        seen[stem] = path


def save_output(path: Path, data: np.ndarray, outfmt: str) -> None:
    """Write one output as ais_bench does (BIN raw, NPY numpy, TXT rows of '%f' separated by spaces), atomically."""
    try:
        with atomic_output(path) as temp:
            temp.write_bytes(serialise_output(data, outfmt))
    except OSError as error:  # a full disk (ENOSPC) or a file size limit (EFBIG): nothing is left under the name
        raise RunnerError(f"cannot write {path}: {error.strerror or error} (is the disk full?)") from None


def serialise_output(data: np.ndarray, outfmt: str) -> bytes:
    """The bytes of one output file in ais_bench's format."""
    if outfmt == "NPY":
        buffer = io.BytesIO()
        np.save(buffer, data)
        return buffer.getvalue()
    if outfmt == "TXT":
        rows = data.reshape(-1, data.shape[-1])
        fmt = "%f" if np.issubdtype(rows.dtype, np.floating) else "%d"
        return "".join(" ".join(fmt % value for value in row) + " \n" for row in rows).encode()
    return data.tobytes()


def _stats(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "max": 0.0, "mean": 0.0, "median": 0.0, f"percentile({PERCENTILE}%)": 0.0, "count": 0}
    array = np.asarray(values, dtype=np.float64)
    return {"min": float(array.min()), "max": float(array.max()), "mean": float(array.mean()),
            "median": float(np.median(array)), f"percentile({PERCENTILE}%)": float(np.percentile(array, PERCENTILE)),
            "count": len(values)}


def pipeline(backend: Backend, batches: Iterable[np.ndarray]) -> Iterator[tuple[list[np.ndarray], float, float]]:
    """Run every batch, ``backend.streams`` at a time; yield ``(outputs, started, finished)`` in input order.

    The next batch is taken from ``batches`` (and the caller handles the yielded outputs) while the
    submitted ones run, so reading inputs and writing outputs overlap the computation.
    """
    if backend.streams == 1:
        for data in batches:
            started = time.perf_counter()
            outputs = backend.run(data)
            yield outputs, started, time.perf_counter()
        return
    slots: queue.SimpleQueue[int] = queue.SimpleQueue()
    for slot in range(backend.streams):
        slots.put(slot)

    def work(data: np.ndarray) -> tuple[list[np.ndarray], float, float]:
        slot = slots.get()
        try:
            started = time.perf_counter()
            outputs = backend.run(data, slot)
            return outputs, started, time.perf_counter()
        finally:
            slots.put(slot)

    pending: deque = deque()
    with ThreadPoolExecutor(backend.streams, thread_name_prefix="infer") as pool:
        try:
            for data in batches:
                pending.append(pool.submit(work, data))
                if len(pending) > backend.streams:  # one batch ready beyond those running
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def default_micro_batch(batch: int) -> int:
    """The piece a batch runs in by default: 2 images when 2 divides the batch, else 1 (README "CPU speed")."""
    return MICRO_BATCH if batch % MICRO_BATCH == 0 else 1


def pipeline_batches(backend: Backend, batches: Iterable[np.ndarray], batch: int,
                     micro: int) -> Iterator[tuple[list[np.ndarray], float, float]]:
    """:func:`pipeline` for batches of ``batch`` samples that the backend runs ``micro`` at a time.

    Each batch is cut into ``batch // micro`` pieces, the pieces run through the streams, and their
    outputs are joined again in order: one ``(outputs, first start, last finish)`` per batch.
    """
    if batch % micro:
        raise RunnerError(f"a micro-batch of {micro} does not divide the batch of {batch}")
    parts = batch // micro

    def pieces() -> Iterator[np.ndarray]:
        for data in batches:
            for start in range(0, batch, micro):
                yield data[start:start + micro]

    collected: list[tuple[list[np.ndarray], float, float]] = []
    for piece in pipeline(backend, pieces()):
        collected.append(piece)
        if len(collected) == parts:
            outputs = [np.concatenate([np.asarray(outs[index]) for outs, _, _ in collected]) if parts > 1
                       else collected[0][0][index] for index in range(len(collected[0][0]))]
            yield outputs, min(item[1] for item in collected), max(item[2] for item in collected)
            collected = []


def completion_intervals(start: float, finished: Sequence[float]) -> list[float]:
    """Seconds between successive completions, the first measured from ``start``; they sum to the wall time."""
    times = [start, *sorted(finished)]
    return [later - earlier for earlier, later in zip(times, times[1:])]


def per_batch_times(request_ms: Sequence[float], intervals_s: Sequence[float]) -> list[float]:
    """Each batch's share of the wall time, in ms: its own duration scaled so that the times add up to the wall
    time. Batches that run at once in streams finish in bursts, so the intervals between completions swing from
    about 0 to twice a batch; these times keep each batch's own spread (min, max, percentiles are per batch) and
    the intervals' mean, so ``1000 * batch / mean`` is still images per wall-clock second."""
    own = float(sum(request_ms))
    if own <= 0:
        return [1000 * seconds for seconds in intervals_s]
    scale = 1000 * float(sum(intervals_s)) / own
    return [value * scale for value in request_ms]


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
            stats = _stats(values)
            return (f"[INFO] {name} (ms): min = {stats['min']}, max = {stats['max']}, mean = {stats['mean']}, "
                    f"median = {stats['median']}, percentile({PERCENTILE}%) = {stats[f'percentile({PERCENTILE}%)']}")

        mean = _stats(self.compute_ms)["mean"]
        return [
            "[INFO] -----------------Performance Summary------------------",
            *([line("H2D_latency", self.h2d_ms)] if display_all_summary else []),
            line("NPU_compute_time", self.compute_ms),
            *([line("D2H_latency", self.d2h_ms)] if display_all_summary else []),
            f"[INFO] throughput 1000*batchsize.mean({self.batch})/NPU_compute_time.mean({mean}): {self.throughput}",
            "[INFO] ------------------------------------------------------",
        ]


def _looks_like_float_images(path: Path) -> bool:
    """Whether a .bin holds normalised float32 pixels (finite, small, rarely near 0), which uint8 pixels read as
    float32 almost never are (their high bytes make huge, tiny or non-finite values)."""
    values = np.fromfile(path, dtype="<f4")
    if values.size == 0 or not np.isfinite(values).all():
        return False
    magnitude = np.abs(values)
    return bool(magnitude.max() <= 100 and (magnitude >= 1e-4).mean() >= 0.9)


def model_input_size(proto) -> int | None:
    """The image side an ONNX model takes: its recorded data config's, else its input's static shape (NCHW float,
    NHWC uint8); None when neither says."""
    import json

    from t2t_vit.model.export import input_dtype_of, metadata_of

    metadata = metadata_of(proto)
    if "data_config" in metadata:
        return int(json.loads(metadata["data_config"])["input_size"][-1])
    dims = [dim.dim_value for dim in proto.graph.input[0].type.tensor_type.shape.dim] if proto.graph.input else []
    if len(dims) != 4:
        return None
    side = dims[1] if input_dtype_of(proto) == "uint8" else dims[3]
    return side or None


def input_size_advice(folder, bins_size: int, model_path, model_size: int, model_name: str | None = None) -> str:
    """One line for bins of one image size given to a model of another."""
    return (f"the bins in {folder} are {bins_size}x{bins_size} images (preprocessed with --img-size {bins_size}); "
            f"{model_path}{f' ({model_name})' if model_name else ''} takes {model_size}x{model_size}: preprocess "
            f"with T2T_ViT_preprocess.py --img-size {model_size}")


def check_inputs_match(model_path: str, files: Sequence[Path]) -> None:
    """Refuse, before anything is written, an ONNX model whose input dtype or data config the inputs do not fit.

    The bins' manifest says their dtype and data config; without one, a float32 .bin given to a uint8 model
    (one float32 image has exactly the bytes of four uint8 images) is recognised by its content, and a .npy
    by its header.
    """
    if not str(model_path).endswith(".onnx"):
        return
    from t2t_vit.model.export import input_dtype_of, load_onnx, metadata_of
    from t2t_vit.data.bins import bins_dtype, bins_dtype_advice, manifest_beside

    proto = load_onnx(model_path, "--model")  # also refuses a file that is not ONNX
    metadata = metadata_of(proto)
    if not files or len(proto.graph.input) != 1:
        return
    model_dtype = input_dtype_of(proto)
    if model_dtype is None:
        return
    tensor_type = proto.graph.input[0].type.tensor_type
    manifest = manifest_beside(files)
    folder = files[0].parent
    if manifest is not None:
        if bins_dtype(manifest) != model_dtype:
            raise RunnerError(bins_dtype_advice(bins_dtype(manifest), model_dtype, folder, model_path))
        bins_size = (manifest.get("data_config") or {}).get("input_size")
        model_size = model_input_size(proto)
        if bins_size and model_size and int(bins_size[-1]) != model_size:
            raise RunnerError(input_size_advice(folder, int(bins_size[-1]), model_path, model_size,
                                                metadata.get("model")))
        bins_hash, model_hash = manifest.get("data_config_hash"), metadata.get("data_config_hash")
        if model_hash and bins_hash and model_hash != bins_hash:
            raise RunnerError(f"the inputs in {folder} were made with data config {manifest.get('data_config')}, "
                              f"the model was exported for another one (hash {model_hash} != {bins_hash}); "
                              f"preprocess again with the model's config")
        return
    first = files[0]
    if first.suffix.lower() == ".npy":
        try:
            found = np.load(first, mmap_mode="r", allow_pickle=False).dtype
        except (OSError, ValueError) as error:
            raise RunnerError(f"input {first} is not a readable .npy file ({error})") from None
        if found != np.dtype(model_dtype):
            raise RunnerError(f"input {first} holds {found}, {model_path} takes {model_dtype}")
        return
    dims = [dim.dim_value for dim in tensor_type.shape.dim[1:]]
    if not dims or not all(dims):
        return
    elements = int(np.prod(dims))  # of one sample: its bytes as uint8, a quarter of its bytes as float32
    size = first.stat().st_size
    if model_dtype == "float32" and size == elements:
        raise RunnerError(bins_dtype_advice("uint8", model_dtype, folder, model_path))
    if model_dtype == "uint8" and size == 4 * elements and _looks_like_float_images(first):
        raise RunnerError(bins_dtype_advice("float32", model_dtype, folder, model_path)
                          + f" ({first} holds normalised float32 values)")


def check_om_inputs(om_path: str, inputs: Sequence[str] | None, dym_batch: int = 0) -> None:
    """Refuse, before ais_bench starts, what the .om's build record (``T2T_ViT_atc.sh``) says it does not take: a
    dynamic-batch .om (its ``dynamic_batch_sizes``) run without ``--dymBatch`` or with a batch that is not one of
    its gears; bins of a dtype it does not take (an .om built with --aipp takes uint8 bins; without, float32), or
    images of another size than the one it was built for (the record's ``input_shape``, ``3,S,S``). Without a
    record nothing is checked."""
    from t2t_vit.ascend.om_record import read_record

    record = read_record(om_path)
    if record is None:
        return
    gears = record.dynamic_batch_sizes
    if gears:
        listed = ",".join(map(str, gears))
        if not dym_batch:
            raise RunnerError(f"{om_path} is a dynamic-batch model (gears {listed}): give --dymBatch N, N one of them")
        if dym_batch not in gears:
            raise RunnerError(f"--dymBatch {dym_batch} is not a gear of {om_path} (built for {listed}): give one of "
                              f"them, or rebuild with T2T_ViT_atc.sh --dynamic-batch --batch-sizes including "
                              f"{dym_batch}")
    if not inputs:
        return
    from t2t_vit.data.bins import bins_dtype, bins_dtype_advice, manifest_beside

    files = list_input_files(inputs)
    manifest = manifest_beside(files)
    if manifest is None:
        return
    om_dtype = record.input_dtype
    if bins_dtype(manifest) != om_dtype:
        raise RunnerError(bins_dtype_advice(bins_dtype(manifest), om_dtype, files[0].parent, om_path))
    bins_size = (manifest.get("data_config") or {}).get("input_size")
    om_size = record.input_side
    if bins_size and om_size and int(bins_size[-1]) != om_size:
        raise RunnerError(input_size_advice(files[0].parent, int(bins_size[-1]), om_path, om_size))


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
        _check_unique_names(files)
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
        "NPU_compute_time": _stats(result.compute_ms),
        "H2D_latency": _stats(result.h2d_ms),
        "D2H_latency": _stats(result.d2h_ms),
        "throughput": result.throughput,
        "npu_compute_time_list": result.compute_ms,
        "pid": os.getpid(),
        CPU_RUNNER_KEY: {
            "backend": backend.name,
            "backend_version": backend.version,
            "threads": plan.threads,
            "streams": result.streams,
            "micro_batch": result.micro_batch,
            "request_latency": _stats(result.request_ms),
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
