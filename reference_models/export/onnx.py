"""Export to ONNX through ``torch.export`` (the dynamo-based ``torch.onnx`` exporter, ONNX Script).

Why this exporter and not the TorchScript-based one (``dynamo=False``): tracing records every size the
example clip had as a constant (einops reshapes, pyramid sizes, chunk counts), so the file fails at any
other frame size; ``torch.export`` keeps batch, height and width symbolic (see
:mod:`reference_models.export.exported_program`).

Three rewrites happen before translation: ONNX Script's ``scaled_dot_product_attention`` takes 4-D
tensors only, and our attention blocks call it on ``(B, N, C)`` tokens, so it is decomposed into
``softmax(Q K^T * scale) V`` (MatMul, Softmax, MatMul in the file); and a remainder by a symbolic size
(pixel coordinates of a flat index) into ``a - floor(a / b) * b``; bilinear resizing to a symbolic size
(SPyNet's round trip through multiples of 32) into PyTorch's own gather-based decomposition, since the
``Resize`` node ONNX Script writes for it gets integer scales (zero when shrinking) in ONNX Runtime.

ONNX Script's graph optimiser is turned off: its constant folding fails on VSRT's ``SplitToSequence`` of a
symbolic size (onnxscript 0.7), and ONNX Runtime runs its own graph optimisations when it loads the file.

The file carries ``num_frames``, ``scale`` and ``output_mode`` in its ``metadata_props``
(:mod:`reference_models.export.metadata`), read back by :class:`~reference_models.export.onnx_runtime.OnnxRuntimeModel`.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn
from torch._decomp import get_decompositions

from reference_models.export.exported_program import INPUT_NAME, OUTPUT_NAME, export_program, size_constraints
from reference_models.export.metadata import model_metadata

__all__ = ["DEFAULT_OPSET", "export_onnx"]

#: The opset the torch 2.x ONNX exporter targets natively.
DEFAULT_OPSET = 18


def _attention_math(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``aten.scaled_dot_product_attention`` in plain operations (inference: no dropout)."""
    if is_causal or enable_gqa:
        raise ValueError("export: causal or grouped-query attention is not used by the reference models")
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    logits = torch.matmul(query, key.transpose(-2, -1)) * scale
    if attn_mask is not None:
        logits = logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else logits + attn_mask
    return torch.matmul(torch.softmax(logits, dim=-1), value)


def _remainder(tensor: torch.Tensor, divisor: int) -> torch.Tensor:
    """``aten.remainder.Scalar`` by a symbolic size (ONNX Script translates it for constants only)."""
    return tensor - torch.div(tensor, divisor, rounding_mode="floor") * divisor


#: Rewrites applied to the exported program before its translation to ONNX (module docstring).
_DECOMPOSITIONS = {
    **get_decompositions([torch.ops.aten.upsample_bilinear2d.vec, torch.ops.aten.upsample_bilinear2d.default]),
    torch.ops.aten.scaled_dot_product_attention.default: _attention_math,
    torch.ops.aten.remainder.Scalar: _remainder,
}


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example: torch.Tensor | None = None,
    program: torch.export.ExportedProgram | None = None,
    opset: int = DEFAULT_OPSET,
) -> dict[str, str]:
    """Write ``model`` as a single ONNX file with dynamic batch, height and width.

    Args:
        model: a reference model (attributes ``num_frames``, ``scale``, ``output_mode``).
        path: the ``.onnx`` file to write.
        example: the clip to trace with (default: :func:`~reference_models.export.exported_program.example_clip`).
        program: ``model`` already exported by :func:`~reference_models.export.exported_program.export_program`
            (then not traced again, and ``example`` must be left out): one export serving several formats. It is
            not modified.
        opset: ONNX opset version.

    Returns:
        The metadata written into the file (including ``input_sizes``, what each axis accepts).
    """
    if program is None:
        program = export_program(model, example)
    elif example is not None:
        raise ValueError("export_onnx: give example or an already exported program, not both")
    constraints = size_constraints(program)
    program = program.run_decompositions(_DECOMPOSITIONS)
    onnx_program = torch.onnx.export(
        program,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamo=True,
        verbose=False,
        optimize=False,  # see the module docstring
    )
    assert onnx_program is not None  # None only from the TorchScript-based exporter (dynamo=False)
    metadata = model_metadata(model, input_sizes=", ".join(f"{k}: {v}" for k, v in constraints.items()))
    onnx_program.model.metadata_props.update(metadata)
    onnx_program.save(os.fspath(path), external_data=False)
    return metadata
