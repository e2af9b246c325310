"""Sub-pixel convolution upsampling (ESPCN) with ICNR initialisation."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import cast

import torch
from torch import nn

from vsrblocks.fused_conv import Activation, conv2d_activation
from vsrblocks.memory_format import memory_format_of, to_memory_format
from vsrblocks.shapes import check_shape

__all__ = ["BASICSR_TAIL_NAMES", "PixelShuffleUpsampler", "icnr_"]

#: BasicSR's names of the x4 tail's convolutions (EDVR, BasicVSR, IconVSR) -> ours in
#: ``PixelShuffleUpsampler(C, 4, hidden_channels=64, hr_conv=True)``.
BASICSR_TAIL_NAMES: dict[str, str] = {
    "upconv1": "stages.0.conv",
    "upconv2": "stages.1.conv",
    "conv_hr": "conv_hr",
    "conv_last": "conv_last",
}


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
    """conv(C_in -> r^2 C_out) + PixelShuffle(r) (+ activation)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        factor: int,
        kernel_size: int,
        act_layer: Callable[[], nn.Module] | None,
    ) -> None:
        super().__init__()
        self.factor = factor
        self.conv = nn.Conv2d(in_channels, out_channels * factor * factor, kernel_size, padding=kernel_size // 2)
        self.shuffle = nn.PixelShuffle(factor)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plain = _plain_activation(self.act)
        if plain is None:
            return cast(torch.Tensor, self.act(self.shuffle(self.conv(x))))
        # An elementwise activation commutes with the shuffle, so it can run inside the convolution.
        return cast(torch.Tensor, self.shuffle(conv2d_activation(self.conv, x, *plain)))


def _plain_activation(act: nn.Module) -> tuple[Activation, float] | None:
    """``(name, negative_slope)`` of a plain ReLU / LeakyReLU that no hook watches, which may then run inside a
    convolution (:func:`~vsrblocks.fused_conv.conv2d_activation`, bit-identical in float32); else ``None``."""
    if act._forward_hooks or act._forward_pre_hooks:
        return None
    if type(act) is nn.LeakyReLU:
        return "leaky_relu", act.negative_slope
    if type(act) is nn.ReLU:
        return "relu", 0.0
    return None


def _factors(scale: int) -> list[int]:
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * (scale.bit_length() - 1)
    raise ValueError(f"scale must be 3 or a power of 2 (2, 4, 8, ...), got {scale}")


class PixelShuffleUpsampler(nn.Module):
    """Sub-pixel convolution upsampler (ESPCN, Shi et al., CVPR 2016) with ICNR initialisation.

    For ``scale = 2**n``: ``n`` stages of conv3x3 ``C -> 4C``, ``PixelShuffle(2)`` and an activation;
    for ``scale = 3``: one stage conv3x3 ``C -> 9C``, ``PixelShuffle(3)``, activation. The last stage may
    change the width to ``hidden_channels`` (its conv goes ``C -> r^2 hidden_channels``). Then, with
    ``hr_conv``, a conv3x3 ``hidden -> hidden`` and the activation, and a final conv3x3
    ``hidden -> out_channels`` (skipped when ``out_channels is None``, as in BasicSR's ``Upsample``).

    This is the upsampling tail of EDVR, BasicVSR, IconVSR, MANA and VSR-Transformer. BasicSR's x4 tail
    (EDVR, BasicVSR, IconVSR: ``upconv1`` C -> 4C, shuffle, ``upconv2`` C -> 4 * 64, shuffle, ``conv_hr``
    64 -> 64, ``conv_last`` 64 -> 3, LeakyReLU(0.1) after every conv but the last) is
    ``PixelShuffleUpsampler(C, 4, hidden_channels=64, hr_conv=True)`` at any width C; its weights map
    ``upconv1 -> stages.0.conv``, ``upconv2 -> stages.1.conv``, ``conv_hr -> conv_hr``,
    ``conv_last -> conv_last`` (:data:`BASICSR_TAIL_NAMES`).

    Every stage's conv is ICNR-initialised (:func:`icnr_`), so a fresh upsampler's stages are exactly
    nearest-neighbour upsampling of a convolution and show no checkerboard pattern.

    On CPU the stages run channels-last (the output comes back in the input's memory format): oneDNN's
    convolutions then skip the layout reorders they do around every contiguous (NCHW) call, which are
    largest at the high resolutions of the last stages (measured in ``docs/benchmarks.md``).

    Args:
        channels: feature channels C of the input (kept through every stage but the last).
        scale: upsampling factor, 3 or a power of 2.
        out_channels: channels of the final conv; ``None``: no final conv, the output has
            ``hidden_channels`` channels.
        kernel_size: odd kernel size of every conv.
        act_layer: activation factory applied after each pixel shuffle and after ``conv_hr``
            (``None``: none). Default ``LeakyReLU(0.1)``.
        icnr: ICNR initialisation of the stage convs (otherwise PyTorch's default).
        hidden_channels: channels after the last stage (and of ``conv_hr``); default C.
        hr_conv: a conv3x3 + activation at the output resolution before the final conv (BasicSR's
            ``conv_hr``).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, out_channels, scale * H, scale * W)`` (``hidden_channels`` channels when
          ``out_channels`` is ``None``)

    Examples:
        >>> up = PixelShuffleUpsampler(channels=16, scale=4)
        >>> up(torch.randn(2, 16, 5, 7)).shape
        torch.Size([2, 3, 20, 28])
        >>> PixelShuffleUpsampler(channels=8, scale=3, out_channels=None)(torch.randn(1, 8, 4, 4)).shape
        torch.Size([1, 8, 12, 12])
        >>> tail = PixelShuffleUpsampler(channels=32, scale=4, hidden_channels=64, hr_conv=True)
        >>> tail(torch.randn(1, 32, 5, 6)).shape, tail.stages[1].conv.out_channels
        (torch.Size([1, 3, 20, 24]), 256)
    """

    def __init__(
        self,
        channels: int,
        scale: int,
        out_channels: int | None = 3,
        kernel_size: int = 3,
        act_layer: Callable[[], nn.Module] | None = partial(nn.LeakyReLU, 0.1),
        icnr: bool = True,
        hidden_channels: int | None = None,
        hr_conv: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        factors = _factors(scale)
        self.channels = channels
        self.scale = scale
        self.out_channels = out_channels
        self.icnr = icnr
        self.hidden_channels = channels if hidden_channels is None else hidden_channels
        widths = [channels] * len(factors) + [self.hidden_channels]
        self.stages = nn.ModuleList(
            _UpsampleStage(widths[i], widths[i + 1], f, kernel_size, act_layer) for i, f in enumerate(factors)
        )
        padding = kernel_size // 2
        self.conv_hr = None
        self.act_hr: nn.Module = nn.Identity()
        if hr_conv:
            self.conv_hr = nn.Conv2d(self.hidden_channels, self.hidden_channels, kernel_size, padding=padding)
            self.act_hr = act_layer() if act_layer is not None else nn.Identity()
        self.conv_last = None
        if out_channels is not None:
            self.conv_last = nn.Conv2d(self.hidden_channels, out_channels, kernel_size, padding=padding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for stage in cast(list[_UpsampleStage], self.stages):
            stage.conv.reset_parameters()
            if self.icnr:
                icnr_(stage.conv.weight, stage.factor)
                nn.init.zeros_(cast(torch.Tensor, stage.conv.bias))
        for conv in (self.conv_hr, self.conv_last):
            if conv is not None:
                conv.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        memory_format = memory_format_of(x)
        if x.device.type == "cpu":
            x = to_memory_format(x, torch.channels_last)
        for stage in self.stages:
            x = stage(x)
        if self.conv_hr is not None:
            plain = _plain_activation(self.act_hr)
            x = self.act_hr(self.conv_hr(x)) if plain is None else conv2d_activation(self.conv_hr, x, *plain)
        out = self.conv_last(x) if self.conv_last is not None else x
        return to_memory_format(out, memory_format)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale={self.scale}, out_channels={self.out_channels}, "
            f"hidden_channels={self.hidden_channels}, hr_conv={self.conv_hr is not None}, icnr={self.icnr}"
        )
