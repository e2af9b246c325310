"""BasicVSR, IconVSR, BasicVSR++ and EDVR written the straightforward way BasicSR writes them: the speed baseline of
``benchmarks/standard_networks.py``.

Written here from the papers and BasicSR's documented behaviour (not copied): plain ``nn.Conv2d`` stacks with
separate activations, NCHW, Python loops over frames and pyramid levels, ``F.grid_sample`` warping with a pixel
grid built per call, SPyNet run on every frame pair at a size padded to a multiple of 32, and DCN as
``torchvision.ops.deform_conv2d`` with BasicSR's offset layout (``conv_offset`` output split into thirds
``o1, o2, m``; offset ``cat(o1, o2)``, mask ``sigmoid(m)``). Module and parameter names are BasicSR's, so
``form.state_dict()`` is a BasicSR state_dict that ``reference_models.from_official`` loads. Each form reproduces
the recorded BasicSR runs in ``../shared/fixtures/basicsr/`` (``python benchmarks/basicsr_forms.py`` checks it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

__all__ = ["BasicVSRForm", "BasicVSRPlusPlusForm", "EDVRForm", "IconVSRForm"]


def flow_warp(x: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """``x`` (N, C, H, W) sampled at pixel + ``flow`` (N, H, W, 2; x first), bilinear, corners aligned."""
    _, _, h, w = x.shape
    grid_y, grid_x = torch.meshgrid(
        torch.arange(h, dtype=x.dtype, device=x.device), torch.arange(w, dtype=x.dtype, device=x.device), indexing="ij"
    )
    grid = torch.stack((grid_x, grid_y), 2) + flow
    grid_x = 2.0 * grid[..., 0] / max(w - 1, 1) - 1.0
    grid_y = 2.0 * grid[..., 1] / max(h - 1, 1) - 1.0
    return F.grid_sample(
        x, torch.stack((grid_x, grid_y), dim=3), mode="bilinear", padding_mode=padding_mode, align_corners=True
    )


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


class ResidualBlockNoBN(nn.Module):
    def __init__(self, num_feat: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def residual_blocks(num_blocks: int, num_feat: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlockNoBN(num_feat) for _ in range(num_blocks)))


class ConvResidualBlocks(nn.Module):
    def __init__(self, in_channels: int, num_feat: int, num_blocks: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(in_channels, num_feat, 3, 1, 1), nn.LeakyReLU(0.1), residual_blocks(num_blocks, num_feat)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class SpyNetLevel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        widths = (8, 32, 64, 32, 16, 2)
        for i in range(5):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], 7, 1, 3))
            if i < 4:
                layers.append(nn.ReLU())
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.basic_module = nn.ModuleList(SpyNetLevel() for _ in range(6))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        refs = [(ref - self.mean) / self.std]
        supps = [(supp - self.mean) / self.std]
        for _ in range(5):
            refs.insert(0, F.avg_pool2d(refs[0], 2, 2, count_include_pad=False))
            supps.insert(0, F.avg_pool2d(supps[0], 2, 2, count_include_pad=False))
        n, _, h, w = refs[0].shape
        flow = refs[0].new_zeros(n, 2, math.floor(h / 2.0), math.floor(w / 2.0))
        for level, module in enumerate(self.basic_module):
            up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            if up.size(2) != refs[level].size(2):
                up = F.pad(up, [0, 0, 0, 1], mode="replicate")
            if up.size(3) != refs[level].size(3):
                up = F.pad(up, [0, 1, 0, 0], mode="replicate")
            warped = flow_warp(supps[level], up.permute(0, 2, 3, 1), padding_mode="border")
            flow = module(torch.cat([refs[level], warped, up], 1)) + up
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        h, w = ref.shape[2:]
        h32, w32 = math.ceil(h / 32.0) * 32, math.ceil(w / 32.0) * 32
        ref = F.interpolate(ref, size=(h32, w32), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h32, w32), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.pyramid_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        flow[:, 0] *= w / w32
        flow[:, 1] *= h / h32
        return flow


def make_tail(module: nn.Module, num_feat: int) -> None:
    """The x4 tail's layers as attributes of the network itself (BasicSR's names), applied by :func:`tail`."""
    module.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
    module.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
    module.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
    module.conv_last = nn.Conv2d(64, 3, 3, 1, 1)


def tail(module: nn.Module, feat: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    out = lrelu(F.pixel_shuffle(module.upconv1(feat), 2))
    out = lrelu(F.pixel_shuffle(module.upconv2(out), 2))
    out = module.conv_last(lrelu(module.conv_hr(out)))
    return out + F.interpolate(lr, scale_factor=4, mode="bilinear", align_corners=False)


def clip_flows(spynet: SpyNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(forward, backward) flows of a clip, each (B, T-1, 2, H, W); backward[i] = SpyNet(frame i, frame i+1)."""
    b, n, c, h, w = x.shape
    x1 = x[:, :-1].reshape(-1, c, h, w)
    x2 = x[:, 1:].reshape(-1, c, h, w)
    backward = spynet(x1, x2).view(b, n - 1, 2, h, w)
    forward = spynet(x2, x1).view(b, n - 1, 2, h, w)
    return forward, backward


