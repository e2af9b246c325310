"""Pyramid, cascading and deformable (PCD) alignment, in the EDVR and the Zooming Slow-Mo forms.

EDVR (Wang et al., CVPRW 2019, BasicSR ``edvr_arch.py``: ``PCDAlignment``) introduced PCD alignment, with a
cascading stage after the pyramid; Zooming Slow-Mo (Xiang et al., CVPR 2020, ``Sakuya_arch.py``:
``PCD_Align``, ``Easy_PCD``) uses a variant without the cascading stage, runs it in both directions and
fuses the two results. :class:`PCDAlignment` is either (``cascade``); both have two generalisations: any
number of pyramid levels (``num_levels``), and any ``H, W`` (upsampling goes to the stored size of the
finer level instead of a fixed factor 2, so odd sizes work; on sizes divisible by ``2 ** (num_levels - 1)``
it is identical).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.align.deform_conv import Backend, DeformConv2d
from vsrblocks.shapes import check_shape

__all__ = ["PCDAlignment", "EasyPCD"]


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _PCDLevel(nn.Module):
    """One pyramid level: offset features from ``[src, guide]`` (and the coarser level's), then a DCN pack."""

    def __init__(self, channels: int, deform_groups: int, coarsest: bool, backend: Backend) -> None:
        super().__init__()
        self.coarsest = coarsest
        self.offset_conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
        if coarsest:
            self.offset_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        else:
            self.offset_conv2 = nn.Conv2d(2 * channels, channels, 3, padding=1)
            self.offset_conv3 = nn.Conv2d(channels, channels, 3, padding=1)
            self.feat_conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.dcn = DeformConv2d(channels, channels, 3, padding=1, deform_groups=deform_groups, backend=backend)


class PCDAlignment(nn.Module):
    """Deformable alignment of ``src`` guided by ``guide``, coarse to fine over a feature pyramid (ZSM's
    ``PCD_Align`` branch; with ``cascade=True`` EDVR's ``PCDAlignment``).

    At the coarsest level: ``off = lrelu(offset_conv2(lrelu(offset_conv1([src, guide]))))`` and
    ``feat = lrelu(dcn(src, off))``. At each finer level:
    ``off = lrelu(offset_conv1([src, guide]))``, ``off = lrelu(offset_conv2([off, 2 * up(off_coarser)]))``,
    ``off = lrelu(offset_conv3(off))``, ``feat = feat_conv([dcn(src, off), up(feat_coarser)])``, followed by
    LeakyReLU except at the finest level. As in EDVR/ZSM, the *offset features* (not the offsets) of the
    coarser level are doubled when upsampled. Upsampling is bilinear (``align_corners=False``) to the finer
    level's size. Each :class:`DeformConv2d` starts with zero offsets and mask 0.5.

    EDVR's cascading stage (``cascade=True``) refines the pyramid's result ``feat`` once more at full size:
    ``off = lrelu(cas_offset_conv2(lrelu(cas_offset_conv1([feat, guide_0]))))`` and
    ``out = lrelu(cas_dcnpack(feat, off))``. Parameter names follow BasicSR for the cascade
    (``cas_offset_conv1/2``, ``cas_dcnpack``); BasicSR's per-level ``offset_conv1.l3`` ... are
    ``levels.2.offset_conv1`` ... here (``l{i}`` is ``levels.{i - 1}``, ``dcn_pack`` is ``dcn``).

    Args:
        channels: C, channels of every level of both pyramids.
        deform_groups: deformable groups of the DCN packs.
        num_levels: pyramid levels (ZSM / EDVR: 3).
        negative_slope: of the LeakyReLUs (0.1).
        backend: of :class:`DeformConv2d`.
        cascade: EDVR's cascading stage after the pyramid (ZSM, MAFnet: none).

    Shape:
        - src, guide: lists of ``num_levels`` tensors, finest first, ``(B, C, H_l, W_l)``
        - Output: ``(B, C, H_0, W_0)``, ``src`` aligned to ``guide``

    Examples:
        >>> pcd = PCDAlignment(8, deform_groups=2, num_levels=2)
        >>> src = [torch.randn(1, 8, 9, 9), torch.randn(1, 8, 5, 5)]
        >>> pcd(src, [t + 1 for t in src]).shape
        torch.Size([1, 8, 9, 9])
        >>> edvr_pcd = PCDAlignment(8, deform_groups=2, cascade=True)
        >>> src = [torch.randn(1, 8, 9, 7), torch.randn(1, 8, 5, 4), torch.randn(1, 8, 3, 2)]
        >>> edvr_pcd(src, src).shape
        torch.Size([1, 8, 9, 7])
    """

    def __init__(
        self,
        channels: int,
        deform_groups: int = 8,
        num_levels: int = 3,
        negative_slope: float = 0.1,
        backend: Backend = "auto",
        cascade: bool = False,
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.channels = channels
        self.deform_groups = deform_groups
        self.num_levels = num_levels
        self.negative_slope = negative_slope
        self.cascade = cascade
        # levels[0] is the finest (full size), levels[-1] the coarsest, as in the input lists.
        self.levels = nn.ModuleList(
            _PCDLevel(channels, deform_groups, coarsest=level == num_levels - 1, backend=backend)
            for level in range(num_levels)
        )
        if cascade:
            self.cas_offset_conv1 = nn.Conv2d(2 * channels, channels, 3, padding=1)
            self.cas_offset_conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.cas_dcnpack = DeformConv2d(
                channels, channels, 3, padding=1, deform_groups=deform_groups, backend=backend
            )

    def _lrelu(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def forward(self, src: list[torch.Tensor], guide: list[torch.Tensor]) -> torch.Tensor:
        if len(src) != self.num_levels or len(guide) != self.num_levels:
            raise ValueError(
                f"expected pyramids of {self.num_levels} levels, got {len(src)} (src) and {len(guide)} (guide)"
            )
        for level, (s, g) in enumerate(zip(src, guide)):
            dims = check_shape(s, "B C H W", name=f"src[{level}]", C=self.channels)
            check_shape(g, "B C H W", name=f"guide[{level}]", B=dims["B"], C=self.channels, H=dims["H"], W=dims["W"])
        offset: torch.Tensor | None = None
        feat: torch.Tensor | None = None
        for level in reversed(range(self.num_levels)):
            block = cast(_PCDLevel, self.levels[level])
            off = self._lrelu(block.offset_conv1(torch.cat((src[level], guide[level]), dim=1)))
            if block.coarsest:
                off = self._lrelu(block.offset_conv2(off))
                aligned = block.dcn(src[level], off)
            else:
                assert offset is not None and feat is not None  # set by the coarser level
                off = self._lrelu(block.offset_conv2(torch.cat((off, 2 * _up(offset, off)), dim=1)))
                off = self._lrelu(block.offset_conv3(off))
                aligned = block.feat_conv(torch.cat((block.dcn(src[level], off), _up(feat, off)), dim=1))
            feat = aligned if level == 0 else self._lrelu(aligned)
            offset = off
        assert feat is not None  # num_levels >= 1
        if self.cascade:
            off = self._lrelu(self.cas_offset_conv1(torch.cat((feat, guide[0]), dim=1)))
            off = self._lrelu(self.cas_offset_conv2(off))
            feat = self._lrelu(self.cas_dcnpack(feat, off))
        return feat

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, deform_groups={self.deform_groups}, num_levels={self.num_levels}, "
            f"cascade={self.cascade}"
        )


class EasyPCD(nn.Module):
    """Zooming Slow-Mo's ``Easy_PCD``: builds feature pyramids of two features, aligns each to the other
    with two :class:`PCDAlignment` branches (own weights), and fuses the results with a 1x1 convolution.

    Pyramid level ``l >= 1`` is ``lrelu(conv3x3(lrelu(conv3x3_stride2(level_{l-1}))))`` with weights
    shared by both inputs (size ``ceil(H / 2)`` per level). ``align_1`` deforms ``f1`` guided by ``f2``,
    ``align_2`` deforms ``f2`` guided by ``f1``; output ``fusion([a1, a2])``.

    In the deformable ConvLSTM, ``f1`` is the current input and ``f2`` the previous hidden (or cell) state.
    :meth:`identity_init_` sets the weights so that the module returns ``f2`` exactly, which makes that
    LSTM a plain ConvLSTM (a training start point and the basis of an exact test).

    Args:
        channels: C, channels of ``f1``, ``f2`` and the output.
        deform_groups: deformable groups of the DCN packs (ZSM: 8).
        num_levels: pyramid levels (ZSM: 3; 1 gives single-level deformable alignment).
        negative_slope: of the LeakyReLUs (0.1).
        backend: of :class:`DeformConv2d`.

    Shape:
        - f1, f2: ``(B, C, H, W)``, any ``H, W``
        - Output: ``(B, C, H, W)``

    Examples:
        >>> pcd = EasyPCD(8, deform_groups=2)
        >>> pcd(torch.randn(2, 8, 11, 6), torch.randn(2, 8, 11, 6)).shape
        torch.Size([2, 8, 11, 6])
    """

    def __init__(
        self,
        channels: int,
        deform_groups: int = 8,
        num_levels: int = 3,
        negative_slope: float = 0.1,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.channels = channels
        self.deform_groups = deform_groups
        self.num_levels = num_levels
        self.negative_slope = negative_slope
        self.downsample = nn.ModuleList(
            nn.ModuleDict(
                {
                    "conv1": nn.Conv2d(channels, channels, 3, stride=2, padding=1),
                    "conv2": nn.Conv2d(channels, channels, 3, padding=1),
                }
            )
            for _ in range(num_levels - 1)
        )
        self.align_1 = PCDAlignment(channels, deform_groups, num_levels, negative_slope, backend)
        self.align_2 = PCDAlignment(channels, deform_groups, num_levels, negative_slope, backend)
        self.fusion = nn.Conv2d(2 * channels, channels, 1)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``num_levels`` features, finest (``x`` itself) first."""
        levels = [x]
        for block in cast(list[nn.ModuleDict], self.downsample):
            y = F.leaky_relu(block["conv1"](levels[-1]), self.negative_slope)
            levels.append(F.leaky_relu(block["conv2"](y), self.negative_slope))
        return levels

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        dims = check_shape(f1, "B C H W", name="f1", C=self.channels)
        check_shape(f2, "B C H W", name="f2", B=dims["B"], C=self.channels, H=dims["H"], W=dims["W"])
        # torch.export freezes every size inside a nested compile region; there the alignment is inlined
        align = self._align if torch.compiler.is_exporting() else self._align_region
        return align(f1, f2)

    def _align(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        batch = f1.shape[0]
        both = self.pyramid(torch.cat((f1, f2), dim=0))  # shared weights: one pass over the stacked pair
        pyr1 = [level[:batch] for level in both]
        pyr2 = [level[batch:] for level in both]
        aligned = torch.cat((self.align_1(pyr1, pyr2), self.align_2(pyr2, pyr1)), dim=1)
        return cast(torch.Tensor, self.fusion(aligned))

    # The deformable ConvLSTM calls this twice per time step with the same shapes: torch.compile traces
    # and compiles it once and reuses it, instead of unrolling every call into one huge graph (MAFnet
    # tiny: thousands of operations; the recurrent part alone traces in about half the time). A no-op in eager mode.
    _align_region = torch.compiler.nested_compile_region(_align)

    @torch.no_grad()
    def identity_init_(self) -> EasyPCD:
        """Set the weights so that ``forward(f1, f2) == f2`` exactly, for any inputs.

        ``align_2``'s finest DCN pack becomes an identity 3x3 kernel with zero offsets and mask 1 (mask
        logits 40: ``sigmoid(40)`` rounds to 1 in float32 and float64), its ``feat_conv`` passes the DCN output
        through, and ``fusion`` selects ``align_2``. The other weights are left as they are (their
        gradients are 0 until ``fusion`` / ``feat_conv`` move). Returns ``self``.
        """
        c = self.channels
        finest = cast(_PCDLevel, self.align_2.levels[0])
        dcn = finest.dcn
        taps = dcn.kernel_size[0] * dcn.kernel_size[1]
        dcn.weight.zero_()
        dcn.weight[:, :, dcn.kernel_size[0] // 2, dcn.kernel_size[1] // 2] = torch.eye(c)
        if dcn.bias is not None:
            dcn.bias.zero_()
        dcn.conv_offset.weight.zero_()
        offset_bias = cast(torch.Tensor, dcn.conv_offset.bias)
        offset_bias.zero_()
        offset_bias[2 * dcn.deform_groups * taps :] = 40.0
        if self.num_levels > 1:
            finest.feat_conv.weight.zero_()
            finest.feat_conv.weight[:, :c, 1, 1] = torch.eye(c)
            cast(torch.Tensor, finest.feat_conv.bias).zero_()
        self.fusion.weight.zero_()
        self.fusion.weight[:, c:, 0, 0] = torch.eye(c)
        cast(torch.Tensor, self.fusion.bias).zero_()
        return self

    def extra_repr(self) -> str:
        return f"channels={self.channels}, deform_groups={self.deform_groups}, num_levels={self.num_levels}"
