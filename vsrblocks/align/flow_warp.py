"""Backward warping of frames or features by a dense optical flow."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["flow_warp", "FlowWarp"]

Mode = Literal["bilinear", "nearest", "bicubic"]
PaddingMode = Literal["zeros", "border", "reflection"]


def flow_warp(
    x: torch.Tensor, flow: torch.Tensor, mode: Mode = "bilinear", padding_mode: PaddingMode = "zeros"
) -> torch.Tensor:
    """Backward-warp ``x`` by ``flow``: ``out[:, :, i, j] = x[:, :, i + flow_y, j + flow_x]``.

    The BasicSR/MMagic convention (SPyNet, BasicVSR, VSR-Transformer): sampling positions in pixels
    are normalised with ``2 * p / max(size - 1, 1) - 1`` and read with
    ``grid_sample(align_corners=True)``. Half-precision inputs are sampled with a float32 grid,
    because bf16 cannot even represent pixel coordinates above 256 exactly.

    Args:
        x: frames or features to warp.
        flow: displacement in pixels, channel 0 = x (width), channel 1 = y (height).
        mode: interpolation of ``grid_sample``.
        padding_mode: how samples outside the frame are read (SPyNet uses ``"border"``).

    Shape:
        - x: ``(B, C, H, W)``
        - flow: ``(B, 2, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> x = torch.arange(12.0).reshape(1, 1, 3, 4)
        >>> flow = torch.zeros(1, 2, 3, 4); flow[:, 0] = 1.0
        >>> flow_warp(x, flow, padding_mode="border")[0, 0, 0].tolist()
        [1.0, 2.0, 3.0, 3.0]
    """
    dims = check_shape(x, "B C H W", name="x")
    check_shape(flow, "B two H W", name="flow", B=dims["B"], two=2, H=dims["H"], W=dims["W"])
    height, width = dims["H"], dims["W"]
    compute_dtype = torch.promote_types(flow.dtype, torch.float32)
    flow = flow.to(compute_dtype)
    grid_y, grid_x = torch.meshgrid(
        torch.arange(height, device=flow.device, dtype=compute_dtype),
        torch.arange(width, device=flow.device, dtype=compute_dtype),
        indexing="ij",
    )
    sample_x = grid_x + flow[:, 0]
    sample_y = grid_y + flow[:, 1]
    grid = torch.stack((2.0 * sample_x / max(width - 1, 1) - 1.0, 2.0 * sample_y / max(height - 1, 1) - 1.0), dim=-1)
    out = F.grid_sample(x.to(compute_dtype), grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    return out.to(x.dtype)


class FlowWarp(nn.Module):
    """Module form of :func:`flow_warp` (for ``nn.Sequential`` pipelines and hooks).

    Args:
        mode: interpolation, ``"bilinear"`` (default), ``"nearest"`` or ``"bicubic"``.
        padding_mode: ``"zeros"`` (default), ``"border"`` or ``"reflection"``.

    Shape:
        - x: ``(B, C, H, W)``, flow: ``(B, 2, H, W)`` (x then y, in pixels)
        - Output: ``(B, C, H, W)``

    Examples:
        >>> FlowWarp(padding_mode="border")(torch.rand(2, 3, 5, 7), torch.zeros(2, 2, 5, 7)).shape
        torch.Size([2, 3, 5, 7])
    """

    def __init__(self, mode: Mode = "bilinear", padding_mode: PaddingMode = "zeros") -> None:
        super().__init__()
        self.mode = mode
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        return flow_warp(x, flow, mode=self.mode, padding_mode=self.padding_mode)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding_mode={self.padding_mode!r}"
