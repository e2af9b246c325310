"""What an exported file records about its model, so that it runs without the Python class.

Every format stores the same string-to-string map: ONNX in ``metadata_props``, ``.pt2`` and TorchScript
archives in an extra file ``reference_models.json``. :func:`reference_models.inference.upscale.upscale_frames` needs
``num_frames``, ``scale`` and ``output_mode``; the rest documents where the file came from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import cast

from torch import nn

__all__ = ["EXTRA_FILE", "model_metadata", "metadata_json", "parse_metadata"]

#: Name of the metadata entry in ``.pt2`` and TorchScript archives.
EXTRA_FILE = "reference_models.json"
_REQUIRED = ("num_frames", "scale", "output_mode")


def model_metadata(model: nn.Module, **extra: object) -> dict[str, str]:
    """``{"num_frames", "scale", "output_mode", "model", "preset", ...extra}`` of ``model``, as strings."""
    spec = getattr(model, "model_spec", None) or {}
    out = {
        "num_frames": str(int(cast(int, model.num_frames))),
        "scale": str(int(cast(int, model.scale))),
        "output_mode": str(model.output_mode),
    }
    if spec:
        out["model"], out["preset"] = str(spec.get("name")), str(spec.get("preset"))
    out.update({key: str(value) for key, value in extra.items()})
    return out


def metadata_json(metadata: Mapping[str, str]) -> str:
    """``metadata`` as the JSON text stored in archives."""
    return json.dumps(dict(metadata), sort_keys=True)


def parse_metadata(metadata: Mapping[str, str], where: str) -> tuple[int, int, str]:
    """``(num_frames, scale, output_mode)`` from a file's metadata.

    Raises:
        ValueError: a key is missing or malformed (the file was not exported by this package).
    """
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise ValueError(
            f"{where} lacks the metadata {', '.join(missing)}; export it with python -m reference_models export"
        )
    try:
        num_frames, scale = int(metadata["num_frames"]), int(metadata["scale"])
    except ValueError as exc:
        raise ValueError(f"{where} has malformed metadata: {exc}") from None
    mode = metadata["output_mode"]
    if mode not in ("center", "all") or num_frames < 1 or scale < 1:
        raise ValueError(
            f"{where} has malformed metadata: num_frames={num_frames}, scale={scale}, output_mode={mode!r}"
        )
    return num_frames, scale, mode
