"""VSR-Transformer's bidirectional optical-flow-based feed-forward layer (BOFF).

Cao, Li, Zhang, Van Gool, "Video Super-Resolution Transformer" (2021), Sec. 3.3; the official
``FeedForward`` of caojiezhang/VSR-Transformer. Submodule names equal the official ones, so the keys
under ``transformer.layers.{k}.1.fn.fn.`` of an official checkpoint load unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from vsrblocks.align.flow_warp import PaddingMode, flow_warp
from vsrblocks.fused_conv import conv2d_activation
from vsrblocks.memory_format import memory_format_of, to_memory_format
from vsrblocks.residual import ResidualBlockNoBN, make_layer
from vsrblocks.shapes import check_shape

__all__ = ["BOFF", "ResidualBlocksWithInputConv"]


class ResidualBlocksWithInputConv(nn.Module):
    """BasicVSR's propagation branch: conv3x3 (in -> C), LeakyReLU(0.1), ``num_blocks`` residual blocks.

    The layout ``main.0`` (conv), ``main.1`` (activation), ``main.2.{i}.conv1/conv2`` matches
    MMagic/BasicVSR and VSR-Transformer checkpoints.

    Args:
        in_channels: input channels.
        out_channels: feature channels C of the residual blocks and the output.
        num_blocks: residual blocks ``f + conv2(relu(conv1(f)))``.

    Shape:
        - Input: ``(B, in_channels, H, W)``
        - Output: ``(B, out_channels, H, W)``

    Examples:
        >>> ResidualBlocksWithInputConv(19, 16, num_blocks=2)(torch.rand(2, 19, 7, 9)).shape
        torch.Size([2, 16, 7, 9])
    """

    def __init__(self, in_channels: int, out_channels: int = 64, num_blocks: int = 30) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_blocks = num_blocks
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.LeakyReLU(negative_slope=0.1),
            make_layer(lambda: ResidualBlockNoBN(channels=out_channels), num_blocks),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.in_channels)
        conv, activation, blocks = cast(tuple[nn.Conv2d, nn.LeakyReLU, nn.Sequential], tuple(self.main))
        return cast(torch.Tensor, blocks(conv2d_activation(conv, x, "leaky_relu", activation.negative_slope)))

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, num_blocks={self.num_blocks}"


class BOFF(nn.Module):
    """Bidirectional optical-flow-based feed-forward layer of VSR-Transformer.

    For every frame t, the features of the next frame are warped onto frame t with the backward flow
    and the features of the previous frame with the forward flow (the first and last frames use
    themselves as the missing neighbour, warped by their self-flow). Each warped feature is concatenated
    after the LR frame ``x_t`` and refined by its own :class:`ResidualBlocksWithInputConv`; the two
    branches are fused by ``lrelu(conv1x1([backward, forward]))``. Out-of-frame samples read zeros.
    All frames of all clips run as one batch, kept in the memory format of ``x``'s frames (channels-last
    features stay channels-last).

    Args:
        channels: feature channels C.
        num_blocks: residual blocks per branch (the official code hard-codes 30).
        in_image_channels: channels of the LR frames concatenated to the features.
        padding_mode: ``flow_warp`` padding for the feature warp (official: ``"zeros"``).

    Shape:
        - x: ``(B, T, C, H, W)`` features
        - lrs: ``(B, T, in_image_channels, H, W)`` LR frames
        - flows: ``(flows_forward, flows_backward)``, each ``(B, T, 2, H, W)`` (x then y, pixels), as
          returned by :func:`vsrblocks.align.bidirectional_flows`: ``flows_forward[:, t]`` points from frame
          t to frame t - 1, ``flows_backward[:, t]`` from frame t to frame t + 1.
        - Output: ``(B, T, C, H, W)``

    Examples:
        >>> boff = BOFF(channels=8, num_blocks=2)
        >>> x, lrs = torch.rand(1, 3, 8, 12, 10), torch.rand(1, 3, 3, 12, 10)
        >>> flows = (torch.zeros(1, 3, 2, 12, 10), torch.zeros(1, 3, 2, 12, 10))
        >>> boff(x, lrs, flows).shape
        torch.Size([1, 3, 8, 12, 10])
    """

    def __init__(
        self, channels: int, num_blocks: int = 30, in_image_channels: int = 3, padding_mode: PaddingMode = "zeros"
    ) -> None:
        super().__init__()
        self.channels = channels
        self.num_blocks = num_blocks
        self.in_image_channels = in_image_channels
        self.padding_mode = padding_mode
        self.backward_resblocks = ResidualBlocksWithInputConv(channels + in_image_channels, channels, num_blocks)
        self.forward_resblocks = ResidualBlocksWithInputConv(channels + in_image_channels, channels, num_blocks)
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    def forward(
        self, x: torch.Tensor, lrs: torch.Tensor, flows: tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]
    ) -> torch.Tensor:
        dims = check_shape(x, "B T C H W", name="x", C=self.channels)
        batch, frames, height, width = dims["B"], dims["T"], dims["H"], dims["W"]
        check_shape(lrs, "B T C H W", name="lrs", B=batch, T=frames, C=self.in_image_channels, H=height, W=width)
        if not isinstance(flows, (tuple, list)) or len(flows) != 2:
            raise ValueError("flows: expected a pair (flows_forward, flows_backward)")
        flows_forward, flows_backward = flows
        for name, flow in (("flows_forward", flows_forward), ("flows_backward", flows_backward)):
            check_shape(flow, "B T two H W", name=name, B=batch, T=frames, two=2, H=height, W=width)

        following = [min(t + 1, frames - 1) for t in range(frames)]
        preceding = [max(t - 1, 0) for t in range(frames)]
        lr_frames = lrs.flatten(0, 1)
        backward = self._branch(self.backward_resblocks, x[:, following], flows_backward, lr_frames)
        forward = self._branch(self.forward_resblocks, x[:, preceding], flows_forward, lr_frames)
        out = conv2d_activation(self.fusion, torch.cat((backward, forward), dim=1), "leaky_relu", 0.1)
        return cast(torch.Tensor, out.unflatten(0, (batch, frames)))

    def _branch(
        self, resblocks: nn.Module, neighbours: torch.Tensor, flows: torch.Tensor, lr_frames: torch.Tensor
    ) -> torch.Tensor:
        frames = neighbours.flatten(0, 1)
        warped = flow_warp(frames, flows.flatten(0, 1), padding_mode=self.padding_mode)
        return cast(
            torch.Tensor, resblocks(to_memory_format(torch.cat((lr_frames, warped), dim=1), memory_format_of(frames)))
        )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_blocks={self.num_blocks}, "
            f"in_image_channels={self.in_image_channels}, padding_mode={self.padding_mode!r}"
        )
