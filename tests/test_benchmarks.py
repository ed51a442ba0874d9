"""The benchmark scripts' own arithmetic: FLOPs counted from a graph, agreement figures."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import REPO_ROOT


def load(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.needs("openvino")
def test_graph_gflops_counts_every_matmul_at_batch_1(tmp_path):
    # image (N,3,224,224) -> (N,150528) @ (150528,10) -> Gemm with (10,4) transposed weights
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((150528, 10)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "W2"),
             helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 150528])]
    nodes = [helper.make_node("Reshape", ["image", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "W1"], ["hidden"]),
             helper.make_node("Gemm", ["hidden", "W2"], ["class"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                         ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("class", TensorProto.FLOAT, ["N", 4])], initializer=inits)
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7), str(path))
    expected = 2 * 150528 * 10 + 2 * 10 * 4
    assert load("bench_backends").graph_gflops(path) == pytest.approx(expected / 1e9)


@pytest.mark.needs("openvino")
def test_both_graphs_of_a_model_count_the_same_flops_and_the_inventory_tells_them_apart(tiny_split_exports):
    """The convolution graph's FLOPs equal the unfold graph's (the split + project convolution counts as the
    project MatMul did; the one-hot grouped ones count nothing); its tokens-to-token module has no Gather."""
    bench = load("bench_variants")
    paths = tiny_split_exports
    counts = {form: load("bench_backends").graph_flops(path) for form, path in paths.items()}
    assert counts["conv"] == pytest.approx(counts["unfold"], rel=1e-12) and counts["conv"][0] > 0
    inventory = {form: bench.op_inventory(path) for form, path in paths.items()}
    assert inventory["conv"]["t2t_Gather"] == 0 < inventory["unfold"]["t2t_Gather"]
    assert inventory["conv"]["t2t_Conv"] == 3 and inventory["unfold"]["Conv"] == 0
    assert inventory["conv"]["nodes"] < inventory["unfold"]["nodes"]
    lines = bench.inventory_table({"tiny": {"before": inventory["unfold"], "after": inventory["conv"]}})
    assert lines[2].startswith("| tiny | ") and f"{inventory['unfold']['t2t_Gather']} -> 0" in lines[2]


def test_agreement_figures():
    reference = np.array([[5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [0, 9, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]], np.float32)
    other = reference.copy()
    other[1] = [0, 1, 2, 3, 5, 4]   # top-1 changes (5 -> 4) but stays in the top 5
    other[3] = [0, 1, 2, 3, 4, 5]   # the reference top-1 (0) falls out of the top 5
    figures = load("bench_int8").agreement(reference, other)
    assert figures["top1_agreement"] == 0.5
    assert figures["f32_top1_in_top5"] == 0.75
    assert figures["max_abs_diff"] == 5.0
    assert figures["logit_abs_max"] == 9.0
    assert figures["f32_distinct_top1"] == 3


def test_bench_uint8_feeds_the_same_images_in_both_dtypes(sample_images):
    from t2t_vit.data.dataset import normalise

    inputs = load("bench_uint8").real_inputs(sample_images[0].parent, 3)
    assert inputs["uint8"].shape == (3, 224, 224, 3) and inputs["float32"].shape == (3, 3, 224, 224)
    np.testing.assert_array_equal(normalise(inputs["uint8"], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                  inputs["float32"])
