"""The T2T-ViT variants upstream publishes ImageNet checkpoints for, and how a state dict tells which it is.

A variant is data: its builder name (upstream's, with ``_384`` for the 384 input), tokens-to-token type, width,
depth, heads, MLP ratio and input size (upstream ``models/t2t_vit.py`` at commit 0f63dc9, README; FACTS section
11). :func:`describe_state_dict` reads what a state dict's tensor shapes say, and :func:`identify` matches it to
the table. The number of heads is in no shape: it follows from the published variant that matches the rest
(upstream's ``t2t_vit_14_resnext``, 32 heads, has T2T-ViT-14's shapes and no checkpoint).

The toolkit builds and exports T2T-ViT-14 (224 input) today; the table lets it say what any other checkpoint is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from t2t_vit import ToolkitError


class VariantError(ToolkitError):
    """A state dict that is no T2T-ViT, or fits no published variant."""


@dataclass(frozen=True)
class VariantSpec:
    """One published T2T-ViT: builder arguments, input size, and the checkpoint files upstream publishes."""

    name: str
    tokens_type: str  # "performer" or "transformer" (softmax attention in the tokens-to-token module)
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    img_size: int
    checkpoints: tuple[str, ...]

    @property
    def tokens(self) -> int:
        """Tokens of the transformer blocks: (img_size / 16)^2 patches and the class token."""
        return (self.img_size // 16) ** 2 + 1


VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("t2t_vit_7", "performer", 256, 7, 4, 2.0, 224, ("71.7_T2T_ViT_7.pth.tar",)),
    VariantSpec("t2t_vit_10", "performer", 256, 10, 4, 2.0, 224, ("75.2_T2T_ViT_10.pth.tar",)),
    VariantSpec("t2t_vit_12", "performer", 256, 12, 4, 2.0, 224, ("76.5_T2T_ViT_12.pth.tar",)),
    VariantSpec("t2t_vit_14", "performer", 384, 14, 6, 3.0, 224, ("81.5_T2T_ViT_14.pth.tar",)),
    VariantSpec("t2t_vit_19", "performer", 448, 19, 7, 3.0, 224, ("81.9_T2T_ViT_19.pth.tar",)),
    VariantSpec("t2t_vit_24", "performer", 512, 24, 8, 3.0, 224, ("82.3_T2T_ViT_24.pth.tar", "84.2_T2T_ViT_24.pth.tar")),
    VariantSpec("t2t_vit_14_384", "performer", 384, 14, 6, 3.0, 384, ("83.3_T2T_ViT_14.pth.tar",)),
    VariantSpec("t2t_vit_t_14", "transformer", 384, 14, 6, 3.0, 224, ("81.7_T2T_ViTt_14.pth.tar",)),
    VariantSpec("t2t_vit_t_19", "transformer", 448, 19, 7, 3.0, 224, ("82.4_T2T_ViTt_19.pth.tar",)),
    VariantSpec("t2t_vit_t_24", "transformer", 512, 24, 8, 3.0, 224, ("82.6_T2T_ViTt_24.pth.tar",)),
)
BY_NAME = {spec.name: spec for spec in VARIANTS}


def describe_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """What the tensor shapes say (``module.`` prefixes already removed): tokens type, width, depth, MLP ratio,
    token count and the input size it implies.

    Raises:
        VariantError: the tensors that tell these apart are not there (not a T2T-ViT state dict).
    """
    def shape(key: str) -> tuple[int, ...] | None:
        value = state_dict.get(key)
        return tuple(value.shape) if value is not None and hasattr(value, "shape") else None

    if shape("tokens_to_token.attention1.kqv.weight") is not None:
        tokens_type = "performer"
    elif shape("tokens_to_token.attention1.attn.qkv.weight") is not None:
        tokens_type = "transformer"
    else:
        raise VariantError("no tokens_to_token.attention1 weights (kqv for the performer, attn.qkv for the "
                           "transformer): this is not a T2T-ViT state dict")
    cls_token, pos_embed, fc1 = shape("cls_token"), shape("pos_embed"), shape("blocks.0.mlp.fc1.weight")
    if cls_token is None or pos_embed is None or fc1 is None or len(pos_embed) != 3 or len(fc1) != 2:
        raise VariantError("no cls_token, pos_embed or blocks.0.mlp.fc1.weight of a T2T-ViT: this is not a T2T-ViT "
                           "state dict")
    depth = len({int(match.group(1)) for key in state_dict for match in [re.match(r"blocks\.(\d+)\.", key)] if match})
    tokens = pos_embed[1]
    side = round((tokens - 1) ** 0.5)
    return {"tokens_type": tokens_type, "embed_dim": cls_token[-1], "depth": depth,
            "mlp_ratio": fc1[0] / fc1[1], "tokens": tokens,
            "img_size": side * 16 if side * side == tokens - 1 else None}


def identify(state_dict: Mapping[str, Any]) -> VariantSpec:
    """The published variant whose shapes the state dict has (:func:`match_variant` of what it holds)."""
    return match_variant(describe_state_dict(state_dict))


def match_variant(found: Mapping[str, Any]) -> VariantSpec:
    """The published variant with the shapes :func:`describe_state_dict` found.

    Raises:
        VariantError: one line that says what was found (width, depth, tokens type, token count) and which
            variants exist.
    """
    for spec in VARIANTS:
        if (spec.tokens_type, spec.embed_dim, spec.depth, spec.mlp_ratio, spec.tokens) == (
                found["tokens_type"], found["embed_dim"], found["depth"], found["mlp_ratio"], found["tokens"]):
            return spec
    raise VariantError(f"the checkpoint fits no published T2T-ViT: found {found_text(found)}; the published ones "
                       f"are {published_text()}")


def found_text(found: Mapping[str, Any]) -> str:
    size = f"{found['img_size']} input" if found["img_size"] else "no square input size"
    return (f"{found['embed_dim']} wide, {found['depth']} blocks, {found['tokens_type']} tokens-to-token, MLP ratio "
            f"{found['mlp_ratio']:g}, {found['tokens']} tokens ({size})")


def published_text() -> str:
    """The published variants in one line: name (width x depth, tokens type[, input])."""
    return ", ".join(f"{spec.name} ({spec.embed_dim}x{spec.depth}"
                     f"{', transformer' if spec.tokens_type == 'transformer' else ''}"
                     f"{f', {spec.img_size}' if spec.img_size != 224 else ''})" for spec in VARIANTS)
