"""Safe checkpoint reading and strict loading with errors that name the offending keys.

Two file formats are read, told apart by their first bytes (not their names): PyTorch files (a zip archive or
a legacy pickle), read with ``torch.load(..., weights_only=True)``, and ``safetensors`` files, read without
any unpickling at all.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping

import safetensors
import safetensors.torch
import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "count_blocks",
    "is_safetensors",
    "load_file",
    "load_safetensors",
    "load_state_dict_checked",
    "read_state_dict",
    "select_generator",
    "unwrap_state_dict",
]

_WRAPPERS = ("params_ema", "params", "state_dict", "model")
_GENERATOR_PREFIXES = ("generator_ema.", "generator.")


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the module it is loaded into."""


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = 0x80
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _head(path: str | os.PathLike[str], size: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts like a safetensors file: an 8-byte little-endian header length, then a JSON
    object that fits in the file."""
    head = _head(path, 9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return 8 + int.from_bytes(head[:8], "little") <= os.path.getsize(path)


def _check_readable(path: str | os.PathLike[str]) -> None:
    name = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {name!r} is a folder; pass the checkpoint file inside it (e.g. last.pt)")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {name!r} does not exist")


def load_safetensors(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a safetensors file (no pickle involved).

    Raises:
        CheckpointError: missing, not a safetensors file, or damaged.
    """
    _check_readable(path)
    name = os.fspath(path)
    if not is_safetensors(path):
        raise CheckpointError(f"cannot read checkpoint {name!r}: not a safetensors file")
    try:
        with safetensors.safe_open(name, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
        return safetensors.torch.load_file(name, device="cpu"), metadata
    except (safetensors.SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read checkpoint {name!r}: a damaged safetensors file") from exc


def load_file(path: str | os.PathLike[str]) -> object:
    """The content of a checkpoint file, read so that an untrusted file cannot run code.

    PyTorch files go through ``torch.load(path, map_location="cpu", weights_only=True)`` (tensors and plain
    containers only); a safetensors file gives its dict of tensors (:func:`load_safetensors` also returns
    its metadata).

    Raises:
        CheckpointError: the path is a folder, does not exist, is not a checkpoint at all, is damaged, or
            holds objects other than tensors and plain containers. The message is one short line and never
            suggests turning the safe loader off.
    """
    _check_readable(path)
    name = os.fspath(path)
    if is_safetensors(path):
        return load_safetensors(path)[0]
    head = _head(path, 4)
    if head != _ZIP_MAGIC and not (head and head[0] == _PICKLE_PROTO):
        raise CheckpointError(
            f"cannot read checkpoint {name!r}: not a PyTorch file (zip archive or pickle) nor a safetensors file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises turning the safe loader off; on an untrusted file that is the risk itself
        found = _UNSAFE_GLOBAL.search(str(exc))
        if found:
            raise CheckpointError(
                f"cannot read checkpoint {name!r}: it holds a {found.group(1)} object; only tensors and plain "
                "containers are loaded, since other objects could run code"
            ) from None
        raise CheckpointError(f"cannot read checkpoint {name!r}: a damaged PyTorch file") from None
    except Exception as exc:  # torch raises several unrelated types for a truncated or corrupt file
        raise CheckpointError(
            f"cannot read checkpoint {name!r}: a damaged PyTorch file ({type(exc).__name__})"
        ) from None


def unwrap_state_dict(obj: object, what: str, wrapper_keys: tuple[str, ...] = _WRAPPERS) -> dict[str, torch.Tensor]:
    """The state_dict inside a loaded checkpoint object, with the usual wrappers and prefixes removed.

    BasicSR saves ``{"params": ...}`` (and ``params_ema``, preferred when present), MMagic/mmcv
    ``{"state_dict": ...}`` (its ``generator.`` prefixes are left for :func:`select_generator`); a ``module.``
    prefix left by ``DataParallel`` is stripped.

    Raises:
        CheckpointError: ``obj`` holds no state_dict, or a value that is not a tensor (named).
    """
    if isinstance(obj, Mapping):
        for key in wrapper_keys:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what} does not hold a state_dict of tensors")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{what}: state_dict entry {str(key)[:80]!r} is a {type(value).__name__}, not a tensor"
            )
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def select_generator(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The generator's weights of an MMagic state_dict (keys ``generator_ema.*``, preferred like BasicSR's
    ``params_ema``, else ``generator.*``), prefix removed; other sub-networks (a discriminator) are dropped.
    A state_dict without these prefixes is returned unchanged.

    Examples:
        >>> select_generator({"generator.conv.weight": 1, "generator_ema.conv.weight": 2, "discriminator.fc": 3})
        {'conv.weight': 2}
    """
    for prefix in _GENERATOR_PREFIXES:
        if any(k.startswith(prefix) for k in state_dict):
            return {k[len(prefix) :].removeprefix("module."): v for k, v in state_dict.items() if k.startswith(prefix)}
    return dict(state_dict)


def read_state_dict(path: str | os.PathLike[str], wrapper_keys: tuple[str, ...] = _WRAPPERS) -> dict[str, torch.Tensor]:
    """Read a state_dict safely (:func:`load_file`) and unwrap common containers (:func:`unwrap_state_dict`).

    Raises:
        CheckpointError: the file does not exist, cannot be read safely, or holds no state_dict of tensors.
    """
    return unwrap_state_dict(load_file(path), f"checkpoint {os.fspath(path)!r}", wrapper_keys)


def count_blocks(state_dict: Mapping[str, torch.Tensor], prefix: str) -> int:
    """How many residual blocks ``{prefix}.{i}.conv1.weight`` a state_dict holds (for reading an
    architecture off its weights).

    Examples:
        >>> count_blocks({"body.0.conv1.weight": None, "body.1.conv1.weight": None, "body.1.conv2.weight": None}, "body")
        2
    """
    return len(
        {key.split(".")[1] for key in state_dict if key.startswith(prefix + ".") and key.endswith(".conv1.weight")}
    )


def load_state_dict_checked(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint"
) -> None:
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
