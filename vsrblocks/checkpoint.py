"""Safe checkpoint reading and strict loading with errors that name the offending keys."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["CheckpointError", "load_file", "read_state_dict", "load_state_dict_checked"]

_WRAPPERS = ("params_ema", "params", "state_dict", "model")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the module it is loaded into."""


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_file(path: str | os.PathLike[str]) -> object:
    """``torch.load(path, map_location="cpu", weights_only=True)``: tensors and plain containers only, so an
    untrusted file cannot run code.

    Raises:
        CheckpointError: the path is a folder, does not exist, or cannot be unpickled safely (corrupt,
            truncated, or holding arbitrary objects).
    """
    name = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {name!r} is a folder; pass the checkpoint file inside it (e.g. last.pt)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {name!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a corrupt file
        raise CheckpointError(f"cannot read checkpoint {name!r}: {type(exc).__name__}: {exc}") from exc


def read_state_dict(path: str | os.PathLike[str], wrapper_keys: tuple[str, ...] = _WRAPPERS) -> dict[str, torch.Tensor]:
    """Read a state_dict with ``torch.load(..., weights_only=True)`` and unwrap common containers.

    BasicSR saves ``{"params": ...}`` (and ``params_ema``, preferred when present), MMagic/mmcv
    ``{"state_dict": ...}``; a ``module.`` prefix left by ``DataParallel`` is stripped.

    Raises:
        CheckpointError: the file does not exist, cannot be unpickled safely, or holds no tensors.
    """
    obj = load_file(path)
    if isinstance(obj, Mapping):
        for key in wrapper_keys:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not hold a state_dict of tensors")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with one clear error for every mismatch.

    Raises:
        CheckpointError: naming the missing keys, the unexpected keys and the shape mismatches.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: {tuple(state_dict[k].shape)} vs expected {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(own[k].shape) != tuple(state_dict[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_summarise(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_summarise(mismatched)}")
    if problems:
        raise CheckpointError(f"{what} does not fit {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(dict(state_dict), strict=True)
