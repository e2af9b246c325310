"""Checkpoints of the reference models: saving, loading, and rebuilding a model from its file.

Our ``.pt`` files are a dict of plain values and tensors only, so ``torch.load(..., weights_only=True)``
reads them::

    {"format": "reference_models.checkpoint", "version": 1,
     "model_spec": {"name": "mana", "preset": "tiny", "overrides": {...}} or None,
     "state_dict": {...},
     ...extras (e.g. "optimizer", "step" for training)}

A ``.safetensors`` file (the release format: no pickle at all) holds the same state_dict as its tensors and
``format``, ``version``, ``model_spec`` and the extras as JSON strings in its metadata. :func:`save_release`
writes a folder people can share: ``model.safetensors`` and a ``config.json`` with the model spec.

:func:`load_checkpoint` also accepts bare state_dicts and the usual wrappers (BasicSR ``params`` /
``params_ema``, MMagic ``state_dict`` with ``generator.`` keys), in our key names or in an official
implementation's (converted with the model module's ``convert_official_state_dict`` or ``official_key_map``).
:func:`model_from_checkpoint` rebuilds the model from our files and recognises official MANA and
VSR-Transformer state_dicts from their weights alone.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from reference_models import registry
from reference_models.io.partial_output import create_partial_file, current_umask, remove_stale_partials
from reference_models.registry import list_models, model_spec, network_module
from vsrblocks.checkpoint import (
    CheckpointError,
    is_safetensors,
    load_file,
    load_safetensors,
    load_state_dict_checked,
    select_generator,
    unwrap_state_dict,
)

__all__ = [
    "CheckpointError",
    "build_from_checkpoint",
    "fit_state_dict",
    "load_checkpoint",
    "model_from_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "save_release",
]

FORMAT = "reference_models.checkpoint"
VERSION = 1
RELEASE_WEIGHTS = "model.safetensors"
RELEASE_CONFIG = "config.json"
_RESERVED = ("format", "version", "model_spec", "state_dict")
_PLAIN = (str, int, float, bool, type(None))
_logger = logging.getLogger(__name__)


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


def _write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """``write(tmp)`` a file beside ``path`` and rename it onto ``path``; nothing is left behind on failure,
    and leftovers of earlier, killed saves to ``path`` are removed on success. The temporary name
    (``.NAME.partial-<pid>-<token>``, :mod:`reference_models.io.partial_output`) stays within NAME_MAX and the
    file gets the umask's permissions, not tempfile's 0600."""
    tmp = create_partial_file(path, suffix="")
    try:
        write(str(tmp))
        # some writers (safetensors) replace the file with a 0600 one of their own
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    remove_stale_partials(path)


def _safetensors_metadata(spec: Mapping[str, Any] | None, extra: Mapping[str, Any]) -> dict[str, str]:
    tensors = [k for k, v in extra.items() if _holds_tensor(v)]
    if tensors:
        raise ValueError(
            f"save_checkpoint: extras {tensors} hold tensors; a .safetensors file keeps the weights and plain "
            "values only (save training state such as an optimizer to a .pt file)"
        )
    return {"format": FORMAT, "version": str(VERSION), "model_spec": json.dumps(spec), "extra": json.dumps(dict(extra))}


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, Mapping):
        return any(_holds_tensor(v) for v in value.values())
    return False


def save_checkpoint(model: nn.Module, path: str | os.PathLike[str], **extra: Any) -> None:
    """Save ``model``'s weights and ``model_spec`` (set by :func:`~reference_models.create_model`) to ``path``.

    A path ending in ``.safetensors`` writes a safetensors file (weights as tensors, model spec and extras as
    JSON metadata: the format to share, readable without pickle); any other name a ``torch.save`` file. The
    file is written under a temporary name in the same folder (:mod:`reference_models.io.partial_output`) and renamed, so an
    interrupted save never leaves a truncated checkpoint; it gets the umask's permissions, and temporary
    files of earlier, killed saves to the same path are removed.

    Args:
        model: the model; if it came from ``create_model`` the checkpoint alone rebuilds it.
        path: destination file.
        **extra: more entries, plain values and tensors only (``step=..., optimizer=opt.state_dict()``);
            plain values only for ``.safetensors``.

    Raises:
        ValueError: an extra or a model_spec override is not a plain value (it could not be loaded with
            ``weights_only=True``), an extra uses a reserved name, or a ``.safetensors`` extra holds tensors.

    Examples:
        >>> import tempfile, os
        >>> from reference_models import create_model
        >>> model = create_model("mana", "tiny")
        >>> path = os.path.join(tempfile.mkdtemp(), "mana.pt")
        >>> save_checkpoint(model, path, step=10)
        >>> model_from_checkpoint(path).model_spec["preset"]
        'tiny'
    """
    reserved = set(_RESERVED) & set(extra)
    if reserved:
        raise ValueError(f"save_checkpoint: {sorted(reserved)} are reserved names")
    spec = model_spec(model)
    _check_plain(spec, "model_spec")
    _check_plain(extra, "extra")
    path = Path(path)
    if path.suffix == ".safetensors":
        metadata = _safetensors_metadata(spec, extra)
        # clones: safetensors refuses tensors that share memory
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        _write_atomically(path, lambda tmp: safetensors.torch.save_file(state, tmp, metadata=metadata))
        return
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "model_spec": spec, "state_dict": state, **extra}
    _write_atomically(path, lambda tmp: torch.save(payload, tmp))


def save_release(model: nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write the shareable release of ``model`` into ``folder``: ``model.safetensors`` (weights, spec in its
    metadata) and ``config.json`` (the model spec, readable by people and by
    ``create_model(name, preset, pretrained=folder)``).

    Returns:
        The folder.

    Raises:
        ValueError: the model has no ``model_spec`` (it did not come from ``create_model``); a release must
            rebuild its model.
    """
    spec = model_spec(model)
    if not spec:
        raise ValueError(
            "save_release: the model has no model_spec; build it with create_model so the release rebuilds it"
        )
    folder = Path(folder)
    save_checkpoint(model, folder / RELEASE_WEIGHTS)
    config = {"format": FORMAT, "version": VERSION, "model_spec": spec, "weights": RELEASE_WEIGHTS}
    text = json.dumps(config, indent=2) + "\n"
    _write_atomically(folder / RELEASE_CONFIG, lambda tmp: Path(tmp).write_text(text))
    return folder


