"""The NPU's force_fp16 + keep_dtype, emulated on the CPU: the rounding is really applied, kept nodes are not."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import T2T_ViT_infer
from t2t_vit.ascend.npu_precision import PrecisionError, emulate_force_fp16, read_keep_list

# Values that fp16 cannot hold exactly (fp16 has an 11-bit significand), so a rounding always shows.
X = np.array([[1.0001, 2.0003, 3.0007, 1e-8]], dtype=np.float32)
W = np.array([[1.00049, 0.33333, 7.77777, 1e-9]], dtype=np.float32)


def f16(values):
    return np.asarray(values, np.float32).astype(np.float16).astype(np.float32)


def small_graph():
    """x -> Mul(w) -> mul -> Add(w) -> add (output); Shape(x) -> shape (int64 output)."""
    nodes = [helper.make_node("Mul", ["x", "w"], ["mul"], name="mul_node"),
             helper.make_node("Add", ["mul", "w"], ["add"], name="add_node"),
             helper.make_node("Shape", ["x"], ["shape"], name="shape_node")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("add", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                              initializer=[numpy_helper.from_array(W, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)


def run(model, level=onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL):
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = level
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})


def test_every_node_output_is_its_fp16_round_trip_and_kept_nodes_stay_fp32():
    model = small_graph()
    add, shape = run(emulate_force_fp16(model))  # nothing kept: ATC without --keep_dtype
    mul = f16(f16(X) * f16(W))  # the input and the weights enter fp16, the product leaves as fp16
    np.testing.assert_array_equal(add, f16(mul + f16(W)))
    assert shape.tolist() == [1, 4] and shape.dtype == np.int64  # integer outputs are never cast
    add, _ = run(emulate_force_fp16(model, ["add_node"]))  # Add kept: fp32 weights, fp32 sum
    np.testing.assert_array_equal(add, mul + W)
    add, _ = run(emulate_force_fp16(model, ["mul_node", "add_node"]))  # everything kept: plain fp32
    np.testing.assert_array_equal(add, run(model)[0])
    add, _ = run(emulate_force_fp16(model, ["OpType::Mul"]))  # ATC's OpType:: form keeps by operator type
    np.testing.assert_array_equal(add, f16(f16(X * W) + f16(W)))  # the fp32 product enters the fp16 Add rounded


def test_the_rounding_is_real_and_eps_underflows():
    # 1e-8 (the performer's epsilon) is below fp16's smallest subnormal (6e-8): it rounds to 0.
    add, _ = run(emulate_force_fp16(small_graph()))
    assert add[0, 3] == 0.0 and run(small_graph())[0][0, 3] != 0.0
    assert not np.array_equal(add, run(small_graph())[0])


def test_the_optimiser_keeps_the_rounding():
    model = emulate_force_fp16(small_graph())
    enabled = run(model, onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL)[0]
    disabled = run(model, onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL)[0]
    np.testing.assert_array_equal(enabled, disabled)


def test_metadata_and_the_original_is_untouched():
    model = small_graph()
    before = model.SerializeToString()
    emulated = emulate_force_fp16(model, ["add_node"])
    assert model.SerializeToString() == before
    props = {prop.key: prop.value for prop in emulated.metadata_props}
    assert props["t2t_vit.npu_emulation"] == "force_fp16+keep_dtype/1" and props["t2t_vit.npu_kept_nodes"] == "1"
    assert len(props["t2t_vit.npu_keep_hash"]) == 16
    onnx.checker.check_model(emulated)


def test_unknown_names_in_the_keep_list_are_an_error_naming_them(tmp_path):
    with pytest.raises(PrecisionError, match=r"names 2 node\(s\) this graph does not have: /a/b, /c"):
        emulate_force_fp16(small_graph(), ["mul_node", "/a/b", "/c"])
    with pytest.raises(PrecisionError, match="cannot read --keep-dtype"):
        read_keep_list(tmp_path / "missing.cfg")
    (tmp_path / "k.cfg").write_text("mul_node\n\n  add_node \n")
    assert read_keep_list(tmp_path / "k.cfg") == ["mul_node", "add_node"]


def test_the_performer_breaks_in_fp16_and_the_keep_list_saves_it(exports_by_size, sample_images, tmp_path):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    # The scaled random weights make the performer's exp features underflow fp16, as FACTS 4c measured.
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes

    transform = EvalTransform(resolve_data_config())
    images = np.concatenate([transform(open_rgb(path)) for path in sample_images])
    model = onnx.load(str(exported_onnx["sum"]))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"image": images})[0]
    keep = [name for subgraph in keep_dtype_nodes(exported_onnx["sum"]) for name in subgraph.nodes]

    def emulated(entries):
        return onnxruntime.InferenceSession(emulate_force_fp16(model, entries).SerializeToString(),
                                            providers=["CPUExecutionProvider"]).run(None, {"image": images})[0]

    nothing_kept = emulated([])
    assert (~np.isfinite(nothing_kept).all(axis=1)).mean() >= 0.9  # (nearly) every image
    kept = emulated(keep)
    assert np.isfinite(kept).all()
    diff = np.abs(kept - reference).max()
    assert 1e-4 < diff < 0.05  # it really rounds, and stays close
    assert (kept.argmax(1) == reference.argmax(1)).all()  # the seeded model's closest top-2 is 0.011 apart


def infer(*args):
    return T2T_ViT_infer.main([*map(str, args), "--no-progress", "-q"])


def test_runner_refusals(tmp_path, capsys):
    from test_runner import tiny_model

    model = tiny_model(tmp_path / "tiny.onnx")
    with pytest.raises(SystemExit) as raised:
        infer("--model", model, "--precision", "npu-fp16", "--backend", "openvino")
    assert raised.value.code == 2 and "runs on onnxruntime: OpenVINO's f16 hint" in capsys.readouterr().err
    (tmp_path / "k.cfg").write_text("nowhere\n")
    with pytest.raises(SystemExit) as raised:
        infer("--model", model, "--keep-dtype", tmp_path / "k.cfg")
    assert raised.value.code == 2 and "--keep-dtype goes with --precision npu-fp16" in capsys.readouterr().err
    assert infer("--model", model, "--precision", "npu-fp16", "--keep-dtype", tmp_path / "k.cfg") == 1
    assert "names 1 node(s) this graph does not have: nowhere" in capsys.readouterr().err


def test_runner_runs_the_emulation_on_onnxruntime(tmp_path):
    import json

    from test_runner import tiny_model, write_samples

    model = tiny_model(tmp_path / "tiny.onnx")
    samples = write_samples(tmp_path / "bins", ["a.bin", "b.bin"])
    assert infer("--model", model, "--input", tmp_path / "bins", "--output", tmp_path / "out", "--output_dirname",
                 "fp16", "--batchsize", 2, "--precision", "npu-fp16") == 0
    summary = json.loads((tmp_path / "out" / "fp16_summary.json").read_text())["cpu_runner"]
    assert summary["backend"] == "onnxruntime" and summary["precision"] == "npu-fp16"
    session = onnxruntime.InferenceSession(emulate_force_fp16(onnx.load(str(model))).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    for name, sample in samples.items():
        expected = session.run(None, {"image": sample})[0][0]
        got = np.fromfile(tmp_path / "out" / "fp16" / f"{name[:-4]}_0.bin", dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(got, f16(got))  # every logit is an fp16 value


def test_minimize_writes_a_1_minimal_set_that_passes_its_criterion(exports_by_size, sample_images, tmp_path, capsys):
    exported_onnx = exports_by_size  # tiny (fast tier), T2T-ViT-14 (slow tier)
    import gen_cfg
    from t2t_vit.config import resolve_data_config
    from t2t_vit.data.dataset import EvalTransform, open_rgb
    from t2t_vit.ascend.keep_dtype import keep_dtype_nodes
    from t2t_vit.ascend.npu_precision import GROUPS, performer_groups

    sum_onnx = exported_onnx["sum"]
    subgraphs = keep_dtype_nodes(sum_onnx)
    full = [name for subgraph in subgraphs for name in subgraph.nodes]
    groups = performer_groups(onnx.load(str(sum_onnx)).graph, subgraphs)
    assert list(groups) == list(GROUPS) and sorted(sum(groups.values(), [])) == sorted(full)  # a partition
    bins = tmp_path / "bins"
    bins.mkdir()
    transform = EvalTransform(resolve_data_config())
    for path in sample_images[:4]:
        transform(open_rgb(path)).astype("<f4").tofile(bins / f"{path.stem}.bin")
    cfg = tmp_path / "min.cfg"
    assert gen_cfg.main([str(sum_onnx), str(cfg), "--minimize", "--input", str(bins), "--images", "4"]) == 0
    out = capsys.readouterr().out
    assert "| groups kept | names | non-finite images |" in out and "| (nothing kept) | 0 | 4 |" in out
    group_size = int(re.search(r"the group-level set (\d+)", out).group(1))
    kept = cfg.read_text().splitlines()
    assert 0 < len(kept) <= group_size < len(full) and set(kept) < set(full)
    assert f"sizes: the structural proposal {len(full)} names, the group-level set {group_size}, node by node {len(kept)}" in out
    # Checked here with its own sessions: the set passes, and each of its nodes dropped alone fails.
    images = np.stack([np.fromfile(path, dtype="<f4").reshape(3, 224, 224) for path in sorted(bins.glob("*.bin"))])
    model = onnx.load(str(sum_onnx))

    def logits(proto):
        session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"image": images})[0]

    reference = logits(model)

    def passes(names):
        out = logits(emulate_force_fp16(model, names))
        return bool(np.isfinite(out).all() and (out.argmax(1) == reference.argmax(1)).all()
                    and np.abs(out - reference).max() <= 0.02)  # gen_cfg's default --tolerance

    assert passes(kept)
    failing = [name for name in kept if not passes([other for other in kept if other != name])]
    assert failing == kept  # 1-minimal
    proof = out.split("1-minimal:")[1].split("sizes:")[0]
    rows = [line for line in proof.splitlines() if line.startswith("| ") and not line.startswith("| dropped")]
    assert sorted(row.split(" | ")[0][2:] for row in rows) == sorted(kept)  # the proof table: a row per kept node


def test_minimize_needs_its_input(tmp_path, capsys):
    import gen_cfg

    with pytest.raises(SystemExit) as raised:
        gen_cfg.main(["a.onnx", str(tmp_path / "k.cfg"), "--minimize"])
    assert raised.value.code == 2 and "--minimize needs --input BINS" in capsys.readouterr().err


def test_the_fp16_accumulation_bracket_adds_lane_by_lane_in_fp16():
    # 100 values along the last axis: 16 lanes each add their 7 values (the last padded with 0) in order,
    # rounding to fp16 after every addition, then the lanes are added pairwise, rounding again.
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 100])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="rs", axes=[2], keepdims=1),
             helper.make_node("ReduceMean", ["x"], ["m"], name="rm", axes=[-1], keepdims=0),
             helper.make_node("Softmax", ["x"], ["p"], name="sm", axis=2)]
    graph = helper.make_graph(nodes, "g", [x], [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                                for name in ("s", "m", "p")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], ir_version=7)
    data = np.random.default_rng(0).uniform(0, 1, (2, 3, 100)).astype(np.float32)

    def outputs(proto):
        return onnxruntime.InferenceSession(proto.SerializeToString(),
                                            providers=["CPUExecutionProvider"]).run(None, {"x": data})

    summed, mean, softmax = outputs(emulate_force_fp16(model, accumulate="fp16"))
    blocks = np.concatenate([f16(data), np.zeros((2, 3, 12), np.float32)], axis=2).reshape(2, 3, 7, 16)
    lanes = blocks[:, :, 0]
    for index in range(1, 7):
        lanes = f16(lanes + blocks[:, :, index])
    while lanes.shape[-1] > 1:
        half = lanes.shape[-1] // 2
        lanes = f16(lanes[..., :half] + lanes[..., half:])
    np.testing.assert_array_equal(summed, lanes)
    np.testing.assert_array_equal(mean, f16(lanes[..., 0] / 100))
    fp32_accumulation = outputs(emulate_force_fp16(model))
    assert not np.array_equal(summed, fp32_accumulation[0])  # the bracket really differs
    np.testing.assert_allclose(softmax.sum(axis=2), 1.0, atol=0.02)
    with pytest.raises(PrecisionError, match="--npu-accumulate fp64 is not one of"):
        emulate_force_fp16(model, accumulate="fp64")


@pytest.mark.parametrize("options, pattern", [
    ({"keep_dtype": "k.cfg"}, r"^--keep-dtype goes with --precision npu-fp16"),
    ({"accumulate": "fp16"}, r"^--npu-accumulate goes with --precision npu-fp16$")])
def test_the_library_refuses_emulation_options_without_the_emulation(tmp_path, options, pattern):
    from t2t_vit.runtime.runner import run_inference
    from t2t_vit.runtime.batching import RunnerError
    from test_runner import tiny_model

    with pytest.raises(RunnerError, match=pattern):
        run_inference(str(tiny_model(tmp_path / "tiny.onnx")), None, None, None, backend_name="onnxruntime",
                      **options)
