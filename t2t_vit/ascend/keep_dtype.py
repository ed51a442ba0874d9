"""Finding the attention subgraphs in an ONNX graph that ATC keeps in fp32, for its ``--keep_dtype`` file.

Performer variants (every published T2T-ViT but ``t2t_vit_t_*``):

A performer attention starts at the Split that cuts the kqv projection into k, q and v (a Split with
three outputs) and ends at the Div that normalises the attention output by D: the first Div, in the
graph's topological order, that depends on all three of k, q and v. (The other Divs inside, the
``/ sqrt(m)`` of the random features, depend on k or on q alone.) The subgraph is every node that
lies on a path from the Split to that Div, plus the constant nodes feeding them: what ATC must keep
in fp32. It holds the random features' Exp nodes (which tells it from a LayerNorm's Div that a softmax
attention's q, k and v also reach).

Transformer-token variants (``t2t_vit_t_*``): their tokens-to-token module has one-head softmax attention
over 3,136 and 784 tokens (at 224), the widest softmaxes of the model. Those are the Softmax nodes that the
class-token Concat depends on (the Concat one of whose inputs is the Expand of an initializer, the class
token); the transformer blocks' softmaxes come after it. The proposal keeps these Softmax nodes: how much
fp16 costs there was measured, not assumed (``gen_cfg.py --minimize``; README "Every variant"). Only the
``onnx`` package is used.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass

from t2t_vit import ToolkitError

log = logging.getLogger(__name__)


class KeepDtypeError(ToolkitError):
    """The graph has no tokens-to-token attention that ATC could keep in fp32."""


@dataclass
class PerformerSubgraph:
    """One attention's keep set: a performer's (``split`` .. ``div``), or a softmax attention's (``kind`` softmax:
    ``split`` is the MatMul of the scores, ``div`` the Softmax, the one node kept)."""

    split: str
    div: str
    nodes: list[str]  # in graph order, Split first, Div last
    kind: str = "performer"


def find_performer_subgraphs(graph) -> list[PerformerSubgraph]:
    """Every (three-output Split -> normalising Div) subgraph of an ``onnx.GraphProto``, in graph order."""
    nodes = list(graph.node)
    consumers: dict[str, list[int]] = defaultdict(list)
    producer: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers[name].append(index)
        for name in node.output:
            producer[name] = index
    constant_only = _constant_only(nodes, {init.name for init in graph.initializer})

    def descendants(tensors) -> set[int]:
        seen: set[int] = set()
        stack = [index for tensor in tensors for index in consumers.get(tensor, [])]
        while stack:
            index = stack.pop()
            if index not in seen:
                seen.add(index)
                stack.extend(i for output in nodes[index].output for i in consumers.get(output, []))
        return seen

    found = []
    for split_index, split in enumerate(nodes):
        if split.op_type != "Split" or len(split.output) != 3:
            continue
        reach = [descendants([output]) for output in split.output]
        common = reach[0] & reach[1] & reach[2]
        divs = sorted(index for index in common if nodes[index].op_type == "Div")
        if not divs:
            continue
        div_index = divs[0]
        forward = reach[0] | reach[1] | reach[2] | {split_index}
        if not any(nodes[index].op_type == "Exp" for index in forward if index < div_index):
            continue  # no random features: a softmax attention's q, k, v reaching a LayerNorm
        # Walk back from the Div; keep what comes from the Split, and constants feeding it.
        members: set[int] = set()
        stack = [div_index]
        while stack:
            index = stack.pop()
            if index in members or not (index in forward or index in constant_only):
                continue
            members.add(index)
            if index == split_index:
                continue
            stack.extend(producer[name] for name in nodes[index].input if name in producer)
        found.append(PerformerSubgraph(split=split.name, div=nodes[div_index].name,
                                       nodes=[nodes[index].name for index in sorted(members)]))
    return found


def tokens_to_token_nodes(graph) -> list[int]:
    """Indices, in graph order, of the nodes that compute the tokens-to-token module's output: the ancestors of the
    tokens the class-token Concat joins (the other input is the expanded class token). Found by structure, not by
    name, so the graphs of exporters that write no scope names are served too; none without that Concat."""
    nodes = list(graph.node)
    initializers = {init.name for init in graph.initializer}
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}

    def is_class_token(name: str) -> bool:
        return name in producer and nodes[producer[name]].op_type == "Expand" and \
            nodes[producer[name]].input[0] in initializers

    concat = next((node for node in nodes if node.op_type == "Concat" and any(map(is_class_token, node.input))), None)
    if concat is None:
        return []
    stack = [producer[name] for name in concat.input if name in producer and not is_class_token(name)]
    seen = set(stack)
    while stack:
        for name in nodes[stack.pop()].input:
            source = producer.get(name)
            if source is not None and source not in seen:
                seen.add(source)
                stack.append(source)
    return sorted(seen)


def find_softmax_attentions(graph) -> list[PerformerSubgraph]:
    """The softmax attentions of the tokens-to-token module, in graph order; none for a performer model."""
    nodes = list(graph.node)
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}
    found = []
    for index in tokens_to_token_nodes(graph):
        node = nodes[index]
        if node.op_type == "Softmax":
            scores = producer.get(node.input[0])
            found.append(PerformerSubgraph(split=nodes[scores].name if scores is not None else node.name,
                                           div=node.name, nodes=[node.name], kind="softmax"))
    return found


def describe(subgraphs: list[PerformerSubgraph]) -> str:
    """What a keep set holds, in one phrase: '76 node names in 2 performer subgraphs: A .. B (38 nodes), ...'."""
    count = sum(len(subgraph.nodes) for subgraph in subgraphs)
    if subgraphs and subgraphs[0].kind == "softmax":
        return (f"{count} node names, the Softmax of each of the {len(subgraphs)} tokens-to-token softmax attentions: "
                + ", ".join(subgraph.div for subgraph in subgraphs))
    spans = ", ".join(f"{s.split} .. {s.div} ({len(s.nodes)} nodes)" for s in subgraphs)
    return f"{count} node names in {len(subgraphs)} performer subgraphs: {spans}"


def _constant_only(nodes, initializers: set[str]) -> set[int]:
    """Nodes whose every input is an initializer or the output of another constant-only node."""
    constant_tensors = set(initializers)
    result = set()
    for index, node in enumerate(nodes):  # ONNX nodes are in topological order
        if all(not name or name in constant_tensors for name in node.input):
            result.add(index)
            constant_tensors.update(node.output)
    return result


def keep_dtype_nodes(onnx_path: str | os.PathLike) -> list[PerformerSubgraph]:
    """Load ``onnx_path`` and return its performer subgraphs; refuse graphs that ATC cannot keep in fp32."""
    from t2t_vit.model.export import ModelFileError, load_onnx

    try:
        model = load_onnx(onnx_path, "ONNX")
    except ModelFileError as error:
        raise KeepDtypeError(str(error)) from None
    subgraphs = find_performer_subgraphs(model.graph) or find_softmax_attentions(model.graph)
    if not subgraphs:
        raise KeepDtypeError(f"{onnx_path} has no performer attention (a 3-output Split feeding a Div through k, q "
                             f"and v) and no tokens-to-token softmax attention: is it T2T-ViT? Export it with "
                             f"T2T_ViT_pth2onnx.py --performer sum")
    by_name = {node.name: node for node in model.graph.node}
    for subgraph in (subgraph for subgraph in subgraphs if subgraph.kind == "performer"):
        einsums = [name for name in subgraph.nodes if by_name[name].op_type == "Einsum"]
        if einsums:
            raise KeepDtypeError(f"{onnx_path} computes the performer with Einsum ({einsums[0]}): ATC inserts "
                                 f"TransData before Einsum and --keep_dtype does not take effect. Export with "
                                 f"T2T_ViT_pth2onnx.py --performer sum")
        matmuls = [name for name in subgraph.nodes if by_name[name].op_type == "MatMul"]
        if matmuls:
            raise KeepDtypeError(f"{onnx_path} computes the performer with MatMul ({matmuls[0]}), the CPU form: "
                                 f"ModelZoo's keep_dtype rule is for the multiply + ReduceSum form, and keeping "
                                 f"MatMul in fp32 is unverified on the NPU. Export with T2T_ViT_pth2onnx.py "
                                 f"--performer sum")
        if any(not name for name in subgraph.nodes):
            raise KeepDtypeError(f"{onnx_path} has unnamed nodes in a performer subgraph; ATC's keep_dtype needs "
                                 f"names (export with T2T_ViT_pth2onnx.py)")
    return subgraphs


def write_keep_dtype(path: str | os.PathLike, subgraphs: list[PerformerSubgraph]) -> int:
    """Write one node name per line, atomically; returns how many."""
    from t2t_vit.files import write_text_atomic

    names = [name for subgraph in subgraphs for name in subgraph.nodes]
    write_text_atomic(path, "".join(f"{name}\n" for name in names))
    return len(names)
