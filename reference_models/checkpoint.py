"""Checkpoints of the reference models: saving, loading, and rebuilding a model from its file.

Our files are a dict of plain values and tensors only, so ``torch.load(..., weights_only=True)`` reads them::

    {"format": "reference_models.checkpoint", "version": 1,
     "model_spec": {"name": "mana", "preset": "tiny", "overrides": {...}} or None,
     "state_dict": {...},
     ...extras (e.g. "optimizer", "step" for training)}

:func:`load_checkpoint` also accepts bare state_dicts and the usual wrappers (BasicSR ``params`` /
``params_ema``, MMagic ``state_dict``), in our key names or in an official implementation's (converted
with the model module's ``convert_official_state_dict`` or ``official_key_map`` where it has one).
"""

from __future__ import annotations

import importlib
import inspect
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reference_models.registry import create_model, model_spec
from vsrblocks.checkpoint import CheckpointError, load_file, load_state_dict_checked, read_state_dict

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "load_checkpoint", "model_from_checkpoint"]

FORMAT = "reference_models.checkpoint"
VERSION = 1
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str) -> None:
    """Raise unless ``value`` is made of plain values, lists/tuples and str-keyed dicts (what
    ``weights_only=True`` can load), or tensors."""
    if isinstance(value, (_PLAIN, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise ValueError(f"{where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}[{key!r}]")
        return
    raise ValueError(f"{where} is a {type(value).__name__}; a checkpoint holds only plain values and tensors")


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **extra: Any) -> None:
    """Save ``model``'s weights and ``model_spec`` (set by :func:`~reference_models.create_model`) to ``path``.

    The file is written under a temporary name in the same folder and renamed, so an interrupted save
    never leaves a truncated checkpoint.

    Args:
        model: the model; if it came from ``create_model`` the checkpoint alone rebuilds it.
        path: destination file.
        **extra: more entries, plain values and tensors only (``step=..., optimizer=opt.state_dict()``).

    Raises:
        ValueError: an extra or a model_spec override is not a plain value (it could not be loaded with
            ``weights_only=True``), or an extra uses a reserved name.

    Examples:
        >>> import tempfile, os
        >>> from reference_models import create_model
        >>> model = create_model("mana", "tiny")
        >>> path = os.path.join(tempfile.mkdtemp(), "mana.pt")
        >>> save_checkpoint(model, path, step=10)
        >>> model_from_checkpoint(path).model_spec["preset"]
        'tiny'
    """
    reserved = {"format", "version", "model_spec", "state_dict"} & set(extra)
    if reserved:
        raise ValueError(f"save_checkpoint: {sorted(reserved)} are reserved names")
    spec = model_spec(model)
    _check_plain(spec, "model_spec")
    _check_plain(extra, "extra")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "model_spec": spec, "state_dict": state, **extra}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.partial-", dir=path.parent)
    os.close(handle)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict of one of our checkpoints, read with ``weights_only=True``.

    Raises:
        CheckpointError: missing or unreadable file, or a file that is not one of our checkpoints.
    """
    obj = load_file(path)
    if not (isinstance(obj, Mapping) and obj.get("format") == FORMAT and isinstance(obj.get("state_dict"), Mapping)):
        raise CheckpointError(
            f"'{os.fspath(path)}' is not a reference_models checkpoint (no model_spec); "
            "name the model to load plain or official weights into it"
        )
    if obj.get("version", VERSION) > VERSION:
        raise CheckpointError(f"'{os.fspath(path)}' has checkpoint version {obj['version']}; this code reads {VERSION}")
    return dict(obj)


def _describe(spec: Mapping[str, Any] | None) -> str:
    if not spec:
        return "an unknown model"
    overrides = "".join(f", {k}={v!r}" for k, v in (spec.get("overrides") or {}).items())
    return f"{spec.get('name')} (preset {spec.get('preset')!r}{overrides})"


def _official_converted(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """``state_dict`` converted from official key names by the model's own module, if it knows how."""
    module = importlib.import_module(type(model).__module__)
    convert = getattr(module, "convert_official_state_dict", None)
    if convert is not None:
        kwargs = {"num_frames": model.num_frames} if "num_frames" in inspect.signature(convert).parameters else {}
        try:
            return dict(convert(dict(state_dict), **kwargs))
        except (KeyError, ValueError):
            return None
    key_map = getattr(module, "official_key_map", None)
    if key_map is not None:
        try:
            mapped = {key_map(k): v for k, v in state_dict.items()}
        except (KeyError, ValueError):
            return None
        return {k: v for k, v in mapped.items() if k is not None}
    return None