def _check_spec(spec: Any, where: str) -> None:
    if spec is None:
        return
    if not isinstance(spec, Mapping):
        raise CheckpointError(f"{where}: model_spec is a {type(spec).__name__}, not a dict with name and preset")
    for key in ("name", "preset"):
        if not isinstance(spec.get(key), str):
            raise CheckpointError(f"{where}: model_spec has no {key} (a string)")
    if not isinstance(spec.get("overrides") or {}, Mapping):
        raise CheckpointError(f"{where}: model_spec overrides is a {type(spec['overrides']).__name__}, not a dict")


def _ours(obj: Any, where: str) -> dict[str, Any]:
    """Validate the dict of one of our checkpoints."""
    version = obj.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise CheckpointError(f"{where} has checkpoint version {version!r}; this code reads {VERSION}")
    _check_spec(obj.get("model_spec"), where)
    return {**obj, "state_dict": unwrap_state_dict(obj["state_dict"], where, ())}


def _not_ours(path: str | os.PathLike[str]) -> CheckpointError:
    return CheckpointError(
        f"'{os.fspath(path)}' is not a reference_models checkpoint (no model_spec); "
        "name the model to load plain or official weights into it"
    )


def _ours_from_safetensors(tensors: dict[str, torch.Tensor], metadata: Mapping[str, str], where: str) -> dict[str, Any]:
    try:
        spec = json.loads(metadata.get("model_spec", "null"))
        extra = json.loads(metadata.get("extra", "{}"))
        version = int(metadata.get("version", VERSION))
    except ValueError as exc:
        raise CheckpointError(f"{where}: unreadable metadata ({exc})") from None
    if not isinstance(extra, Mapping):
        raise CheckpointError(f"{where}: metadata 'extra' is a {type(extra).__name__}, not a dict")
    extra = {k: v for k, v in extra.items() if k not in _RESERVED}
    return _ours({"format": FORMAT, "version": version, "model_spec": spec, "state_dict": tensors, **extra}, where)


