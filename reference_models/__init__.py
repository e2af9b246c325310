"""Full networks of DASAA, MAFnet, MANA and VSR-Transformer, composed from vsrblocks.

The names below are imported on first access, so that ``python -m reference_models --help`` (which imports
this package) does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_model": "reference_models.registry",
    "from_official": "reference_models.registry",
    "list_models": "reference_models.registry",
    "list_presets": "reference_models.registry",
    "load_checkpoint": "reference_models.checkpoint",
    "model_from_checkpoint": "reference_models.checkpoint",
    "model_spec": "reference_models.registry",
    "save_checkpoint": "reference_models.checkpoint",
    "upscale_clip": "reference_models.inference",
    "upscale_frames": "reference_models.inference",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reference_models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
