"""EDVR: video restoration with enhanced deformable convolutional networks.

Wang, Chan, Yu, Dong, Loy, "EDVR: Video Restoration with Enhanced Deformable Convolutional Networks", CVPRW 2019
(NTIRE 2019 winner); reference implementation BasicSR ``basicsr/archs/edvr_arch.py`` (``EDVR``), also MMagic
``mmagic/models/editors/edvr/edvr_net.py`` (``EDVRNet``).

``T`` LR frames -> per-frame features (``conv_first`` + residual blocks, or the pre-deblur module of the
deblurring models) -> a three-level feature pyramid -> every frame aligned to the centre frame by PCD alignment
with the cascading stage (:class:`vsrblocks.align.PCDAlignment`, ``cascade=True``) -> TSA fusion
(:class:`vsrblocks.attention.TSAFusion`, or a 1x1 convolution) -> residual blocks -> BasicSR's x4 tail
(:class:`vsrblocks.PixelShuffleUpsampler`) + the bilinearly upsampled centre frame. Output: the centre frame.

Differences from BasicSR (the same computation wherever BasicSR runs, i.e. ``H, W`` divisible by 4, or by 16
with ``hr_in``):

- any ``H, W``: strided convolutions give ``ceil(H / 2)``, and every x2 upsampling goes to the stored size of the
  finer level; with ``hr_in`` the ``4 * ceil(H / 4)`` output is cropped to ``H``;
- the deformable convolutions are :class:`vsrblocks.align.DeformConv2d` (torchvision's kernel on CUDA, pure PyTorch
  elsewhere): no compiled extension, CPU, ONNX;
- the PCD alignment of the ``T`` frames runs as one batch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vsrblocks.align.deform_conv import Backend
from vsrblocks.align.pcd import PCDAlignment
from vsrblocks.attention.tsa import TSAFusion
from vsrblocks.checkpoint import count_blocks, load_state_dict_checked
from vsrblocks.residual import ResidualBlockNoBN, make_layer
from vsrblocks.shapes import check_shape
from vsrblocks.upsample import BASICSR_TAIL_NAMES, PixelShuffleUpsampler

__all__ = [
    "EDVR",
    "EDVRFeatureExtractor",
    "MODEL",
    "PRESETS",
    "basicsr_from_mmagic",
    "convert_official_state_dict",
    "from_official",
    "official_config_from_state_dict",
    "ours_from_basicsr",
]

_SLOPE = 0.1


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, _SLOPE)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """BasicSR's bilinear x2 upsampling, to the stored size of the finer level (any size)."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _Predeblur(nn.Module):
    """EDVR's pre-deblurring module (the deblurring models, EDVR-L on REDS blur / blur+comp): a three-level
    residual hourglass, with two more stride-2 convolutions first for HR input (``hr_in``). BasicSR names."""

    def __init__(self, channels: int, hr_in: bool) -> None:
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        if hr_in:
            self.stride_conv_hr1 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
            self.stride_conv_hr2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.stride_conv_l2 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.stride_conv_l3 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.resblock_l3 = ResidualBlockNoBN(channels)
        self.resblock_l2_1 = ResidualBlockNoBN(channels)
        self.resblock_l2_2 = ResidualBlockNoBN(channels)
        self.resblock_l1 = nn.ModuleList(ResidualBlockNoBN(channels) for _ in range(5))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        l1 = _lrelu(self.conv_first(frames))
        if self.hr_in:
            l1 = _lrelu(self.stride_conv_hr2(_lrelu(self.stride_conv_hr1(l1))))
        l2 = _lrelu(self.stride_conv_l2(l1))
        l3 = _lrelu(self.stride_conv_l3(l2))
        l2 = self.resblock_l2_1(l2) + _up(self.resblock_l3(l3), l2)
        l2 = _up(self.resblock_l2_2(l2), l1)
        for block in self.resblock_l1[:2]:
            l1 = block(l1)
        l1 = l1 + l2
        for block in self.resblock_l1[2:]:
            l1 = block(l1)
        return l1