def _read_release(folder: Path) -> dict[str, Any]:
    where = f"release folder '{folder}'"
    try:
        config = json.loads((folder / RELEASE_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{where}: unreadable {RELEASE_CONFIG} ({type(exc).__name__})") from None
    if not isinstance(config, Mapping) or config.get("format") != FORMAT:
        raise CheckpointError(f"{where}: {RELEASE_CONFIG} is not a reference_models release config")
    weights = folder / str(config.get("weights", RELEASE_WEIGHTS))
    tensors = load_safetensors(weights)[0]
    return _ours(
        {
            "format": FORMAT,
            "version": config.get("version", VERSION),
            "model_spec": config.get("model_spec"),
            "state_dict": tensors,
        },
        where,
    )


def _read_any(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor] | None]:
    """Read ``path`` once: ``(our checkpoint dict, None)`` for our files, ``(None, state_dict)`` for any other
    file holding a state_dict (wrappers and MMagic generator prefixes removed)."""
    where = f"'{os.fspath(path)}'"
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, RELEASE_CONFIG)):
        return _read_release(Path(path)), None
    if os.path.isfile(path) and is_safetensors(path):
        tensors, metadata = load_safetensors(path)
        if metadata.get("format") == FORMAT:
            return _ours_from_safetensors(tensors, metadata, where), None
        return None, select_generator(tensors)
    obj = load_file(path)
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT and "state_dict" in obj:
        return _ours(dict(obj), where), None
    return None, select_generator(unwrap_state_dict(obj, f"checkpoint {where}"))


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The dict of one of our checkpoints: a ``.pt`` file (read with ``weights_only=True``), a
    ``.safetensors`` file written by :func:`save_checkpoint`, or a release folder (:func:`save_release`).

    Raises:
        CheckpointError: missing or unreadable file, a file that is not one of our checkpoints, or a
            malformed one (a model_spec that is not a dict with ``name`` and ``preset``, a non-tensor weight).
    """
    ours, _ = _read_any(path)
    if ours is None:
        raise _not_ours(path)
    return ours


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


def fit_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """``state_dict`` as ``model`` loads it: unchanged when it fits, else converted from the official key names
    by the model's module. Strict: every key, every shape.

    Raises:
        CheckpointError: neither fits (the message names the keys of the direct attempt).
    """
    try:
        load_state_dict_checked(model, state_dict, what=what)
        return dict(state_dict)
    except CheckpointError as direct:
        converted = _official_converted(model, state_dict)
        if converted is None:
            raise
        try:
            load_state_dict_checked(model, converted, what=f"{what} (official key names)")
        except CheckpointError:
            raise direct from None
        return converted


def _weights(ckpt: Mapping[str, Any], ema: bool = True) -> Mapping[str, Any]:
    """The weights of one of our checkpoints: the moving average (``params_ema``, written by ``train --ema``)
    when there is one and ``ema``, else ``state_dict``."""
    averaged = ckpt.get("params_ema")
    return averaged if ema and isinstance(averaged, Mapping) else ckpt["state_dict"]


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], *, ema: bool = True) -> dict[str, Any]:
    """Load the weights in ``path`` into ``model`` (strictly: every key, every shape).

    Accepts our checkpoints (``.pt``, ``.safetensors`` or a release folder, whose ``model_spec`` must name
    the model's architecture) and bare or wrapped state_dicts in our or the official key names. ``ema``: of
    our checkpoints with a moving average of the weights (``params_ema``), load that (what validation
    scored); ``False``: the trained weights (resuming).

    Returns:
        The extras stored beside the weights (``{}`` for files that are not ours).

    Raises:
        CheckpointError: missing or corrupt file, a checkpoint of another model, or weights that do not fit
            (the message names the missing, unexpected and mismatched keys).
    """
    ours, state_dict = _read_any(path)
    if ours is None:
        assert state_dict is not None  # _read_any returns one of the two
        fit_state_dict(model, state_dict, what=f"checkpoint '{os.fspath(path)}'")
        return {}
    spec, own = ours.get("model_spec"), model_spec(model)
    if spec and own and spec.get("name") != own.get("name"):
        raise CheckpointError(f"'{os.fspath(path)}' holds {_describe(spec)}, not {_describe(own)}")
    load_state_dict_checked(model, _weights(ours, ema), what=f"checkpoint '{os.fspath(path)}' ({_describe(spec)})")
    return {k: v for k, v in ours.items() if k not in _RESERVED}


def create_model(
    name: str, preset: str = "paper", pretrained: str | os.PathLike[str] | None = None, **overrides: Any
) -> nn.Module:
    """Build reference model ``name`` from ``preset`` (:func:`reference_models.registry.create_model`) and load
    ``pretrained`` weights into it.

    Args:
        name: one of :func:`~reference_models.registry.list_models`.
        preset: one of :func:`~reference_models.registry.list_presets`.
        pretrained: a local checkpoint to load (strictly) into the model: our ``.pt`` / ``.safetensors`` file, a
            release folder (``model.safetensors`` + ``config.json``, see :func:`save_release`), or a plain or
            official state_dict.
        **overrides: constructor arguments.

    Raises:
        ValueError: unknown model or preset (the message lists the valid ones);
            :class:`~vsrblocks.checkpoint.CheckpointError` (a ValueError) for weights that do not fit.
    """
    model = registry.create_model(name, preset, **overrides)
    if pretrained is not None:
        load_checkpoint(model, pretrained)
    return model


def _official_modules() -> dict[str, Any]:
    """The model modules that can read an official state_dict's architecture off its weights."""
    modules = {name: network_module(name) for name in list_models()}
    return {name: m for name, m in modules.items() if hasattr(m, "official_config_from_state_dict")}


def _official_model(
    state_dict: dict[str, torch.Tensor],
    path: str | os.PathLike[str],
    report: Callable[[str], None],
    name: str | None = None,
    **overrides: Any,
) -> nn.Module | None:
    """Recognise an official MANA / VSR-Transformer state_dict (of model ``name`` if given), infer its config
    and build the model; ``None`` when no module recognises it."""
    modules = _official_modules()
    for found, module in modules.items():
        if name not in (None, found):
            continue
        try:
            config, assumed = module.official_config_from_state_dict(state_dict)
        except ValueError:
            continue
        unknown = sorted(set(overrides) - set(config))
        if unknown:
            raise CheckpointError(
                f"'{os.fspath(path)}' is an official {found} state_dict; {unknown} are not among its settings "
                f"({', '.join(config)})"
            )
        config.update(overrides)
        inferred = ", ".join(f"{k}={v}" for k, v in config.items() if k not in assumed and k not in overrides)
        chosen = ", ".join(f"{k}={config[k]}" for k in overrides)
        defaults = ", ".join(f"{k}={config[k]}" for k in assumed if k not in overrides)
        report(
            f"'{os.fspath(path)}': official {found} weights; from the weights: {inferred}"
            + (f"; paper values (not in the weights, override with KEY=VALUE): {defaults}" if defaults else "")
            + (f"; given: {chosen}" if chosen else "")
        )
        try:
            return module.from_official(state_dict, **config).eval()
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"'{os.fspath(path)}' (official {found} weights) does not build: {exc}") from None
    return None


