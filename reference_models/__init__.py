"""Full networks of DASAA, MAFnet, MANA and VSR-Transformer, composed from vsrblocks."""

from reference_models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from reference_models.inference import upscale_clip, upscale_frames
from reference_models.registry import create_model, from_official, list_models, list_presets, model_spec

__all__ = [
    "create_model",
    "from_official",
    "list_models",
    "list_presets",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_spec",
    "save_checkpoint",
    "upscale_clip",
    "upscale_frames",
]
