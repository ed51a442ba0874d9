"""The one place the preprocessing (data) config is resolved, without importing torch or timm.

Precedence: the command line (``overrides``) > the model's own data config > timm's defaults. The
result is the dict timm's ``resolve_data_config`` returns for the registered model (a test holds the
two equal), so ``timm.data.create_transform(**config)`` accepts it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

MODEL_NAME = "t2t_vit_14"
NUM_CLASSES = 1000

# T2T-ViT-14's data config (upstream default_cfgs; FACTS section 2).
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


def resolve_data_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The data config: ``overrides`` whose value is not None, else the model's, else timm's default."""
    overrides = {key: value for key, value in (overrides or {}).items() if value is not None}
    unknown = sorted(set(overrides) - set(TIMM_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown data config fields {unknown}; known: {sorted(TIMM_DEFAULTS)}")
    config = {}
    for key, default in TIMM_DEFAULTS.items():
        value = overrides.get(key, MODEL_DATA_CONFIG.get(key, default))
        config[key] = tuple(value) if isinstance(value, list) else value
    return config


def data_config_hash(data_config: Mapping[str, Any]) -> str:
    """A short stable hash of a data config, so a stage can refuse inputs made with another one."""
    canonical = json.dumps({key: list(value) if isinstance(value, tuple) else value
                            for key, value in sorted(data_config.items())}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
