"""Every difference between the supported versions of Python and of the libraries, and which optional ones are here.

The toolkit runs from the seed's environment (Python 3.7, torch 1.12, numpy 1.21, onnx 1.12, onnxruntime
1.14, OpenVINO 2023.1, timm 0.9.12) to today's pinned set (``requirements.txt``). Each difference is one
function here that every caller goes through; each chooses by feature detection (``hasattr``,
``inspect.signature``), never by parsing a version string. Nothing here is imported at start-up that a
caller does not need: torch, onnx and the runtimes are imported inside the function that uses them.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import io
import os
import pickle
import types
from typing import Any, Iterable, Mapping

import numpy as np

from t2t_vit import ToolkitError

# Globals a pickled state dict or training checkpoint needs besides the caller's allow-list: containers,
# the tensor and parameter rebuilders, and storages (torch resolves storage classes itself on torch < 2).
_TORCH_REBUILDERS = ("_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state")
_PLAIN_GLOBALS = {("collections", "OrderedDict"), ("_codecs", "encode"), ("builtins", "set"),
                  ("builtins", "frozenset"), ("torch", "Size")}


# ----------------------------------------------------------------------------------------------- Python


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None (``importlib.metadata`` arrived in Python 3.8)."""
    try:
        from importlib import metadata
    except ImportError:  # Python 3.7: the backport, which pytest, timm and onnxruntime bring along
        try:
            import importlib_metadata as metadata
        except ImportError:
            return None
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Parse a TOML file (``tomllib`` from Python 3.11, the ``tomli`` backport before)."""
    try:
        import tomllib
    except ImportError:
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


# ------------------------------------------------------------------------------------------------ torch


def export_onnx_torchscript(model, args: tuple, path: str, **kwargs: Any) -> None:
    """``torch.onnx.export`` with the TorchScript exporter: ``dynamo=False`` where the keyword exists (torch >= 2.5,
    whose default turns to the dynamo exporter), nothing on older torch, which has only the TorchScript one."""
    import torch

    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False
    torch.onnx.export(model, args, path, **kwargs)


def torch_has_safe_globals() -> bool:
    """True where ``torch.load(weights_only=True)`` takes a per-call allow-list (``serialization.safe_globals``,
    torch >= 2.5); older torch has no ``weights_only`` (1.12) or no allow-list (1.13 to 2.4)."""
    import torch

    return hasattr(torch.serialization, "safe_globals")


def load_weights_only(path: str | os.PathLike, allowed_globals: Iterable[type]) -> Any:
    """Unpickle a torch checkpoint allowing only tensors, containers, plain values and ``allowed_globals``.

    Where torch has the per-call allow-list, this is ``torch.load(weights_only=True)`` inside
    ``safe_globals``; elsewhere the same guarantee comes from :func:`load_restricted`. Either way a pickle
    that names any other global raises ``pickle.UnpicklingError`` whose message holds
    ``Unsupported global: GLOBAL module.name``.
    """
    import torch

    allowed_globals = list(allowed_globals)
    if torch_has_safe_globals():
        with torch.serialization.safe_globals(allowed_globals):
            return torch.load(path, map_location="cpu", weights_only=True)
    return load_restricted(path, allowed_globals)


def load_restricted(path: str | os.PathLike, allowed_globals: Iterable[type]) -> Any:
    """``torch.load`` through an unpickler that resolves only an allow-list of globals (any torch version).

    torch >= 2.6 defaults to ``weights_only=True``, which refuses a custom ``pickle_module``; the allow-list
    here is at least as strict, so that default is turned off explicitly where the keyword exists.
    """
    import torch

    kwargs = {"weights_only": False} if "weights_only" in inspect.signature(torch.load).parameters else {}
    return torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module(allowed_globals), **kwargs)


def _restricted_pickle_module(allowed_globals: Iterable[type]) -> types.ModuleType:
    import torch

    allowed = {(cls.__module__, cls.__qualname__): cls for cls in allowed_globals}

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in allowed:
                return allowed[module, name]
            if module == "torch._utils" and name in _TORCH_REBUILDERS and hasattr(torch._utils, name):
                return getattr(torch._utils, name)
            if module == "torch" and name.endswith("Storage") and isinstance(getattr(torch, name, None), type):
                return getattr(torch, name)
            if (module, name) in _PLAIN_GLOBALS:
                return super().find_class(module, name)
            raise pickle.UnpicklingError(f"Unsupported global: GLOBAL {module}.{name} is not allowed")

    def load(file: io.BufferedIOBase, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    module = types.ModuleType("t2t_vit_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = load
    module.__dict__.update(UnpicklingError=pickle.UnpicklingError)
    return module


# ------------------------------------------------------------------------------------------------- onnx


def onnx_ir_version_for(opset: int) -> int:
    """The IR version a model of default-domain ``opset`` needs, as the TorchScript exporter sets it (opset 11 -> 6).

    Models the toolkit builds take this, never the installed onnx's newest IR: ATC parses with onnx 1.12
    (IR <= 8), and an older onnxruntime refuses a newer IR.
    """
    from onnx import helper

    return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])


def make_onnx_model(graph, opset: int, **kwargs: Any):
    """``onnx.helper.make_model`` with the IR version of ``opset`` (see :func:`onnx_ir_version_for`)."""
    from onnx import helper

    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=onnx_ir_version_for(opset), **kwargs)


# ------------------------------------------------------------------------------------------ the runtimes

class MissingPackageError(ToolkitError):
    """An optional package that this action needs is not installed."""


def require(module: str, purpose: str) -> types.ModuleType:
    """Import optional ``module`` (onnxruntime, openvino, matplotlib: each installed under its own name), or raise a
    one-line error naming the package to install and what needs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackageError(f"{purpose} needs {module}, which is not installed here: "
                                  f"pip install {module}") from None


