"""The published T2T-ViTs for inference, with state-dict layouts equal to upstream's checkpoints.

Every variant of :data:`t2t_vit.model.variants.VARIANTS` is registered with timm under its name, so
``timm.create_model("t2t_vit_7")`` builds it (``t2t_vit_14_384`` is T2T-ViT-14 at 384), and its pretrained
config is the data config every stage reads its preprocessing from (:func:`t2t_vit.config.resolve_data_config`).

The tokens-to-token module is the performer (``tokens_type="performer"``) or, for the ``t2t_vit_t_*``
variants, a one-head softmax attention (``"transformer"``) whose scale is the input width's ``dim ** -0.5``
and whose skip connection adds v, as upstream's token transformer does.

The performer attention of the tokens-to-token module comes in three numerically equivalent forms,
chosen when the model is built (``performer=``):

- ``einsum``: the reference form, as the published model computes it. ONNX Einsum needs opset 12.
- ``sum``: each contraction as a broadcast multiply followed by a sum, exported as Mul + ReduceSum.
  This is the form the Ascend flow uses: its elementwise ops stay in plain ND format, so ATC's
  ``--keep_dtype`` can keep the subgraph in fp32 (see ``gen_cfg.py``).
- ``matmul``: each contraction as a batched matrix product, the fast form on CPUs.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from timm.models import build_model_with_cfg, register_model
from torch import nn

from t2t_vit.config import MODEL_NAME, NUM_CLASSES, model_data_config
from t2t_vit.model.variants import (BY_NAME, DEFAULT_PERFORMER, DEFAULT_SPLITS, KNOWN, PERFORMER_FORMS, SOFTMAX_FORM,
                                    SPLIT_FORMS, VariantSpec)


# Read by timm's register_model below; the data config itself lives in t2t_vit.config.
default_cfgs = {
    spec.name: {
        "url": "",
        "num_classes": NUM_CLASSES,
        **model_data_config(spec.img_size),
        "pool_size": None,
        "first_conv": "tokens_to_token.soft_split0",
        "classifier": "head",
    }
    for spec in KNOWN
}


class PerformerKernel(nn.Module):
    """The parameter-free core of the performer's attention: from the kqv projection to ``y / (D + eps)``.

    It is a module of its own so that exported node names carry its scope (``.../kernel/...``): that
    scope is exactly the subgraph ATC must keep in fp32.

    Args:
        emb: width of k, q and v.
        features: number of random features m (rows of the projection ``w``).
        form: one of :data:`PERFORMER_FORMS`.
        epsilon: added to the normaliser D.
    """

    def __init__(self, emb: int, features: int, form: str, epsilon: float = 1e-8) -> None:
        super().__init__()
        if form not in PERFORMER_FORMS:
            raise ValueError(f"performer form must be one of {PERFORMER_FORMS}, got {form!r}")
        self.emb = emb
        self.features = features
        self.form = form
        self.epsilon = epsilon

    def _features(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Positive random features exp(x w^T - |x|^2 / 2) / sqrt(m): (B, T, emb) -> (B, T, m)."""
        if self.form == "einsum":
            wtx = torch.einsum("bti,mi->btm", x, w)
        elif self.form == "sum":
            wtx = (x.unsqueeze(2) * w).sum(dim=-1)
        else:
            wtx = torch.matmul(x, w.t())
        # Multiplying by 0.5 equals dividing by 2 bit for bit, and keeps the only Div that consumes
        # a ReduceSum the final normalisation.
        half_norm = (x * x).sum(dim=-1, keepdim=True) * 0.5
        return torch.exp(wtx - half_norm) / math.sqrt(self.features)

    def forward(self, kqv: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the normalised attention output y (B, T, emb) and v, which the caller adds back."""
        k, q, v = torch.split(kqv, self.emb, dim=-1)
        kp, qp = self._features(k, w), self._features(q, w)
        kp_total = kp.sum(dim=1)  # (B, m)
        if self.form == "einsum":
            denominator = torch.einsum("btm,bm->bt", qp, kp_total).unsqueeze(2)
            kptv = torch.einsum("btn,btm->bnm", v, kp)
            y = torch.einsum("btm,bnm->btn", qp, kptv)
        elif self.form == "sum":
            denominator = (qp * kp_total.unsqueeze(1)).sum(dim=-1, keepdim=True)
            kptv = (v.unsqueeze(3) * kp.unsqueeze(2)).sum(dim=1)
            y = (qp.unsqueeze(2) * kptv.unsqueeze(1)).sum(dim=-1)
        else:
            denominator = torch.matmul(qp, kp_total.unsqueeze(2))
            kptv = torch.matmul(v.transpose(1, 2), kp)
            y = torch.matmul(qp, kptv.transpose(1, 2))
        return y / (denominator + self.epsilon), v


class TokenPerformer(nn.Module):
    """One tokens-to-token re-structurisation step with performer attention (state-dict keys as upstream)."""

    def __init__(self, dim: int, in_dim: int = 64, kernel_ratio: float = 0.5, form: str = DEFAULT_PERFORMER) -> None:
        super().__init__()
        self.emb = in_dim
        self.kqv = nn.Linear(dim, 3 * self.emb)
        self.proj = nn.Linear(self.emb, self.emb)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(self.emb)
        self.mlp = nn.Sequential(nn.Linear(self.emb, self.emb), nn.GELU(), nn.Linear(self.emb, self.emb))
        m = int(self.emb * kernel_ratio)
        # Fixed random projection, stored in the checkpoint; orthogonal rows of norm sqrt(m) as trained.
        self.w = nn.Parameter(nn.init.orthogonal_(torch.empty(m, self.emb)) * math.sqrt(m), requires_grad=False)
        self.kernel = PerformerKernel(self.emb, m, form)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, v = self.kernel(self.kqv(self.norm1(x)), self.w)
        x = v + self.proj(y)  # the skip connection uses v, not the input
        return x + self.mlp(self.norm2(x))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenAttention(nn.Module):
    """The transformer tokens' one-head softmax attention, from ``dim`` to ``in_dim`` channels; v is added back.

    Its scale is ``dim ** -0.5`` (the input width: upstream divides ``dim`` by one head), applied to q.
    """

    def __init__(self, dim: int, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.scale = dim ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=False)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = torch.split(self.qkv(x), self.in_dim, dim=-1)
        attn = torch.matmul(q * self.scale, k.transpose(1, 2)).softmax(dim=-1)
        return v + self.proj(torch.matmul(attn, v))  # the skip connection uses v, not the input


class TokenTransformer(nn.Module):
    """One tokens-to-token step of the ``t2t_vit_t_*`` variants (state-dict keys as upstream's)."""

    def __init__(self, dim: int, in_dim: int = 64) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, in_dim)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def one_hot_split_weight(channels: int, kernel: int) -> torch.Tensor:
    """The grouped convolution's weight that is a soft split: (channels*k*k, 1, k, k), 1 at (o, 0, i, j) for
    o = c*k*k + i*k + j, as ``nn.Unfold`` orders its output channels."""
    area = kernel * kernel
    outputs = np.arange(channels * area)
    weight = np.zeros((len(outputs), 1, kernel, kernel), dtype=np.float32)
    weight[outputs, 0, (outputs % area) // kernel, outputs % kernel] = 1
    return torch.from_numpy(weight)


class SoftSplit(nn.Unfold):
    """A soft split: the ``kernel x kernel`` neighbourhood of every ``stride``-th pixel as one token.

    PyTorch's forward is upstream's ``nn.Unfold``. Exported with ``conv=True`` it is the same split as a grouped
    convolution with fixed one-hot weights (output channel ``c*k*k + i*k + j`` takes input channel ``c`` at offset
    ``(i, j)``): exactly the unfold's values, without the Gather-built im2col the exporter writes for an unfold.
    Given ``project`` (a Linear over the split's tokens), the split and the projection are one convolution whose
    weight is ``project.weight`` reshaped. The one-hot weights are built here, not stored: the state dict stays
    upstream's.
    """

    def __init__(self, channels: int, kernel: int, stride: int, padding: int, tokens: int) -> None:
        super().__init__(kernel_size=(kernel, kernel), stride=(stride, stride), padding=(padding, padding))
        self.channels, self.kernel, self.step, self.pad = channels, kernel, stride, padding
        self.tokens = tokens  # per image: a Python int, so the traced Reshape's shape is a constant (no Gather)
        self.conv = False
        self.one_hot = one_hot_split_weight(channels, kernel)  # a plain attribute: not in the state dict

    def forward(self, x: torch.Tensor, project: nn.Linear | None = None) -> torch.Tensor:
        """(B, C, H, W) -> tokens (B, L, C*k*k), or (B, L, D) through ``project``."""
        if not self.conv:
            tokens = super().forward(x).transpose(1, 2)
            return tokens if project is None else project(tokens)
        if project is None:
            weight, bias, groups = self.one_hot, None, self.channels
        else:
            weight = project.weight.reshape(-1, self.channels, self.kernel, self.kernel)
            bias, groups = project.bias, 1
        out = nn.functional.conv2d(x, weight, bias, stride=self.step, padding=self.pad, groups=groups)
        return out.reshape(-1, weight.shape[0], self.tokens).transpose(1, 2)


class TokensToToken(nn.Module):
    """Soft split -> attention -> re-shape to an image, twice, then a last split and projection.

    ``splits`` is how an export writes the soft splits (:data:`SPLIT_FORMS`); :func:`export_splits` sets it
    while the exporter traces. Both forms compute the same values.
    """

    def __init__(self, img_size: int = 224, in_chans: int = 3, embed_dim: int = 384, token_dim: int = 64,
                 form: str = DEFAULT_PERFORMER, tokens_type: str = "performer") -> None:
        super().__init__()
        self.grid_sizes = (img_size // 4, img_size // 8)
        self.num_patches = (img_size // 16) ** 2
        self.soft_split0 = SoftSplit(in_chans, 7, 4, 2, self.grid_sizes[0] ** 2)
        self.soft_split1 = SoftSplit(token_dim, 3, 2, 1, self.grid_sizes[1] ** 2)
        self.soft_split2 = SoftSplit(token_dim, 3, 2, 1, self.num_patches)
        if tokens_type == "performer":
            self.attention1 = TokenPerformer(dim=in_chans * 7 * 7, in_dim=token_dim, form=form)
            self.attention2 = TokenPerformer(dim=token_dim * 3 * 3, in_dim=token_dim, form=form)
        elif tokens_type == "transformer":
            self.attention1 = TokenTransformer(dim=in_chans * 7 * 7, in_dim=token_dim)
            self.attention2 = TokenTransformer(dim=token_dim * 3 * 3, in_dim=token_dim)
        else:
            raise ValueError(f"tokens_type must be performer or transformer, got {tokens_type!r}")
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)
        self.token_dim = token_dim

    def _to_image(self, tokens: torch.Tensor, side: int) -> torch.Tensor:
        if not self.soft_split0.conv:  # as the unfold export has always been written (its Reshape's shape gathered)
            return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        # The width and side are Python ints, so the traced Reshape has a constant shape (no Shape -> Gather).
        return tokens.transpose(1, 2).reshape(-1, self.token_dim, side, side)

    @property
    def splits(self) -> str:
        return "conv" if self.soft_split0.conv else "unfold"

    @splits.setter
    def splits(self, form: str) -> None:
        if form not in SPLIT_FORMS:
            raise ValueError(f"soft splits must be one of {SPLIT_FORMS}, got {form!r}")
        for split in (self.soft_split0, self.soft_split1, self.soft_split2):
            split.conv = form == "conv"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention1(self.soft_split0(x))
        x = self.attention2(self.soft_split1(self._to_image(x, self.grid_sizes[0])))
        if not self.soft_split2.conv:
            return self.project(self.soft_split2(self._to_image(x, self.grid_sizes[1])))
        return self.soft_split2(self._to_image(x, self.grid_sizes[1]), self.project)


@contextmanager
def export_splits(model: torch.nn.Module, form: str = DEFAULT_SPLITS) -> Iterator[None]:
    """Within the block, ``model``'s soft splits compute in ``form`` (what the exporter traces); then as before."""
    t2t = model.tokens_to_token
    before = t2t.splits
    t2t.splits = form
    try:
        yield
    finally:
        t2t.splits = before


class Attention(nn.Module):
    """Multi-head self-attention; qkv has no bias and the scale is head_dim ** -0.5, as in the eval flow."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads  # a Python int: traced shapes stay free of tensor floor division
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(batch, tokens, channels))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sinusoid_position_table(positions: int, width: int) -> torch.Tensor:
    """The fixed sinusoid position embedding, shape (1, positions, width): sin on even, cos on odd channels."""
    position = np.arange(positions, dtype=np.float64)[:, None]
    exponent = 2 * (np.arange(width) // 2) / width
    angles = position / np.power(10000.0, exponent)[None, :]
    angles[:, 0::2] = np.sin(angles[:, 0::2])
    angles[:, 1::2] = np.cos(angles[:, 1::2])
    return torch.from_numpy(angles.astype(np.float32)).unsqueeze(0)


class T2TViT(nn.Module):
    """T2T-ViT; the defaults are T2T-ViT-14. ``performer`` is the attention form of a performer model; a
    transformer-token model's is ``softmax`` whatever is asked (``self.performer`` says which it has)."""

    def __init__(self, img_size: int = 224, in_chans: int = 3, num_classes: int = NUM_CLASSES, embed_dim: int = 384,
                 depth: int = 14, num_heads: int = 6, mlp_ratio: float = 3.0, token_dim: int = 64,
                 performer: str = DEFAULT_PERFORMER, tokens_type: str = "performer") -> None:
        super().__init__()
        self.performer = performer if tokens_type == "performer" else SOFTMAX_FORM
        self.tokens_type = tokens_type
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.tokens_to_token = TokensToToken(img_size, in_chans, embed_dim, token_dim, performer, tokens_type)
        num_patches = self.tokens_to_token.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(sinusoid_position_table(num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The training initialisation, so that a randomly initialised model (demo mode) is well scaled.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tokens_to_token(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _register(spec: VariantSpec):
    """timm's builder for one variant, registered under its name."""

    def build(pretrained: bool = False, **kwargs: Any) -> T2TViT:
        if pretrained:
            raise ValueError(f"{spec.name} has no downloadable weights: load the checkpoint with "
                             f"t2t_vit.model.checkpoint.load_checkpoint")
        model = build_model_with_cfg(T2TViT, spec.name, pretrained=False, **{**spec.builder_args, **kwargs})
        model.variant_name = spec.name  # what check_state_dict names when a checkpoint does not fit
        return model

    build.__name__ = build.__qualname__ = spec.name
    build.__module__ = __name__
    build.__doc__ = f"{spec.title} ({spec.tokens_type} tokens-to-token); ``performer=`` picks a performer's form."
    return register_model(build)


BUILDERS = {spec.name: _register(spec) for spec in KNOWN}
t2t_vit_14 = BUILDERS[MODEL_NAME]


def create_model(performer: str = DEFAULT_PERFORMER, variant: str | VariantSpec = MODEL_NAME, **kwargs: Any) -> T2TViT:
    """Build a variant (T2T-ViT-14 by default) with random weights in eval mode, through timm's registry."""
    import timm

    spec = variant if isinstance(variant, VariantSpec) else BY_NAME[variant]
    if performer not in PERFORMER_FORMS and not (performer == SOFTMAX_FORM and not spec.performer):
        raise ValueError(f"performer form must be one of {PERFORMER_FORMS}, got {performer!r}")
    if performer == SOFTMAX_FORM:
        performer = DEFAULT_PERFORMER
    return timm.create_model(spec.name, performer=performer, **kwargs).eval()


def scaled_random_state_dict(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights that make every part of the model matter.

    The training initialisation (std 0.02) leaves the performer's attention almost uniform, so forms
    that differed would still agree; unit-scale projections make its kernel features far from 1.
    The fixed random projections ``w`` and the position table keep their values.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = {}
    for key, value in model.state_dict().items():
        if key.endswith(".w") or key == "pos_embed":
            weights[key] = value.clone()
        elif value.dim() >= 2:
            weights[key] = torch.randn(value.shape, generator=generator) / math.sqrt(value.shape[-1])
        elif key.endswith("weight"):
            weights[key] = 1 + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            weights[key] = 0.1 * torch.randn(value.shape, generator=generator)
    return weights
