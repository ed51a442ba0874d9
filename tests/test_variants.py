"""Which T2T-ViT a state dict is, read from its tensor shapes, and the one line for one that fits none or
disagrees with --model."""

from __future__ import annotations

import os

import pytest
import torch

import T2T_ViT_pth2onnx
from t2t_vit.model.variants import BY_NAME, VARIANTS, VariantError, describe_state_dict, identify


def shaped_state_dict(tokens_type: str, embed_dim: int, depth: int, mlp_ratio: float, img_size: int,
                      prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors upstream's T2T_ViT(...) has that tell variants apart, with their shapes (values unused)."""
    tokens = (img_size // 16) ** 2 + 1
    t2t = "tokens_to_token.attention1."
    state = {"cls_token": torch.empty(1, 1, embed_dim), "pos_embed": torch.empty(1, tokens, embed_dim),
             "tokens_to_token.project.weight": torch.empty(embed_dim, 576), "head.weight": torch.empty(1000, embed_dim)}
    if tokens_type == "performer":
        state.update({t2t + "kqv.weight": torch.empty(192, 147), t2t + "w": torch.empty(32, 64)})
    else:
        state.update({t2t + "attn.qkv.weight": torch.empty(192, 147), t2t + "mlp.fc1.weight": torch.empty(64, 64)})
    for block in range(depth):
        state[f"blocks.{block}.mlp.fc1.weight"] = torch.empty(int(mlp_ratio * embed_dim), embed_dim)
        state[f"blocks.{block}.attn.qkv.weight"] = torch.empty(3 * embed_dim, embed_dim)
    return {prefix + key: value for key, value in state.items()}


@pytest.mark.parametrize("spec", VARIANTS, ids=[spec.name for spec in VARIANTS])
def test_every_published_variant_is_told_by_its_shapes(spec):
    state = shaped_state_dict(spec.tokens_type, spec.embed_dim, spec.depth, spec.mlp_ratio, spec.img_size)
    assert identify(state) is spec
    assert describe_state_dict(state)["img_size"] == spec.img_size and spec.tokens in (197, 577)


def test_the_table_has_upstreams_eleven_checkpoints():
    names = [name for spec in VARIANTS for name in spec.checkpoints]
    assert len(names) == len(set(names)) == 11
    assert "82.6_T2T_ViTt_24.pth.tar" in BY_NAME["t2t_vit_t_24"].checkpoints
    assert BY_NAME["t2t_vit_24"].checkpoints == ("82.3_T2T_ViT_24.pth.tar", "84.2_T2T_ViT_24.pth.tar")  # same shapes


def test_the_toolkits_own_model_is_t2t_vit_14(reference_weights):
    assert identify(reference_weights).name == "t2t_vit_14"


def test_a_variant_that_fits_none_says_what_was_found():
    wide = shaped_state_dict("performer", 768, 4, 3.0, 224)  # upstream's t2t_vit_14_wide: no checkpoint
    with pytest.raises(VariantError) as raised:
        identify(wide)
    message = str(raised.value)
    assert "found 768 wide, 4 blocks, performer tokens-to-token, MLP ratio 3, 197 tokens (224 input)" in message
    assert "the published ones are t2t_vit_7 (256x7), " in message and "t2t_vit_14_384 (384x14, 384)" in message
    with pytest.raises(VariantError, match="not a T2T-ViT state dict"):
        describe_state_dict({"conv1.weight": torch.empty(64, 3, 7, 7)})


@pytest.mark.parametrize("shapes, extra, expected", [
    (("performer", 448, 19, 3.0, 224), ["--model", "t2t_vit_14"],
     "other.pth.tar is t2t_vit_19 (448 wide, 19 blocks, performer tokens-to-token, MLP ratio 3, 197 tokens "
     "(224 input)), not --model t2t_vit_14 (384 wide, 14 blocks, performer tokens-to-token, 224 input): leave out "
     "--model to take the checkpoint's own"),
    (("performer", 768, 4, 3.0, 224), [], "the checkpoint fits no published T2T-ViT: found 768 wide, 4 blocks"),
], ids=["t2t_vit_19_as_14", "t2t_vit_14_wide"])
def test_pth2onnx_names_another_variant_in_one_line_and_writes_nothing(shapes, extra, expected, tmp_path, capsys):
    checkpoint = tmp_path / "other.pth.tar"
    torch.save({"state_dict_ema": shaped_state_dict(*shapes, prefix="module."), "epoch": 1}, checkpoint)
    assert T2T_ViT_pth2onnx.main(["--pth-path", str(checkpoint), "--onnx-path", str(tmp_path / "out.onnx")] + extra) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and expected in error and error.count("\n") == 1, error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["other.pth.tar"]


def test_the_test_variants_exist_only_for_the_suite():
    """The small variants of the fast tier are no published T2T-ViT: without the suite's variable a user's checkpoint
    of their shape is refused as unpublished, and no listing names them."""
    import subprocess
    import sys

    from conftest import REPO_ROOT
    from t2t_vit.model.variants import BY_NAME, TEST_VARIANTS, TEST_VARIANTS_ENV, VARIANTS, published_text

    assert {spec.name for spec in TEST_VARIANTS} <= set(BY_NAME)  # here, the suite set the variable
    assert not {spec.name for spec in TEST_VARIANTS} & {spec.name for spec in VARIANTS}
    assert "test" not in published_text()
    code = ("import torch\n"
            "from t2t_vit.model import variants\n"
            "from t2t_vit.model.network import create_model\n"
            "assert 't2t_vit_test' not in variants.BY_NAME and 't2t_vit_test' not in variants.NAMES\n"
            "spec = variants.TEST_VARIANTS[0]\n"
            "from t2t_vit.model.network import T2TViT\n"
            "weights = T2TViT(**spec.builder_args).state_dict()\n"
            "try:\n"
            "    variants.identify(weights)\n"
            "except variants.VariantError as error:\n"
            "    assert 'fits no published T2T-ViT: found 64 wide, 1 blocks' in str(error), error\n"
            "    print('refused')\n")
    env = {key: value for key, value in os.environ.items() if key != TEST_VARIANTS_ENV}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "refused\n", result.stderr[-2000:]
