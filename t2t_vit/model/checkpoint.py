"""Reading T2T-ViT checkpoints safely and loading them strictly.

Accepted layouts (FACTS section 1):

- a timm CheckpointSaver dict with ``state_dict`` and/or ``state_dict_ema`` (plus ``optimizer``,
  ``epoch``, ``arch``, ``args`` as an ``argparse.Namespace``, ...);
- a dict with the weights under ``model`` (DeiT-style training scripts);
- a bare state dict (parameter name -> tensor).

Parameter names may carry the ``module.`` prefix of (Distributed)DataParallel.

Files are read with ``torch.load(weights_only=True)``, allow-listing ``argparse.Namespace`` and nothing
else; on a torch without that allow-list, an unpickler with the same rule reads them
(:func:`t2t_vit.version_bridge.load_weights_only`). A checkpoint whose pickle needs any other global is
refused. The weights must match the model exactly: missing keys, unexpected keys and shape mismatches
are all an error that lists them.
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from t2t_vit import ToolkitError
from t2t_vit.config import MODEL_NAME
from t2t_vit.model.variants import WEIGHT_CHOICES
from t2t_vit.version_bridge import load_weights_only

log = logging.getLogger(__name__)

ALLOWED_GLOBALS = (argparse.Namespace,)
_WEIGHT_KEYS = {"ema": ("state_dict_ema",), "plain": ("state_dict", "model")}
_PREFIX = "module."
_LISTED = 8  # how many offending keys an error names


class CheckpointError(ToolkitError):
    """The checkpoint cannot be read, or does not fit the model."""


@dataclass
class CheckpointInfo:
    """What was loaded: the file, which weights inside it, and the training metadata it carried."""

    path: str
    weights_key: str | None  # None for a bare state dict
    num_tensors: int
    metadata: dict[str, Any] = field(default_factory=dict)


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Unpickle a checkpoint with ``weights_only=True``, turning every failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (check --pth-path)")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a file (check --pth-path)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the download or copy did not finish")
    looks = _what_it_is(path, None)
    if looks.startswith("it is a"):  # text read as a pickle would name a 'global' from its first word
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({looks})")
    try:
        return load_weights_only(path, ALLOWED_GLOBALS)
    except pickle.UnpicklingError as error:
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(error))
        if found:
            raise CheckpointError(
                f"checkpoint {path} refused: its pickle needs the global {found.group(1)}, and only "
                f"argparse.Namespace is allowed (loading other objects can execute code). Save the bare "
                f"state dict instead: torch.save(checkpoint['state_dict'], 'weights.pth')") from None
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({_what_it_is(path, error)})") from None
    except PermissionError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error.strerror}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({_first_line(error)}): "
                              f"download or copy it again") from None
    except Exception as error:  # noqa: BLE001 - torch raises KeyError, ValueError, ... on arbitrary bytes
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({_what_it_is(path, error)})") from None


def _what_it_is(path: Path, error: BaseException | None) -> str:
    """Why a file is not a checkpoint, in the user's terms: what the file looks like, never torch's advice
    to turn off weights-only loading (which would run the file's code)."""
    from t2t_vit.files import file_head, not_a_checkpoint

    why = not_a_checkpoint(file_head(path, 512))
    if why:
        return why
    found = re.search(r"WeightsUnpickler error:\s*(.+)", str(error))
    detail = found.group(1).strip().splitlines()[0] if found else type(error).__name__
    return f"its pickle cannot be read ({detail})"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().split(". This is an internal miniz error")[0]  # the rest is torch's advice
    return text.splitlines()[0][:200] if text else type(error).__name__


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in obj.items())


