"""The one place the preprocessing (data) config is resolved, without importing torch or timm.

Precedence: the command line (``overrides``) > the model's own data config > timm's defaults. The
result is the dict timm's ``resolve_data_config`` returns for the registered model (a test holds the
two equal), so ``timm.data.create_transform(**config)`` accepts it.

Every published T2T-ViT shares one data config but for its input size (upstream ``default_cfgs``; the
384 checkpoint is evaluated with ``main.py --img-size 384``, which keeps crop_pct 0.9: resize 426, crop
384). ``img_size`` picks it: ``resolve_data_config(img_size=spec.img_size)``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

MODEL_NAME = "t2t_vit_14"  # the default variant: the seed's checkpoint, 81.5_T2T_ViT_14.pth.tar
NUM_CLASSES = 1000
DEFAULT_IMG_SIZE = 224

# The data config of every T2T-ViT at 224 (upstream default_cfgs; FACTS section 2).
MODEL_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.9,
    "crop_mode": "center",
}

# timm's constants, used for a field the model does not set (it sets them all today).
TIMM_DEFAULTS: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "interpolation": "bicubic",
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "crop_pct": 0.875,
    "crop_mode": "center",
}


def model_data_config(img_size: int = DEFAULT_IMG_SIZE) -> dict[str, Any]:
    """A T2T-ViT's own data config at its input size."""
    return {**MODEL_DATA_CONFIG, "input_size": (3, int(img_size), int(img_size))}


def resolve_data_config(overrides: Mapping[str, Any] | None = None, img_size: int = DEFAULT_IMG_SIZE) -> dict[str, Any]:
    """The data config: ``overrides`` whose value is not None, else the model's (at ``img_size``), else timm's
    default."""
    model_config = model_data_config(img_size)
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(overrides) - set(TIMM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown data config fields {unknown}; known: {sorted(TIMM_DEFAULTS)}")
    config = {}
    for key, default in TIMM_DEFAULTS.items():
        value = overrides.get(key, model_config.get(key, default))
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def data_config_hash(data_config: Mapping[str, Any]) -> str:
    """A short stable hash of a data config, so a stage can refuse inputs made with another one."""
    canonical = json.dumps({key: list(value) if isinstance(value, tuple) else value
                            for key, value in sorted(data_config.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
