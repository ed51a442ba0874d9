"""gen_cfg.py --explain: the per-node fp16 report, its metrics, and where the first NaN comes from."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from t2t_vit.ascend.fp16_diagnosis import (REPORT_COLUMNS, compare, explain, fp32_range, kl_divergence, nan_origin,
                                    origin_text)
from t2t_vit.version_bridge import make_onnx_model


def test_the_metrics_match_their_definitions_on_a_hand_checked_node():
    golden = np.array([1.0, 2.0, 0.0, -4.0], np.float32)
    my = np.array([1.0, 2.5, 0.001, -4.0], np.float32)
    got = compare(my, golden)
    my64 = [1.0, 2.5, float(np.float32(0.001)), -4.0]  # the emulated value as fp32 holds it
    diff = [0.0, 0.5, my64[2], 0.0]
    dot, my_norm, golden_norm = 1 + 5 + 0 + 16, math.sqrt(1 + 6.25 + my64[2] ** 2 + 16), math.sqrt(21)
    assert got["CosineSimilarity"] == pytest.approx(dot / (my_norm * golden_norm), rel=1e-12)
    assert got["MaxAbsoluteError"] == pytest.approx(0.5, rel=1e-12)
    assert got["MeanAbsoluteError"] == pytest.approx(sum(diff) / 4, rel=1e-12)
    assert got["RootMeanSquareError"] == pytest.approx(math.sqrt(sum(d * d for d in diff) / 4), rel=1e-12)
    # relative errors where |golden| > eps: 0, 0.25, (golden 0: none), 0
    assert got["AccumulatedRelativeError"] == pytest.approx(0.25, rel=1e-12)
    assert got["MaxRelativeError"] == pytest.approx(0.25, rel=1e-12)
    assert got["MeanRelativeError"] == pytest.approx(0.25 / 4, rel=1e-12)
    assert got["RelativeEuclideanDistance"] == pytest.approx(math.sqrt(sum(d * d for d in diff)) / golden_norm,
                                                             rel=1e-12)
    eps = float(np.finfo(np.float32).eps)
    p = [max((v + 4) / 6.5, eps) for v in my64]  # scaled by min -4 and max 2.5
    q = [max((v + 4) / 6.0, eps) for v in [1.0, 2.0, 0.0, -4.0]]  # min -4, max 2
    p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
    assert got["KullbackLeiblerDivergence"] == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), rel=1e-9)
    assert got["StandardDeviation"] == (f"({np.mean(my64):.3f};{np.std(my64):.3f}),"
                                        f"({np.mean([1, 2, 0, -4]):.3f};{np.std([1, 2, 0, -4]):.3f})")
    assert got["OverFlow"] == "NO" and got["NonFinite"] == 0
    assert compare(np.array([np.inf, 1.0]), np.array([70000.0, 1.0]))["OverFlow"] == "YES"
    assert math.isnan(compare(np.zeros(3), np.ones(3))["CosineSimilarity"])  # a zero norm: NaN, as the tools give
    assert kl_divergence(np.array([np.nan, 1.0]), np.array([1.0, 2.0])) != kl_divergence(np.ones(2), np.ones(2))


def test_the_fp32_range_columns():
    values = np.array([0.0, 1e-9, 3e-6, 0.5, -100.0])  # 1e-9 < 2^-24 flushes; 3e-6 < 2^-14 is subnormal
    got = fp32_range(values)
    assert got == {"MaxAbsFp32": 100.0, "Fp16Headroom": 655.04, "FlushToZeroShare": 0.25, "SubnormalShare": 0.25}


def _underflowing_graph():
    """x -> a = x * 1e-5 -> b = a * a (1e-10 x^2: fp16 flushes it) -> s = sum(b) -> d = a / s (0 in fp16: inf)."""
    nodes = [helper.make_node("Mul", ["x", "k"], ["a"], name="scale"),
             helper.make_node("Mul", ["a", "a"], ["b"], name="square"),
             helper.make_node("ReduceSum", ["b"], ["s"], name="sum", axes=[1], keepdims=1),
             helper.make_node("Div", ["a", "s"], ["d"], name="divide"),
             helper.make_node("Add", ["d", "x"], ["y"], name="after")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=[numpy_helper.from_array(np.array(1e-5, np.float32), "k")])
    return make_onnx_model(graph, 11)


def _independent_first_nonfinite(x: np.ndarray) -> str:
    """The same graph, every value rounded to fp16 by numpy, op by op: the first node whose output is non-finite."""
    def f16(value):
        return np.asarray(value, np.float32).astype(np.float16).astype(np.float32)

    values = {"x": f16(x), "k": f16(np.float32(1e-5))}
    steps = [("scale", "a", lambda: values["x"] * values["k"]), ("square", "b", lambda: values["a"] * values["a"]),
             ("sum", "s", lambda: values["b"].sum(axis=1, keepdims=True)),
             ("divide", "d", lambda: values["a"] / values["s"]), ("after", "y", lambda: values["d"] + values["x"])]
    with np.errstate(all="ignore"):
        for name, output, step in steps:
            values[output] = f16(step())
            if not np.isfinite(values[output]).all():
                return name
    return ""


def test_the_nan_origin_is_where_an_independent_emulation_first_turns_non_finite():
    model = _underflowing_graph()
    x = np.array([[0.5, 1.0, 2.0, 3.0]], np.float32)
    assert _independent_first_nonfinite(x) == "divide"
    origin = nan_origin(model, x)
    assert origin["node"] == "divide" and origin["op_type"] == "Div" and not origin["kept"]
    (culprit,) = origin["inputs"]  # s = sum of a^2 = 1.425e-9 in fp32; input 0, a, stays non-zero (subnormal)
    assert re.fullmatch(r"input 1 \(s, fp32 max \|x\| 1\.4[23]e-09\): 1 of its 1 non-zero values flushed to 0", culprit)
    assert nan_origin(model, x, ["square", "sum", "divide"]) is None  # kept in fp32: nothing turns non-finite
    assert "comes from divide (Div, not kept: computed in fp16)" in origin_text(origin)


def test_explain_rows_say_who_causes_and_who_inherits():
    model = _underflowing_graph()
    result = explain(model, np.array([[0.5, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]], np.float32))
    rows = {row["NodeName"]: row for row in result.rows}
    assert list(rows) == ["scale", "square", "sum", "divide", "after"] and result.images == 2
    assert all(list(row) == list(REPORT_COLUMNS) for row in result.rows)
    assert rows["square"]["FlushToZeroShare"] == 1.0 and rows["square"]["Cause"] == "underflows"
    assert rows["scale"]["Cause"] in ("causes", "exact") and rows["sum"]["Cause"] == "underflows"
    assert rows["divide"]["Cause"] == "NaN origin" and rows["divide"]["NonFinite"] == 8
    assert rows["after"]["Cause"] == "inherits" and rows["after"]["OverFlow"] == "YES"
    assert rows["after"]["OwnNonFinite"] == 0  # its own rounding is harmless: it inherits the infinity


def test_explain_on_the_model_names_the_performer_normalisation(exports_by_size, sample_images, tmp_path, capsys):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    """The tests' scaled weights make the performer's features underflow fp16 (as upstream's initialisation with
    kqv x4 does): with nothing kept, the first non-finite value is the division by D + eps, found independently by
    gen_cfg's structural rule (the Div that ends the first performer subgraph)."""
    import gen_cfg
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes

    (tmp_path / "bins").mkdir()
    EvalTransform(resolve_data_config())(open_rgb(sample_images[0])).astype("<f4").tofile(tmp_path / "bins" / "a.bin")
    report = tmp_path / "report.csv"
    assert gen_cfg.main([str(exported_onnx["sum"]), "--explain", "--input", str(tmp_path / "bins"), "--images", "1",
                         "--report", str(report)]) == 0
    out = capsys.readouterr().out
    first_div = keep_dtype_nodes(exported_onnx["sum"])[0].div
    assert f"NaN origin: the first non-finite value comes from {first_div} (Div, not kept" in out
    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(exported_onnx["sum"]))).graph
    types = {value.name: value.type.tensor_type.elem_type for value in [*inferred.value_info, *inferred.output]}
    float_nodes = [node.name for node in inferred.node if any(types.get(name) == TensorProto.FLOAT
                                                               for name in node.output)]
    assert tuple(rows[0]) == REPORT_COLUMNS and [row["NodeName"] for row in rows] == float_nodes  # graph order
    by_name = {row["NodeName"]: row for row in rows}
    assert by_name[first_div]["Cause"] == "NaN origin" and int(by_name[first_div]["NonFinite"]) > 0
    assert [row["Index"] for row in rows] == [str(index) for index in range(len(rows))]


