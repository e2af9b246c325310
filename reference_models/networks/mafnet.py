"""MAFnet: multi-attention combined with optical flow for video super-resolution (多注意力结合光流的视频超分辨).

The paper (Chinese full text; authors and venue lost in extraction) published no code. The architecture is
the library spec's reconstruction (``dasaa_mafnet.md`` sections 2 and 3). What the text states: residual
dense blocks extract features (Fig. 1: conv, conv, 3 RDBs); a multi-attention branch applies channel
attention, a pyramid spatial attention and self-attention in series; an attention optical-flow branch
applies channel and spatial attention in parallel and feeds both to a flow network on *adjacent* frames
(first-stage alignment, small motions); both branches are upsampled (conv, upsample, conv) and fed to the
deformable ConvLSTM of Zooming Slow-Mo (second-stage alignment, large motions); a final convolution
reconstructs the frames. x4, 5 input frames, Vimeo-90K, L1 + Charbonnier loss, learning rate 1e-4.
Everything else is an assumption, exposed as a constructor argument.
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.align.deform_conv import Backend
from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.attention.channel_attention import ChannelAttention
from vsrblocks.attention.position_attention import PositionAttention
from vsrblocks.attention.spatial_attention import SpatialAttention
from vsrblocks.crop import crop_padding
from vsrblocks.recurrent.deform_conv_lstm import DeformableConvLSTM
from vsrblocks.residual import ResidualDenseBlock
from vsrblocks.shapes import check_shape

__all__ = ["MAFnet", "FeatureFlowEstimator", "MODEL", "PRESETS"]


class FeatureFlowEstimator(nn.Module):
    """MAFnet's flow network ``N_f`` (spec ASSUMPTION): a SPyNet-style coarse-to-fine residual flow
    estimator on feature maps instead of RGB.

    Both features are pooled into ``num_levels`` levels by 2x average pooling. Starting from zero flow at
    the coarsest level, each level upsamples the flow (bilinear, ``align_corners=True``, as SPyNet) to its
    size and doubles it, warps ``supp`` with it (:func:`~vsrblocks.align.flow_warp`, border padding), and
    adds the output of its own basic module (7x7 convolutions
    ``2C + 2 -> hidden[0] -> ... -> hidden[-1] -> 2``, ReLU between) on ``[ref, warped supp, flow]``.
    Inputs of any size are replicate-padded to a multiple of ``2 ** (num_levels - 1)`` and the flow is
    cropped back. The last convolution of every level is zero-initialised, so a fresh estimator returns
    zero flow (an identity warp) and learns from there.

    Args:
        channels: C, channels of the two features.
        num_levels: pyramid levels (spec: 3).
        hidden_channels: widths of the basic module's hidden layers (SPyNet: 32, 64, 32, 16).

    Shape:
        - ref, supp: ``(B, C, H, W)``
        - Output: ``(B, 2, H, W)``, x then y in pixels, such that
          ``flow_warp(supp, flow, padding_mode="border")`` is aligned to ``ref``

    Examples:
        >>> net = FeatureFlowEstimator(channels=4, hidden_channels=(8, 8))
        >>> net(torch.randn(1, 4, 9, 7), torch.randn(1, 4, 9, 7)).shape
        torch.Size([1, 2, 9, 7])
    """

    def __init__(
        self, channels: int = 16, num_levels: int = 3, hidden_channels: tuple[int, ...] = (32, 64, 32, 16)
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.channels = channels
        self.num_levels = num_levels
        widths = (2 * channels + 2, *hidden_channels, 2)
        self.basic_module = nn.ModuleList()
        for _ in range(num_levels):
            layers: list[nn.Module] = []
            for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
                layers.append(nn.Conv2d(cin, cout, 7, padding=3))
                if i < len(widths) - 2:
                    layers.append(nn.ReLU(inplace=True))
            self.basic_module.append(nn.Sequential(*layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in cast(list[nn.Sequential], self.basic_module):
            for layer in module:
                if isinstance(layer, nn.Conv2d):
                    layer.reset_parameters()
            last = cast(nn.Conv2d, module[-1])
            nn.init.zeros_(last.weight)
            nn.init.zeros_(cast(torch.Tensor, last.bias))

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        dims = check_shape(ref, "B C H W", name="ref", C=self.channels)
        check_shape(supp, "B C H W", name="supp", B=dims["B"], C=self.channels, H=dims["H"], W=dims["W"])
        height, width = dims["H"], dims["W"]
        multiple = 2 ** (self.num_levels - 1)
        pad_h, pad_w = -height % multiple, -width % multiple
        if torch.compiler.is_exporting() or pad_h or pad_w:  # exported: pad by a symbolic, maybe zero, amount
            ref = F.pad(ref, (0, pad_w, 0, pad_h), mode="replicate")
            supp = F.pad(supp, (0, pad_w, 0, pad_h), mode="replicate")
        refs, supps = [ref], [supp]
        for _ in range(self.num_levels - 1):
            refs.append(F.avg_pool2d(refs[-1], 2))
            supps.append(F.avg_pool2d(supps[-1], 2))
        flow = ref.new_zeros(dims["B"], 2, *refs[-1].shape[-2:])
        for level in reversed(range(self.num_levels)):
            if level < self.num_levels - 1:
                flow = 2.0 * F.interpolate(flow, size=refs[level].shape[-2:], mode="bilinear", align_corners=True)
            warped = flow_warp(supps[level], flow, padding_mode="border")
            flow = flow + self.basic_module[level](torch.cat((refs[level], warped, flow), dim=1))
        return crop_padding(flow, height, width)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_levels={self.num_levels}"


class _Upsampler(nn.Module):
    """``conv -> x4 -> conv`` of one branch (spec stages 11-12): ``"ps4"`` = ``conv3x3(C -> 16 hr)``, PS(4),
    ``conv3x3(hr -> hr)``, no activation (as the text draws it); ``"ps2x2"`` = EDVR style, twice
    ``LReLU(PS2(conv3x3))`` then ``conv3x3(hr -> hr)``."""

    def __init__(self, channels: int, hr_channels: int, mode: str, negative_slope: float) -> None:
        super().__init__()
        self.mode = mode
        self.negative_slope = negative_slope
        if mode == "ps4":
            self.conv_up = nn.Conv2d(channels, 16 * hr_channels, 3, padding=1)
        else:
            self.conv_up1 = nn.Conv2d(channels, 4 * channels, 3, padding=1)
            self.conv_up2 = nn.Conv2d(channels, 4 * hr_channels, 3, padding=1)
        self.conv_hr = nn.Conv2d(hr_channels, hr_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "ps4":
            x = F.pixel_shuffle(self.conv_up(x), 4)
        else:
            x = F.leaky_relu(F.pixel_shuffle(self.conv_up1(x), 2), self.negative_slope)
            x = F.leaky_relu(F.pixel_shuffle(self.conv_up2(x), 2), self.negative_slope)
        return self.conv_hr(x)


class MAFnet(nn.Module):
    """The MAFnet network as reconstructed in the library spec (section 2(b)), x4, all frames out.

    With ``T = num_frames`` LR frames folded into the batch and ``C = channels``:

    1. features (RDN): ``sfe1 = conv3x3(3 -> C)`` (``H_c0``), ``conv3x3(C -> C)`` (``H_c1``), ``num_rdbs``
       :class:`~vsrblocks.ResidualDenseBlock` (``rdb_layers`` layers, growth ``rdb_growth``), global feature
       fusion ``conv3x3(conv1x1([RDB outputs]))`` plus ``sfe1`` -> ``F``;
    2. multi-attention branch: :class:`~vsrblocks.attention.ChannelAttention` (avg + max),
       :class:`~vsrblocks.attention.SpatialAttention`, then SAGAN/DANet self-attention
       (:class:`~vsrblocks.attention.PositionAttention`, ``gamma = 0`` at start), in series -> ``a``;
    3. attention optical-flow branch: a second channel attention and spatial attention (own weights) on
       ``F`` in parallel; ``g = conv1x1([ca', sa'] -> C)`` and ``phi = conv1x1([ca', sa'] -> flow_channels)``;
       the flow ``flow_t = N_f(phi_t, phi_n(t))`` (:class:`FeatureFlowEstimator`) brings frame ``n(t)`` onto
       frame ``t``'s grid, with ``n(t) = t + 1`` and ``n(T - 1) = T - 2``; ``f_t = conv1x1([g_t,
       flow_warp(g_n(t), flow_t)] -> C)`` (border padding);
    4. both branches upsampled: ``y1 = up_a(a)``, ``y2 = up_f(f)``, each ``conv -> x4 -> conv`` to
       ``hr_channels`` (``H_c2``/``H_c4`` and ``H_c3``/``H_c5``);
    5. ``z_t = conv1x1([y1_t, y2_t])``, then the bidirectional
       :class:`~vsrblocks.recurrent.DeformableConvLSTM` of Zooming Slow-Mo at 4x (shared weights in both
       directions, 1x1 merge);
    6. ``conv3x3(hr_channels -> 3)`` (``H_c6``) per frame, plus the bicubic x4 of the frame.

    Assumptions (spec sections 2(b) and 3), each an argument with the recommended default:

    - ``num_frames=5`` input frames; output ``center_only=False``: all ``T`` frames (ZSM style; each step's
      streams are in that frame's grid). ``center_only=True`` returns the centre frame only;
    - ``channels=64``, ``num_rdbs=3``, ``rdb_layers=6``, ``rdb_growth=32``: RDN width and depth;
    - ``ca_reduction=16``, ``ca_kernel_size=3`` (the text's "convolution with kernel size 3" on the 1x1
      pooled map), ``shared_mlp=False`` (the figure's two paths; ``True`` is CBAM);
    - ``edvr_exact=False``: spatial attention as the text describes it (``True``: EDVR's TSA spatial part);
    - ``self_attention_reduction=8``: query/key width ``C / 8`` (SAGAN/DANet);
      ``spatiotemporal=False``: self-attention per frame over ``H W`` positions (``True``: over all
      ``T H W`` positions of the clip);
    - ``flow_ref="adjacent"``: flow between adjacent frames, as the text says (``"center"``: every frame
      reads the centre frame, TOFlow-like); ``flow_net="feature"``: :class:`FeatureFlowEstimator` on the
      ``flow_channels``-wide ``phi`` (``"spynet_rgb"``: :class:`~vsrblocks.align.SPyNet` on the LR RGB frames,
      optionally from ``spynet_checkpoint``); ``flow_levels=3``, ``flow_hidden_channels=(32, 64, 32, 16)``;
    - ``upsampler="ps4"``: ``conv -> PS(4) -> conv`` (``"ps2x2"``: EDVR-style two PS(2) with LReLU);
    - ``hr_channels=16``, ``dcn_groups=4``, ``pcd_levels=3``, ``bidirectional=True``: the DLSTM at 4x
      (ZSM uses 64 channels and 8 groups; 16 keeps the HR recurrence within the paper's 11 GB GPU);
    - ``merge="concat"``: ``y1`` and ``y2`` concatenated and fused by a 1x1 convolution (``"guide"``: ``y1`` is
      the DLSTM input and ``y2`` only guides its alignment offsets);
    - ``global_residual=True``: add the bicubic x4 frame;
    - the loss (L1 + Charbonnier, 1:1) is the training code's business, not the network's.

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], ``T = num_frames``, any ``H, W``
        - Output: ``(B, T, 3, 4H, 4W)``, or ``(B, 3, 4H, 4W)`` with ``center_only``

    Memory: linear in the pixels (the self-attention runs through the fused attention kernel, no ``(HW)^2``
    map, in inference and training); the DLSTM at 4x dominates. ``python -m reference_models run`` tiles frames
    that would exceed its memory budget (``--max-memory``).

    Examples:
        >>> model = MAFnet(**PRESETS["tiny"])
        >>> model(torch.rand(1, 5, 3, 9, 7)).shape
        torch.Size([1, 5, 3, 36, 28])
    """

    scale = 4
    #: Run in float32 under mixed precision (:mod:`reference_models.inference.precision`): the flows.
    float32_modules = ("flow_net",)

    def __init__(
        self,
        num_frames: int = 5,
        channels: int = 64,
        num_rdbs: int = 3,
        rdb_layers: int = 6,
        rdb_growth: int = 32,
        ca_reduction: int = 16,
        ca_kernel_size: int = 3,
        shared_mlp: bool = False,
        edvr_exact: bool = False,
        self_attention_reduction: int = 8,
        spatiotemporal: bool = False,
        flow_ref: Literal["adjacent", "center"] = "adjacent",
        flow_net: Literal["feature", "spynet_rgb"] = "feature",
        flow_channels: int = 16,
        flow_levels: int = 3,
        flow_hidden_channels: tuple[int, ...] = (32, 64, 32, 16),
        spynet_checkpoint: str | None = None,
        upsampler: Literal["ps4", "ps2x2"] = "ps4",
        hr_channels: int = 16,
        dcn_groups: int = 4,
        pcd_levels: int = 3,
        bidirectional: bool = True,
        merge: Literal["concat", "guide"] = "concat",
        center_only: bool = False,
        global_residual: bool = True,
        negative_slope: float = 0.1,
        dcn_backend: Backend = "auto",
    ) -> None:
        super().__init__()
        choices = {
            "flow_ref": (flow_ref, ("adjacent", "center")),
            "flow_net": (flow_net, ("feature", "spynet_rgb")),
            "upsampler": (upsampler, ("ps4", "ps2x2")),
            "merge": (merge, ("concat", "guide")),
        }
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if num_rdbs < 1:
            raise ValueError(f"num_rdbs must be >= 1, got {num_rdbs}")
        if spynet_checkpoint is not None and flow_net != "spynet_rgb":
            raise ValueError("spynet_checkpoint is only used with flow_net='spynet_rgb'")
        self.num_frames = num_frames
        self.center_index = num_frames // 2
        self.channels = channels
        self.hr_channels = hr_channels
        self.spatiotemporal = spatiotemporal
        self.flow_ref = flow_ref
        self.flow_net_kind = flow_net
        self.merge_mode = merge
        self.center_only = center_only
        self.output_mode = "center" if center_only else "all"
        self.global_residual = global_residual
        c = channels

        # 1. residual dense features (RDN)
        self.sfe1 = nn.Conv2d(3, c, 3, padding=1)
        self.sfe2 = nn.Conv2d(c, c, 3, padding=1)
        self.rdbs = nn.ModuleList(ResidualDenseBlock(c, rdb_growth, rdb_layers) for _ in range(num_rdbs))
        self.gff = nn.Sequential(nn.Conv2d(num_rdbs * c, c, 1), nn.Conv2d(c, c, 3, padding=1))

        # 2. multi-attention branch
        ca_kwargs: dict[str, Any] = dict(
            reduction=ca_reduction, pooling="avg+max", kernel_size=ca_kernel_size, shared=shared_mlp
        )
        self.mab_ca = ChannelAttention(c, **ca_kwargs)
        self.mab_sa = SpatialAttention(c, edvr_exact=edvr_exact, negative_slope=negative_slope)
        self.mab_self_attention = PositionAttention(c, reduction=self_attention_reduction)

        # 3. attention optical-flow branch
        self.afb_ca = ChannelAttention(c, **ca_kwargs)
        self.afb_sa = SpatialAttention(c, edvr_exact=edvr_exact, negative_slope=negative_slope)
        self.afb_g = nn.Conv2d(2 * c, c, 1)
        if flow_net == "feature":
            self.afb_phi = nn.Conv2d(2 * c, flow_channels, 1)
            self.flow_net: nn.Module = FeatureFlowEstimator(flow_channels, flow_levels, tuple(flow_hidden_channels))
        else:
            from vsrblocks.align.spynet import SPyNet  # optional dependency of this variant only

            self.flow_net = SPyNet.from_checkpoint(spynet_checkpoint) if spynet_checkpoint else SPyNet()
        self.afb_fusion = nn.Conv2d(2 * c, c, 1)

        # 4.-6. upsampling, deformable ConvLSTM at 4x, reconstruction
        self.up_a = _Upsampler(c, hr_channels, upsampler, negative_slope)
        self.up_f = _Upsampler(c, hr_channels, upsampler, negative_slope)
        if merge == "concat":
            self.merge = nn.Conv2d(2 * hr_channels, hr_channels, 1)
        self.dlstm = DeformableConvLSTM(
            hr_channels,
            hr_channels,
            kernel_size=3,
            deform_groups=dcn_groups,
            pcd_levels=pcd_levels,
            bidirectional=bidirectional,
            backend=dcn_backend,
        )
        self.conv_last = nn.Conv2d(hr_channels, 3, 3, padding=1)

    def neighbours(self, num_frames: int) -> list[int]:
        """``n(t)``: the frame whose features are warped onto frame ``t``."""
        if self.flow_ref == "center":
            return [num_frames // 2] * num_frames
        return [t + 1 if t + 1 < num_frames else max(t - 1, 0) for t in range(num_frames)]

    def _features(self, frames: torch.Tensor) -> torch.Tensor:
        shallow = self.sfe1(frames)
        x = self.sfe2(shallow)
        outputs = []
        for rdb in self.rdbs:
            x = rdb(x)
            outputs.append(x)
        return self.gff(torch.cat(outputs, dim=1)) + shallow

    def _self_attention(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        if not self.spatiotemporal:
            return self.mab_self_attention(x)
        # 1x1 projections are position-wise, so stacking the frames along H makes PAM attend over T*H*W.
        stacked = rearrange(x, "(b t) c h w -> b c (t h) w", t=frames)
        return rearrange(self.mab_self_attention(stacked), "b c (t h) w -> (b t) c h w", h=x.shape[-2])

    def _flow_branch(self, feats: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        t = clip.shape[1]
        nbr = self.neighbours(t)
        both = torch.cat((self.afb_ca(feats), self.afb_sa(feats)), dim=1)
        g = rearrange(self.afb_g(both), "(b t) c h w -> b t c h w", t=t)
        if self.flow_net_kind == "feature":
            phi = rearrange(self.afb_phi(both), "(b t) c h w -> b t c h w", t=t)
            ref, supp = phi, phi[:, nbr]
        else:
            ref, supp = clip, clip[:, nbr]
        flow = self.flow_net(rearrange(ref, "b t c h w -> (b t) c h w"), rearrange(supp, "b t c h w -> (b t) c h w"))
        g_nbr = rearrange(g[:, nbr], "b t c h w -> (b t) c h w")
        warped = flow_warp(g_nbr, flow, padding_mode="border")
        return self.afb_fusion(torch.cat((rearrange(g, "b t c h w -> (b t) c h w"), warped), dim=1))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        dims = check_shape(clip, "B T C H W", name="clip", T=self.num_frames, C=3)
        frames = rearrange(clip, "b t c h w -> (b t) c h w")
        feats = self._features(frames)
        a = self._self_attention(self.mab_sa(self.mab_ca(feats)), dims["T"])
        f = self._flow_branch(feats, clip)
        y1, y2 = self.up_a(a), self.up_f(f)
        to_clip = lambda x: rearrange(x, "(b t) c h w -> b t c h w", t=dims["T"])  # noqa: E731
        if self.merge_mode == "concat":
            hidden, _ = self.dlstm(to_clip(self.merge(torch.cat((y1, y2), dim=1))))
        else:
            hidden, _ = self.dlstm(to_clip(y1), guide=to_clip(y2))
        if self.center_only:
            c = self.center_index
            out = self.conv_last(hidden[:, c])
            if self.global_residual:
                out = out + F.interpolate(clip[:, c], scale_factor=self.scale, mode="bicubic", align_corners=False)
            return out
        out = self.conv_last(rearrange(hidden, "b t c h w -> (b t) c h w"))
        if self.global_residual:
            out = out + F.interpolate(frames, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return to_clip(out)

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, scale={self.scale}, output_mode={self.output_mode!r}, "
            f"flow_ref={self.flow_ref!r}, flow_net={self.flow_net_kind!r}, merge={self.merge_mode!r}, "
            f"spatiotemporal={self.spatiotemporal}, global_residual={self.global_residual}"
        )


MODEL = MAFnet

PRESETS: dict[str, dict] = {
    # Spec section 2(b): C = 64, 3 RDBs x 6 layers (growth 32), C_hr = 16, 4 deformable groups, T = 5.
    "paper": {
        "num_frames": 5,
        "channels": 64,
        "num_rdbs": 3,
        "rdb_layers": 6,
        "rdb_growth": 32,
        "hr_channels": 16,
        "dcn_groups": 4,
    },
    "tiny": {
        "num_frames": 5,
        "channels": 8,
        "num_rdbs": 1,
        "rdb_layers": 2,
        "rdb_growth": 4,
        "ca_reduction": 4,
        "self_attention_reduction": 4,
        "flow_channels": 4,
        "flow_hidden_channels": (8, 8),
        "hr_channels": 4,
        "dcn_groups": 1,  # 4 channels per deformable group, as in the paper preset
    },
}
