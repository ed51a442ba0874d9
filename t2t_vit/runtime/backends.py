"""CPU inference backends behind one small interface: load an ONNX file, run one batch.

Each backend reports the model's input (name, per-sample shape, dtype, static batch or None) and
output names, and ``run`` returns the outputs of one batch as numpy arrays. They hold no global
state.

Streams: a backend built with ``streams`` > 1 splits its ``threads`` between that many independent
execution slots, and ``run(batch, slot)`` may be called from ``streams`` threads at once, one per slot
(the runner does this to keep every core busy; small matrix products on one thread each waste less
time on synchronisation than one product split over all threads). With one stream, ``run`` uses every
thread for one batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from t2t_vit import ToolkitError
from t2t_vit.version_bridge import (MissingPackageError, installed, onnxruntime_session, openvino_core,
                                    openvino_cpu_config, require)

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "openvino")
DEFAULT_BACKEND = "openvino"  # the faster CPU path here (README, "Measured here")


ARM_MACHINES = ("aarch64", "arm64")
ARM_NOTE = ("on aarch64 the CPU runner defaults to onnxruntime, which runs wherever torch does; --backend openvino "
            "runs OpenVINO's Arm plugin, in f32 (pip install openvino: it needs glibc 2.35 and the CPU topology in /sys)")


def on_arm() -> bool:
    """Whether this is an Arm (aarch64) host, such as a Kunpeng server."""
    import platform

    return platform.machine().lower() in ARM_MACHINES


def choose_backend(requested: str | None, precision: str = "fp32") -> str:
    """The CPU runtime to use: ``requested`` if given (it must be installed); else onnxruntime for the npu-fp16
    emulation, and for fp32 :data:`DEFAULT_BACKEND`, or onnxruntime on aarch64 or where only it is installed
    (said in the log).

    Both runtimes are optional on an Ascend host; the error names the package to install.
    """
    if requested is not None:
        require(requested, f"--backend {requested}")
        return requested
    if precision != "fp32":
        require("onnxruntime", f"--precision {precision}")
        return "onnxruntime"
    if on_arm():
        require("onnxruntime", "the CPU runner on aarch64")
        log.info(ARM_NOTE)
        return "onnxruntime"
    if installed(DEFAULT_BACKEND):
        return DEFAULT_BACKEND
    if installed("onnxruntime"):
        log.info("running on onnxruntime: %s, the default CPU runtime, is not installed (pip install %s)",
                 DEFAULT_BACKEND, DEFAULT_BACKEND)
        return "onnxruntime"
    raise MissingPackageError(f"the CPU runner needs a CPU runtime, and neither {' nor '.join(BACKENDS)} is "
                              f"installed here: pip install {DEFAULT_BACKEND} (the faster here) or pip install "
                              f"onnxruntime")


def default_streams(threads: int) -> int:
    """Parallel requests by default: one per thread (benchmarks/bench_backends.py, README "CPU speed")."""
    return max(1, threads)


class BackendError(ToolkitError):
    """The model cannot be loaded or run by the backend."""


@dataclass
class InputSpec:
    name: str
    sample_shape: tuple[int, ...]  # without the batch axis
    dtype: np.dtype
    static_batch: int | None

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.sample_shape)) * self.dtype.itemsize


class Backend:
    """Interface: ``name``, ``version``, ``input``, ``output_names``, ``streams``, ``run(batch, slot=0)``."""

    name = ""
    streams = 1

    def __init__(self, model_path: str | os.PathLike, threads: int, batch_size: int, streams: int = 1) -> None:
        raise NotImplementedError

    @property
    def version(self) -> str:
        raise NotImplementedError

    def run(self, batch: np.ndarray, slot: int = 0) -> list[np.ndarray]:
        """The outputs of one batch; ``slot`` (0 .. streams-1) is the execution slot, one caller per slot."""
        raise NotImplementedError


def _check_streams(threads: int, streams: int) -> int:
    if threads < 1 or streams < 1:
        raise BackendError(f"threads and streams must be at least 1 (got {threads} and {streams})")
    if streams > threads:
        raise BackendError(f"{streams} streams need at least {streams} threads (got {threads})")
    return streams


def _dims(shape: Sequence, model_path) -> tuple[int | None, tuple[int, ...]]:
    """Split a model input shape into (static batch or None, per-sample shape); only the batch may vary."""
    batch, *rest = shape
    if any(not isinstance(dim, int) or dim <= 0 for dim in rest):
        raise BackendError(f"{model_path}: only the batch axis may be dynamic, input shape is {list(shape)}")
    return (batch if isinstance(batch, int) and batch > 0 else None), tuple(rest)


_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8}


class OnnxRuntimeBackend(Backend):
    """onnxruntime CPU; with ``precision`` npu-fp16 it runs the force_fp16 + keep_dtype emulation of the model
    (:mod:`t2t_vit.ascend.npu_precision`), keeping the nodes listed in the ``keep_dtype`` file in fp32."""

    name = "onnxruntime"

    def __init__(self, model_path, threads, batch_size, streams=1, precision="fp32", keep_dtype=None,
                 accumulate="fp32"):
        self.streams = _check_streams(threads, streams)
        require("onnxruntime", "the onnxruntime backend")
        source = str(model_path)
        if precision == "npu-fp16":  # a graph transform: fp16 rounding wherever ATC's force_fp16 would compute
            from t2t_vit.model.export import load_onnx
            from t2t_vit.ascend.npu_precision import emulate_force_fp16, read_keep_list

            emulated = emulate_force_fp16(load_onnx(model_path, "--model"), read_keep_list(keep_dtype), accumulate)
            source = emulated.SerializeToString()
        try:
            # a session runs concurrent calls safely: each stream gets its share of the threads
            self.session = onnxruntime_session(source, "the onnxruntime backend", threads // self.streams)
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise BackendError(f"onnxruntime cannot load {model_path}: {error}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"{model_path} has {len(inputs)} inputs; the runner feeds models with one input")
        static_batch, sample_shape = _dims(inputs[0].shape, model_path)
        self.input = InputSpec(inputs[0].name, sample_shape, np.dtype(_ONNX_DTYPES.get(inputs[0].type, np.float32)),
                               static_batch)
        self.output_names = [output.name for output in self.session.get_outputs()]

    @property
    def version(self):
        import onnxruntime

        return onnxruntime.__version__

    def run(self, batch, slot=0):
        return self.session.run(self.output_names, {self.input.name: batch})


class OpenVinoBackend(Backend):
    """OpenVINO CPU in f32 (the precision hint is pinned: some CPUs would otherwise pick bf16)."""

    name = "openvino"

    def __init__(self, model_path, threads, batch_size, streams=1, precision="fp32", keep_dtype=None,
                 accumulate="fp32"):
        if precision != "fp32":
            raise BackendError(f"--precision {precision} runs on onnxruntime (--backend onnxruntime): OpenVINO's f16 "
                               f"hint silently computes in f32 on CPUs without native fp16, so it cannot show what "
                               f"the NPU's fp16 computes")

        self.streams = _check_streams(threads, streams)
        core = openvino_core("the openvino backend")
        try:
            model = core.read_model(str(model_path))
        except Exception as error:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot read {model_path}: {error}") from None
        if len(model.inputs) != 1:
            raise BackendError(f"{model_path} has {len(model.inputs)} inputs; the runner feeds models with one input")
        port = model.inputs[0]
        shape = [dim.get_length() if dim.is_static else None for dim in port.get_partial_shape()]
        static_batch, sample_shape = _dims(shape, model_path)
        if static_batch is None:  # a static shape compiles to faster kernels
            model.reshape({port.any_name: [batch_size, *sample_shape]})
        try:
            self.compiled = core.compile_model(model, "CPU", openvino_cpu_config(threads, self.streams))
        except Exception as error:  # noqa: BLE001
            raise BackendError(f"OpenVINO cannot compile {model_path}: {error}") from None
        precision_hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        if "32" not in precision_hint:  # never a silent f16 (Arm CPUs with fp16) or bf16
            raise BackendError(f"OpenVINO compiled {model_path} for {precision_hint}, not the f32 asked for")
        compiled_streams = int(self.compiled.get_property("NUM_STREAMS"))
        if compiled_streams != self.streams:
            raise BackendError(f"OpenVINO gave {compiled_streams} streams where {self.streams} were asked for")
        self.requests = [self.compiled.create_infer_request() for _ in range(self.streams)]
        self.input = InputSpec(port.any_name, sample_shape, np.dtype(port.get_element_type().to_dtype()), static_batch)
        self.output_names = [output.any_name for output in self.compiled.outputs]

    @property
    def version(self):
        import openvino

        return openvino.__version__

    def run(self, batch, slot=0):
        results = self.requests[slot].infer({0: batch})
        return [np.array(results[output]) for output in self.compiled.outputs]


def load_backend(name: str, model_path: str | os.PathLike, threads: int, batch_size: int,
                 streams: int = 1, precision: str = "fp32", keep_dtype: str | os.PathLike | None = None,
                 accumulate: str = "fp32") -> Backend:
    """Build backend ``name`` for ``model_path`` with ``threads`` threads shared by ``streams`` slots.

    ``precision`` npu-fp16 (onnxruntime only) runs the NPU's force_fp16 emulation, keeping the nodes of
    the ``keep_dtype`` file in fp32 (none without one: ATC without --keep_dtype); ``accumulate`` fp16 adds
    the pessimistic bracket (reductions accumulate in fp16 too).
    """
    classes = {"onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend}
    if name not in classes:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return classes[name](model_path, threads, batch_size, streams, precision, keep_dtype, accumulate)
