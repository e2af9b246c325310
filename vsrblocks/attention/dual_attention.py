"""DASAA's dual attention module (DAM): DANet's head (PAM branch + CAM branch) adapted to super-resolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.attention.channel_self_attention import ChannelSelfAttention
from vsrblocks.attention.position_attention import PositionAttention
from vsrblocks.reset import reset_submodules
from vsrblocks.shapes import check_shape

__all__ = ["DualAttention"]


class DualAttention(nn.Module):
    """Dual attention module of DASAA (Chu et al., Cognitive Computation 2022), built on DANet's head.

    Two parallel branches on the features ``F``, each ``conv3x3 -> LReLU -> attention -> conv3x3 -> LReLU``:

    - position branch: ``P = LReLU(pam_out(PAM(LReLU(pam_in(F)))))`` with :class:`PositionAttention`;
    - channel branch: ``Q = LReLU(cam_out(CAM(LReLU(cam_in(F)))))`` with :class:`ChannelSelfAttention`;

    and the output ``F + P + Q``. Differences from DANet's segmentation head (the spec's assumptions for
    super-resolution): no BatchNorm, no dropout, LeakyReLU(0.1) instead of ReLU, no channel reduction by
    default (DANet uses ``in / 4``), and the outer residual ``F + ...`` so the input always passes through.
    ``use_pam`` / ``use_cam`` drop a branch (DASAA's ablation); with both off the module is the identity.

    Memory is linear in the pixels, in inference and training: PAM runs through the fused attention kernel
    (no ``HW x HW`` map unless ``fused=False``), CAM's map is ``C x C``.

    Args:
        channels: input (= output) channels C.
        inter_channels: channels inside the branches (default: ``channels``).
        reduction: PAM's query/key reduction (``inter_channels // reduction`` channels; DANet: 8).
        use_pam: keep the position branch.
        use_cam: keep the channel branch.
        negative_slope: LeakyReLU slope.
        fused: PAM through the fused attention kernel.

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> dam = DualAttention(channels=16)
        >>> dam(torch.randn(2, 16, 9, 7)).shape
        torch.Size([2, 16, 9, 7])
        >>> x = torch.randn(1, 16, 4, 4)
        >>> torch.equal(DualAttention(16, use_pam=False, use_cam=False)(x), x)
        True
    """

    def __init__(
        self,
        channels: int,
        inter_channels: int | None = None,
        reduction: int = 8,
        use_pam: bool = True,
        use_cam: bool = True,
        negative_slope: float = 0.1,
        fused: bool = True,
    ) -> None:
        super().__init__()
        inter = channels if inter_channels is None else inter_channels
        self.channels = channels
        self.inter_channels = inter
        self.use_pam = use_pam
        self.use_cam = use_cam
        self.negative_slope = negative_slope
        if use_pam:
            self.pam_in = nn.Conv2d(channels, inter, 3, padding=1)
            self.pam = PositionAttention(inter, reduction=reduction, fused=fused)
            self.pam_out = nn.Conv2d(inter, channels, 3, padding=1)
        if use_cam:
            self.cam_in = nn.Conv2d(channels, inter, 3, padding=1)
            self.cam = ChannelSelfAttention(inter)
            self.cam_out = nn.Conv2d(inter, channels, 3, padding=1)

    def reset_parameters(self) -> None:
        """Re-initialise every layer as on construction (``__init__`` does not call this: the layers initialise
        themselves, and seeded weights stay what they were)."""
        reset_submodules(self)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        out = x
        if self.use_pam:
            out = out + self._act(self.pam_out(self.pam(self._act(self.pam_in(x)))))
        if self.use_cam:
            out = out + self._act(self.cam_out(self.cam(self._act(self.cam_in(x)))))
        return out

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, inter_channels={self.inter_channels}, use_pam={self.use_pam}, "
            f"use_cam={self.use_cam}, negative_slope={self.negative_slope}"
        )
