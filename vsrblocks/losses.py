"""Reconstruction losses: Charbonnier (a differentiable L1) and PyTorch's L1.

Two conventions for Charbonnier's epsilon are in use:

- the papers (Charbonnier et al. 1994; LapSRN, Lai et al. 2017; MAFnet) write
  ``rho(d) = sqrt(d**2 + eps**2)``;
- the BasicSR and MMagic code writes ``sqrt(d**2 + eps)`` with ``eps=1e-12``.

We follow the papers by default (``square_eps=True``) with ``eps=1e-6``, which computes exactly
BasicSR's default ``sqrt(d**2 + 1e-12)``. To copy a BasicSR/MMagic config value verbatim, pass
``square_eps=False``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import L1Loss

__all__ = ["CharbonnierLoss", "charbonnier_loss", "L1Loss"]

Reduction = Literal["mean", "sum", "none"]


def charbonnier_loss(
    pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6, reduction: Reduction = "mean", square_eps: bool = True
) -> torch.Tensor:
    """Charbonnier loss ``sqrt((pred - target)**2 + eps**2)`` (``+ eps`` when ``square_eps=False``).

    Args:
        pred: prediction, any shape.
        target: ground truth, the shape of ``pred``.
        eps: the smoothing constant (see the module docstring for the two conventions).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (element-wise, the shape of ``pred``).
        square_eps: ``True``: ``eps`` enters squared (papers); ``False``: as is (BasicSR/MMagic code).

    Examples:
        >>> charbonnier_loss(torch.tensor([3.0]), torch.tensor([-1.0]), eps=3.0)
        tensor(5.)
        >>> charbonnier_loss(torch.tensor([3.0]), torch.tensor([-1.0]), eps=9.0, square_eps=False)
        tensor(5.)
    """
    if pred.shape != target.shape:
        raise ValueError(f"charbonnier_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    offset = eps * eps if square_eps else eps
    diff = pred - target
    loss = torch.sqrt(diff * diff + offset)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


class CharbonnierLoss(nn.Module):
    """Charbonnier loss, a differentiable variant of L1 (module form of :func:`charbonnier_loss`).

    Used by VSR-Transformer, MAFnet, BasicVSR and EDVR. The default computes
    ``sqrt(d**2 + 1e-12)``, the same as BasicSR's and MMagic's default ``CharbonnierLoss``.

    Args:
        eps: smoothing constant; enters squared unless ``square_eps=False``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        square_eps: ``True`` (default): paper convention ``sqrt(d**2 + eps**2)``;
            ``False``: BasicSR/MMagic code convention ``sqrt(d**2 + eps)``.

    Shape:
        - pred, target: any shape, the same for both
        - Output: scalar, or the input shape for ``reduction="none"``

    Examples:
        >>> loss = CharbonnierLoss()
        >>> loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4))
        tensor(1.)
    """

    def __init__(self, eps: float = 1e-6, reduction: Reduction = "mean", square_eps: bool = True) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        if eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.eps = eps
        self.reduction = reduction
        self.square_eps = square_eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(pred, target, eps=self.eps, reduction=self.reduction, square_eps=self.square_eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}, reduction={self.reduction!r}, square_eps={self.square_eps}"
