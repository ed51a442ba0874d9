"""gen_cfg.py: the performer subgraphs ATC keeps in fp32."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
from onnx import TensorProto, helper

import gen_cfg
from t2t_vit.ascend.keep_dtype import KeepDtypeError, find_performer_subgraphs, keep_dtype_nodes


def _scope_nodes(path):
    """What computes the performer kernel, from the exporter's node-name scopes (module .../kernel); None where the
    exporter names nodes without scopes (torch < 1.13: ``Mul_107``)."""
    graph = onnx.load(str(path)).graph
    if not any(node.name.startswith("/tokens_to_token/") for node in graph.node):
        return None
    return {block: {node.name for node in graph.node if node.name.startswith(f"/tokens_to_token/{block}/kernel/")}
            for block in ("attention1", "attention2")}


def _kernel_alone_op_types(performer, tmp_path):
    """The op types (with counts) of the performer kernel exported on its own: what each subgraph must hold, on
    every torch."""
    import torch

    from t2t_vit.model.network import PerformerKernel
    from t2t_vit.version_bridge import export_onnx_torchscript

    class KernelAlone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.kernel = PerformerKernel(64, 32, performer)
            self.w = torch.nn.Parameter(torch.randn(32, 64), requires_grad=False)

        def forward(self, kqv):
            return self.kernel(kqv, self.w)[0]

    path = tmp_path / "kernel_alone.onnx"
    export_onnx_torchscript(KernelAlone(), (torch.zeros(1, 3136, 192),), str(path), opset_version=11,
                            input_names=["kqv"], dynamic_axes={"kqv": {0: "batch"}})
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("performer", ["sum"])
def test_node_set_is_exactly_the_performer_kernels(exports_by_size, performer, tmp_path, capsys):
    exported_onnx = exports_by_size
    cfg = tmp_path / "keep_dtype.cfg"
    assert gen_cfg.main([str(exported_onnx[performer]), str(cfg), "-q"]) == 0
    names = cfg.read_text().splitlines()
    scopes = _scope_nodes(exported_onnx[performer])
    assert len(names) == len(set(names))
    if scopes is not None:
        assert set(names) == scopes["attention1"] | scopes["attention2"]  # none missing, none extra
    subgraphs = keep_dtype_nodes(exported_onnx[performer])
    assert len(subgraphs) == 2
    graph = {node.name: node for node in onnx.load(str(exported_onnx[performer])).graph.node}
    kernel_alone = _kernel_alone_op_types(performer, tmp_path)
    assert len(names) == 2 * sum(kernel_alone.values())
    for subgraph, block in zip(subgraphs, ("attention1", "attention2")):
        assert Counter(graph[name].op_type for name in subgraph.nodes) == kernel_alone  # each kernel whole, alone
        if scopes is not None:
            assert set(subgraph.nodes) == scopes[block]
        assert graph[subgraph.split].op_type == "Split" and graph[subgraph.div].op_type == "Div"
        assert subgraph.nodes[0] == subgraph.split and subgraph.nodes[-1] == subgraph.div
        assert all(name in graph for name in subgraph.nodes)  # every name exists in the ONNX
    if performer == "sum":
        ops = {graph[name].op_type for name in names}
        assert {"Split", "Mul", "ReduceSum", "Exp", "Div", "Add"} <= ops and "MatMul" not in ops
        div = graph[subgraphs[0].div]
        assert graph_producer(exported_onnx[performer], div.input[0]).op_type == "ReduceSum"
    assert "2 performer subgraphs" in capsys.readouterr().out


def graph_producer(path, tensor):
    return next(node for node in onnx.load(str(path)).graph.node if tensor in node.output)


@pytest.mark.parametrize("performer, pattern", [
    ("einsum", "computes the performer with Einsum"),
    ("matmul", r"computes the performer with MatMul .*unverified on the NPU.*--performer sum")])
def test_einsum_and_matmul_exports_are_refused_without_writing(exports_by_size, tmp_path, capsys, performer, pattern):
    exported_onnx = exports_by_size
    import re

    cfg = tmp_path / "keep_dtype.cfg"
    assert gen_cfg.main([str(exported_onnx[performer]), str(cfg)]) == 1
    assert re.search(pattern, capsys.readouterr().err)
    assert not cfg.exists()


def _tiny_graph(with_performer: bool):
    """A 3-way Split whose parts meet in a Div (a performer's shape) or never meet."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    nodes = [helper.make_node("Split", ["x"], ["k", "q", "v"], name="split", axis=1, split=[2, 2, 2]),
             helper.make_node("Exp", ["k"], ["ek"], name="exp_k"),
             helper.make_node("Constant", [], ["two"], name="two",
                              value=helper.make_tensor("t", TensorProto.FLOAT, [], [2.0])),
             helper.make_node("Div", ["ek", "two"], ["half"], name="div_k_only")]
    if with_performer:
        nodes += [helper.make_node("Mul", ["q", "v"], ["qv"], name="mul_qv"),
                  helper.make_node("Div", ["qv", "half"], ["y"], name="div_all")]
    else:
        nodes += [helper.make_node("Add", ["q", "v"], ["y"], name="add_qv")]
    return helper.make_graph(nodes, "tiny", [x], [y])


def test_subgraph_ends_at_the_first_div_that_sees_k_q_and_v():
    (subgraph,) = find_performer_subgraphs(_tiny_graph(True))
    assert subgraph.div == "div_all"
    assert subgraph.nodes == ["split", "exp_k", "two", "div_k_only", "mul_qv", "div_all"]


def test_graph_without_a_performer_is_an_error(tmp_path, capsys):
    model = helper.make_model(_tiny_graph(False), opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    path = tmp_path / "plain.onnx"
    onnx.save(model, str(path))
    assert gen_cfg.main([str(path), str(tmp_path / "k.cfg")]) == 1
    assert "has no performer attention" in capsys.readouterr().err
    assert not (tmp_path / "k.cfg").exists()
    (tmp_path / "junk.onnx").write_text("not a model")
    with pytest.raises(KeepDtypeError, match="is not an ONNX model"):
        keep_dtype_nodes(tmp_path / "junk.onnx")
    with pytest.raises(KeepDtypeError, match="does not exist"):
        keep_dtype_nodes(tmp_path / "missing.onnx")
