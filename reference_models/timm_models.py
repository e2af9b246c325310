"""The reference models in timm's model registry: one name per model and preset.

Importing this module (it imports timm, which ``import reference_models`` does not) registers
``mana_paper``, ``mana_tiny``, ``vsrt_paper``, ``vsrt_paper_reds``, ``vsrt_paper_vimeo``, ``vsrt_tiny``,
``dasaa_paper``, ... (preset names with ``-`` written ``_``), so timm's own tooling builds and loads them::

    import timm
    import reference_models.timm_models  # registers the names
    model = timm.create_model("mana_paper", pretrained=True, pretrained_cfg_overlay={"file": "mana.safetensors"})

Weights load through timm's ``load_pretrained`` (a local ``file``, a ``url``, or an ``hf-hub:`` id where the
machine reaches the Hugging Face hub) and are fitted strictly by
:func:`~reference_models.checkpoint.fit_state_dict`: our own files (``.safetensors`` or ``.pt``), bare
state_dicts, and official MANA / VSR-Transformer key names. The models are built by
:func:`~reference_models.create_model`, so they carry ``model_spec`` and save like any other. No weights are
published with this package, so no name has a default weight source.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from reference_models.checkpoint import fit_state_dict
from reference_models.registry import create_model, list_models, list_presets
from vsrblocks.checkpoint import select_generator, unwrap_state_dict

__all__ = ["timm_name"]

# timm's defaults describe an image classifier; these keys would be passed to our constructors as arguments
_CLASSIFIER_KWARGS = ("num_classes", "in_chans", "global_pool")
_PAPERS = {
    "basicvsr": "BasicVSR: The Search for Essential Components in Video Super-Resolution and Beyond (CVPR 2021)",
    "basicvsrpp": "BasicVSR++: Improving Video Super-Resolution with Enhanced Propagation and Alignment (CVPR 2022)",
    "iconvsr": "BasicVSR: The Search for Essential Components in Video Super-Resolution and Beyond (CVPR 2021), IconVSR",
    "edvr": "EDVR: Video Restoration with Enhanced Deformable Convolutional Networks (CVPRW 2019)",
    "dasaa": "Dual Attention with the Self-Attention Alignment for efficient video super-resolution (2022)",
    "mafnet": "Multi-attention combined with optical flow for video super-resolution",
    "mana": "Memory-Augmented Non-Local Attention for Video Super-Resolution (CVPR 2022)",
    "vsrt": "Video Super-Resolution Transformer (arXiv:2106.06847, 2021)",
}


def timm_name(name: str, preset: str) -> str:
    """The timm registry name of ``create_model(name, preset)``.

    Examples:
        >>> timm_name("vsrt", "paper-reds")
        'vsrt_paper_reds'
    """
    return f"{name}_{preset.replace('-', '_')}"


def _filter(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    # timm unwraps "state_dict" (our .pt files); BasicSR/MMagic wrappers and official key names are ours to handle
    weights = select_generator(unwrap_state_dict(state_dict, "pretrained weights"))
    return fit_state_dict(model, weights, what="pretrained weights")


def _entrypoint(name: str, preset: str):
    variant = timm_name(name, preset)

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return build_model_with_cfg(
            partial(create_model, name, preset),
            variant,
            pretrained,
            pretrained_filter_fn=_filter,
            kwargs_filter=_CLASSIFIER_KWARGS,  # type: ignore[arg-type]  # timm annotates a 1-tuple
            **kwargs,
        )

    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__doc__ = f"``create_model({name!r}, {preset!r})`` for timm."
    return entrypoint


_VARIANTS = [(name, preset) for name in list_models() for preset in list_presets(name)]

default_cfgs = generate_default_cfgs(
    {
        timm_name(name, preset): {
            "input_size": (3, 64, 64),
            "mean": (0.0, 0.0, 0.0),
            "std": (1.0, 1.0, 1.0),
            "num_classes": 0,
            "paper_name": _PAPERS[name],
            "description": f"reference_models {name}, preset {preset!r}: RGB clips (B, T, 3, H, W) in [0, 1], x4",
        }
        for name, preset in _VARIANTS
    }
)

for _name, _preset in _VARIANTS:
    globals()[timm_name(_name, _preset)] = register_model(_entrypoint(_name, _preset))
