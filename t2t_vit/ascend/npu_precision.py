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

The uint8 export's normalisation (the ``/normalise_input/`` nodes) stands for AIPP: it computes in fp32
and its output, the normalised image, is rounded to fp16 for every reader, as AIPP hands fp16 to the
network. So the uint8 export on uint8 bins emulates what the float export on float32 bins does. (AIPP's
own arithmetic, with its constants in fp16, is not modelled.)

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
ACCUMULATIONS = ("fp32", "fp16")
FP16_REDUCTIONS = ("ReduceSum", "ReduceMean", "Softmax")
LANES = 16  # the fp16 bracket's vector lanes: each sums its share in order, then the lanes are added pairwise
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


def emulate_force_fp16(model, entries: Sequence[str] = (), accumulate: str = "fp32"):
    """A copy of ``model`` (an onnx ModelProto) that computes what force_fp16 + keep_dtype(``entries``) computes.

    ``accumulate`` fp16 is the pessimistic bracket: the reductions that are not kept (ReduceSum,
    ReduceMean, Softmax's sum) also accumulate in fp16, as :func:`_fp16_reduction` models it. MatMul and
    Gemm run on the cube unit, which accumulates in fp32, in both brackets.
    """
    if accumulate not in ACCUMULATIONS:
        raise PrecisionError(f"--npu-accumulate {accumulate} is not one of {', '.join(ACCUMULATIONS)}")
    import onnx

    emulation = _Emulation(onnx.ModelProto.FromString(model.SerializeToString()), entries, accumulate)
    for node in list(emulation.graph.node):
        emulation.rewrite(node)
    return emulation.finish()


