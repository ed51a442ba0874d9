"""Acceptance against the upstream model's own code (needs $T2T_VIT_UPSTREAM; CI has no copy)."""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np
import pytest
import torch

import t2t_vit.model.network
from t2t_vit.model.checkpoint import load_checkpoint
from t2t_vit.model.export import export_onnx
from t2t_vit.model.network import PERFORMER_FORMS, create_model
from t2t_vit.version_bridge import onnxruntime_session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream_model(upstream_root):
    from timm.models import register_model

    sys.path.insert(0, str(upstream_root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from models.t2t_vit import t2t_vit_14 as upstream_t2t_vit_14
            model = upstream_t2t_vit_14().eval()
            register_model(t2t_vit.model.network.t2t_vit_14)  # upstream's import took over the timm name
    finally:
        sys.path.remove(str(upstream_root))
    torch.manual_seed(1)
    with torch.no_grad():  # move away from the tiny training initialisation so that every part matters
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and not name.endswith(".w") and name != "pos_embed":
                parameter.normal_(0, parameter.shape[-1] ** -0.5)
    return model


LAYOUTS = ["bare", "module_prefix", "state_dict", "state_dict_ema", "both"]


def _save(model, layout, path, name="t2t_vit_14"):
    weights = model.state_dict()
    if layout == "bare":
        payload = weights
    elif layout == "module_prefix":
        payload = {"state_dict": {f"module.{k}": v for k, v in weights.items()}}
    elif layout in ("state_dict", "state_dict_ema"):
        payload = {layout: weights, "args": argparse.Namespace(model=name)}
    else:  # the EMA weights are the upstream model's; the plain ones are garbage
        garbage = {k: torch.randn_like(v) for k, v in weights.items()}
        payload = {"state_dict": garbage, "state_dict_ema": weights, "epoch": 309,
                   "args": argparse.Namespace(model=name)}
    torch.save(payload, path)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("performer", PERFORMER_FORMS)
def test_upstream_weights_give_upstream_logits(upstream_model, layout, performer, tmp_path):
    path = tmp_path / "ckpt.pth.tar"
    _save(upstream_model, layout, path)
    model = create_model(performer)
    load_checkpoint(model, path)
    for batch in (1, 4):
        images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            expected, actual = upstream_model(images), model(images)
        assert expected.abs().max() > 1
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("performer, opset", [("sum", 11), ("matmul", 11), ("einsum", 12)])
def test_exports_match_upstream(upstream_model, performer, opset, tmp_path):
    model = create_model(performer)
    model.load_state_dict(upstream_model.state_dict())
    out = tmp_path / "model.onnx"
    export_onnx(model, out, opset=opset)
    session = onnxruntime_session(out, "the test")
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = upstream_model(images).numpy()
    (actual,) = session.run(["class"], {"image": images.numpy()})
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-4)


UPSTREAM_BUILDERS = {  # our variant name -> upstream's builder and its arguments
    "t2t_vit_7": ("t2t_vit_7", {}), "t2t_vit_10": ("t2t_vit_10", {}), "t2t_vit_12": ("t2t_vit_12", {}),
    "t2t_vit_14": ("t2t_vit_14", {}), "t2t_vit_19": ("t2t_vit_19", {}), "t2t_vit_24": ("t2t_vit_24", {}),
    "t2t_vit_14_384": ("t2t_vit_14", {"img_size": 384}), "t2t_vit_t_14": ("t2t_vit_t_14", {}),
    "t2t_vit_t_19": ("t2t_vit_t_19", {}), "t2t_vit_t_24": ("t2t_vit_t_24", {}),
}


def upstream_variant(upstream_root, name):
    """Upstream's own model for one of our variant names, in eval mode, with its training initialisation."""
    import importlib

    from timm.models import register_model

    builder, arguments = UPSTREAM_BUILDERS[name]
    sys.path.insert(0, str(upstream_root))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = getattr(importlib.import_module("models.t2t_vit"), builder)(**arguments).eval()
            for ours in t2t_vit.model.network.BUILDERS.values():  # upstream's import took over the timm names
                register_model(ours)
    finally:
        sys.path.remove(str(upstream_root))
    return model


@pytest.mark.parametrize("name", list(UPSTREAM_BUILDERS))
def test_upstreams_own_models_are_told_apart_by_their_shapes(upstream_root, name):
    """t2t_vit.model.variants's table against the state dicts of upstream's own builders (random weights)."""
    from t2t_vit.model.variants import identify

    assert identify(upstream_variant(upstream_root, name).state_dict()).name == name


# The acceptance layouts for four variants; the others as upstream's training checkpoints.
VARIANT_LAYOUTS = {"t2t_vit_7": "bare", "t2t_vit_19": "module_prefix"}


@pytest.mark.parametrize("name", list(UPSTREAM_BUILDERS))
def test_every_variants_export_gives_upstreams_logits(upstream_root, name, tmp_path):
    """pth2onnx with no variant named, on upstream's own model's weights: input (N,3,S,S), logits within 1e-4 of
    upstream's model; and every performer form of our PyTorch model agrees with upstream's too."""
    import T2T_ViT_pth2onnx
    from t2t_vit.ascend.keep_dtype import tokens_to_token_nodes
    from t2t_vit.model.export import load_onnx, read_metadata
    from t2t_vit.model.network import scaled_random_state_dict
    from t2t_vit.model.variants import BY_NAME

    spec = BY_NAME[name]
    upstream = upstream_variant(upstream_root, name)
    upstream.load_state_dict(scaled_random_state_dict(upstream, seed=3))
    checkpoint = tmp_path / "ckpt.pth.tar"
    _save(upstream, VARIANT_LAYOUTS.get(name, "both" if spec.performer else "state_dict_ema"), checkpoint,
          UPSTREAM_BUILDERS[name][0])
    out = tmp_path / "out.onnx"
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint), "--onnx-path", str(out), "-q"]) == 0
    dims = [dim.dim_param or dim.dim_value for dim in load_onnx(out).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, spec.img_size, spec.img_size] and read_metadata(out)["model"] == name
    graph = load_onnx(out).graph
    module = [graph.node[index].op_type for index in tokens_to_token_nodes(graph)]
    assert [op for op in module if op in ("Gather", "Shape", "Conv")] == ["Conv"] * 3  # no im2col
    images = torch.randn(2, 3, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = upstream(images)
    assert expected.abs().max() > 1
    session = onnxruntime_session(out, "the test")
    (actual,) = session.run(["class"], {"image": images.numpy()})
    np.testing.assert_allclose(actual, expected.numpy(), rtol=0, atol=1e-4)
    for form in spec.forms:
        ours = create_model(form, spec)
        load_checkpoint(ours, checkpoint)
        with torch.no_grad():
            torch.testing.assert_close(ours(images), expected, rtol=0, atol=1e-4)