def _unrecognised(path: str | os.PathLike[str]) -> CheckpointError:
    return CheckpointError(
        f"'{os.fspath(path)}' is neither a reference_models checkpoint (a 'format' entry with a model_spec) nor an "
        f"official {' or '.join(sorted(_official_modules()))} state_dict (bare or under params/params_ema/state_dict, "
        "optionally generator./module. prefixed); name the model to load plain weights into it"
    )


def _rebuild(ours: dict[str, Any], path: str | os.PathLike[str], **overrides: Any) -> nn.Module:
    """The model one of our checkpoints describes, with its weights."""
    spec = ours.get("model_spec")
    if not spec:
        raise CheckpointError(f"checkpoint '{os.fspath(path)}' has no model_spec; name the model to load it into")
    try:
        model = registry.create_model(spec["name"], spec["preset"], **{**(spec.get("overrides") or {}), **overrides})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint '{os.fspath(path)}' names {_describe(spec)}, which cannot be built: {exc}"
        ) from exc
    load_state_dict_checked(model, _weights(ours), what=f"checkpoint '{os.fspath(path)}' ({_describe(spec)})")
    return model


def model_from_checkpoint(
    path: str | os.PathLike[str], *, report: Callable[[str], None] | None = None, **overrides: Any
) -> nn.Module:
    """Rebuild the model a checkpoint holds and load its weights.

    - Our checkpoints (``.pt``, ``.safetensors``, release folder): ``create_model`` with the saved name,
      preset and overrides; extra ``overrides`` change constructor arguments that do not affect the weights
      (e.g. ``tile_size``).
    - An official MANA or VSR-Transformer state_dict (bare, or in BasicSR ``params``/``params_ema``, MMagic
      ``state_dict`` with ``generator.`` keys, ``module.`` prefixes): the architecture and every size the weights
      determine are read off them (``official_config_from_state_dict`` of the model's module); what they do not
      determine takes the paper's value, and ``overrides`` in the official keyword names replace either (e.g.
      ``num_frame=7, heads=2`` for VSR-Transformer). What was inferred is passed to ``report`` (default: the
      ``reference_models.checkpoint`` logger at INFO level).

    Raises:
        CheckpointError: missing/corrupt file, one that is neither ours nor a recognised official state_dict
            (the message says what was looked for), or weights that do not fit.
    """
    ours, state_dict = _read_any(path)
    if ours is not None:
        return _rebuild(ours, path, **overrides)
    assert state_dict is not None  # _read_any returns one of the two
    model = _official_model(state_dict, path, report or _logger.info, **overrides)
    if model is None:
        raise _unrecognised(path)
    return model


