"""MAFnet's pyramid spatial attention, the spatial half of EDVR's TSA fusion module.

MAFnet Fig. 2b (multi-attention branch); EDVR: Wang et al., "EDVR: Video Restoration with Enhanced
Deformable Convolutional Networks", CVPRW 2019 (BasicSR ``basicsr/archs/edvr_arch.py``, ``TSAFusion``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.reset import reset_submodules
from vsrblocks.shapes import check_shape

__all__ = ["SpatialAttention"]


class SpatialAttention(nn.Module):
    """Pyramid spatial attention: a two-level pooled pyramid predicts a per-pixel, per-channel gate and an
    additive term, ``out = x * sigmoid(z) + feature3``.

    All activations are LeakyReLU(``negative_slope``); pools are ``3x3``, stride 2, padding 1 (max and
    average, the average counting the zero padding, as EDVR's ``nn.AvgPool2d``); upsampling is bilinear
    with ``align_corners=False`` **to the stored size of the finer level**, so any ``H, W`` works, odd sizes
    included (EDVR upsamples by a fixed factor 2 and needs multiples of 4; on such sizes the two agree).

    1. ``s1 = lrelu(spatial_attn1(x))`` (1x1)
    2. ``feature1 = lrelu(spatial_attn2([maxpool(s1), avgpool(s1)]))`` (1x1, ``2C -> C``), at ``H/2``
    3. ``l = lrelu(spatial_attn_l1(feature1))`` (1x1); ``l = lrelu(spatial_attn_l2([maxpool(l), avgpool(l)]))``
       (3x3, ``2C -> C``) and ``l = lrelu(spatial_attn_l3(l))`` (3x3), at ``H/4``; ``feature2 = up(l)``
    4. ``u = up(lrelu(spatial_attn4(feature1 + feature2)))`` (1x1), at ``H``
    5. ``z = spatial_attn5(u)`` (3x3); ``feature3 = lrelu(spatial_attn_add1(z))`` (1x1)
    6. ``out = x * sigmoid(z) + feature3``

    ``edvr_exact=True`` restores the three places where EDVR's TSA differs from MAFnet's text: feature 1
    goes through ``lrelu(spatial_attn3(.))`` (3x3) before the addition in step 4, the additive branch is
    ``spatial_attn_add2(lrelu(spatial_attn_add1(z)))`` (a second 1x1, no final activation), and the gate is
    doubled, ``out = x * sigmoid(z) * 2 + add``. Parameter names follow BasicSR's ``TSAFusion``; EDVR's whole
    fusion module (temporal attention, fusion, and this pyramid gating the fused feature) is
    :class:`~vsrblocks.attention.TSAFusion`.

    Args:
        channels: input (= output) channels C.
        edvr_exact: EDVR's TSA variant instead of MAFnet's text.
        negative_slope: of the LeakyReLUs (EDVR / MAFnet: 0.1).

    Shape:
        - Input: ``(B, C, H, W)``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> sa = SpatialAttention(channels=16)
        >>> sa(torch.randn(2, 16, 9, 7)).shape
        torch.Size([2, 16, 9, 7])
    """

    def __init__(self, channels: int, edvr_exact: bool = False, negative_slope: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.edvr_exact = edvr_exact
        self.negative_slope = negative_slope
        c = channels
        self.spatial_attn1 = nn.Conv2d(c, c, 1)
        self.spatial_attn2 = nn.Conv2d(2 * c, c, 1)
        self.spatial_attn_l1 = nn.Conv2d(c, c, 1)
        self.spatial_attn_l2 = nn.Conv2d(2 * c, c, 3, padding=1)
        self.spatial_attn_l3 = nn.Conv2d(c, c, 3, padding=1)
        if edvr_exact:
            self.spatial_attn3 = nn.Conv2d(c, c, 3, padding=1)
        self.spatial_attn4 = nn.Conv2d(c, c, 1)
        self.spatial_attn5 = nn.Conv2d(c, c, 3, padding=1)
        self.spatial_attn_add1 = nn.Conv2d(c, c, 1)
        if edvr_exact:
            self.spatial_attn_add2 = nn.Conv2d(c, c, 1)
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)

    def reset_parameters(self) -> None:
        """Re-initialise every layer as on construction (``__init__`` does not call this: the layers initialise
        themselves, and seeded weights stay what they were)."""
        reset_submodules(self)

    def _lrelu(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.max_pool(x), self.avg_pool(x)), dim=1)

    @staticmethod
    def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", C=self.channels)
        attn, add = self._pyramid(x)
        if self.edvr_exact:
            return x * torch.sigmoid(attn) * 2 + add
        return x * torch.sigmoid(attn) + add

    def _pyramid(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps 1-5 from ``source`` (the input of ``spatial_attn1``): the gate logits ``z`` and the additive term."""
        s1 = self._lrelu(self.spatial_attn1(source))
        feature1 = self._lrelu(self.spatial_attn2(self._pool(s1)))
        level = self._lrelu(self.spatial_attn_l1(feature1))
        level = self._lrelu(self.spatial_attn_l2(self._pool(level)))
        level = self._lrelu(self.spatial_attn_l3(level))
        feature2 = self._up(level, feature1)
        if self.edvr_exact:
            feature1 = self._lrelu(self.spatial_attn3(feature1))
        attn = self._up(self._lrelu(self.spatial_attn4(feature1 + feature2)), source)
        attn = self.spatial_attn5(attn)
        add = self._lrelu(self.spatial_attn_add1(attn))
        if self.edvr_exact:
            add = self.spatial_attn_add2(add)
        return attn, add

    def extra_repr(self) -> str:
        return f"channels={self.channels}, edvr_exact={self.edvr_exact}, negative_slope={self.negative_slope}"
