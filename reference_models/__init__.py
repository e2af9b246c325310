"""Full networks of DASAA, MAFnet, MANA and VSR-Transformer, composed from vsrblocks."""

from reference_models.registry import create_model, from_official, list_models, list_presets, model_spec

__all__ = ["create_model", "from_official", "list_models", "list_presets", "model_spec"]
