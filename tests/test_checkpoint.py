"""Checkpoint layouts, safe loading and strict key checks, on the tiny test variant: the layouts and checks are the
same for every size (the published variants' checkpoints: tests/test_family.py, slow tier)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from conftest import TINY
from t2t_vit.model.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, select_state_dict
from t2t_vit.model.network import create_model


class NotAllowed:
    """Any class other than argparse.Namespace: loading it would run arbitrary unpickling code."""


def _marked(weights: dict[str, torch.Tensor], value: float) -> dict[str, torch.Tensor]:
    """A copy whose head bias identifies which weights were loaded."""
    copy = dict(weights)
    copy["head.bias"] = torch.full_like(weights["head.bias"], value)
    return copy


def _prefixed(weights):
    return {f"module.{key}": value for key, value in weights.items()}


LAYOUTS = {
    "bare": lambda w: w,
    "bare_module_prefix": _prefixed,
    "state_dict": lambda w: {"state_dict": w, "epoch": 1, "args": argparse.Namespace(lr=1e-3)},
    "state_dict_ema": lambda w: {"state_dict_ema": w, "arch": "t2t_vit_14"},
    "both_module_prefix": lambda w: {"state_dict": _prefixed(_marked(w, -1.0)), "state_dict_ema": _prefixed(w),
                                     "optimizer": {"state": {}, "param_groups": []}, "epoch": 309,
                                     "args": argparse.Namespace(model="t2t_vit_14", model_ema=True)},
    "model_key": lambda w: {"model": w, "epoch": 3},
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_round_trip(layout, tmp_path, tiny_weights):
    path = tmp_path / "ckpt.pth.tar"
    torch.save(LAYOUTS[layout](tiny_weights), path)
    model = create_model("matmul", TINY)
    info = load_checkpoint(model, path)
    for key, value in model.state_dict().items():
        assert torch.equal(value, tiny_weights[key]), key
    assert info.num_tensors == len(tiny_weights)


def test_legacy_serialization(tmp_path, tiny_weights):
    path = tmp_path / "legacy.pth"
    torch.save({"state_dict": tiny_weights}, path, _use_new_zipfile_serialization=False)
    model = create_model("einsum", TINY)
    assert load_checkpoint(model, path).weights_key == "state_dict"


def test_ema_preferred_and_selectable(tmp_path, tiny_weights):
    path = tmp_path / "both.pth.tar"
    torch.save({"state_dict": _marked(tiny_weights, 1.0), "state_dict_ema": _marked(tiny_weights, 2.0),
                "epoch": 7, "metric": 81.5}, path)
    model = create_model("einsum", TINY)
    info = load_checkpoint(model, path)
    assert info.weights_key == "state_dict_ema"
    assert torch.all(model.head.bias == 2.0)
    assert info.metadata == {"epoch": 7, "metric": 81.5}
    info = load_checkpoint(model, path, weights="plain")
    assert info.weights_key == "state_dict" and torch.all(model.head.bias == 1.0)


def test_ema_demanded_but_absent(tmp_path, tiny_weights):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": tiny_weights}, path)
    with pytest.raises(CheckpointError, match="no weights under state_dict_ema"):
        load_checkpoint(create_model("einsum", TINY), path, weights="ema")
    torch.save(tiny_weights, path)
    with pytest.raises(CheckpointError, match="bare state dict with no EMA"):
        load_checkpoint(create_model("einsum", TINY), path, weights="ema")


def _save_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory, tiny_weights) -> bytes:
    path = tmp_path_factory.mktemp("bytes") / "full.pth"
    torch.save({"state_dict": tiny_weights}, path)
    return path.read_bytes()


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"does not exist \(check --pth-path\)"),
    ("directory", "is a directory"),
    ("empty", r"is empty \(0 bytes\)"),
    ("truncated", "truncated or corrupt"),
    ("text", r"is not a PyTorch checkpoint \(it is a text file, starting 'this is not a checkpoint'"),
    ("html", r"it is a text file, starting '<html>404 Not Found"),
    ("git_lfs", "it is a Git LFS pointer: fetch the real file with git lfs pull"),
    ("blocked_module", r"needs the global os\.system"),
    ("random_bytes", "truncated or corrupt|is not a PyTorch checkpoint"),
    ("foreign_global", r"needs the global .*NotAllowed.*only argparse.Namespace is allowed"),
    ("list", "holds a list, not a dict of weights"),
    ("no_weights", r"no weights under state_dict_ema or state_dict or model \(it holds: epoch, optimizer\)"),
])
def test_unreadable_checkpoints_are_refused(case, pattern, tmp_path, saved_bytes, tiny_weights):
    path = tmp_path / "ckpt.pth"
    if case == "directory":
        path.mkdir()
    elif case == "empty":
        path.touch()
    elif case == "truncated":
        _save_bytes(path, saved_bytes[: len(saved_bytes) // 2])
    elif case == "text":
        path.write_text("this is not a checkpoint\n")
    elif case == "html":
        path.write_text("<html>404 Not Found</html>")
    elif case == "git_lfs":
        path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 86000000\n")
    elif case == "blocked_module":
        path.write_bytes(b"\x80\x02cos\nsystem\nq\x00.")  # a pickle that would call os.system
    elif case == "random_bytes":
        _save_bytes(path, bytes(range(256)) * 64)
    elif case == "foreign_global":
        torch.save({"state_dict": tiny_weights, "extra": NotAllowed()}, path)
    elif case == "list":
        torch.save([1, 2, 3], path)
    elif case == "no_weights":
        torch.save({"epoch": 1, "optimizer": {}}, path)
    with pytest.raises(CheckpointError, match=pattern) as raised:
        load_checkpoint(create_model("einsum", TINY), path)
    assert "\n" not in str(raised.value)
    assert "weights_only" not in str(raised.value)  # never torch's advice to turn the safe loading off


@pytest.mark.parametrize("change, pattern", [
    ("remove", r"1 missing: blocks\.0\.mlp\.fc1\.bias"),
    ("add", r"1 unexpected: blocks\.0\.attn\.qkv\.bias"),
    ("reshape", r"1 wrong shape: head\.weight \(10, 64\) != \(1000, 64\)"),
    ("remove_many", r"14 missing: .*\(\+6 more\)"),
])
def test_weights_that_do_not_fit_are_listed(change, pattern, tmp_path, tiny_weights):
    weights = dict(tiny_weights)
    if change == "remove":
        del weights["blocks.0.mlp.fc1.bias"]
    elif change == "add":
        weights["blocks.0.attn.qkv.bias"] = torch.zeros(192)
    elif change == "reshape":
        weights["head.weight"] = torch.zeros(10, 64)
    else:
        for key in [key for key in weights if key.startswith(("blocks.0.", "tokens_to_token.attention1."))][:14]:
            del weights[key]
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict_ema": weights}, path)
    model = create_model("einsum", TINY)
    before = model.head.bias.clone()
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(model, path)
    assert torch.equal(model.head.bias, before)  # nothing was loaded


def test_namespace_is_allowed_but_nothing_else(tmp_path, tiny_weights):
    path = tmp_path / "ns.pth"
    torch.save({"state_dict": tiny_weights, "args": argparse.Namespace(epochs=310)}, path)
    global_list = getattr(torch.serialization, "get_safe_globals", list)  # torch >= 2.4 keeps a global allow-list
    assert argparse.Namespace not in global_list()
    assert isinstance(read_checkpoint(path)["args"], argparse.Namespace)
    assert argparse.Namespace not in global_list()  # allowed for that load only


def test_select_state_dict_strips_prefix_only_at_start():
    weights = {"module.a": torch.zeros(1), "b.module.c": torch.zeros(1)}
    state_dict, key = select_state_dict({"state_dict": weights})
    assert key == "state_dict" and set(state_dict) == {"a", "b.module.c"}
