"""``torch.export`` of a reference model with dynamic batch, height and width: the graph every format starts from.

The model is exported in eval mode under ``torch.no_grad()`` with ``torch.export.export(strict=False)``.
Batch, height and width are ``Dim.AUTO``: dynamic wherever the model allows it. Where a model's code ties a
size to a constraint (a multiple, a minimum), torch.export records it as a range or a relation instead of
failing, and :func:`size_constraints` reads those back so the CLI can print them. Code that would otherwise
loop a size-dependent number of times (chunked attention) or branch on a size (padding to a multiple, the
power-of-two padding of the pure-PyTorch deformable convolution) takes a single-graph path when
``torch.compiler.is_exporting()``; see the README's "Deploy" section.
"""

from __future__ import annotations

import json
import os
from typing import cast

import torch
from torch import nn

from reference_models.export.metadata import EXTRA_FILE, metadata_json
from vsrblocks.shapes import check_shape

__all__ = ["InferenceModel", "example_clip", "export_program", "save_program", "load_program", "size_constraints"]

#: Input and output names of every exported file.
INPUT_NAME, OUTPUT_NAME = "lr", "sr"


class InferenceModel(nn.Module):
    """A reference model's inference forward (the first output when it returns several), for export.

    Carries the attributes :func:`reference_models.inference.upscale.upscale_frames` needs (``num_frames``,
    ``scale``, ``output_mode``).

    Shape:
        - lr: ``(B, T, 3, H, W)``
        - Output: ``(B, 3, sH, sW)`` (``output_mode="center"``) or ``(B, T, 3, sH, sW)`` (``"all"``)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.num_frames, self.scale, self.output_mode = (
            int(cast(int, model.num_frames)),
            int(cast(int, model.scale)),
            str(model.output_mode),
        )

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        out = self.model(lr)
        return out[0] if isinstance(out, (tuple, list)) else out


def example_clip(model: nn.Module, height: int = 34, width: int = 38, batch: int = 2) -> torch.Tensor:
    """A random ``(batch, model.num_frames, 3, height, width)`` clip to trace ``model`` with.

    The default size is not a multiple of 4 (no "already a multiple" branch is traced) and above 32, so
    that SPyNet's coarsest level (1/32) is not of size 1 (torch.export specialises sizes 0 and 1, as it does
    a batch of 1: hence batch 2).
    """
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, int(cast(int, model.num_frames)), 3, height, width, generator=generator)


def export_program(model: nn.Module, example: torch.Tensor | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` ``model`` (eval mode, no autograd) with dynamic batch, height and width.

    Args:
        model: a reference model (or an :class:`InferenceModel`).
        example: the clip to trace with (default: :func:`example_clip`).

    Shape:
        - example: ``(B, T, 3, H, W)`` with ``T = model.num_frames``
    """
    wrapped = model if isinstance(model, InferenceModel) else InferenceModel(model)
    wrapped = wrapped.eval()
    example = example_clip(wrapped) if example is None else example
    check_shape(example, "B T C H W", name="example", T=wrapped.num_frames, C=3)
    auto = torch.export.Dim.AUTO
    with torch.no_grad():
        return torch.export.export(
            wrapped, (example,), dynamic_shapes={INPUT_NAME: {0: auto, 3: auto, 4: auto}}, strict=False
        )


def size_constraints(program: torch.export.ExportedProgram) -> dict[str, str]:
    """What the exported graph accepts on each input axis: ``{"B": "any", "T": "7", "H": "any", ...}``.

    Read from the traced input's shape: a plain int is a fixed axis, a bare symbol a free one, an expression
    (``4*s0``) a constrained one. torch.export reports free sizes as ``>= 2`` (it does not trace the
    0/1 cases separately); the reference models' graphs hold no branch on size 1, and the tests run batch 1.
    """
    name = program.graph_signature.user_inputs[0]
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == name)
    ranges = {str(symbol): value for symbol, value in program.range_constraints.items()}
    out = {}
    for axis, size in zip("BTCHW", node.meta["val"].shape):
        expression = str(size)
        if isinstance(size, int):
            out[axis] = expression
        elif expression in ranges and ranges[expression].lower <= 2 and ranges[expression].upper > 2**31:
            out[axis] = "any"
        else:
            bounds = ", ".join(f"{k} in [{v.lower}, {v.upper}]" for k, v in ranges.items() if k in expression)
            out[axis] = f"{expression} ({bounds})"
    return out


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """Write ``program`` as a ``.pt2`` archive (``torch.export.save``) with ``metadata`` beside it."""
    torch.export.save(program, os.fspath(path), extra_files={EXTRA_FILE: metadata_json(metadata)})


def load_program(path: str | os.PathLike[str]) -> tuple[torch.export.ExportedProgram, dict[str, str]]:
    """Read a ``.pt2`` archive written by :func:`save_program`: the program (run it with
    ``program.module()(clip)``) and its metadata."""
    extra_files = {EXTRA_FILE: ""}
    program = torch.export.load(os.fspath(path), extra_files=extra_files)
    return program, json.loads(extra_files[EXTRA_FILE] or "{}")