def _weights(ckpt: Mapping[str, Any], ema: bool) -> Mapping[str, Any]:
    """The weights of one of our checkpoints: the moving average (``params_ema``, written by ``train --ema``)
    when there is one and ``ema``, else ``state_dict``."""
    averaged = ckpt.get("params_ema")
    return averaged if ema and isinstance(averaged, Mapping) else ckpt["state_dict"]


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, ema: bool = True) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` (strictly: every key, every shape).

    Accepts our checkpoints (whose ``model_spec`` must name the model's architecture) and bare or wrapped
    state_dicts in our or the official key names. ``ema``: of our checkpoints with a moving average of the
    weights (``params_ema``), load that (what validation scored); ``False``: the trained weights (resuming).

    Returns:
        The extras stored beside the weights (``{}`` for files that are not ours).

    Raises:
        CheckpointError: missing or corrupt file, a checkpoint of another model, or weights that do not fit
            (the message names the missing, unexpected and mismatched keys).
    """
    try:
        ours = read_checkpoint(path)
    except CheckpointError as exc:
        if "not a reference_models checkpoint" not in str(exc):
            raise
        ours = None
    if ours is not None:
        spec, own = ours.get("model_spec"), model_spec(model)
        if spec and own and spec.get("name") != own.get("name"):
            raise CheckpointError(f"'{os.fspath(path)}' holds {_describe(spec)}, not {_describe(own)}")
        what = f"checkpoint '{os.fspath(path)}' ({_describe(spec)})"
        load_state_dict_checked(model, _weights(ours, ema), what=what)
        return {k: v for k, v in ours.items() if k not in ("format", "version", "model_spec", "state_dict")}

    state_dict = read_state_dict(path)
    what = f"checkpoint '{os.fspath(path)}'"
    try:
        load_state_dict_checked(model, state_dict, what=what)
    except CheckpointError as direct:
        converted = _official_converted(model, state_dict)
        if converted is None:
            raise
        try:
            load_state_dict_checked(model, converted, what=f"{what} (official key names)")
        except CheckpointError:
            raise direct from None
    return {}


def model_from_checkpoint(path: str | os.PathLike[str], **overrides: Any) -> nn.Module:
    """Rebuild the model saved in one of our checkpoints (``create_model`` with its name, preset and
    overrides) and load its weights (the moving average ``params_ema`` when the file has one). Extra
    ``overrides`` change constructor arguments that do not affect the weights (e.g. ``tile_size``).

    Raises:
        CheckpointError: missing/corrupt file, a file without ``model_spec``, or weights that do not fit.
    """
    ckpt = read_checkpoint(path)
    spec = ckpt.get("model_spec")
    if not spec:
        raise CheckpointError(f"checkpoint '{os.fspath(path)}' has no model_spec; name the model to load it into")
    try:
        model = create_model(spec["name"], spec["preset"], **{**(spec.get("overrides") or {}), **overrides})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint '{os.fspath(path)}' names {_describe(spec)}, which cannot be built: {exc}"
        ) from exc
    load_state_dict_checked(model, _weights(ckpt, True), what=f"checkpoint '{os.fspath(path)}' ({_describe(spec)})")
    return model
