"""ONNX export contract and the T2T_ViT_pth2onnx.py script."""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import T2T_ViT_pth2onnx
from t2t_vit.model.export import ExportError, export_onnx, read_metadata
from t2t_vit.files import sha256_file
from t2t_vit.config import data_config_hash, resolve_data_config
from t2t_vit.model.network import create_model

from conftest import TINY


def _export(tmp_path_factory, checkpoint_path, performer, opset):
    out = tmp_path_factory.mktemp(f"onnx_{performer}") / f"t2t_vit_{performer}.onnx"
    status = T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint_path), "--onnx-path", str(out),
                                    "--performer", performer, "--opset", str(opset), "-q"])
    assert status == 0
    return out


# The export contract on the tiny model (fast tier) and on T2T-ViT-14 itself (slow tier): (checkpoint fixture,
# reference model fixture)
MODELS = [pytest.param(("tiny_checkpoint", "tiny_model"), id=TINY),
          pytest.param(("checkpoint_path", "reference_model"), id="t2t_vit_14", marks=pytest.mark.slow)]


@pytest.fixture(scope="module", params=MODELS)
def model_fixtures(request):
    return request.param


@pytest.fixture(scope="module", params=[("sum", 11), ("matmul", 11), ("einsum", 12)], ids=lambda p: p[0])
def exported(request, tmp_path_factory, model_fixtures):
    performer, opset = request.param
    checkpoint = request.getfixturevalue(model_fixtures[0])
    return performer, opset, _export(tmp_path_factory, checkpoint, performer, opset), checkpoint


@pytest.fixture(scope="module")
def exported_reference(request, model_fixtures):
    return request.getfixturevalue(model_fixtures[1])


def test_interface_opset_and_ops(exported):
    performer, opset, path, _ = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["class"]
    image_dims = proto.graph.input[0].type.tensor_type.shape.dim
    class_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert image_dims[0].dim_param and not image_dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in image_dims[1:]] == [3, 224, 224]
    assert class_dims[0].dim_param == image_dims[0].dim_param and class_dims[1].dim_value == 1000
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {opset}
    op_types = {node.op_type for node in proto.graph.node}
    assert ("Einsum" in op_types) == (performer == "einsum")
    if performer == "sum":
        assert "ReduceSum" in op_types


@pytest.mark.parametrize("batch", [1, 3], ids=lambda b: f"N{b}")
def test_onnxruntime_agrees_with_pytorch(exported, batch, exported_reference):
    # The reference is the einsum PyTorch model; fp32 reordering stays below 1e-5 on logits of ~4.
    _, _, path, _ = exported
    reference_model = exported_reference
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(100 + batch))
    with torch.no_grad():
        expected = reference_model(images).numpy()
    (actual,) = session.run(["class"], {"image": images.numpy()})
    assert actual.shape == (batch, 1000) and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


def test_metadata_records_provenance(exported):
    performer, opset, path, checkpoint_path = exported
    metadata = read_metadata(path)
    assert metadata["performer"] == performer and metadata["opset"] == str(opset)
    assert metadata["data_config_hash"] == data_config_hash(resolve_data_config())
    assert metadata["checkpoint"] == str(checkpoint_path) and metadata["weights"] == "state_dict_ema"
    assert metadata["checkpoint_sha256"] == sha256_file(checkpoint_path)  # what the main job's reuse is keyed on
    from t2t_vit.model.checkpoint import read_checkpoint

    weights = read_checkpoint(checkpoint_path)["state_dict_ema"]
    assert int(metadata["params"]) == sum(tensor.numel() for tensor in weights.values())  # the family table's params


def t2t_nodes(path) -> list:
    """The tokens-to-token module's nodes, found by structure (older exporters write no scope names)."""
    from t2t_vit.ascend.keep_dtype import tokens_to_token_nodes

    graph = onnx.load(str(path)).graph
    return [graph.node[index] for index in tokens_to_token_nodes(graph)]


