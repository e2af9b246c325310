"""Cropping the bottom/right padding off a frame, at any size and in exported graphs."""

from __future__ import annotations

import torch

__all__ = ["crop_padding"]


def crop_padding(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The top-left ``height x width`` pixels of ``x`` (undoes a bottom/right padding).

    Eagerly a slice (a view). While exporting, a gather of the kept rows and columns instead: ``torch.export``
    decides a slice's memory layout by whether the padding is empty, and so freezes the exported graph to
    sizes that are (or are not) multiples of the padding's step.

    Shape:
        - x: ``(..., H, W)`` with ``H >= height`` and ``W >= width``
        - Output: ``(..., height, width)``

    Examples:
        >>> crop_padding(torch.arange(12.0).reshape(3, 4), 2, 3)
        tensor([[0., 1., 2.],
                [4., 5., 6.]])
    """
    if x.dim() < 2 or x.shape[-2] < height or x.shape[-1] < width:
        raise ValueError(f"x: expected (..., H, W) with H >= {height} and W >= {width}, got {tuple(x.shape)}")
    if not torch.compiler.is_exporting():
        return x[..., :height, :width]
    rows = torch.arange(height, device=x.device)
    cols = torch.arange(width, device=x.device)
    return x.index_select(-2, rows).index_select(-1, cols)