def installed(module: str) -> bool:
    """Whether optional ``module`` can be imported (it is imported: a broken install counts as missing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def onnxruntime_session(model, purpose: str, threads: int | None = None):
    """An onnxruntime CPU session for ``model`` (a path, bytes or a ModelProto), fully optimised: ``threads``
    intra-op threads (onnxruntime's choice when None) and one inter-op thread."""
    onnxruntime = require("onnxruntime", purpose)
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    disabled = [] if onnxruntime_layer_norm_is_precise() else ["LayerNormFusion"]
    return onnxruntime.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                        providers=["CPUExecutionProvider"],
                                        **({"disabled_optimizers": disabled} if disabled else {}))


# A row with a large mean and a small spread, as a smooth image region's 7x7x3 patch is for the tokens-to-token
# module's first LayerNorm: E[x^2] - E[x]^2 in float32 loses the variance there, x - mean first does not.
_LAYER_NORM_PROBE = (1.5 + 1e-3 * np.sin(np.arange(147, dtype=np.float64))).astype(np.float32)[None]


@functools.lru_cache(maxsize=None)
def onnxruntime_layer_norm_is_precise() -> bool:
    """Whether the installed onnxruntime's fused LayerNormalization keeps the precision of the exported
    ReduceMean / Sub / Pow / ReduceMean / Sqrt / Div subgraph on a row whose mean dwarfs its spread. onnxruntime
    1.14 (the seed's) does not: its fusion made T2T-ViT's logits on real images 1.5e-4 from PyTorch's (2e-6
    with the fusion off); the runtime's own, unfused graph is kept there (``disabled_optimizers``)."""
    from onnx import TensorProto, helper, numpy_helper

    onnxruntime = require("onnxruntime", "the ONNX model")
    width = _LAYER_NORM_PROBE.shape[1]
    constants = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32),
                 "scale": np.ones(width, np.float32), "bias": np.zeros(width, np.float32)}
    nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[-1]),
             helper.make_node("Sub", ["x", "mean"], ["centred"]),
             helper.make_node("Pow", ["centred", "two"], ["squared"]),
             helper.make_node("ReduceMean", ["squared"], ["variance"], axes=[-1]),
             helper.make_node("Add", ["variance", "eps"], ["shifted"]),
             helper.make_node("Sqrt", ["shifted"], ["std"]),
             helper.make_node("Div", ["centred", "std"], ["normed"]),
             helper.make_node("Mul", ["normed", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "bias"], ["y"])]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, width])],
                              [numpy_helper.from_array(value, name) for name, value in constants.items()])
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(make_onnx_model(graph, 11).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    (fused,) = session.run(None, {"x": _LAYER_NORM_PROBE})
    row = _LAYER_NORM_PROBE.astype(np.float64)
    exact = (row - row.mean()) / np.sqrt(row.var() + 1e-5)
    return bool(np.max(np.abs(fused - exact)) < 1e-3)


@functools.lru_cache(maxsize=None)
def onnxruntime_keeps_fp16_round_trip() -> bool:
    """Whether the installed onnxruntime keeps a Cast fp32 -> fp16 -> fp32 pair. Before 1.17 its mandatory
    RemoveDuplicateCastTransformer drops the pair as if it were lossless, with every optimisation off too
    (microsoft/onnxruntime issue 8787, fixed by pull 17953); probed on a two-node model whose value fp16 flushes."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["x"], ["half"], to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["half"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    session = onnxruntime_session(make_onnx_model(graph, 11), "the NPU fp16 emulation")
    (flushed,) = session.run(None, {"x": np.array([1e-12], dtype=np.float32)})
    return float(flushed[0]) == 0.0


def fp16_round_trip_nodes(source: str, target: str, name: str, half: str) -> list:
    """Nodes that round fp32 ``source`` to fp16 (tensor ``half``) and back into ``target``. Where onnxruntime
    would drop a bare Cast pair (:func:`onnxruntime_keeps_fp16_round_trip`), a Reshape of the fp16 tensor to its
    own shape stands between the casts: no optimiser of those versions removes it, and it moves no data."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", [source], [half], name=f"{name}/to_fp16", to=TensorProto.FLOAT16)]
    if not onnxruntime_keeps_fp16_round_trip():
        shape, held = f"{half}_shape", f"{half}_held"
        nodes += [helper.make_node("Shape", [half], [shape], name=f"{name}/shape"),
                  helper.make_node("Reshape", [half, shape], [held], name=f"{name}/hold")]
        half = held
    return nodes + [helper.make_node("Cast", [half], [target], name=f"{name}/to_fp32", to=TensorProto.FLOAT)]


def openvino_core(purpose: str):
    """An OpenVINO ``Core`` (top-level ``openvino.Core`` from 2023.1 on; ``openvino.runtime`` before, gone in 2026)."""
    openvino = require("openvino", purpose)
    if hasattr(openvino, "Core"):
        return openvino.Core()
    from openvino.runtime import Core

    return Core()


def openvino_ops(purpose: str) -> types.ModuleType:
    """OpenVINO's operation set 8 builders (``openvino.opset8`` from 2024; ``openvino.runtime.opset8`` before)."""
    require("openvino", purpose)
    try:
        return importlib.import_module("openvino.opset8")
    except ImportError:
        return importlib.import_module("openvino.runtime.opset8")


def openvino_shapes(node) -> tuple[list[int], list[int]]:
    """The static shapes of an OpenVINO node's first input and first output (``get_input_shape`` is not in 2023.1)."""
    return list(node.input_value(0).get_shape()), list(node.output(0).get_shape())


def openvino_cpu_config(threads: int, streams: int) -> Mapping[str, Any]:
    """The CPU plug-in's settings by their string names, which every supported OpenVINO accepts: f32 pinned
    (some CPUs would otherwise pick bf16), latency for one stream and throughput for more."""
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT", "NUM_STREAMS": streams}