def select_state_dict(checkpoint: Any, weights: str = "auto") -> tuple[dict[str, torch.Tensor], str | None]:
    """Pick the weights to load from a checkpoint object.

    Args:
        checkpoint: what :func:`read_checkpoint` returned.
        weights: ``auto`` prefers the EMA weights and falls back to the plain ones; ``ema`` and ``plain``
            insist on one kind.

    Returns:
        The state dict, ``module.`` prefixes removed, and the key it was found under (None for a bare one).
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(checkpoint).__name__}, not a dict of weights")
    if _is_state_dict(checkpoint):
        if weights == "ema":
            raise CheckpointError("checkpoint is a bare state dict with no EMA weights; use --weights plain or auto")
        return _strip_prefix(checkpoint), None
    wanted = _WEIGHT_KEYS["ema"] + _WEIGHT_KEYS["plain"] if weights == "auto" else _WEIGHT_KEYS[weights]
    for key in wanted:
        if key in checkpoint and _is_state_dict(checkpoint[key]):
            return _strip_prefix(checkpoint[key]), key
    present = ", ".join(sorted(map(str, checkpoint))[:_LISTED]) or "nothing"
    raise CheckpointError(f"checkpoint has no weights under {' or '.join(wanted)} (it holds: {present})")


def _strip_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key[len(_PREFIX):] if key.startswith(_PREFIX) else key: value for key, value in state_dict.items()}


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise CheckpointError listing every missing key, unexpected key and shape mismatch."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
                  for key, value in expected.items() if key in state_dict and state_dict[key].shape != value.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
        if items:
            more = f" (+{len(items) - _LISTED} more)" if len(items) > _LISTED else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_LISTED])}{more}")
    if problems:
        name = getattr(model, "variant_name", MODEL_NAME)
        raise CheckpointError(other_variant(state_dict, name)
                              or f"checkpoint does not fit {name}: " + "; ".join(problems))


def other_variant(state_dict: Mapping[str, torch.Tensor], expected: str = MODEL_NAME) -> str | None:
    """One line for a state dict of another T2T-ViT than ``expected`` (a published variant, or one that fits none),
    saying what it is; None when it is ``expected``'s with something wrong, or no T2T-ViT at all (the keys then say
    more)."""
    from t2t_vit.model.variants import VariantError, describe_state_dict, found_text, match_variant

    try:
        found = describe_state_dict(state_dict)
    except VariantError:
        return None
    try:
        spec = match_variant(found)
    except VariantError as error:
        return str(error)
    if spec.name == expected:
        return None
    return (f"the checkpoint is {spec.name} ({found_text(found)}; upstream's {', '.join(spec.checkpoints)}), not "
            f"{expected}")


def checkpoint_variant(state_dict: Mapping[str, torch.Tensor], model: str | None = None, path: Any = None):
    """The published variant of a state dict (:func:`t2t_vit.model.variants.resolve`), as a CheckpointError when it fits
    none or not ``model``; a state dict that is no T2T-ViT is left to :func:`check_state_dict`'s key lists."""
    from t2t_vit.model.variants import DEFAULT, VariantError, by_name, describe_state_dict, resolve

    try:
        describe_state_dict(state_dict)
    except VariantError:
        try:
            return by_name(model) if model else DEFAULT
        except VariantError as error:
            raise CheckpointError(str(error)) from None
    try:
        return resolve(state_dict, model, f"checkpoint {path}" if path else "the checkpoint")
    except VariantError as error:
        raise CheckpointError(str(error)) from None


def load_model(path: str | os.PathLike, performer: str = "sum", weights: str = "auto", model: str | None = None):
    """Read a checkpoint, find its variant (it must be ``model`` when given), build that model in ``performer``'s form
    and load the weights strictly. Returns the model, its :class:`t2t_vit.model.variants.VariantSpec` and the
    :class:`CheckpointInfo`."""
    from t2t_vit.model.network import create_model

    checkpoint = read_checkpoint(path)
    state_dict, key = select_state_dict(checkpoint, weights)
    spec = checkpoint_variant(state_dict, model, path)
    built = create_model(spec.form(performer), spec)
    return built, spec, _load(built, path, checkpoint, state_dict, key)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, weights: str = "auto") -> CheckpointInfo:
    """Read ``path``, pick its weights (EMA first under ``auto``) and load them strictly into ``model``."""
    checkpoint = read_checkpoint(path)
    state_dict, key = select_state_dict(checkpoint, weights)
    return _load(model, path, checkpoint, state_dict, key)


def _load(model: nn.Module, path, checkpoint: Any, state_dict: Mapping[str, torch.Tensor],
          key: str | None) -> CheckpointInfo:
    check_state_dict(model, state_dict)
    model.load_state_dict(state_dict, strict=True)
    metadata = {}
    if key is not None:
        metadata = {name: checkpoint[name] for name in ("arch", "epoch", "metric", "version")
                    if isinstance(checkpoint.get(name), (str, int, float))}
    log.info("loaded %d tensors from %s%s", len(state_dict), path, f" [{key}]" if key else "")
    return CheckpointInfo(path=str(path), weights_key=key, num_tensors=len(state_dict), metadata=metadata)
