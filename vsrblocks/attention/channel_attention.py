"""Channel attention: squeeze-and-excitation, and its CBAM / MAFnet avg+max variant.

Hu et al., "Squeeze-and-Excitation Networks", CVPR 2018 (as used by RCAN's channel attention);
Woo et al., "CBAM: Convolutional Block Attention Module", ECCV 2018 (average and max pooling through a
shared MLP, summed); MAFnet (Fig. 2a: kernel-size-3 convolutions and, as its figure suggests, separate
MLPs for the two pooled vectors).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from vsrblocks.reset import reset_submodules
from vsrblocks.shapes import check_shape

__all__ = ["ChannelAttention"]

Pooling = Literal["avg", "avg+max"]


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation channel attention: ``x * sigmoid(sum_p MLP_p(pool_p(x)))``.

    Each pooled ``(B, C, 1, 1)`` descriptor goes through ``fc1`` (``C -> C // reduction``), ReLU and ``fc2``
    (``C // reduction -> C``), both convolutions with bias; the results of the pooling branches are summed,
    passed through a sigmoid and multiply ``x`` channel-wise.

    - ``pooling="avg"``: SE / RCAN.
    - ``pooling="avg+max"``, ``shared=True``: CBAM's channel attention (one MLP for both branches, summed);
      with ``kernel_size=3`` this is MAFnet's module read with shared convolutions (the reading of issue 3).
    - ``pooling="avg+max"``, ``shared=False``, ``kernel_size=3``: MAFnet's module as its Fig. 2a suggests
      (the spec's reading, ``dasaa_mafnet.md`` §5.7): the max branch has its own MLP (``fc1_max``,
      ``fc2_max``). A ``3x3`` convolution with padding 1 on a ``1x1`` map only uses its
      centre tap, so ``kernel_size=3`` computes the same function as ``1`` with 9x the parameters (the
      off-centre taps never receive a gradient); it exists to match the paper's parameter count.

    Only global pooling sees the spatial layout, so the module commutes with every spatial permutation
    (flips, transposes, rotations) of ``x``.

    Args:
        channels: input (= output) channels C.
        reduction: bottleneck ratio r; the hidden width is ``max(1, channels // reduction)`` unless
            ``hidden_channels`` is given (SE, CBAM, MAFnet: 16).
        pooling: ``"avg"`` or ``"avg+max"``.
        kernel_size: odd kernel size of the two MLP convolutions (padding ``kernel_size // 2``).
        shared: with ``"avg+max"``, whether both branches use one MLP.
        hidden_channels: explicit bottleneck width.

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> ca = ChannelAttention(channels=64, reduction=16, pooling="avg+max", kernel_size=3, shared=False)
        >>> ca(torch.randn(2, 64, 9, 7)).shape
        torch.Size([2, 64, 9, 7])
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 16,
        pooling: Pooling = "avg",
        kernel_size: int = 1,
        shared: bool = True,
        hidden_channels: int | None = None,
    ) -> None:
        super().__init__()
        if pooling not in ("avg", "avg+max"):
            raise ValueError(f"pooling must be 'avg' or 'avg+max', got {pooling!r}")
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}")
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be positive, got channels={channels}, reduction={reduction}")
        self.channels = channels
        self.reduction = reduction
        self.pooling = pooling
        self.kernel_size = kernel_size
        self.shared = shared or pooling == "avg"
        self.hidden_channels = max(1, channels // reduction) if hidden_channels is None else hidden_channels
        padding = kernel_size // 2
        self.fc1 = nn.Conv2d(channels, self.hidden_channels, kernel_size, padding=padding)
        self.fc2 = nn.Conv2d(self.hidden_channels, channels, kernel_size, padding=padding)
        if not self.shared:
            self.fc1_max = nn.Conv2d(channels, self.hidden_channels, kernel_size, padding=padding)
            self.fc2_max = nn.Conv2d(self.hidden_channels, channels, kernel_size, padding=padding)
        self.act = nn.ReLU(inplace=True)

    def reset_parameters(self) -> None:
        """Re-initialise every layer as on construction (``__init__`` does not call this: the layers initialise
        themselves, and seeded weights stay what they were)."""
        reset_submodules(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        logits = self.fc2(self.act(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        if self.pooling == "avg+max":
            pooled = x.amax(dim=(2, 3), keepdim=True)
            if self.shared:
                logits = logits + self.fc2(self.act(self.fc1(pooled)))
            else:
                logits = logits + self.fc2_max(self.act(self.fc1_max(pooled)))
        return x * torch.sigmoid(logits)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, reduction={self.reduction}, pooling={self.pooling!r}, "
            f"kernel_size={self.kernel_size}, shared={self.shared}, hidden_channels={self.hidden_channels}"
        )
