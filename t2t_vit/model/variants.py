"""The T2T-ViT variants upstream publishes ImageNet checkpoints for, and how a state dict tells which it is.

A variant is data: its builder name (upstream's, with ``_384`` for the 384 input), tokens-to-token type, width,
depth, heads, MLP ratio and input size (upstream ``models/t2t_vit.py`` at commit 0f63dc9, README; FACTS section
11). :func:`describe_state_dict` reads what a state dict's tensor shapes say, and :func:`identify` matches it to
the table. The number of heads is in no shape: it follows from the published variant that matches the rest
(upstream's ``t2t_vit_14_resnext``, 32 heads, has T2T-ViT-14's shapes and no checkpoint).

This table is the one place that says what a variant is: the model (:mod:`t2t_vit.model.network` registers a timm builder
per entry), the data config (:func:`spec.data_config`), the export's metadata, the bins' manifest, the result stamps
and the main job's file names all read it. ``DEFAULT`` is the seed's T2T-ViT-14 at 224.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from t2t_vit import ToolkitError
from t2t_vit.config import MODEL_NAME


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

    @property
    def performer(self) -> bool:
        return self.tokens_type == "performer"

    @property
    def forms(self) -> tuple[str, ...]:
        """The attention forms the tokens-to-token module can be exported in: the performer's three (``sum`` for the
        NPU, ``matmul`` for the CPU, ``einsum`` the reference), or ``softmax`` alone for the transformer tokens."""
        return PERFORMER_FORMS if self.performer else (SOFTMAX_FORM,)

    def form(self, wanted: str) -> str:
        """The form an export of this variant takes when ``wanted`` was asked for: the transformer-token variants
        have one (their softmax attention), whatever performer form was asked."""
        return wanted if self.performer else SOFTMAX_FORM

    @property
    def builder_args(self) -> dict[str, Any]:
        """The T2TViT arguments of this variant (upstream's builder's, the 384 input included)."""
        return {"tokens_type": self.tokens_type, "embed_dim": self.embed_dim, "depth": self.depth,
                "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio, "img_size": self.img_size}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.img_size, self.img_size)

    def data_config(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The resolved data config at this variant's input size (:func:`t2t_vit.config.resolve_data_config`)."""
        from t2t_vit.config import resolve_data_config

        return resolve_data_config(overrides, img_size=self.img_size)

    @property
    def title(self) -> str:
        """The name upstream's README gives it: T2T-ViT-14, T2T-ViT_t-14, T2T-ViT-14 at 384."""
        number = self.name.split("_")[3 if not self.performer else 2]
        text = f"T2T-ViT{'_t' if not self.performer else ''}-{number}"
        return f"{text} at {self.img_size}" if self.img_size != 224 else text

    def record(self) -> dict[str, Any]:
        """What the files a stage writes carry of the variant (ONNX metadata, manifest, stamps, summary)."""
        return {"model": self.name, "tokens_type": self.tokens_type, "embed_dim": self.embed_dim, "depth": self.depth,
                "img_size": self.img_size}


PERFORMER_FORMS = ("sum", "matmul", "einsum")
DEFAULT_PERFORMER = "sum"  # the form the Ascend flow and gen_cfg.py expect
WEIGHT_CHOICES = ("auto", "ema", "plain")  # which weights of a training checkpoint (EMA if present, for auto)
SOFTMAX_FORM = "softmax"


def form_phrase(form: str) -> str:
    """How a report names an export's attention: 'performer sum', or 'softmax attention' (the transformer-token
    variants, which have no performer)."""
    return "softmax attention" if form == SOFTMAX_FORM else f"performer {form}"


SPLIT_FORMS = ("conv", "unfold")  # how an export writes the soft splits; PyTorch's own forward always unfolds
DEFAULT_SPLITS = "conv"


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

# Shallow, narrow models of the same code for the test suite's fast tier (one block, 64 wide): every stage runs on
# them as on a published variant, in a fraction of the time. They exist only where TEST_VARIANTS_ENV is "1" (the
# suite's conftest sets it, and its subprocesses inherit it); a user's checkpoint of that shape is otherwise refused
# as unpublished, and no listing of the published family names them.
TEST_VARIANTS_ENV = "T2T_VIT_TEST_VARIANTS"
TEST_VARIANTS: tuple[VariantSpec, ...] = (
    VariantSpec("t2t_vit_test", "performer", 64, 1, 2, 1.0, 224, ()),
    VariantSpec("t2t_vit_t_test", "transformer", 64, 1, 2, 1.0, 224, ()),
)
KNOWN = VARIANTS + (TEST_VARIANTS if os.environ.get(TEST_VARIANTS_ENV) == "1" else ())
BY_NAME = {spec.name: spec for spec in KNOWN}
DEFAULT = BY_NAME[MODEL_NAME]
NAMES = tuple(BY_NAME)


def by_name(name: str) -> VariantSpec:
    """The published variant called ``name`` (``--model``), or one line listing the names."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise VariantError(f"--model {name} is not a published T2T-ViT: use one of {', '.join(NAMES)}") from None


def resolve(state_dict: Mapping[str, Any], model: str | None = None, source: str = "the checkpoint") -> VariantSpec:
    """The variant of a state dict; with ``model`` (``--model NAME``) it must be that one.

    Raises:
        VariantError: the state dict fits no published variant, or another than ``model``, in one line.
    """
    wanted = by_name(model) if model else None
    found = describe_state_dict(state_dict)
    spec = match_variant(found)
    if wanted is not None and spec is not wanted:
        raise VariantError(f"{source} is {spec.name} ({found_text(found)}), not --model {wanted.name} "
                           f"({wanted.embed_dim} wide, {wanted.depth} blocks, {wanted.tokens_type} tokens-to-token, "
                           f"{wanted.img_size} input): leave out --model to take the checkpoint's own")
    return spec


def of_metadata(metadata: Mapping[str, str]) -> VariantSpec | None:
    """The variant an export's ``t2t_vit.*`` metadata names; T2T-ViT-14 for exports made before files carried the
    variant (they all were); None for a name this toolkit does not know."""
    name = metadata.get("model", DEFAULT.name if metadata else None)
    return BY_NAME.get(name) if name else None


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
    for spec in KNOWN:
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
