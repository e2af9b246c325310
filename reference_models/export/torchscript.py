"""Export to TorchScript (``torch.jit.trace``), for C++ (libtorch) and older deployments.

Tracing records the operations run on the example clip. Sizes that flow through tensor operations stay
symbolic, but Python arithmetic on sizes (einops patterns, pyramid levels, chunk counts) is recorded as
constants, so a traced reference model is tied to the example's height and width: :func:`export_torchscript`
traces at the size the user will run (``height``/``width``), and the archive records that size in its
metadata. For size-independent deployment use ONNX or an exported program (``torch.export``).
"""

from __future__ import annotations

import json
import os
import warnings

import torch
from torch import nn

from reference_models.export.exported_program import InferenceModel, example_clip
from reference_models.export.metadata import EXTRA_FILE, metadata_json, model_metadata

__all__ = ["export_torchscript", "load_torchscript"]


def export_torchscript(
    model: nn.Module, path: str | os.PathLike[str], example: torch.Tensor | None = None
) -> dict[str, str]:
    """Trace ``model`` on ``example`` and save the TorchScript archive with its metadata.

    Returns:
        The metadata stored in the archive (``input_sizes`` gives the traced height and width).
    """
    wrapped = InferenceModel(model).eval()
    example = example_clip(wrapped) if example is None else example
    height, width = example.shape[-2:]
    metadata = model_metadata(model, input_sizes=f"B: any, T: {wrapped.num_frames}, C: 3, H: {height}, W: {width}")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the size constants, documented above
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation: the format is still asked for
        traced = torch.jit.trace(wrapped, (example,), check_trace=False)
        torch.jit.save(traced, os.fspath(path), _extra_files={EXTRA_FILE: metadata_json(metadata)})
    return metadata


def load_torchscript(path: str | os.PathLike[str]) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Read an archive written by :func:`export_torchscript`: the module and its metadata."""
    extra_files = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(os.fspath(path), map_location="cpu", _extra_files=extra_files)
    return module, json.loads(extra_files[EXTRA_FILE] or "{}")
