"""EDVR's temporal and spatial attention (TSA) fusion.

Wang, Chan, Yu, Dong, Loy, "EDVR: Video Restoration with Enhanced Deformable Convolutional Networks",
CVPRW 2019, Sec. 3.3 (BasicSR ``basicsr/archs/edvr_arch.py``, ``TSAFusion``).
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vsrblocks.attention.spatial_attention import SpatialAttention
from vsrblocks.shapes import check_shape

__all__ = ["TSAFusion"]


class TSAFusion(SpatialAttention):
    """Fuse ``T`` aligned frame features into one with EDVR's temporal, then spatial, attention.

    Temporal attention: every frame's embedding ``temporal_attn2(f_t)`` (3x3) is compared with the
    reference frame's ``temporal_attn1(f_ref)`` (3x3) by a per-pixel dot product over channels;
    ``sigmoid`` of it weights the frame, ``f'_t = f_t * sigmoid(<e_t, e_ref>)``. The weighted frames,
    stacked to ``T * C`` channels in frame order, are fused by ``feat = lrelu(feat_fusion(.))`` (1x1).

    Spatial attention: the pyramid of :class:`SpatialAttention` with ``edvr_exact=True`` (the same layers
    and parameter names), whose ``spatial_attn1`` reads the ``T * C`` weighted frames, gates the fused
    feature: ``out = feat * sigmoid(z) * 2 + add``. Pools are 3x3, stride 2, padding 1 (size
    ``ceil(H / 2)``) and upsampling is bilinear to the stored size of the finer level, so any ``H, W``
    works; on sizes divisible by 4 this is EDVR's fixed x2 upsampling exactly.

    Parameter names are BasicSR's (``temporal_attn1/2``, ``feat_fusion``, ``spatial_attn1..5``,
    ``spatial_attn_l1..l3``, ``spatial_attn_add1/2``): an EDVR checkpoint's ``fusion.*`` weights load as they are.

    Args:
        channels: C, channels of every frame's feature and of the output.
        num_frames: T, frames fused (EDVR: 5 or 7).
        center_index: the reference frame (default ``num_frames // 2``).
        negative_slope: of the LeakyReLUs (EDVR: 0.1).

    Shape:
        - Input: ``(B, T, C, H, W)``, aligned features, any ``H, W``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> tsa = TSAFusion(channels=8, num_frames=3)
        >>> tsa(torch.randn(2, 3, 8, 9, 7)).shape
        torch.Size([2, 8, 9, 7])
    """

    def __init__(
        self, channels: int = 64, num_frames: int = 5, center_index: int | None = None, negative_slope: float = 0.1
    ) -> None:
        super().__init__(channels, edvr_exact=True, negative_slope=negative_slope)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        center_index = num_frames // 2 if center_index is None else center_index
        if not 0 <= center_index < num_frames:
            raise ValueError(f"center_index must be in [0, {num_frames}), got {center_index}")
        self.num_frames = num_frames
        self.center_index = center_index
        c = channels
        self.temporal_attn1 = nn.Conv2d(c, c, 3, padding=1)
        self.temporal_attn2 = nn.Conv2d(c, c, 3, padding=1)
        self.feat_fusion = nn.Conv2d(num_frames * c, c, 1)
        self.spatial_attn1 = nn.Conv2d(num_frames * c, c, 1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        dims = check_shape(aligned, "B T C H W", name="aligned", T=self.num_frames, C=self.channels)
        reference = self.temporal_attn1(aligned[:, self.center_index])
        embedding = self.temporal_attn2(aligned.flatten(0, 1)).unflatten(0, (dims["B"], dims["T"]))
        correlation = (embedding * reference.unsqueeze(1)).sum(dim=2, keepdim=True)
        weighted = rearrange(aligned * torch.sigmoid(correlation), "b t c h w -> b (t c) h w")
        feat = self._lrelu(self.feat_fusion(weighted))
        attn, add = self._pyramid(weighted)
        return feat * torch.sigmoid(attn) * 2 + add

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_frames={self.num_frames}, center_index={self.center_index}, "
            f"negative_slope={self.negative_slope}"
        )
