"""The model: upstream state-dict layout, the three performer forms, timm registration, data config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch

from t2t_vit.config import data_config_hash, resolve_data_config
from t2t_vit.model.network import PERFORMER_FORMS, PerformerKernel, T2TViT, create_model, sinusoid_position_table

# Shapes from the upstream definition (FACTS section 1); every key of the published checkpoint.
EXPECTED_SHAPES = {
    "cls_token": (1, 1, 384),
    "pos_embed": (1, 197, 384),
    "tokens_to_token.attention1.w": (32, 64),
    "tokens_to_token.attention1.kqv.weight": (192, 147),
    "tokens_to_token.attention1.proj.weight": (64, 64),
    "tokens_to_token.attention1.norm1.weight": (147,),
    "tokens_to_token.attention1.norm2.weight": (64,),
    "tokens_to_token.attention1.mlp.0.weight": (64, 64),
    "tokens_to_token.attention1.mlp.2.weight": (64, 64),
    "tokens_to_token.attention2.kqv.weight": (192, 576),
    "tokens_to_token.attention2.norm1.weight": (576,),
    "tokens_to_token.project.weight": (384, 576),
    "blocks.0.attn.qkv.weight": (1152, 384),
    "blocks.13.mlp.fc1.weight": (1152, 384),
    "blocks.13.mlp.fc2.weight": (384, 1152),
    "norm.weight": (384,),
    "head.weight": (1000, 384),
    "head.bias": (1000,),
}
# Counted on the upstream model at 0f63dc9: 188 state-dict entries, 21,545,550 parameters.
UPSTREAM_KEY_COUNT = 188
UPSTREAM_PARAMETERS = 21_545_550


def test_state_dict_layout_matches_upstream():
    state_dict = create_model().state_dict()
    assert len(state_dict) == UPSTREAM_KEY_COUNT
    assert sum(value.numel() for value in state_dict.values()) == UPSTREAM_PARAMETERS
    for key, shape in EXPECTED_SHAPES.items():
        assert tuple(state_dict[key].shape) == shape, key
    assert "blocks.0.attn.qkv.bias" not in state_dict  # qkv has no bias
    assert sum(key.startswith("blocks.") and key.endswith(".attn.qkv.weight") for key in state_dict) == 14
    assert not any("kernel" in key for key in state_dict)  # the kernel module holds no weights


@pytest.mark.parametrize("performer", PERFORMER_FORMS)
def test_state_dict_is_the_same_for_every_form(performer):
    reference = create_model("einsum").state_dict()
    other = create_model(performer).state_dict()
    assert {k: tuple(v.shape) for k, v in other.items()} == {k: tuple(v.shape) for k, v in reference.items()}


def test_performer_projection_is_orthogonal_with_row_norm_sqrt_m():
    w = create_model().tokens_to_token.attention1.w
    assert not w.requires_grad
    np.testing.assert_allclose((w @ w.T).numpy(), 32 * np.eye(32), atol=1e-4)


def test_sinusoid_table_values():
    table = sinusoid_position_table(197, 384)[0].double()
    assert table.shape == (197, 384)
    assert table[0, 0] == 0 and table[0, 1] == 1
    angle = 5 / 10000 ** (2 * 3 / 384)  # position 5, channel pair 3
    assert math.isclose(table[5, 6], math.sin(angle), abs_tol=1e-6)
    assert math.isclose(table[5, 7], math.cos(angle), abs_tol=1e-6)


def test_attention_scale_is_head_dim_not_embed_dim():
    # The eval flow builds the model without pretrained=True, so qk_scale stays None -> 64 ** -0.5.
    assert create_model().blocks[0].attn.scale == 0.125


@pytest.mark.parametrize("performer", ["sum", "matmul"])
@pytest.mark.parametrize("batch", [1, 2, 5], ids=lambda b: f"batch{b}")
def test_kernel_forms_agree(performer, batch):
    # Random k, q, v of unit scale: the features exp(w.x - |x|^2/2) vary over orders of magnitude.
    # The forms only reorder fp32 sums: 1e-5 of the output's scale (about 1) covers that (torch 1.12's einsum
    # reorders most: 4e-6), a wrong contraction is off by O(1).
    generator = torch.Generator().manual_seed(batch)
    kqv = torch.randn(batch, 50, 192, generator=generator) * 0.5
    with torch.random.fork_rng():  # orthogonal_ takes no generator before torch 2.3
        torch.manual_seed(batch)
        w = torch.nn.init.orthogonal_(torch.empty(32, 64)) * math.sqrt(32)
    reference, reference_v = PerformerKernel(64, 32, "einsum")(kqv, w)
    result, v = PerformerKernel(64, 32, performer)(kqv, w)
    torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(v, reference_v)


@pytest.mark.parametrize("performer", ["sum", "matmul"])
@pytest.mark.parametrize("batch", [1, 4], ids=lambda b: f"batch{b}")
def test_model_forms_agree(performer, batch, reference_weights, reference_model):
    # Logits of scale ~4; fp32 reordering moves them by ~2e-6. 1e-4 is the acceptance bound vs upstream.
    images = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(10 + batch))
    model = create_model(performer)
    model.load_state_dict(reference_weights)
    with torch.no_grad():
        expected = reference_model(images)
        actual = model(images)
    assert expected.abs().max() > 1  # the weights make the logits differ from class to class
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-4)


def test_rows_do_not_depend_on_the_batch(reference_model):
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batched = reference_model(images)
        single = torch.cat([reference_model(images[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="performer form must be one of"):
        create_model("conv")


OVERRIDES = [{}, {"crop_pct": 0.875}, {"interpolation": "bilinear", "crop_pct": None}, {"input_size": (3, 256, 256)},
             {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}]


def test_timm_builds_it_with_its_data_config():
    model = timm.create_model("t2t_vit_14", performer="matmul")
    assert isinstance(model, T2TViT) and model.performer == "matmul"
    for overrides in OVERRIDES:  # the torch-free resolution equals timm's for the registered model
        assert timm.data.resolve_data_config(dict(overrides), model=model) == resolve_data_config(overrides)
    with pytest.raises(ValueError, match="no downloadable weights"):
        timm.create_model("t2t_vit_14", pretrained=True)


def test_data_config_values_and_precedence():
    config = resolve_data_config()
    assert config["input_size"] == (3, 224, 224)
    assert config["interpolation"] == "bicubic"
    assert config["crop_pct"] == 0.9  # not timm's fallback 0.875 that the ModelZoo preprocess used
    assert config["mean"] == (0.485, 0.456, 0.406) and config["std"] == (0.229, 0.224, 0.225)
    overridden = resolve_data_config({"crop_pct": 0.875})
    assert overridden["crop_pct"] == 0.875 and overridden["interpolation"] == "bicubic"
    assert data_config_hash(config) == data_config_hash(dict(config))
    assert data_config_hash(config) != data_config_hash(overridden)
    with pytest.raises(ValueError, match="unknown data config fields"):
        resolve_data_config({"crop": 0.9})
