"""The simplest recurrent cell: concatenate the inputs along the channels and apply one module."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

__all__ = ["ConcatCell"]


class ConcatCell(nn.Module):
    """``ConcatCell(body)(*inputs) = body(torch.cat(inputs, dim=1))``.

    The propagation blocks call their cells as ``cell(frame_or_features, *earlier_branches, propagated)``;
    BasicVSR's and BasicVSR++'s cells concatenate exactly these, in this order, and apply a convolutional
    trunk (:class:`~vsrblocks.align.ResidualBlocksWithInputConv`). Write your own cell instead when it must
    treat an input apart (IconVSR fuses the propagated features with keyframe features first).

    Args:
        body: maps the concatenation to the new features.

    Shape:
        - inputs: ``(B, C_k, H, W)`` each
        - Output: what ``body`` returns for ``(B, sum C_k, H, W)``

    Examples:
        >>> cell = ConcatCell(nn.Conv2d(3 + 8, 8, 3, padding=1))
        >>> cell(torch.zeros(2, 3, 5, 7), torch.zeros(2, 8, 5, 7)).shape
        torch.Size([2, 8, 5, 7])
    """

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.body(torch.cat(inputs, dim=1)))