def test_soft_splits_are_exported_as_convolutions(exported, exported_reference):
    """Every form's tokens-to-token module: three Conv nodes, one per soft split, and no Gather or Shape (the
    exporter's im2col of an unfold); the last Conv is the split and ``project`` in one, its weight project's."""
    performer, _, path, _ = exported
    nodes = t2t_nodes(path)
    convs = [node for node in nodes if node.op_type == "Conv"]
    assert len(convs) == 3 and sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node) == 3
    if convs[0].name.startswith("/"):  # scope names, as today's exporter writes them (torch 1.12's does not)
        assert [node.name for node in convs] == [f"/tokens_to_token/soft_split{index}/Conv" for index in range(3)]
    assert not [node.name for node in nodes if node.op_type in ("Gather", "Shape")]
    assert read_metadata(path)["soft_splits"] == "conv"
    proto = onnx.load(str(path))
    weights = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in proto.graph.initializer}
    weights.update({node.output[0]: onnx.numpy_helper.to_array(node.attribute[0].t) for node in proto.graph.node
                    if node.op_type == "Constant" and node.attribute[0].name == "value"})
    first, _, last = convs
    project = exported_reference.tokens_to_token.project
    np.testing.assert_array_equal(weights[last.input[1]].reshape(project.weight.shape), project.weight.detach().numpy())
    assert first.input[0] == "image"
    one_hot = weights[first.input[1]]
    assert one_hot.shape == (3 * 49, 1, 7, 7) and one_hot.sum() == 3 * 49 and set(np.unique(one_hot)) == {0, 1}


def test_the_unfold_graph_stays_selectable_and_equal(tmp_path, tiny_model, tiny_split_exports):
    """splits="unfold" writes the exporter's im2col (Gathers in the module, no Conv), as exports were before; the
    two graphs give the same logits, and the model computes with unfolds again afterwards."""
    paths = tiny_split_exports
    unfold_ops = {node.op_type for node in t2t_nodes(paths["unfold"])}
    assert "Gather" in unfold_ops and "Conv" not in unfold_ops
    assert tiny_model.tokens_to_token.splits == "unfold"
    images = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits = [onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["class"],
              {"image": images})[0] for path in paths.values()]
    np.testing.assert_allclose(logits[0], logits[1], rtol=0, atol=1e-5)
    with pytest.raises(ExportError, match="soft splits must be one of"):
        export_onnx(tiny_model, tmp_path / "x.onnx", opset=12, splits="gather")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("channels, kernel, stride, padding, side", [(3, 7, 4, 2, 32), (5, 3, 2, 1, 14)])
def test_a_one_hot_grouped_convolution_is_exactly_the_unfold(channels, kernel, stride, padding, side):
    from t2t_vit.model.network import SoftSplit

    split = SoftSplit(channels, kernel, stride, padding, (side // stride) ** 2)
    images = torch.randn(2, channels, side, side, generator=torch.Generator().manual_seed(side))
    unfolded = split(images)
    split.conv = True
    assert torch.equal(split(images), unfolded)  # a copy: not one bit differs
    project = torch.nn.Linear(channels * kernel * kernel, 6)
    split.conv = False
    expected = split(images, project)
    split.conv = True
    torch.testing.assert_close(split(images, project), expected, rtol=0, atol=1e-5)


def test_the_state_dict_stays_upstreams(tiny_model):
    """The one-hot weights are built in code: no key of the soft splits in the state dict."""
    assert not [key for key in tiny_model.state_dict() if "soft_split" in key]


def test_einsum_below_opset_12_stops_before_exporting(tmp_path, tiny_checkpoint, capsys):
    checkpoint_path = tiny_checkpoint
    out = tmp_path / "e.onnx"
    status = T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint_path), "--onnx-path", str(out),
                                    "--performer", "einsum"])
    assert status == 1
    error = capsys.readouterr().err
    assert "needs ONNX Einsum, which exists from opset 12" in error
    assert "the einsum export is for CPUs only" in error and "--performer sum" in error  # ATC cannot take it
    assert not out.exists()


