"""Sub-pixel convolution upsampling (ESPCN) with ICNR initialisation."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import torch
from torch import nn

from vsrblocks.shapes import check_shape

__all__ = ["PixelShuffleUpsampler", "icnr_"]


def icnr_(
    weight: torch.Tensor, scale: int, init: Callable[[torch.Tensor], object] = nn.init.kaiming_normal_
) -> torch.Tensor:
    """Fill a sub-pixel conv ``weight`` in place with ICNR (Aitken et al., "Checkerboard artifact free
    sub-pixel convolution", 2017).

    A sub-kernel of shape ``(out // scale**2, in, k, k)`` is initialised with ``init`` and repeated
    ``scale**2`` times, in the channel order :class:`torch.nn.PixelShuffle` reads (output channel ``c``
    takes input channels ``c * scale**2 ... c * scale**2 + scale**2 - 1``). Conv followed by pixel
    shuffle is then exactly nearest-neighbour upsampling of the sub-kernel's convolution: no
    checkerboard at initialisation.

    Args:
        weight: ``(C_out, C_in, k, k)`` with ``C_out`` a multiple of ``scale**2``.
        scale: the pixel-shuffle factor that follows the convolution.
        init: in-place initialiser of the sub-kernel.

    Examples:
        >>> w = icnr_(torch.empty(8, 3, 3, 3), scale=2)
        >>> torch.equal(w[0], w[3]) and torch.equal(w[4], w[7])
        True
    """
    out_channels = weight.shape[0]
    if out_channels % (scale * scale):
        raise ValueError(f"icnr_: {out_channels} output channels are not a multiple of scale**2 = {scale * scale}")
    sub = torch.empty(out_channels // (scale * scale), *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale * scale, dim=0))
    return weight


class _UpsampleStage(nn.Module):
    """conv(C -> r^2 C) + PixelShuffle(r) (+ activation)."""

    def __init__(self, channels: int, factor: int, kernel_size: int, act_layer: Callable[[], nn.Module] | None) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(channels, channels * factor * factor, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.act(self.shuffle(self.conv(x))))


def _factors(scale: int) -> list[int]:
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale must be 3 or a power of 2 (2, 4, 8, ...), got {scale}")


class PixelShuffleUpsampler(nn.Module):
    """Sub-pixel convolution upsampler (ESPCN, Shi et al., CVPR 2016) with ICNR initialisation.

    For ``scale = 2**n``: ``n`` stages of conv3x3 ``C -> 4C``, ``PixelShuffle(2)`` and an activation;
    for ``scale = 3``: one stage conv3x3 ``C -> 9C``, ``PixelShuffle(3)``, activation. Then a final
    conv3x3 ``C -> out_channels`` (skipped when ``out_channels is None``, as in BasicSR's
    ``Upsample``). This is the upsampling tail of EDVR, BasicVSR, MANA and VSR-Transformer
    (``upconv1``/``upconv2`` + LeakyReLU(0.1)).

    Every stage's conv is ICNR-initialised (:func:`icnr_`), so a fresh upsampler's stages are exactly
    nearest-neighbour upsampling of a convolution and show no checkerboard pattern.

    Args:
        channels: feature channels C of the input (kept through every stage).
        scale: upsampling factor, 3 or a power of 2.
        out_channels: channels of the final conv; ``None``: no final conv, the output has C channels.
        kernel_size: odd kernel size of every conv.
        act_layer: activation factory applied after each pixel shuffle (``None``: none).
            Default ``LeakyReLU(0.1)``.
        icnr: ICNR initialisation of the stage convs (otherwise PyTorch's default).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, out_channels, scale * H, scale * W)`` (``out_channels = C`` when ``None``)

    Examples:
        >>> up = PixelShuffleUpsampler(channels=16, scale=4)
        >>> up(torch.randn(2, 16, 5, 7)).shape
        torch.Size([2, 3, 20, 28])
        >>> PixelShuffleUpsampler(channels=8, scale=3, out_channels=None)(torch.randn(1, 8, 4, 4)).shape
        torch.Size([1, 8, 12, 12])
    """

    def __init__(
        self,
        channels: int,
        scale: int,
        out_channels: int | None = 3,
        kernel_size: int = 3,
        act_layer: Callable[[], nn.Module] | None = partial(nn.LeakyReLU, 0.1),
        icnr: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.channels = channels
        self.scale = scale
        self.out_channels = out_channels
        self.icnr = icnr
        self.stages = nn.ModuleList(_UpsampleStage(channels, f, kernel_size, act_layer) for f in _factors(scale))
        self.conv_last = None
        if out_channels is not None:
            self.conv_last = nn.Conv2d(channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for stage in cast(list[_UpsampleStage], self.stages):
            stage.conv.reset_parameters()
            if self.icnr:
                icnr_(stage.conv.weight, stage.factor)
                nn.init.zeros_(cast(torch.Tensor, stage.conv.bias))
        if self.conv_last is not None:
            self.conv_last.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        for stage in self.stages:
            x = stage(x)
        return self.conv_last(x) if self.conv_last is not None else x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, scale={self.scale}, out_channels={self.out_channels}, icnr={self.icnr}"
