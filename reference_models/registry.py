"""The model registry: names, presets and construction of the four reference networks.

Each model lives in its own module (``reference_models/networks/mana.py`` ...), which defines

- ``MODEL``: the ``nn.Module`` class, built with ``MODEL(**preset_kwargs)``;
- ``PRESETS``: ``{"paper": {...}, "tiny": {...}, ...}`` of constructor keyword arguments;
- optionally ``from_official(state_dict, **official_kwargs) -> nn.Module``.

Modules are imported on first use so that a model's heavy dependencies cost nothing until asked for.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # torch is imported by the model modules, on first use: `list` and `--help` stay fast
    import torch
    from torch import nn

__all__ = [
    "list_models",
    "list_presets",
    "create_model",
    "from_official",
    "model_spec",
    "network_module",
    "parse_model_args",
]

_MODULES = {
    "basicvsr": "reference_models.networks.basicvsr",
    "basicvsrpp": "reference_models.networks.basicvsrpp",
    "dasaa": "reference_models.networks.dasaa",
    "edvr": "reference_models.networks.edvr",
    "iconvsr": "reference_models.networks.iconvsr",
    "mafnet": "reference_models.networks.mafnet",
    "mana": "reference_models.networks.mana",
    "vsrt": "reference_models.networks.vsrt",
}


def network_module(name: str) -> ModuleType:
    """The module of network ``name`` (imported on first use): ``MODEL``, ``PRESETS`` and, where the network has
    an official implementation, ``from_official`` and ``official_config_from_state_dict``."""
    if name not in _MODULES:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return importlib.import_module(_MODULES[name])


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`: ``["basicvsr", "basicvsrpp", "dasaa", "edvr", "iconvsr", "mafnet", "mana", "vsrt"]``."""
    return sorted(_MODULES)


def list_presets(name: str) -> list[str]:
    """Preset names of model ``name`` (always including ``"paper"`` and ``"tiny"``).

    Read from the source of the model's module while that module is not imported yet (when ``PRESETS`` is a
    literal dict), so that ``python -m reference_models list`` does not import torch.
    """
    if name in _MODULES and _MODULES[name] not in sys.modules:
        names = _literal_preset_names(_MODULES[name])
        if names is not None:
            return names
    return list(network_module(name).PRESETS)


def _literal_preset_names(module_name: str) -> list[str] | None:
    """The string keys of a module-level ``PRESETS = {...}`` literal, or ``None`` if it is not one."""
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return None
    with open(spec.origin, encoding="utf-8") as file:
        tree = ast.parse(file.read(), spec.origin)
    for node in tree.body:
        target: ast.expr
        if isinstance(node, ast.AnnAssign):
            target = node.target
        elif isinstance(node, ast.Assign):
            target = node.targets[0]
        else:
            continue
        if isinstance(target, ast.Name) and target.id == "PRESETS" and isinstance(node.value, ast.Dict):
            keys = node.value.keys
            if all(isinstance(k, ast.Constant) and isinstance(k.value, str) for k in keys):
                return [cast(str, cast(ast.Constant, k).value) for k in keys]
    return None


def create_model(name: str, preset: str = "paper", **overrides: Any) -> nn.Module:
    """Build reference model ``name`` from ``preset``, with constructor arguments overridden.

    The returned model carries ``model_spec`` (name, preset, overrides) so that a checkpoint saved
    with it can rebuild the same network. ``reference_models.create_model`` is
    :func:`reference_models.checkpoint.create_model`, which also loads ``pretrained`` weights.

    Args:
        name: one of :func:`list_models`.
        preset: one of :func:`list_presets`.
        **overrides: constructor arguments.

    Raises:
        ValueError: unknown model or preset (the message lists the valid ones);
    """
    module = network_module(name)
    if preset not in module.PRESETS:
        raise ValueError(f"unknown preset {preset!r} for model {name!r}; available: {', '.join(module.PRESETS)}")
    model = module.MODEL(**{**module.PRESETS[preset], **overrides})
    model.model_spec = {"name": name, "preset": preset, "overrides": dict(overrides)}
    return model


def parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    """``["num_frame=7", "norm=official"]`` -> ``{"num_frame": 7, "norm": "official"}``: values are Python
    literals (numbers, ``True``, ``None``, tuples ...) where they parse as one, else strings.

    Raises:
        ValueError: an item without ``=`` or with an empty key.

    Examples:
        >>> parse_model_args(["heads=2", "norm=official", "spynet_channels=(8, 16, 8, 4)"])
        {'heads': 2, 'norm': 'official', 'spynet_channels': (8, 16, 8, 4)}
    """
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"model argument {item!r} is not KEY=VALUE")
        try:
            parsed[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            parsed[key.strip()] = text.strip()
    return parsed


def from_official(name: str, state_dict: dict[str, torch.Tensor], **official_kwargs: Any) -> nn.Module:
    """Build model ``name`` from an official implementation's state_dict and constructor arguments.

    Returns the model in eval mode; it reproduces the official code's outputs.

    Raises:
        ValueError: the model has no official implementation, or the state_dict does not fit.
    """
    module = network_module(name)
    if not hasattr(module, "from_official"):
        able = ", ".join(n for n in list_models() if hasattr(network_module(n), "from_official"))
        raise ValueError(f"model {name!r} has no official implementation to load from; models that do: {able}")
    return module.from_official(state_dict, **official_kwargs).eval()


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """The ``{"name", "preset", "overrides"}`` a model was created with, if it came from :func:`create_model`."""
    return getattr(model, "model_spec", None)
