"""Residual building blocks: the EDSR/BasicSR residual block without BatchNorm and RDN's dense block."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.fused_conv import conv2d_activation, conv2d_add
from vsrblocks.shapes import check_shape

__all__ = ["ResidualBlockNoBN", "ResidualDenseBlock", "make_layer"]


def make_layer(block: Callable[[], nn.Module], num_blocks: int) -> nn.Sequential:
    """Stack ``num_blocks`` fresh instances of ``block`` in an :class:`nn.Sequential`.

    The indices of the Sequential give the checkpoint keys BasicSR, MMagic, MANA and VSRT use
    (``encoder.0.conv1.weight`` ...), so their weights load unchanged.

    Examples:
        >>> body = make_layer(lambda: ResidualBlockNoBN(channels=8), 3)
        >>> len(body)
        3
    """
    if num_blocks < 0:
        raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
    return nn.Sequential(*(block() for _ in range(num_blocks)))


class ResidualBlockNoBN(nn.Module):
    """Residual block without BatchNorm: ``x + res_scale * conv2(relu(conv1(x)))``.

    From EDSR (Lim et al., CVPRW 2017), used as-is by EDVR, BasicVSR, MANA and VSR-Transformer.
    Parameter names ``conv1``/``conv2`` match BasicSR/MMagic checkpoints.

    In inference on CPU the ReLU and the skip addition run inside the convolutions
    (:mod:`vsrblocks.fused_conv`, bit-identical in float32).

    Args:
        channels: feature channels C (input = output).
        res_scale: scale of the residual branch (EDSR uses 0.1 for very wide nets; 1.0 elsewhere).
        kernel_size: odd convolution kernel size.
        pytorch_init: keep PyTorch's default initialisation instead of BasicSR's
            Kaiming-normal scaled by 0.1 (which makes a fresh deep stack start close to identity).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> block = ResidualBlockNoBN(channels=16)
        >>> block(torch.randn(2, 16, 9, 7)).shape
        torch.Size([2, 16, 9, 7])
    """

    def __init__(
        self, channels: int = 64, res_scale: float = 1.0, kernel_size: int = 3, pytorch_init: bool = False
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.res_scale = res_scale
        self.pytorch_init = pytorch_init
        self.conv1 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv1, self.conv2):
            conv.reset_parameters()
            if not self.pytorch_init:
                nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
                conv.weight.data.mul_(0.1)
                nn.init.zeros_(cast(torch.Tensor, conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        hidden = conv2d_activation(self.conv1, x, "relu")
        if self.res_scale == 1:  # a multiplication by 1 is exact but still a full pass over the features
            return conv2d_add(self.conv2, hidden, x)
        return cast(torch.Tensor, x + self.res_scale * self.conv2(hidden))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, res_scale={self.res_scale}"


class ResidualDenseBlock(nn.Module):
    """Residual dense block (RDB) of RDN (Zhang et al., "Residual Dense Network for Image
    Super-Resolution", CVPR 2018, Sec. 3.2).

    ``num_layers`` densely connected conv3x3+ReLU layers, each adding ``growth_rate`` channels to a
    running concatenation; local feature fusion (1x1 conv back to ``channels``) and a local residual.

    Args:
        channels: G0, block input/output channels (RDN: 64).
        growth_rate: G, channels added by each layer (RDN config A: 32, B: 64).
        num_layers: C, dense layers per block (RDN config A: 6, B: 8).

    Shape:
        - Input: ``(B, G0, H, W)``
        - Output: ``(B, G0, H, W)``

    Examples:
        >>> rdb = ResidualDenseBlock(channels=16, growth_rate=8, num_layers=3)
        >>> rdb(torch.randn(1, 16, 5, 6)).shape
        torch.Size([1, 16, 5, 6])
    """

    def __init__(self, channels: int = 64, growth_rate: int = 32, num_layers: int = 6) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.channels = channels
        self.growth_rate = growth_rate
        self.num_layers = num_layers
        self.layers = nn.ModuleList(
            nn.Conv2d(channels + k * growth_rate, growth_rate, 3, padding=1) for k in range(num_layers)
        )
        self.fusion = nn.Conv2d(channels + num_layers * growth_rate, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        features = [x]
        for conv in self.layers:
            features.append(F.relu(conv(torch.cat(features, dim=1))))
        return cast(torch.Tensor, x + self.fusion(torch.cat(features, dim=1)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, growth_rate={self.growth_rate}, num_layers={self.num_layers}"
