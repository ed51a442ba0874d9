"""What a variant computes, counted from its exported graph: GFLOP per image (the family table's column and the
benchmarks' ceiling). Needs OpenVINO, for its static shape propagation; without it the count is not made."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def graph_flops(onnx_path: Path, side: int = 224) -> tuple[float, float]:
    """GFLOP per image at batch 1 of the graph's MatMuls and dense convolutions: (all, the attention's: MatMuls
    of two activations). A grouped convolution (a soft split's one-hot copy) does no arithmetic and is not counted.

    The shapes come from OpenVINO's static shape propagation of the ONNX graph (onnx's own shape inference stops
    at an exported Unfold); OpenVINO reads ONNX Gemm as MatMul too; FLOPs are 2 per multiply-add.
    """
    from t2t_vit.version_bridge import openvino_core, openvino_shapes

    model = openvino_core("counting a graph's FLOPs").read_model(str(onnx_path))
    model.reshape({model.inputs[0].any_name: [1, 3, side, side]})
    total = attention = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Convolution":
            _, out = openvino_shapes(op)
            weight = list(op.input_value(1).get_shape())  # (out channels, in channels, kh, kw)
            total += 2 * int(np.prod(out)) * int(np.prod(weight[1:]))
        if kind != "MatMul":
            continue
        left, out = openvino_shapes(op)
        inner = left[-2] if op.get_attributes().get("transpose_a") else left[-1]
        flops = 2 * int(np.prod(out)) * inner
        total += flops
        weights = {op.input_value(index).get_node().get_type_name() for index in range(2)}
        if not weights & {"Constant", "Convert"}:  # both operands computed: q k^T, attn v
            attention += flops
    return total / 1e9, attention / 1e9


def count_parameters(spec) -> int:
    """The variant's parameters (as upstream's README counts them: every weight of the network)."""
    from t2t_vit.model.network import create_model

    return sum(parameter.numel() for parameter in create_model(spec.form("sum"), spec).parameters())
