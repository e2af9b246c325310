"""Full networks composed from vsrblocks: DASAA, MAFnet, MANA and VSR-Transformer, and the field's standard
BasicVSR, IconVSR, BasicVSR++ and EDVR.

The names below are imported on first access, so that ``python -m reference_models --help`` (which imports
this package) does not pay for importing torch.
"""

from __future__ import annotations

from reference_models.lazy_exports import lazy_exports

_EXPORTS = {
    "compile_model": "reference_models.inference.compiled",
    "create_model": "reference_models.checkpoint",
    "from_official": "reference_models.registry",
    "keep_freed_memory": "reference_models.allocator",
    "list_models": "reference_models.registry",
    "list_presets": "reference_models.registry",
    "load_checkpoint": "reference_models.checkpoint",
    "model_from_checkpoint": "reference_models.checkpoint",
    "model_spec": "reference_models.registry",
    "save_checkpoint": "reference_models.checkpoint",
    "upscale_clip": "reference_models.inference.upscale",
    "upscale_frames": "reference_models.inference.upscale",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