def build_from_checkpoint(
    path: str | os.PathLike[str],
    name: str | None = None,
    preset: str | None = None,
    *,
    report: Callable[[str], None] | None = None,
    **overrides: Any,
) -> nn.Module:
    """The model for ``run --checkpoint FILE [MODEL] [--preset P] [--model-arg KEY=VALUE ...]``.

    Without ``name`` the file alone decides (:func:`model_from_checkpoint`: ours or a recognised official
    state_dict). With ``name`` our checkpoints must hold that model (and ``preset``, if given); an official
    state_dict of that model is recognised as without it (unless a ``preset`` is named); other files are
    loaded into ``create_model(name, preset or "paper", **overrides)``. The file is read once.

    Raises:
        CheckpointError: as :func:`model_from_checkpoint` / :func:`load_checkpoint`, or a checkpoint that holds
            another model or preset than the one named.
    """
    ours, state_dict = _read_any(path)
    if ours is not None:
        spec = ours.get("model_spec") or {}
        if name and spec and name != spec["name"]:
            raise CheckpointError(f"checkpoint '{os.fspath(path)}' holds a {spec['name']} model, not {name}")
        if preset and spec and preset != spec["preset"]:
            raise CheckpointError(f"checkpoint '{os.fspath(path)}' holds preset {spec['preset']!r}, not {preset!r}")
        if spec or not name:
            return _rebuild(ours, path, **overrides)
        model = create_model(name, preset or "paper", **overrides)
        load_state_dict_checked(model, _weights(ours), what=f"checkpoint '{os.fspath(path)}'")
        return model
    assert state_dict is not None  # _read_any returns one of the two
    if preset is None:
        official = _official_model(state_dict, path, report or _logger.info, name, **overrides)
        if official is not None:
            return official
        if name is None:
            raise _unrecognised(path)
    if name is None:
        raise CheckpointError(f"checkpoint '{os.fspath(path)}' holds plain weights; name the model to load them into")
    model = create_model(name, preset or "paper", **overrides)
    fit_state_dict(model, state_dict, what=f"checkpoint '{os.fspath(path)}'")
    return model