def test_explain_needs_its_input_and_writes_no_cfg(tmp_path, capsys):
    import gen_cfg

    for argv, message in ((["a.onnx", "--explain"], "--explain needs --input BINS"),
                          (["a.onnx", "k.cfg", "--explain", "--input", "b"], "leave out CFG"),
                          (["a.onnx", "k.cfg", "--keep-dtype", "k.cfg"], "--keep-dtype goes with --explain")):
        with pytest.raises(SystemExit) as raised:
            gen_cfg.main(argv)
        assert raised.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_the_upstream_initialisation_with_kqv_times_4_breaks_at_the_first_normalisation(tmp_path, sample_images):
    """The issue's own case: the training initialisation (std 0.02, as upstream) with the tokens-to-token kqv
    weights scaled by 4 makes the performer's features underflow fp16; nothing kept, the NaN starts at the Div
    that gen_cfg's structural rule puts at the end of the first performer, from a denominator fp16 flushed."""
    import torch

    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb
    from t2t_vit.model.export import export_onnx, load_onnx
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes
    from t2t_vit.model.network import create_model

    torch.manual_seed(0)
    model = create_model("sum")
    with torch.no_grad():
        for block in (model.tokens_to_token.attention1, model.tokens_to_token.attention2):
            block.kqv.weight.mul_(4)
    path = tmp_path / "upstream_kqv4.onnx"
    export_onnx(model, path, data_config=resolve_data_config(), verify_batch_sizes=(1,))
    images = EvalTransform(resolve_data_config())(open_rgb(sample_images[0]))
    origin = nan_origin(load_onnx(path), images)
    assert origin["node"] == keep_dtype_nodes(path)[0].div and origin["op_type"] == "Div"
    assert any(text.startswith("input 1 (") and "non-zero values flushed to 0" in text for text in origin["inputs"])
