"""What an .om computes under ATC's force_fp16 with --keep_dtype, shown on the CPU as a graph transform (onnx + numpy).

ATC's default precision mode on inference chips, force_fp16, runs every operator it can in fp16; the
operators listed in the --keep_dtype file keep fp32 (FACTS 3, 4c). The emulation rewrites an ONNX
graph so that onnxruntime, computing in fp32, sees the same roundings:

- every float output of every operator that is not kept is rounded to fp16 (a Cast to fp16 and back);
- the float constants and initialisers such an operator reads are rounded to fp16 (a kept operator
  reading the same initialiser gets the fp32 original), and so is a float graph input it reads (the
  cast ATC inserts at the fp32 -> fp16 boundary);
- a kept operator's fp32 output is rounded to fp16 where an fp16 operator reads it (ATC's fp32 ->
  fp16 boundary cast); kept operators compute in fp32 on what they are given: a value coming from an
  fp16 operator is already an fp16 value, which fp32 holds exactly (the fp16 -> fp32 boundary cast).

Accumulation inside an operator stays fp32 here (the cube unit accumulates MatMul in fp32; whether the
vector unit's reductions do is not documented): the result is rounded once, at the operator's output.
What this cannot show: the NPU's own kernels, fusions and accumulation order.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from t2t_vit import ToolkitError

log = logging.getLogger(__name__)

EMULATION = "force_fp16+keep_dtype/1"
PRECISIONS = ("fp32", "npu-fp16")
OP_TYPE_PREFIX = "OpType::"
_SUFFIX = "__npu"


class PrecisionError(ToolkitError):
    """A keep list or graph the emulation cannot use."""


def read_keep_list(path: str | os.PathLike | None) -> list[str]:
    """The entries of a keep_dtype file (node names or ``OpType::TYPE``), or none without a file."""
    if path is None:
        return []
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise PrecisionError(f"cannot read --keep-dtype {path}: {error.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def keep_list_hash(entries: Sequence[str]) -> str:
    return hashlib.sha256("".join(f"{entry}\n" for entry in entries).encode()).hexdigest()[:16]


def kept_nodes(graph, entries: Iterable[str]) -> set[str]:
    """The names of the nodes a keep list keeps; entries naming no node of the graph are an error."""
    names = {node.name for node in graph.node}
    op_types = {entry[len(OP_TYPE_PREFIX):] for entry in entries if entry.startswith(OP_TYPE_PREFIX)}
    listed = {entry for entry in entries if not entry.startswith(OP_TYPE_PREFIX)}
    unknown = sorted(listed - names)
    if unknown:
        raise PrecisionError(f"the keep list names {len(unknown)} node(s) this graph does not have: "
                             f"{', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''} (was it made by "
                             f"gen_cfg.py from this export?)")
    return listed | {node.name for node in graph.node if node.op_type in op_types}


def emulate_force_fp16(model, entries: Sequence[str] = ()):
    """A copy of ``model`` (an onnx ModelProto) that computes what force_fp16 + keep_dtype(``entries``) computes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    keep = kept_nodes(graph, entries)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {value.name: value.type.tensor_type.elem_type
             for value in [*inferred.value_info, *inferred.input, *inferred.output]}
    initializers = {init.name: init for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input}
    kept_float_outputs = {name for node in graph.node if node.name in keep for name in node.output
                          if types.get(name) == TensorProto.FLOAT}
    rounded: dict[str, str] = {}
    head: list = []  # casts of graph inputs, first in the graph
    nodes: list = []
    unknown_types = 0

    def rounded_source(name: str) -> str:
        """An fp16 operator's view of an fp32 tensor: ATC's boundary cast, or a rounded initialiser."""
        if name not in rounded:
            rounded[name] = f"{name}{_SUFFIX}_fp16"
            if name in initializers:
                values = numpy_helper.to_array(initializers[name])
                graph.initializer.append(numpy_helper.from_array(
                    values.astype(np.float16).astype(np.float32), rounded[name]))
            else:  # a graph input (cast first) or a kept node's output (cast where it is first read)
                (head if name in graph_inputs else nodes).extend(
                    _round_trip(helper, TensorProto, name, rounded[name], f"{name}{_SUFFIX}/round"))
        return rounded[name]

    for node in graph.node:
        if node.name in keep:
            nodes.append(node)
            continue
        for index, name in enumerate(node.input):
            is_float_init = name in initializers and initializers[name].data_type == TensorProto.FLOAT
            if (is_float_init or name in kept_float_outputs
                    or (name in graph_inputs and types.get(name) == TensorProto.FLOAT)):
                node.input[index] = rounded_source(name)
        nodes.append(node)
        for index, name in enumerate(node.output):
            if not name:
                continue
            if name not in types:
                unknown_types += 1
                continue
            if types[name] != TensorProto.FLOAT:
                continue
            raw = f"{name}{_SUFFIX}_f32"
            node.output[index] = raw
            nodes.extend(_round_trip(helper, TensorProto, raw, name, f"{node.name or name}{_SUFFIX}/round{index}"))
    if unknown_types:
        log.warning("%d node outputs have no inferred type and were left unrounded", unknown_types)
    del graph.node[:]
    graph.node.extend(head + nodes)
    consumed = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
    unused = [init for init in graph.initializer if init.name in rounded and init.name not in consumed]
    for init in unused:  # every reader now takes the rounded copy
        graph.initializer.remove(init)
    for key, value in (("t2t_vit.npu_emulation", EMULATION), ("t2t_vit.npu_keep_hash", keep_list_hash(entries)),
                       ("t2t_vit.npu_kept_nodes", str(len(keep)))):
        model.metadata_props.add(key=key, value=value)
    return model


def _round_trip(helper, TensorProto, source: str, target: str, name: str) -> list:
    """Cast ``source`` to fp16 and back into ``target``: the value an fp16 operator would hand on."""
    half = f"{target}{_SUFFIX}_f16" if not target.endswith(f"{_SUFFIX}_fp16") else f"{target}_f16"
    return [helper.make_node("Cast", [source], [half], name=f"{name}/to_fp16", to=TensorProto.FLOAT16),
            helper.make_node("Cast", [half], [target], name=f"{name}/to_fp32", to=TensorProto.FLOAT)]