class BasicVSRForm(nn.Module):
    def __init__(self, num_feat: int = 64, num_block: int = 15) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.spynet = SpyNet()
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
        make_tail(self, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _, h, w = x.shape
        flows_forward, flows_backward = clip_flows(self.spynet, x)
        outs: list[torch.Tensor] = []
        feat = x.new_zeros(b, self.num_feat, h, w)
        for i in range(n - 1, -1, -1):
            if i < n - 1:
                feat = flow_warp(feat, flows_backward[:, i].permute(0, 2, 3, 1))
            feat = self.backward_trunk(torch.cat([x[:, i], feat], 1))
            outs.insert(0, feat)
        feat = torch.zeros_like(feat)
        for i in range(n):
            if i > 0:
                feat = flow_warp(feat, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            feat = self.forward_trunk(torch.cat([x[:, i], feat], 1))
            fused = lrelu(self.fusion(torch.cat([outs[i], feat], 1)))
            outs[i] = tail(self, fused, x[:, i])
        return torch.stack(outs, 1)


class DCNv2Pack(nn.Module):
    """Modulated deformable 3x3 conv whose offsets and mask come from ``conv_offset`` over a separate feature."""

    def __init__(self, in_channels: int, out_channels: int, deformable_groups: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.conv_offset = nn.Conv2d(in_channels, deformable_groups * 27, 3, 1, 1)

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        o1, o2, mask = torch.chunk(self.conv_offset(feat), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        return torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask.sigmoid())


class PCDAlignment(nn.Module):
    def __init__(self, num_feat: int = 64, deformable_groups: int = 8) -> None:
        super().__init__()
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for i in range(3, 0, -1):
            level = f"l{i}"
            self.offset_conv1[level] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
            self.offset_conv2[level] = nn.Conv2d(num_feat * (1 if i == 3 else 2), num_feat, 3, 1, 1)
            self.dcn_pack[level] = DCNv2Pack(num_feat, num_feat, deformable_groups)
            if i < 3:
                self.offset_conv3[level] = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
                self.feat_conv[level] = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv1 = nn.Conv2d(num_feat * 2, num_feat, 3, 1, 1)
        self.cas_offset_conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.cas_dcnpack = DCNv2Pack(num_feat, num_feat, deformable_groups)

    def forward(self, nbr: list[torch.Tensor], ref: list[torch.Tensor]) -> torch.Tensor:
        up_offset = up_feat = torch.empty(0)
        for i in range(3, 0, -1):
            level = f"l{i}"
            offset = lrelu(self.offset_conv1[level](torch.cat([nbr[i - 1], ref[i - 1]], 1)))
            if i == 3:
                offset = lrelu(self.offset_conv2[level](offset))
            else:
                offset = lrelu(self.offset_conv2[level](torch.cat([offset, up_offset], 1)))
                offset = lrelu(self.offset_conv3[level](offset))
            feat = self.dcn_pack[level](nbr[i - 1], offset)
            if i < 3:
                feat = self.feat_conv[level](torch.cat([feat, up_feat], 1))
            if i > 1:
                feat = lrelu(feat)
                up_offset = F.interpolate(offset, scale_factor=2, mode="bilinear", align_corners=False) * 2
                up_feat = F.interpolate(feat, scale_factor=2, mode="bilinear", align_corners=False)
        offset = lrelu(self.cas_offset_conv2(lrelu(self.cas_offset_conv1(torch.cat([feat, ref[0]], 1)))))
        return lrelu(self.cas_dcnpack(feat, offset))


class TSAFusion(nn.Module):
    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2) -> None:
        super().__init__()
        self.center_frame_idx = center_frame_idx
        nf = num_feat
        self.temporal_attn1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.temporal_attn2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.feat_fusion = nn.Conv2d(num_frame * nf, nf, 1, 1)
        self.spatial_attn1 = nn.Conv2d(num_frame * nf, nf, 1)
        self.spatial_attn2 = nn.Conv2d(nf * 2, nf, 1)
        self.spatial_attn3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn4 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn5 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn_l1 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn_l2 = nn.Conv2d(nf * 2, nf, 3, 1, 1)
        self.spatial_attn_l3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.spatial_attn_add1 = nn.Conv2d(nf, nf, 1)
        self.spatial_attn_add2 = nn.Conv2d(nf, nf, 1)

    @staticmethod
    def pools(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)], 1)

    def forward(self, aligned: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = aligned.shape
        ref = self.temporal_attn1(aligned[:, self.center_frame_idx].clone())
        embedding = self.temporal_attn2(aligned.view(-1, c, h, w)).view(b, t, -1, h, w)
        corr = torch.cat([torch.sum(embedding[:, i] * ref, 1).unsqueeze(1) for i in range(t)], 1)
        prob = torch.sigmoid(corr).unsqueeze(2).expand(b, t, c, h, w).contiguous().view(b, -1, h, w)
        aligned = aligned.view(b, -1, h, w) * prob
        feat = lrelu(self.feat_fusion(aligned))
        attn = lrelu(self.spatial_attn2(self.pools(lrelu(self.spatial_attn1(aligned)))))
        level = lrelu(self.spatial_attn_l1(attn))
        level = lrelu(self.spatial_attn_l3(lrelu(self.spatial_attn_l2(self.pools(level)))))
        level = F.interpolate(level, scale_factor=2, mode="bilinear", align_corners=False)
        attn = lrelu(self.spatial_attn3(attn)) + level
        attn = lrelu(self.spatial_attn4(attn))
        attn = self.spatial_attn5(F.interpolate(attn, scale_factor=2, mode="bilinear", align_corners=False))
        attn_add = self.spatial_attn_add2(lrelu(self.spatial_attn_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class EDVRFeatures(nn.Module):
    """EDVR up to the fusion: feature pyramid, PCD alignment of every frame to the centre, TSA or 1x1 fusion."""

    def __init__(
        self, num_feat: int, num_frame: int, deformable_groups: int, num_extract_block: int, with_tsa: bool
    ) -> None:
        super().__init__()
        self.center_frame_idx = num_frame // 2
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.feature_extraction = residual_blocks(num_extract_block, num_feat)
        self.conv_l2_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l2_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_l3_1 = nn.Conv2d(num_feat, num_feat, 3, 2, 1)
        self.conv_l3_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.pcd_align = PCDAlignment(num_feat, deformable_groups)
        self.with_tsa = with_tsa
        if with_tsa:
            self.fusion: nn.Module = TSAFusion(num_feat, num_frame, self.center_frame_idx)
        else:
            self.fusion = nn.Conv2d(num_frame * num_feat, num_feat, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        l1 = self.feature_extraction(lrelu(self.conv_first(x.view(-1, c, h, w))))
        l2 = lrelu(self.conv_l2_2(lrelu(self.conv_l2_1(l1))))
        l3 = lrelu(self.conv_l3_2(lrelu(self.conv_l3_1(l2))))
        l1, l2, l3 = l1.view(b, t, -1, h, w), l2.view(b, t, -1, h // 2, w // 2), l3.view(b, t, -1, h // 4, w // 4)
        c_ = self.center_frame_idx
        ref = [l1[:, c_].clone(), l2[:, c_].clone(), l3[:, c_].clone()]
        aligned = [self.pcd_align([l1[:, i].clone(), l2[:, i].clone(), l3[:, i].clone()], ref) for i in range(t)]
        stacked = torch.stack(aligned, 1)
        if not self.with_tsa:
            stacked = stacked.view(b, -1, h, w)
        return self.fusion(stacked)


class EDVRForm(EDVRFeatures):
    def __init__(
        self,
        num_feat: int = 64,
        num_frame: int = 5,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
        num_reconstruct_block: int = 10,
        with_tsa: bool = True,
    ) -> None:
        super().__init__(num_feat, num_frame, deformable_groups, num_extract_block, with_tsa)
        self.reconstruction = residual_blocks(num_reconstruct_block, num_feat)
        make_tail(self, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_center = x[:, self.center_frame_idx].contiguous()
        return tail(self, self.reconstruction(super().forward(x)), x_center)


class IconVSRForm(nn.Module):
    def __init__(
        self, num_feat: int = 64, num_block: int = 15, keyframe_stride: int = 5, temporal_padding: int = 2
    ) -> None:
        super().__init__()
        self.num_feat = num_feat
        self.keyframe_stride = keyframe_stride
        self.temporal_padding = temporal_padding
        self.edvr = EDVRFeatures(num_feat, 2 * temporal_padding + 1, 8, 5, with_tsa=True)
        self.spynet = SpyNet()
        self.backward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.forward_trunk = ConvResidualBlocks(2 * num_feat + 3, num_feat, num_block)
        make_tail(self, num_feat)

    def keyframe_features(self, x: torch.Tensor, keyframes: list[int]) -> dict[int, torch.Tensor]:
        p = self.temporal_padding
        # the clip mirrored at both ends without repeating the end frames
        head = x[:, list(range(2 * p, p, -1))]
        end = x[:, list(range(-p - 2, -2 * p - 2, -1))]
        padded = torch.cat([head, x, end], 1)
        return {i: self.edvr(padded[:, i : i + 2 * p + 1].contiguous()) for i in keyframes}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h_in, w_in = x.shape
        pad_h, pad_w = (4 - h_in % 4) % 4, (4 - w_in % 4) % 4
        x = F.pad(x.view(-1, c, h_in, w_in), [0, pad_w, 0, pad_h], mode="reflect")
        h, w = h_in + pad_h, w_in + pad_w
        x = x.view(b, n, c, h, w)
        keyframes = list(range(0, n, self.keyframe_stride))
        if keyframes[-1] != n - 1:
            keyframes.append(n - 1)
        flows_forward, flows_backward = clip_flows(self.spynet, x)
        key_feats = self.keyframe_features(x, keyframes)
        outs: list[torch.Tensor] = []
        feat = x.new_zeros(b, self.num_feat, h, w)
        for i in range(n - 1, -1, -1):
            if i < n - 1:
                feat = flow_warp(feat, flows_backward[:, i].permute(0, 2, 3, 1))
            if i in keyframes:
                feat = self.backward_fusion(torch.cat([feat, key_feats[i]], 1))
            feat = self.backward_trunk(torch.cat([x[:, i], feat], 1))
            outs.insert(0, feat)
        feat = torch.zeros_like(feat)
        for i in range(n):
            if i > 0:
                feat = flow_warp(feat, flows_forward[:, i - 1].permute(0, 2, 3, 1))
            if i in keyframes:
                feat = self.forward_fusion(torch.cat([feat, key_feats[i]], 1))
            feat = self.forward_trunk(torch.cat([x[:, i], outs[i], feat], 1))
            outs[i] = tail(self, feat, x[:, i])
        return torch.stack(outs, 1)[..., : 4 * h_in, : 4 * w_in]


class SecondOrderDeformableAlignment(nn.Module):
    """BasicVSR++'s DCN: offsets = flow (repeated per group) + bounded residue from ``conv_offset``."""

    def __init__(self, channels: int, deformable_groups: int = 16, max_residue_magnitude: float = 10) -> None:
        super().__init__()
        self.max_residue_magnitude = max_residue_magnitude
        self.weight = nn.Parameter(torch.empty(channels, 2 * channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * channels + 4, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(channels, 27 * deformable_groups, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor, flow_1: torch.Tensor, flow_2: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(torch.cat([cond, flow_1, flow_2], 1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        offset = self.max_residue_magnitude * torch.tanh(torch.cat((o1, o2), dim=1))
        offset_1, offset_2 = torch.chunk(offset, 2, dim=1)
        offset_1 = offset_1 + flow_1.flip(1).repeat(1, offset_1.size(1) // 2, 1, 1)
        offset_2 = offset_2 + flow_2.flip(1).repeat(1, offset_2.size(1) // 2, 1, 1)
        offset = torch.cat([offset_1, offset_2], dim=1)
        return torchvision.ops.deform_conv2d(x, offset, self.weight, self.bias, padding=(1, 1), mask=mask.sigmoid())


class BasicVSRPlusPlusForm(nn.Module):
    BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")

    def __init__(self, mid_channels: int = 64, num_blocks: int = 7, max_residue_magnitude: float = 10) -> None:
        super().__init__()
        self.mid_channels = mid_channels
        self.spynet = SpyNet()
        self.feat_extract = ConvResidualBlocks(3, mid_channels, 5)
        self.deform_align = nn.ModuleDict()
        self.backbone = nn.ModuleDict()
        for i, branch in enumerate(self.BRANCHES):
            self.deform_align[branch] = SecondOrderDeformableAlignment(mid_channels, 16, max_residue_magnitude)
            self.backbone[branch] = ConvResidualBlocks((2 + i) * mid_channels, mid_channels, num_blocks)
        self.reconstruction = ConvResidualBlocks(5 * mid_channels, mid_channels, 5)
        make_tail(self, mid_channels)

    def propagate(self, feats: dict[str, list[torch.Tensor]], flows: torch.Tensor, branch: str) -> None:
        n, t1, _, h, w = flows.shape
        frames = list(range(t1 + 1))
        if branch.startswith("backward"):
            frames = frames[::-1]
        flow_index = frames if branch.startswith("backward") else list(range(-1, t1))
        feat_prop = flows.new_zeros(n, self.mid_channels, h, w)
        feats[branch] = []
        for i, idx in enumerate(frames):
            current = feats["spatial"][idx]
            if i > 0:
                flow_1 = flows[:, flow_index[i]]
                cond_1 = flow_warp(feat_prop, flow_1.permute(0, 2, 3, 1))
                feat_2 = torch.zeros_like(feat_prop)
                flow_2 = torch.zeros_like(flow_1)
                cond_2 = torch.zeros_like(cond_1)
                if i > 1:
                    feat_2 = feats[branch][-2]
                    flow_2 = flows[:, flow_index[i - 1]]
                    flow_2 = flow_1 + flow_warp(flow_2, flow_1.permute(0, 2, 3, 1))
                    cond_2 = flow_warp(feat_2, flow_2.permute(0, 2, 3, 1))
                cond = torch.cat([cond_1, current, cond_2], 1)
                feat_prop = self.deform_align[branch](torch.cat([feat_prop, feat_2], 1), cond, flow_1, flow_2)
            others = [feats[k][idx] for k in feats if k not in ("spatial", branch)]
            feat_prop = feat_prop + self.backbone[branch](torch.cat([current, *others, feat_prop], 1))
            feats[branch].append(feat_prop)
        if branch.startswith("backward"):
            feats[branch] = feats[branch][::-1]

    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        n, t, c, h, w = lqs.shape
        spatial = self.feat_extract(lqs.view(-1, c, h, w)).view(n, t, -1, h, w)
        feats: dict[str, list[torch.Tensor]] = {"spatial": [spatial[:, i] for i in range(t)]}
        flows_forward, flows_backward = clip_flows(self.spynet, lqs)
        for branch in self.BRANCHES:
            self.propagate(feats, flows_backward if branch.startswith("backward") else flows_forward, branch)
        outs = []
        for i in range(t):
            hr = torch.cat([feats["spatial"][i]] + [feats[k][i] for k in self.BRANCHES], 1)
            outs.append(tail(self, self.reconstruction(hr), lqs[:, i]))
        return torch.stack(outs, 1)


def check_fixtures(folder: str) -> None:
    """Each form against BasicSR's recorded run (its weights, its input): prints the max |difference|."""
    forms = {"basicvsr": BasicVSRForm, "iconvsr": IconVSRForm, "basicvsrpp": BasicVSRPlusPlusForm, "edvr": EDVRForm}
    drop = {"num_in_ch", "num_out_ch", "center_frame_idx", "hr_in", "with_predeblur", "is_low_res_input"}
    for name, form in forms.items():
        d = torch.load(f"{folder}/{name}_case1.pt", map_location="cpu", weights_only=True)
        model = form(**{k: v for k, v in d["config"].items() if k not in drop}).eval()
        model.load_state_dict(d["state_dict"])
        with torch.no_grad():
            diff = (model(d["inputs"]["lq"]) - d["outputs"]["out"]).abs().max().item()
        print(f"{name}: max |ours - BasicSR's recorded output| = {diff:.2e}")


if __name__ == "__main__":
    import os
    import sys

    check_fixtures(
        sys.argv[1] if len(sys.argv) > 1 else os.environ.get("VSRBLOCKS_BASICSR_FIXTURES", "../shared/fixtures/basicsr")
    )
