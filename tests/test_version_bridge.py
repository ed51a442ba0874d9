"""The one module that bridges versions: each of its paths, tested on whichever versions are installed.

CI runs this file at both ends of the supported range (the seed's Python 3.7 stack and the pinned set), so
every path below that feature detection would pick on the other end is forced here too.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import REPO_ROOT
from t2t_vit import version_bridge
from t2t_vit.model.checkpoint import CheckpointError, read_checkpoint


class Payload:
    """A pickle that would run a command when loaded: every loading path must refuse it by name."""

    def __reduce__(self):
        return os.system, ("touch should-never-exist",)


LOADERS = {"chosen": version_bridge.load_weights_only, "restricted": version_bridge.load_restricted}


@pytest.mark.parametrize("loader", list(LOADERS), ids=list(LOADERS))
def test_both_loading_paths_give_the_same_checkpoint(tmp_path, loader):
    weights = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2, dtype=torch.float16),
               "w": torch.nn.Parameter(torch.zeros(3), requires_grad=False)}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": weights, "epoch": 309, "metric": 81.5, "arch": "t2t_vit_14", "raw": b"\x00\x01",
                "args": argparse.Namespace(model="t2t_vit_14", lr=[1e-3], size=(224, 224))}, path)
    loaded = LOADERS[loader](path, (argparse.Namespace,))
    assert loaded["epoch"] == 309 and loaded["metric"] == 81.5 and loaded["raw"] == b"\x00\x01"
    assert loaded["args"] == argparse.Namespace(model="t2t_vit_14", lr=[1e-3], size=(224, 224))
    for key, value in weights.items():
        assert torch.equal(loaded["state_dict"][key], value) and loaded["state_dict"][key].dtype == value.dtype


@pytest.mark.parametrize("loader", list(LOADERS), ids=list(LOADERS))
def test_both_loading_paths_refuse_a_foreign_global_by_name(tmp_path, loader):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "payload": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"[Uu]nsupported (global: )?GLOBAL (posix|os)\.system"):
        LOADERS[loader](tmp_path / "evil.pth", (argparse.Namespace,))
    assert not (tmp_path / "should-never-exist").exists() and not os.path.exists("should-never-exist")


def test_namespace_is_refused_unless_allowed(tmp_path):
    path = tmp_path / "ns.pth"
    torch.save({"args": argparse.Namespace(epochs=310)}, path)
    for loader in LOADERS.values():
        with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
            loader(path, ())


def test_the_restricted_path_gives_the_checkpoint_error_a_user_sees(tmp_path, monkeypatch):
    """On torch without the allow-list (1.12 to 2.4) the CLI's message is the same as on today's torch."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "payload": Payload()}, path)
    monkeypatch.setattr(version_bridge, "torch_has_safe_globals", lambda: False)
    with pytest.raises(CheckpointError, match=r"needs the global (posix|os)\.system, and only argparse.Namespace"):
        read_checkpoint(path)


def test_export_without_dynamo_keyword_uses_the_torchscript_exporter(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.GELU()).eval()
    path = tmp_path / "tiny.onnx"
    version_bridge.export_onnx_torchscript(model, (torch.zeros(1, 4),), str(path), opset_version=11,
                                           input_names=["x"], output_names=["y"])
    proto = onnx.load(str(path))
    assert [(entry.domain, entry.version) for entry in proto.opset_import if entry.domain in ("", "ai.onnx")] \
        == [("", 11)]
    assert proto.ir_version <= 8 and proto.ir_version == version_bridge.onnx_ir_version_for(11)


def test_built_models_take_the_ir_of_their_opset_not_the_newest():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = version_bridge.make_onnx_model(graph, 11)
    assert model.ir_version == 6 <= onnx.IR_VERSION  # what torch writes at opset 11; onnx 1.12 reads up to 8
    onnx.checker.check_model(model)
    session = version_bridge.onnxruntime_session(model, "a test")
    assert session.run(None, {"x": np.array([-1.0], np.float32)})[0].tolist() == [0.0]


@pytest.mark.parametrize("keeps_pair", [True, False], ids=["bare_cast_pair", "reshape_between"])
def test_the_fp16_round_trip_rounds_exactly_on_the_installed_onnxruntime(monkeypatch, keeps_pair):
    """Both forms of the round trip give numpy's fp16 rounding (flush, overflow, ties); the probe picks the bare
    pair only where onnxruntime keeps it (>= 1.17)."""
    version_bridge.onnxruntime_keeps_fp16_round_trip.cache_clear()
    real = version_bridge.onnxruntime_keeps_fp16_round_trip()
    monkeypatch.setattr(version_bridge, "onnxruntime_keeps_fp16_round_trip", lambda: keeps_pair)
    if keeps_pair and not real:
        with pytest.raises(AssertionError):  # the installed onnxruntime drops the pair: why the other form exists
            _check_round_trip()
    else:
        _check_round_trip()


def _check_round_trip():
    nodes = version_bridge.fp16_round_trip_nodes("x", "y", "round", half="x_f16")
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    values = np.array([[1e-12, 3e-8, 6.1e-5], [2.002053, 65519.0, 65520.0], [-1.0009766, 0.3333333, -7e4]],
                      dtype=np.float32)
    (rounded,) = version_bridge.onnxruntime_session(version_bridge.make_onnx_model(graph, 11), "a test").run(
        None, {"x": values})
    with np.errstate(over="ignore"):  # -7e4 and 65520 overflow fp16 to inf on purpose
        expected = values.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(rounded, expected)
    assert rounded.shape == values.shape


def test_package_version_and_toml():
    assert version_bridge.package_version("numpy") == np.__version__
    assert version_bridge.package_version("no-such-package-t2t") is None
    project = version_bridge.read_toml(REPO_ROOT / "pyproject.toml")["project"]
    assert project["requires-python"].startswith(">=3.7")


def test_a_missing_optional_package_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "openvino", None)  # import openvino now raises ImportError
    assert not version_bridge.installed("openvino")
    with pytest.raises(version_bridge.MissingPackageError,
                       match=re.escape("the test needs openvino, which is not installed here: pip install openvino")):
        version_bridge.require("openvino", "the test")



def test_the_toolkits_onnxruntime_session_keeps_layer_norm_precise_on_a_smooth_patch(tmp_path):
    """Rows whose mean dwarfs their spread (a smooth image region's patch): torch's exported LayerNorm through the
    toolkit's session stays within 1e-4 of float64 on every onnxruntime (1.14's LayerNormFusion lost 1e-2 here,
    so there the session keeps the graph unfused)."""
    pytest.importorskip("onnxruntime")
    rows = version_bridge._LAYER_NORM_PROBE + np.float32(0.5) * np.arange(4, dtype=np.float32)[:, None]
    norm = torch.nn.LayerNorm(rows.shape[1]).eval()
    path = tmp_path / "norm.onnx"
    version_bridge.export_onnx_torchscript(norm, (torch.from_numpy(rows),), str(path), opset_version=11,
                                           input_names=["x"], output_names=["y"])
    (got,) = version_bridge.onnxruntime_session(path, "the test").run(None, {"x": rows})
    exact = rows.astype(np.float64)
    exact = (exact - exact.mean(-1, keepdims=True)) / np.sqrt(exact.var(-1, keepdims=True) + 1e-5)
    assert np.max(np.abs(got - exact)) < 1e-4