def test_failed_verification_leaves_nothing(tmp_path, tiny_weights):
    model = create_model("sum", TINY)
    model.load_state_dict(tiny_weights)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(model, out, tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_export(tmp_path, tiny_weights):
    model = create_model("sum", TINY)
    model.load_state_dict(tiny_weights)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(model, out, tolerance=0.0)
    assert out.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("case", ["missing_key", "foreign_global", "missing_file", "directory", "truncated"])
def test_script_refuses_bad_checkpoints(case, tmp_path, tiny_weights, tiny_checkpoint, capsys):
    reference_weights, checkpoint_path = tiny_weights, tiny_checkpoint
    ckpt = tmp_path / "bad.pth"
    if case == "missing_key":
        weights = dict(reference_weights)
        del weights["tokens_to_token.attention2.w"]
        torch.save({"state_dict_ema": weights, "args": argparse.Namespace()}, ckpt)
    elif case == "foreign_global":
        torch.save({"state_dict": reference_weights, "scheduler": _Scheduler()}, ckpt)
    elif case == "directory":
        ckpt.mkdir()
    elif case == "truncated":
        ckpt.write_bytes(checkpoint_path.read_bytes()[:1000])
    out = tmp_path / "out.onnx"
    status = T2T_ViT_pth2onnx.main(["--pth-path", str(ckpt), "--onnx-path", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    assert not out.exists()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


class _Scheduler:
    """A pickled object other than a Namespace."""


def test_bad_flags_exit_with_usage(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        T2T_ViT_pth2onnx.main(["--onnx-path", str(tmp_path / "x.onnx")])
    assert raised.value.code == 2
    assert "--pth-path" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        T2T_ViT_pth2onnx.main(["--pth-path", "a", "--onnx-path", "b", "--performer", "conv"])


def test_opset_out_of_range(tmp_path, tiny_checkpoint, capsys):
    checkpoint_path = tiny_checkpoint
    status = T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint_path), "--onnx-path", str(tmp_path / "x.onnx"),
                                    "--opset", "9"])
    assert status == 1 and "opset 9 is out of range" in capsys.readouterr().err


def test_script_as_a_user_runs_it(tmp_path):
    import subprocess
    import sys

    from conftest import REPO_ROOT

    script = str(REPO_ROOT / "T2T_ViT_pth2onnx.py")
    help_text = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--pth-path CKPT" in help_text and "(default: sum)" in help_text and "(default: 11)" in help_text
    result = subprocess.run([sys.executable, script, "--pth-path", str(tmp_path / "nope.pth"),
                             "--onnx-path", str(tmp_path / "out.onnx")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == f"error: --pth-path {tmp_path / 'nope.pth'} does not exist\n"
    assert not (tmp_path / "out.onnx").exists()


def test_the_main_job_exports_again_over_an_unfold_export(tmp_path, tiny_checkpoint, capsys):
    """A work dir's export from before the splits were convolutions is made again, saying why; then reused."""
    from t2t_vit.job.artefacts import export_form
    from t2t_vit.model.export import export_checkpoint
    from t2t_vit.model.variants import BY_NAME

    spec, path = BY_NAME[TINY], tmp_path / "sum.onnx"
    export_checkpoint(tiny_checkpoint, path, "sum", model_name=TINY)
    proto = onnx.load(str(path))  # what an older version wrote: no soft_splits record, the unfold graph
    for entry in list(proto.metadata_props):
        if entry.key == "t2t_vit.soft_splits":
            proto.metadata_props.remove(entry)
    onnx.save(proto, str(path))
    export_form(tiny_checkpoint, sha256_file(tiny_checkpoint), path, "sum", spec=spec)
    assert f"exporting {path} again: its soft_splits differ" in capsys.readouterr().out
    assert read_metadata(path)["soft_splits"] == "conv"
    export_form(tiny_checkpoint, sha256_file(tiny_checkpoint), path, "sum", spec=spec)
    assert f"reusing {path}" in capsys.readouterr().out