class _Emulation:
    """The rewrite of one graph: the fp16 view of each fp32 tensor is made once (``rounded``), graph inputs' casts
    go first (``head``), every other node in graph order (``nodes``)."""

    def __init__(self, model, entries: Sequence[str], accumulate: str) -> None:
        import onnx
        from onnx import TensorProto

        self.model, self.graph, self.entries, self.accumulate = model, model.graph, list(entries), accumulate
        self.keep = kept_nodes(self.graph, entries)
        inferred = onnx.shape_inference.infer_shapes(model).graph
        values = [*inferred.value_info, *inferred.input, *inferred.output]
        self.types = {value.name: value.type.tensor_type.elem_type for value in values}
        self.shapes = {value.name: [dim.dim_value if dim.HasField("dim_value") else None
                                    for dim in value.type.tensor_type.shape.dim] for value in values
                       if value.type.tensor_type.HasField("shape")}
        if accumulate == "fp16":  # the reductions' axis lengths, where ONNX shape inference loses them (after Im2Col)
            self.shapes.update(runtime_shapes(model, self.types))
        self.initializers = {init.name: init for init in self.graph.initializer}
        self.graph_inputs = {value.name for value in self.graph.input}
        self.kept_float_outputs = {name for node in self.graph.node if node.name in self.keep for name in node.output
                                   if self.types.get(name) == TensorProto.FLOAT}
        self.rounded: dict[str, str] = {}
        self.head: list = []
        self.nodes: list = []
        self.unknown_types = 0

    def rounded_source(self, name: str) -> str:
        """An fp16 operator's view of an fp32 tensor: ATC's boundary cast, or a rounded initialiser."""
        from onnx import numpy_helper

        if name not in self.rounded:
            self.rounded[name] = f"{name}{_SUFFIX}_fp16"
            if name in self.initializers:
                values = numpy_helper.to_array(self.initializers[name])
                self.graph.initializer.append(numpy_helper.from_array(
                    values.astype(np.float16).astype(np.float32), self.rounded[name]))
            else:  # a graph input (cast first) or a kept node's output (cast where it is first read)
                (self.head if name in self.graph_inputs else self.nodes).extend(
                    _round_trip(name, self.rounded[name], f"{name}{_SUFFIX}/round"))
        return self.rounded[name]

    def rewrite(self, node) -> None:
        """Append ``node`` as force_fp16 runs it: kept as it is, or reading fp16 views and rounding its outputs."""
        from onnx import TensorProto

        from t2t_vit.model.export import NORMALISE_PREFIX, NORMALISED_NAME

        if node.name.startswith(NORMALISE_PREFIX):  # the uint8 export's normalisation: AIPP, fp32 inside
            self.nodes.append(node)
            return
        for index, name in enumerate(node.input):
            if name == NORMALISED_NAME:  # AIPP's output reaches every reader, kept or not, in fp16
                node.input[index] = self.rounded_source(name)
        if node.name in self.keep:
            self.nodes.append(node)
            return
        input_shape = self.shapes.get(node.input[0]) if node.input else None  # before the input is renamed
        for index, name in enumerate(node.input):
            is_float_init = name in self.initializers and self.initializers[name].data_type == TensorProto.FLOAT
            if (is_float_init or name in self.kept_float_outputs
                    or (name in self.graph_inputs and self.types.get(name) == TensorProto.FLOAT)):
                node.input[index] = self.rounded_source(name)
        casts = self.round_outputs(node)
        replacement = None
        if self.accumulate == "fp16" and node.op_type in FP16_REDUCTIONS:
            replacement = _fp16_reduction(node, input_shape)
            if replacement is None:
                log.warning("%s (%s): its fp16 accumulation cannot be modelled (dynamic or several axes); it "
                            "accumulates in fp32", node.name, node.op_type)
        self.nodes.extend(replacement or [node])
        self.nodes.extend(casts)

    def round_outputs(self, node) -> list:
        """Rename ``node``'s float outputs to raw fp32 tensors; the returned casts round them into the old names."""
        from onnx import TensorProto

        casts = []
        for index, name in enumerate(node.output):
            if not name:
                continue
            if name not in self.types:
                self.unknown_types += 1
                continue
            if self.types[name] != TensorProto.FLOAT:
                continue
            raw = f"{name}{_SUFFIX}_f32"
            node.output[index] = raw
            casts.extend(_round_trip(raw, name, f"{node.name or name}{_SUFFIX}/round{index}"))
        return casts

    def finish(self):
        """The rewritten model: the new node list, initialisers no reader needs dropped, the emulation recorded."""
        if self.unknown_types:
            log.warning("%d node outputs have no inferred type and were left unrounded", self.unknown_types)
        graph = self.graph
        del graph.node[:]
        graph.node.extend(self.head + self.nodes)
        consumed = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
        unused = [init for init in graph.initializer if init.name in self.rounded and init.name not in consumed]
        for init in unused:  # every reader now takes the rounded copy
            graph.initializer.remove(init)
        for key, value in (("t2t_vit.npu_emulation", EMULATION),
                           ("t2t_vit.npu_keep_hash", keep_list_hash(self.entries)),
                           ("t2t_vit.npu_kept_nodes", str(len(self.keep))),
                           ("t2t_vit.npu_accumulate", self.accumulate)):
            self.model.metadata_props.add(key=key, value=value)
        return self.model


def with_float_outputs(model, names: Iterable[str]):
    """A copy of ``model`` whose graph also outputs the float tensors ``names`` (initialisers and names it already
    outputs are left out), so that a session hands back intermediate values."""
    import onnx
    from onnx import TensorProto, helper

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    present = {value.name for value in probe.graph.output} | {init.name for init in probe.graph.initializer}
    wanted = [name for name in dict.fromkeys(names) if name and name not in present]
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in wanted)
    return probe


def runtime_shapes(model, types: dict[str, int]) -> dict[str, list[int | None]]:
    """Every float tensor's shape, read by running the model on zeros at batch 1 and 2 in onnxruntime; a dimension
    that differs between the two is the dynamic batch (None). Only the fp16 bracket needs it."""
    from onnx import TensorProto

    from t2t_vit.version_bridge import onnxruntime_session

    names = [name for node in model.graph.node for name in node.output if types.get(name) == TensorProto.FLOAT]
    session = onnxruntime_session(with_float_outputs(model, names), "the fp16-accumulation bracket")
    graph_input = session.get_inputs()[0]
    seen = []
    for batch in (1, 2):
        feed = np.zeros([batch, *graph_input.shape[1:]], dtype=np.uint8 if "uint8" in graph_input.type else np.float32)
        outputs = session.run(None, {graph_input.name: feed})
        seen.append({output.name: list(value.shape) for output, value in zip(session.get_outputs(), outputs)})
    return {name: [a if a == b else None for a, b in zip(seen[0][name], seen[1][name])]
            for name in seen[0] if len(seen[0][name]) == len(seen[1][name])}


