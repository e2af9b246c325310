"""Second-order flow-guided deformable alignment (BasicVSR++).

Chan et al., "BasicVSR++: Improving Video Super-Resolution with Enhanced Propagation and Alignment", CVPR 2022,
Sec. 3.2: the optical flow pre-aligns, and a deformable convolution learns only a bounded *residue* to it, so
that the offsets are as robust as flow-based alignment and as expressive as deformable alignment.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from vsrblocks.align.deform_conv import Backend, DeformConv2d, deform_conv2d
from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.shapes import check_shape

__all__ = ["SecondOrderDeformableAlignment"]


class SecondOrderDeformableAlignment(DeformConv2d):
    """Aligns the features of the two previous frames to the current one, guided by their flows.

    With ``f_1``, ``f_2`` the features of the previous frame and the one before, ``flow_1``, ``flow_2`` the
    flows from the current frame to them (``current(p) ≈ f_k(p + flow_k(p))``) and ``c`` the current
    frame's features:

    1. condition ``= [warp(f_1, flow_1), c, warp(f_2, flow_2), flow_1, flow_2]`` (``3 C + 4`` channels);
    2. ``conv_offset`` (four 3x3 convs, LeakyReLU(0.1) between) maps it to ``27 G`` channels, split in
       thirds ``(o1, o2, m)``;
    3. offsets ``= max_residue_magnitude * tanh(cat(o1, o2)) + flow``: the flow, flipped to torchvision's
       ``(y, x)`` order and repeated for every tap and deformable group, is ``flow_1`` for the first half of
       the groups (those that read ``f_1``) and ``flow_2`` for the second half; the mask is ``sigmoid(m)``;
    4. a modulated deformable 3x3 convolution (:func:`~vsrblocks.align.deform_conv2d`, pure PyTorch off
       CUDA) of ``cat(f_1, f_2)`` (``2 C -> C``).

    Parameter names (``weight``, ``bias``, ``conv_offset.{0,2,4,6}``) are BasicSR's and MMagic's. As there,
    the last offset convolution starts at zero: a fresh module samples exactly along the flows, mask 0.5.

    Args:
        channels: C, channels of each input feature and of the output.
        deform_groups: G, deformable groups over the ``2 C`` input channels (BasicVSR++: 16; even, dividing 2C).
        max_residue_magnitude: bound of the learned residue to the flow, in pixels (BasicVSR++: 10).
        backend: of the deformable convolution, as for :class:`~vsrblocks.align.DeformConv2d`.

    Shape:
        - feat_1, feat_2, current: ``(B, C, H, W)``
        - flow_1, flow_2: ``(B, 2, H, W)``, channel 0 = x, in pixels
        - Output: ``(B, C, H, W)``

    Examples:
        >>> align = SecondOrderDeformableAlignment(channels=8, deform_groups=4)
        >>> f, flow = torch.rand(2, 8, 9, 11), torch.zeros(2, 2, 9, 11)
        >>> align(f, f, f, flow, flow).shape
        torch.Size([2, 8, 9, 11])
    """

    def __init__(
        self,
        channels: int = 64,
        *,
        deform_groups: int = 16,
        max_residue_magnitude: float = 10.0,
        backend: Backend = "auto",
    ) -> None:
        if deform_groups % 2 or (2 * channels) % deform_groups:
            raise ValueError(
                f"deform_groups must be even and divide 2 * channels = {2 * channels}, got {deform_groups}"
            )
        self.max_residue_magnitude = max_residue_magnitude
        super().__init__(
            2 * channels,
            channels,
            kernel_size=3,
            padding=1,
            deform_groups=deform_groups,
            guide_channels=3 * channels + 4,
            backend=backend,
            max_offset_warn=None,
        )
        self.channels = channels
        taps = self.kernel_size[0] * self.kernel_size[1]
        # replaces DeformConv2d's single offset convolution (declared nn.Conv2d there), keeping its place
        self.add_module(
            "conv_offset",
            nn.Sequential(
                nn.Conv2d(3 * channels + 4, channels, 3, padding=1),
                nn.LeakyReLU(negative_slope=0.1),
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.LeakyReLU(negative_slope=0.1),
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.LeakyReLU(negative_slope=0.1),
                nn.Conv2d(channels, 3 * taps * deform_groups, 3, padding=1),
            ),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        conv_offset = getattr(self, "conv_offset", None)
        if not isinstance(conv_offset, nn.Sequential):
            return  # DeformConv2d's constructor calls this before our conv_offset exists
        stdv = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -stdv, stdv)
        if self.bias is not None:
            nn.init.zeros_(self.bias)
        for layer in conv_offset[:-1]:
            if isinstance(layer, nn.Conv2d):
                layer.reset_parameters()
        last = cast(nn.Conv2d, conv_offset[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(cast(torch.Tensor, last.bias))

    def offsets_and_mask(
        self,
        feat_1: torch.Tensor,
        feat_2: torch.Tensor,
        current: torch.Tensor,
        flow_1: torch.Tensor,
        flow_2: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets ``(B, 2 G 9, H, W)`` (flow + residue, torchvision's layout) and mask ``(B, G 9, H, W)``."""
        condition = torch.cat((flow_warp(feat_1, flow_1), current, flow_warp(feat_2, flow_2), flow_1, flow_2), dim=1)
        out = self.conv_offset(condition)
        split = 2 * out.shape[1] // 3
        residue = self.max_residue_magnitude * torch.tanh(out[:, :split])
        # Half the groups read feat_1, half feat_2: (y, x) of their flow for every (group, tap) pair.
        pairs = split // 4
        flows = torch.cat((flow_1.flip(1).repeat(1, pairs, 1, 1), flow_2.flip(1).repeat(1, pairs, 1, 1)), dim=1)
        return residue + flows, torch.sigmoid(out[:, split:])

    def forward(  # type: ignore[override]
        self,
        feat_1: torch.Tensor,
        feat_2: torch.Tensor,
        current: torch.Tensor,
        flow_1: torch.Tensor,
        flow_2: torch.Tensor,
    ) -> torch.Tensor:
        dims = check_shape(feat_1, "B C H W", name="feat_1", C=self.channels)
        for name, tensor in (("feat_2", feat_2), ("current", current)):
            check_shape(tensor, "B C H W", name=name, B=dims["B"], C=self.channels, H=dims["H"], W=dims["W"])
        for name, tensor in (("flow_1", flow_1), ("flow_2", flow_2)):
            check_shape(tensor, "B C H W", name=name, B=dims["B"], C=2, H=dims["H"], W=dims["W"])
        offset, mask = self.offsets_and_mask(feat_1, feat_2, current, flow_1, flow_2)
        return deform_conv2d(
            torch.cat((feat_1, feat_2), dim=1),
            offset,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            mask,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, deform_groups={self.deform_groups}, "
            f"max_residue_magnitude={self.max_residue_magnitude}, backend={self.backend!r}"
        )