class EDVRFeatureExtractor(nn.Module):
    """EDVR up to the fused feature: per-frame features, pyramid, PCD alignment with cascade, fusion.

    This is BasicSR's ``EDVRFeatureExtractor`` (IconVSR's keyframe branch: TSA, 5 blocks, 8 DCN groups) and the
    front of :class:`EDVR`. Parameter names are BasicSR's, except the PCD levels (``pcd_align.levels.{i-1}``
    for BasicSR's ``l{i}``, ``dcn`` for ``dcn_pack``).

    Args:
        channels: C, feature width (EDVR-M 64, EDVR-L 128).
        num_frames: T, input frames (REDS 5, Vimeo-90K 7).
        deform_groups: of the PCD deformable convolutions (8).
        extract_blocks: residual blocks of the per-frame feature extraction (5).
        center_index: the reference frame (default ``num_frames // 2``).
        with_tsa: TSA fusion; ``False``: a 1x1 convolution over the ``T * C`` aligned features.
        with_predeblur: features from EDVR's pre-deblurring module (+ a 1x1 conv) instead of ``conv_first``.
        hr_in: the input is HR (the deblurring models): the pre-deblurring module downsamples it x4.
        backend: of the deformable convolutions (:class:`vsrblocks.align.DeformConv2d`).

    Shape:
        - Input: ``(B, T, 3, H, W)``, any ``H, W``
        - Output: ``(B, C, H, W)`` (``ceil(H / 4), ceil(W / 4)`` with ``hr_in``)
    """

    def __init__(
        self,
        channels: int = 64,
        num_frames: int = 5,
        deform_groups: int = 8,
        extract_blocks: int = 5,
        center_index: int | None = None,
        with_tsa: bool = True,
        with_predeblur: bool = False,
        hr_in: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        center_index = num_frames // 2 if center_index is None else center_index
        if not 0 <= center_index < num_frames:
            raise ValueError(f"center_index must be in [0, {num_frames}), got {center_index}")
        if hr_in and not with_predeblur:
            raise ValueError("hr_in needs with_predeblur=True (the pre-deblurring module downsamples HR input)")
        self.channels = channels
        self.num_frames = num_frames
        self.center_index = center_index
        self.with_tsa = with_tsa
        self.with_predeblur = with_predeblur
        self.hr_in = hr_in
        if with_predeblur:
            self.predeblur = _Predeblur(channels, hr_in)
            self.conv_1x1 = nn.Conv2d(channels, channels, 1)
        else:
            self.conv_first = nn.Conv2d(3, channels, 3, padding=1)
        self.feature_extraction = make_layer(lambda: ResidualBlockNoBN(channels), extract_blocks)
        self.conv_l2_1 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.conv_l2_2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv_l3_1 = nn.Conv2d(channels, channels, 3, stride=2, padding=1)
        self.conv_l3_2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.pcd_align = PCDAlignment(channels, deform_groups, num_levels=3, backend=backend, cascade=True)
        self.fusion: nn.Module
        if with_tsa:
            self.fusion = TSAFusion(channels, num_frames, center_index)
        else:
            self.fusion = nn.Conv2d(num_frames * channels, channels, 1)

    def features(self, clip: torch.Tensor) -> torch.Tensor:
        """The fused feature of ``clip`` ``(B, T, 3, H, W)``."""
        dims = check_shape(clip, "B T C H W", name="clip", T=self.num_frames, C=3)
        b, t = dims["B"], dims["T"]
        frames = clip.flatten(0, 1)
        if self.with_predeblur:
            l1 = self.conv_1x1(self.predeblur(frames))
        else:
            l1 = _lrelu(self.conv_first(frames))
        l1 = self.feature_extraction(l1)
        l2 = _lrelu(self.conv_l2_2(_lrelu(self.conv_l2_1(l1))))
        l3 = _lrelu(self.conv_l3_2(_lrelu(self.conv_l3_1(l2))))
        pyramid = [level.unflatten(0, (b, t)) for level in (l1, l2, l3)]
        # every frame against the centre frame, the T alignments as one batch
        reference = [level[:, self.center_index : self.center_index + 1].expand_as(level) for level in pyramid]
        aligned = self.pcd_align([p.flatten(0, 1) for p in pyramid], [r.flatten(0, 1) for r in reference])
        aligned = aligned.unflatten(0, (b, t))
        if self.with_tsa:
            return self.fusion(aligned)
        return self.fusion(rearrange(aligned, "b t c h w -> b (t c) h w"))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.features(clip)

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, center_index={self.center_index}, with_tsa={self.with_tsa}, "
            f"with_predeblur={self.with_predeblur}, hr_in={self.hr_in}"
        )