def _reduction_axis(node, shape) -> tuple[int, int, bool] | None:
    """``(axis, its static length, keepdims)`` of a one-axis reduction (or last-axis Softmax) whose shape allows the
    fp16 bracket; None when it does not."""
    from onnx import helper

    if shape is None or len(node.input) != 1:  # ReduceSum's axes as an input (opset 13) is not modelled
        return None
    rank = len(shape)
    attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
    axes = [attributes.get("axis", 1)] if node.op_type == "Softmax" else list(attributes.get("axes", []))  # opset 11
    if len(axes) != 1 or rank == 0:
        return None
    axis = axes[0] % rank
    if node.op_type == "Softmax" and axis != rank - 1:
        return None  # opset-11 Softmax flattens from its axis; only the last axis is a plain row softmax
    if shape[axis] is None or sum(dim is None for dim in shape) > 1:
        return None
    return axis, shape[axis], bool(attributes.get("keepdims", 1)) or node.op_type == "Softmax"


def _fp16_reduction(node, shape) -> list | None:
    """``node`` (ReduceSum, ReduceMean or Softmax over one axis of static length n) with its sums accumulated in
    fp16: LANES lanes each add their n / LANES values in order, rounding to fp16 after every addition, then
    the lanes are added pairwise, rounding again; a mean then divides in fp16. The nodes end in
    ``node.output[0]``; None when the axis or the shape is not static enough to model."""
    found = _reduction_axis(node, shape)
    if found is None:
        return None
    axis, length, keepdims = found
    build = _NodeBuilder(f"{node.name}{_SUFFIX}/acc16")
    source, rank = node.input[0], len(shape)
    if node.op_type == "Softmax":
        peak = build.op("ReduceMax", [source], axes=[axis], keepdims=1)
        source = build.round16(build.op("Exp", [build.round16(build.op("Sub", [source, peak]))]))
    chunks = -(-length // LANES)
    padded = source
    if chunks * LANES != length:
        pads = [0] * (2 * rank)
        pads[rank + axis] = chunks * LANES - length
        padded = build.op("Pad", [source, build.constant(pads, np.int64), build.constant(0.0, np.float32)])
    split_shape = [-1 if dim is None else dim for dim in shape[:axis]] + [chunks, LANES] + \
        [-1 if dim is None else dim for dim in shape[axis + 1:]]
    blocks = build.op("Reshape", [padded, build.constant(split_shape, np.int64)])
    total = build.op("Gather", [blocks, build.constant(0, np.int64)], axis=axis)
    for index in range(1, chunks):  # each lane adds its values in order, in fp16
        total = build.round16(build.op("Add", [total, build.op("Gather", [blocks, build.constant(index, np.int64)],
                                                                 axis=axis)]))
    lanes = LANES
    while lanes > 1:  # then the lanes pairwise
        half = lanes // 2
        low = build.op("Slice", [total, *(build.constant(v, np.int64) for v in ([0], [half], [axis]))])
        high = build.op("Slice", [total, *(build.constant(v, np.int64) for v in ([half], [lanes], [axis]))])
        total, lanes = build.round16(build.op("Add", [low, high])), half
    if node.op_type == "ReduceMean":
        total = build.round16(build.op("Div", [total, build.constant(np.float16(length).astype(np.float32),
                                                                        np.float32)]))
    if node.op_type == "Softmax":
        build.final("Div", [source, total], node.output[0], "div")
    elif keepdims:
        build.final("Identity", [total], node.output[0], "out")
    else:
        build.final("Squeeze", [total], node.output[0], "out", axes=[axis])
    return build.made


class _NodeBuilder:
    """Makes uniquely named nodes under ``prefix`` for one rewritten operator."""

    def __init__(self, prefix: str) -> None:
        self.prefix, self.made, self.counter = prefix, [], 0

    def tensor(self, tag: str) -> str:
        self.counter += 1
        return f"{self.prefix}/{tag}_{self.counter}"

    def constant(self, values, dtype) -> str:
        from onnx import helper, numpy_helper

        name = self.tensor("const")
        self.made.append(helper.make_node("Constant", [], [name], name=name,
                                          value=numpy_helper.from_array(np.asarray(values, dtype=dtype), name)))
        return name

    def round16(self, source: str) -> str:
        target = self.tensor("r")
        self.made.extend(_round_trip(source, target, target))
        return target

    def op(self, op_type: str, inputs: list[str], **kwargs) -> str:
        from onnx import helper

        target = self.tensor(op_type.lower())
        self.made.append(helper.make_node(op_type, inputs, [target], name=target, **kwargs))
        return target

    def final(self, op_type: str, inputs: list[str], output: str, tag: str, **kwargs) -> None:
        from onnx import helper

        self.made.append(helper.make_node(op_type, inputs, [output], name=f"{self.prefix}/{tag}", **kwargs))


def _round_trip(source: str, target: str, name: str) -> list:
    """Cast ``source`` to fp16 and back into ``target``: the value an fp16 operator would hand on."""
    from t2t_vit.version_bridge import fp16_round_trip_nodes

    return fp16_round_trip_nodes(source, target, name, half=f"{target}{_SUFFIX}_f16")


# ------------------------------------------------------------------------------- the smallest keep set

GROUPS = ("normaliser", "D and y sums", "token sums", "features")


def keep_groups(graph, subgraphs) -> dict[str, list[str]]:
    """The structural groups a keep set is searched in: the performers' four (:func:`performer_groups`), or one per
    tokens-to-token softmax attention (its Softmax)."""
    if subgraphs and all(subgraph.kind == "softmax" for subgraph in subgraphs):
        return {f"softmax {index + 1}": list(subgraph.nodes) for index, subgraph in enumerate(subgraphs)}
    return performer_groups(graph, subgraphs)


def performer_groups(graph, subgraphs) -> dict[str, list[str]]:
    """The keep set of each performer, cut into groups that make sense, from the graph's structure.

    - normaliser: the final Div, the Add of its denominator and that Add's constant (eps);
    - features: everything the Exp nodes depend on, the Exps and what divides them (the random
      features prm_exp(k), prm_exp(q));
    - token sums: the sums over the tokens (sum_t kp, v^T kp) and the products feeding them;
    - D and y sums: the rest, the sums over the features that make D and y.
    """
    by_name = {node.name: node for node in graph.node}
    producer = {output: node.name for node in graph.node for output in node.output}
    groups: dict[str, list[str]] = {name: [] for name in GROUPS}
    for subgraph in subgraphs:
        members = set(subgraph.nodes)

        def ancestors(names: set[str]) -> set[str]:
            found, stack = set(), list(names)
            while stack:
                for tensor in by_name[stack.pop()].input:
                    source = producer.get(tensor)
                    if source in members and source not in found:
                        found.add(source)
                        stack.append(source)
            return found

        div = by_name[subgraph.div]
        normaliser = {div.name}
        denominator = producer.get(div.input[1])
        if denominator in members and by_name[denominator].op_type == "Add":
            normaliser.add(denominator)
            normaliser |= {producer[t] for t in by_name[denominator].input
                           if producer.get(t) in members and by_name[producer[t]].op_type == "Constant"}
        exps = {name for name in members if by_name[name].op_type == "Exp"}
        exp_outputs = {tensor for name in exps for tensor in by_name[name].output}
        scaled = {name for name in members if set(by_name[name].input) & exp_outputs
                  and by_name[name].op_type in ("Div", "Mul")}
        features = exps | ancestors(exps) | scaled | {producer[t] for name in scaled for t in by_name[name].input
                                                      if producer.get(t) in members
                                                      and by_name[producer[t]].op_type == "Constant"}
        rest = members - normaliser - features
        feeding_normaliser = {producer.get(t) for name in normaliser for t in by_name[name].input}
        token_sums = {name for name in rest if by_name[name].op_type == "ReduceSum" and name not in feeding_normaliser}
        token_sums |= ancestors(token_sums) & rest
        for group, names in (("normaliser", normaliser), ("features", features), ("token sums", token_sums),
                             ("D and y sums", rest - token_sums)):
            groups[group] += [name for name in subgraph.nodes if name in names]  # in graph order
    return groups