class EDVR(EDVRFeatureExtractor):
    """The EDVR network (BasicSR ``EDVR``): :class:`EDVRFeatureExtractor`, ``reconstruct_blocks`` residual
    blocks and BasicSR's x4 tail (``upconv1`` C -> 4C, ``upconv2`` C -> 4 * 64, ``conv_hr``, ``conv_last``),
    plus the centre frame (bilinear x4; as it is with ``hr_in``).

    Args:
        channels: as for :class:`EDVRFeatureExtractor`.
        num_frames: as for :class:`EDVRFeatureExtractor`.
        deform_groups: as for :class:`EDVRFeatureExtractor`.
        extract_blocks: as for :class:`EDVRFeatureExtractor`.
        center_index: as for :class:`EDVRFeatureExtractor`.
        with_tsa: as for :class:`EDVRFeatureExtractor`.
        with_predeblur: as for :class:`EDVRFeatureExtractor`.
        hr_in: as for :class:`EDVRFeatureExtractor`.
        backend: as for :class:`EDVRFeatureExtractor`.
        reconstruct_blocks: residual blocks after the fusion (EDVR-M 10, EDVR-L 40).

    Attributes:
        scale: 4 (1 with ``hr_in``: the deblurring models restore at the input size).
        output_mode: ``"center"`` (one output frame per window).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB, any ``H, W``
        - Output: ``(B, 3, 4H, 4W)``, the centre frame (``(B, 3, H, W)`` with ``hr_in``)

    Examples:
        >>> model = EDVR(**PRESETS["tiny"]).eval()
        >>> model(torch.rand(1, 5, 3, 9, 7)).shape
        torch.Size([1, 3, 36, 28])
    """

    model_spec: dict[str, Any]  # set by create_model / from_official, for checkpoints to rebuild the model

    def __init__(
        self,
        channels: int = 64,
        num_frames: int = 5,
        deform_groups: int = 8,
        extract_blocks: int = 5,
        reconstruct_blocks: int = 10,
        center_index: int | None = None,
        with_tsa: bool = True,
        with_predeblur: bool = False,
        hr_in: bool = False,
        backend: Backend = "auto",
    ) -> None:
        super().__init__(
            channels, num_frames, deform_groups, extract_blocks, center_index, with_tsa, with_predeblur, hr_in, backend
        )
        self.scale = 1 if hr_in else 4
        self.output_mode = "center"
        self.reconstruction = make_layer(lambda: ResidualBlockNoBN(channels), reconstruct_blocks)
        self.upsample = PixelShuffleUpsampler(channels, 4, hidden_channels=64, hr_conv=True)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        out = self.upsample(self.reconstruction(self.features(clip)))
        center = clip[:, self.center_index]
        if self.hr_in:
            return out[..., : center.shape[-2], : center.shape[-1]] + center
        return out + F.interpolate(center, scale_factor=4, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, output_mode={self.output_mode!r}, " + super().extra_repr()


MODEL = EDVR

PRESETS: dict[str, dict] = {
    # The standard x4 video SR model (BasicSR EDVR_M_x4_SR_REDS / MMagic edvrm_wotsa, edvrm): EDVR-M with TSA.
    "paper": {"channels": 64, "num_frames": 5, "extract_blocks": 5, "reconstruct_blocks": 10, "with_tsa": True},
    "edvr-m": {"channels": 64, "num_frames": 5, "extract_blocks": 5, "reconstruct_blocks": 10, "with_tsa": True},
    "edvr-m-wotsa": {"channels": 64, "num_frames": 5, "extract_blocks": 5, "reconstruct_blocks": 10, "with_tsa": False},
    # EDVR-L (BasicSR EDVR_L_x4_SR_REDS / _Vimeo90K): 128 channels, 40 reconstruction blocks; Vimeo-90K uses 7 frames.
    "edvr-l": {"channels": 128, "num_frames": 5, "extract_blocks": 5, "reconstruct_blocks": 40, "with_tsa": True},
    "edvr-l-wotsa": {
        "channels": 128,
        "num_frames": 5,
        "extract_blocks": 5,
        "reconstruct_blocks": 40,
        "with_tsa": False,
    },
    "edvr-l-vimeo": {"channels": 128, "num_frames": 7, "extract_blocks": 5, "reconstruct_blocks": 40, "with_tsa": True},
    # EDVR-L deblurring (BasicSR EDVR_L_deblur_REDS, _deblurcomp_REDS): pre-deblur module, HR in and out.
    "edvr-l-deblur": {
        "channels": 128,
        "num_frames": 5,
        "extract_blocks": 5,
        "reconstruct_blocks": 40,
        "with_tsa": True,
        "with_predeblur": True,
        "hr_in": True,
    },
    # EDVR-L x4 SR of blurred input (BasicSR EDVR_L_x4_SRblur_REDS): pre-deblur module on LR input.
    "edvr-l-srblur": {
        "channels": 128,
        "num_frames": 5,
        "extract_blocks": 5,
        "reconstruct_blocks": 40,
        "with_tsa": True,
        "with_predeblur": True,
    },
    "tiny": {"channels": 16, "num_frames": 5, "deform_groups": 2, "extract_blocks": 1, "reconstruct_blocks": 1},
}

# ----------------------------------------------------------------------------------------------------------------
# BasicSR and MMagic weights

#: MMagic ``EDVRNet`` names -> BasicSR ``EDVR`` names (after MMagic's ``ConvModule`` ``.conv`` level is removed).
_MMAGIC_PREFIXES = {
    "feat_l2_conv1.": "conv_l2_1.",
    "feat_l2_conv2.": "conv_l2_2.",
    "feat_l3_conv1.": "conv_l3_1.",
    "feat_l3_conv2.": "conv_l3_2.",
    "pcd_alignment.": "pcd_align.",
    "upsample1.upsample_conv.": "upconv1.",
    "upsample2.upsample_conv.": "upconv2.",
}


def _is_mmagic(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return "pcd_alignment.cas_dcnpack.weight" in state_dict


def basicsr_from_mmagic(key: str) -> str:
    """BasicSR's name of an MMagic EDVR key (``generator.`` already removed).

    Examples:
        >>> basicsr_from_mmagic("pcd_alignment.offset_conv1.l3.conv.weight")
        'pcd_align.offset_conv1.l3.weight'
        >>> basicsr_from_mmagic("upsample2.upsample_conv.bias"), basicsr_from_mmagic("fusion.spatial_attn5.weight")
        ('upconv2.bias', 'fusion.spatial_attn5.weight')
    """
    key = re.sub(r"\.conv\.(weight|bias)$", r".\1", key)
    for mmagic, basicsr in _MMAGIC_PREFIXES.items():
        if key.startswith(mmagic):
            return basicsr + key[len(mmagic) :]
    return key


def ours_from_basicsr(key: str) -> str:
    """Our name of a BasicSR EDVR (or ``EDVRFeatureExtractor``) key.

    Examples:
        >>> ours_from_basicsr("pcd_align.dcn_pack.l3.conv_offset.weight")
        'pcd_align.levels.2.dcn.conv_offset.weight'
        >>> ours_from_basicsr("upconv1.weight"), ours_from_basicsr("fusion.spatial_attn1.bias")
        ('upsample.stages.0.conv.weight', 'fusion.spatial_attn1.bias')
    """
    match = re.fullmatch(r"pcd_align\.(offset_conv1|offset_conv2|offset_conv3|dcn_pack|feat_conv)\.l(\d)\.(.+)", key)
    if match:
        name, level, rest = match.groups()
        return f"pcd_align.levels.{int(level) - 1}.{'dcn' if name == 'dcn_pack' else name}.{rest}"
    head, _, rest = key.partition(".")
    if head in BASICSR_TAIL_NAMES:
        return f"upsample.{BASICSR_TAIL_NAMES[head]}.{rest}"
    return key


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BasicSR ``EDVR`` or MMagic ``EDVRNet`` state_dict in our key names.

    Raises:
        ValueError: neither layout (no ``pcd_align.cas_dcnpack`` / ``pcd_alignment.cas_dcnpack`` weight).
    """
    if _is_mmagic(state_dict):
        state_dict = {basicsr_from_mmagic(k): v for k, v in state_dict.items()}
    if "pcd_align.cas_dcnpack.weight" not in state_dict:
        raise ValueError("not a BasicSR or MMagic EDVR state_dict: no 'pcd_align.cas_dcnpack.weight'")
    return {ours_from_basicsr(k): v for k, v in state_dict.items()}


def from_official(
    state_dict: Mapping[str, torch.Tensor],
    num_in_ch: int = 3,
    num_out_ch: int = 3,
    num_feat: int = 64,
    num_frame: int = 5,
    deformable_groups: int = 8,
    num_extract_block: int = 5,
    num_reconstruct_block: int = 10,
    center_frame_idx: int | None = None,
    hr_in: bool = False,
    with_predeblur: bool = False,
    with_tsa: bool = True,
) -> EDVR:
    """Build :class:`EDVR` from a BasicSR ``EDVR`` state_dict (or an MMagic ``EDVRNet`` one) and BasicSR's
    constructor keywords. The returned model (eval mode) reproduces BasicSR's outputs and runs at any size.

    Raises:
        ValueError: RGB in and out only (BasicSR's tail and residual are 3-channel whatever ``num_in_ch`` /
            ``num_out_ch`` say), or keys or shapes that do not fit the keywords
            (:class:`vsrblocks.checkpoint.CheckpointError` is a ``ValueError``).
    """
    if num_in_ch != 3 or num_out_ch != 3:
        raise ValueError(f"EDVR: RGB input and output only, got num_in_ch={num_in_ch}, num_out_ch={num_out_ch}")
    kwargs: dict[str, Any] = {
        "channels": num_feat,
        "num_frames": num_frame,
        "deform_groups": deformable_groups,
        "extract_blocks": num_extract_block,
        "reconstruct_blocks": num_reconstruct_block,
        "center_index": center_frame_idx,
        "with_tsa": with_tsa,
        "with_predeblur": with_predeblur,
        "hr_in": hr_in,
    }
    model = EDVR(**kwargs)
    load_state_dict_checked(model, convert_official_state_dict(state_dict), what="BasicSR EDVR state_dict")
    # a checkpoint saved from this model rebuilds it with create_model("edvr", "paper", **kwargs)
    model.model_spec = {"name": "edvr", "preset": "paper", "overrides": kwargs}
    return model.eval()


def _dcn_groups(conv_offset: torch.Tensor) -> int:
    """Deformable groups from a ``conv_offset`` weight ``(3 * G * kh * kw, C, kh, kw)``."""
    return int(conv_offset.shape[0]) // (3 * conv_offset.shape[-2] * conv_offset.shape[-1])


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """BasicSR's ``EDVR`` keywords a BasicSR or MMagic EDVR state_dict was made with, read from its weights.

    From the weights: ``num_feat`` (``conv_l2_1``), ``num_frame`` (the fusion's ``T * C`` input),
    ``deformable_groups`` (the DCN offset convolutions), ``num_extract_block`` and ``num_reconstruct_block``
    (counted), ``with_tsa``, ``with_predeblur`` and ``hr_in`` (which modules exist). Not determined:
    ``center_frame_idx`` takes BasicSR's ``num_frame // 2``.

    Returns:
        ``(config, assumed)``: keyword arguments for :func:`from_official`, and the names of those not read
        from the weights.

    Raises:
        ValueError: the state_dict is not an EDVR one.
    """
    if _is_mmagic(state_dict):
        state_dict = {basicsr_from_mmagic(k): v for k, v in state_dict.items()}
    for key in ("pcd_align.cas_dcnpack.weight", "conv_l2_1.weight", "upconv1.weight"):
        if key not in state_dict:
            raise ValueError(f"not a BasicSR or MMagic EDVR state_dict: no {key!r}")
    channels = int(state_dict["conv_l2_1.weight"].shape[0])
    with_tsa = "fusion.feat_fusion.weight" in state_dict
    fusion = state_dict["fusion.feat_fusion.weight" if with_tsa else "fusion.weight"]
    config = {
        "num_feat": channels,
        "num_frame": int(fusion.shape[1]) // channels,
        "deformable_groups": _dcn_groups(state_dict["pcd_align.cas_dcnpack.conv_offset.weight"]),
        "num_extract_block": count_blocks(state_dict, "feature_extraction"),
        "num_reconstruct_block": count_blocks(state_dict, "reconstruction"),
        "with_tsa": with_tsa,
        "with_predeblur": "predeblur.conv_first.weight" in state_dict,
        "hr_in": "predeblur.stride_conv_hr1.weight" in state_dict,
    }
    config["center_frame_idx"] = config["num_frame"] // 2
    return config, ("center_frame_idx",)
