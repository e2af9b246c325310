"""IconVSR (Chan, Wang, Yu, Dong, Loy, "BasicVSR: The Search for Essential Components in Video Super-Resolution
and Beyond", CVPR 2021, Sec. 4): BasicVSR with information-refill and coupled propagation.

Composed from vsrblocks: :class:`~vsrblocks.recurrent.BidirectionalPropagation` with SPyNet flows, whose forward
cell also sees the backward features (coupled propagation); at keyframes both cells first fuse the propagated
features with the features an EDVR extractor (:class:`~reference_models.networks.edvr.EDVRFeatureExtractor`: PCD
alignment with cascade and TSA fusion over ``2 * temporal_padding + 1`` frames) computes for that frame
(information-refill); then the x4 pixel-shuffle tail. :func:`from_official` takes BasicSR's ``IconVSR``
state_dicts (and MMagic's ``IconVSRNet`` names) and reproduces BasicSR's outputs.

As in BasicSR, frames are reflection-padded to multiples of 4 (for the EDVR extractor; flows, propagation and
the bilinear base see the padded frames) and the output is cropped. Differences: clips shorter than BasicSR
accepts (``T < 2 * temporal_padding + 1``) get mirrored, clamped keyframe windows (BasicSR fails); frames of
fewer than 4 pixels per side are padded by replication (reflection cannot pad them); any ``temporal_padding``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reference_models.networks.basicsr_keys import (
    MMAGIC_TAIL,
    count_trunk_blocks,
    rename_prefixes,
    spynet_weights,
    tail_renames,
)
from reference_models.networks.basicvsr import _load_official, as_frame_source, stacked
from reference_models.networks.edvr import EDVRFeatureExtractor, basicsr_from_mmagic, ours_from_basicsr
from vsrblocks.align.boff import ResidualBlocksWithInputConv
from vsrblocks.align.deform_conv import Backend
from vsrblocks.align.spynet import SPyNet
from vsrblocks.checkpoint import read_state_dict
from vsrblocks.recurrent import BidirectionalPropagation, FeatureStore, FrameSource
from vsrblocks.upsample import PixelShuffleUpsampler

__all__ = [
    "IconVSR",
    "MODEL",
    "PRESETS",
    "convert_official_state_dict",
    "from_official",
    "keyframe_window",
    "official_config_from_state_dict",
]

_SPYNET_CHANNELS = (32, 64, 32, 16)


class _RefillCell(nn.Module):
    """IconVSR's propagation cell: at keyframes, ``propagated = fusion([propagated, refill])`` (3x3); then the trunk
    (conv + LeakyReLU + residual blocks) over ``[frame, *earlier, propagated]``."""

    def __init__(self, channels: int, in_channels: int, num_blocks: int) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.trunk = ResidualBlocksWithInputConv(in_channels, channels, num_blocks)

    def forward(self, frame: torch.Tensor, *rest: torch.Tensor, refill: torch.Tensor | None = None) -> torch.Tensor:
        *earlier, propagated = rest
        if refill is not None:
            propagated = self.fusion(torch.cat((propagated, refill), dim=1))
        return self.trunk(torch.cat((frame, *earlier, propagated), dim=1))


class _Padded:
    """A frame source whose frames are padded at the bottom and right to multiples of 4 (reflection, as BasicSR;
    replication where a side is too short to reflect)."""

    def __init__(self, source: FrameSource) -> None:
        self.source = source
        height, width = source[0].shape[-2:]
        self.pad = (0, -width % 4, 0, -height % 4)
        # exported: one graph for every size (a zero pad is a no-op), frames of at least 4 pixels
        self.exporting = torch.compiler.is_exporting()
        self.mode = "reflect" if self.exporting or (self.pad[1] < width and self.pad[3] < height) else "replicate"

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> torch.Tensor:
        frame = self.source[index]
        return F.pad(frame, self.pad, mode=self.mode) if self.exporting or any(self.pad) else frame


def keyframe_window(index: int, length: int, padding: int) -> list[int]:
    """The frames the EDVR extractor sees for keyframe ``index`` of a ``length``-frame clip: ``index - padding ...
    index + padding``, with BasicSR's temporal padding outside the clip (frame ``-k`` is frame ``padding + k``,
    frame ``length - 1 + k`` is frame ``length - 1 - padding - k``); where that leaves the clip (clips shorter
    than ``2 * padding + 1``), mirrored at the ends and clamped.

    Examples:
        >>> keyframe_window(0, 7, 2), keyframe_window(6, 7, 2)
        ([4, 3, 0, 1, 2], [4, 5, 6, 3, 2])
        >>> keyframe_window(0, 2, 2)
        [1, 1, 0, 1, 0]
    """
    window = []
    for j in range(index - padding, index + padding + 1):
        if j < 0:
            mapped = padding - j
        elif j >= length:
            mapped = 2 * length - j - padding - 2
        else:
            mapped = j
        if not 0 <= mapped < length:  # a clip too short for BasicSR's padding
            mapped = -j if j < 0 else 2 * (length - 1) - j
            mapped = min(max(mapped, 0), length - 1)
        window.append(mapped)
    return window


class IconVSR(nn.Module):
    """IconVSR: BasicVSR with information-refill from an EDVR extractor at keyframes and coupled propagation, x4.

    Keyframes are every ``keyframe_stride``-th frame and the last one. Backward sweep (``i = T-1 ... 0``):
    ``h = warp(h_{i+1})``, at keyframes ``h = backward_fusion([h, E_i])``, ``h_i = backward_trunk([x_i, h])``;
    forward sweep: ``g = warp(g_{i-1})``, at keyframes ``g = forward_fusion([g, E_i])``,
    ``g_i = forward_trunk([x_i, h_i, g])``; output ``tail(g_i) + bilinear(x_i)``. ``E_i`` is the EDVR extractor's
    fused feature of the ``2 * temporal_padding + 1`` frames around ``i`` (:func:`keyframe_window`); it is
    computed once, in the backward sweep, and waits in the feature store for the forward sweep.

    **Any length, bounded memory.** :meth:`stream` reads frames lazily and hands each SR frame to ``emit`` as the
    forward sweep produces it (the backward and keyframe features wait in a
    :class:`~vsrblocks.recurrent.FeatureStore`); :meth:`forward` is :meth:`stream` over a clip, stacked. The
    EDVR extractor reads the frames of a keyframe's window again from the source.

    Args:
        num_frames: frames per clip for training and windowed inference (BasicSR trains on 15); :meth:`forward`
            takes any ``T >= 1``.
        channels: C, feature channels (released: 64).
        num_blocks: residual blocks per direction (released: 30).
        keyframe_stride: frames between keyframes (5).
        temporal_padding: frames on each side of a keyframe that the EDVR extractor sees (REDS 2, Vimeo-90K 3).
        extract_blocks: residual blocks of the EDVR extractor (EDVR-M: 5).
        deform_groups: of the EDVR extractor's PCD alignment (8).
        spynet_channels: SPyNet's hidden widths (keep the default to load pretrained weights).
        backend: of the deformable convolutions (:class:`vsrblocks.align.DeformConv2d`).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], any ``T >= 1``, ``H``, ``W``
        - Output: ``(B, T, 3, 4H, 4W)``

    Examples:
        >>> model = IconVSR(**PRESETS["tiny"]).eval()
        >>> model(torch.rand(1, 3, 3, 9, 10)).shape
        torch.Size([1, 3, 3, 36, 40])
    """

    model_spec: dict[str, Any]  # set by create_model / from_official, for checkpoints to rebuild the model

    output_mode = "all"
    scale = 4

    def __init__(
        self,
        num_frames: int = 15,
        channels: int = 64,
        num_blocks: int = 30,
        keyframe_stride: int = 5,
        temporal_padding: int = 2,
        extract_blocks: int = 5,
        deform_groups: int = 8,
        spynet_channels: tuple[int, ...] = _SPYNET_CHANNELS,
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if keyframe_stride < 1 or temporal_padding < 0:
            raise ValueError(
                f"keyframe_stride must be >= 1 and temporal_padding >= 0, got {keyframe_stride}, {temporal_padding}"
            )
        self.num_frames = num_frames
        self.channels = channels
        self.num_blocks = num_blocks
        self.keyframe_stride = keyframe_stride
        self.temporal_padding = temporal_padding
        self.edvr = EDVRFeatureExtractor(
            channels, 2 * temporal_padding + 1, deform_groups, extract_blocks, with_tsa=True, backend=backend
        )
        self.propagation = BidirectionalPropagation(
            channels,
            _RefillCell(channels, channels + 3, num_blocks),
            _RefillCell(channels, 2 * channels + 3, num_blocks),
            SPyNet(tuple(spynet_channels)),
            forward_sees_backward=True,
        )
        self.upsample = PixelShuffleUpsampler(channels, 4, hidden_channels=64, hr_conv=True)

    def keyframes(self, length: int) -> list[int]:
        """Keyframe indices of a ``length``-frame clip: every ``keyframe_stride``-th and the last."""
        keyframes = list(range(0, length, self.keyframe_stride))
        return keyframes if keyframes[-1] == length - 1 else [*keyframes, length - 1]

    def stream(
        self,
        frames: FrameSource | torch.Tensor,
        *,
        emit: Callable[[int, torch.Tensor], None],
        store: FeatureStore | None = None,
    ) -> None:
        """Super-resolve ``frames`` (a frame source, ``frames[i] -> (B, 3, H, W)``, or a clip), calling
        ``emit(i, sr_frame)`` with each ``(B, 3, 4H, 4W)`` frame in order ``i = 0 ... T-1``."""
        source = as_frame_source(frames)
        height, width = source[0].shape[-2:]
        padded = _Padded(source)
        length = len(source)
        keyframes = set(self.keyframes(length))
        store = FeatureStore() if store is None else store

        def refill(branch: str, i: int) -> dict[str, torch.Tensor]:
            if i not in keyframes:
                return {}
            if branch == "backward":
                window = keyframe_window(i, length, self.temporal_padding)
                features = self.edvr(torch.stack([padded[j] for j in window], dim=1))
                store.put("refill", i, features)
            else:
                features = store.get("refill", i)
                store.discard("refill", i)
            return {"refill": features}

        def reconstruct(i: int, features: dict[str, torch.Tensor]) -> None:
            frame = padded[i]
            base = F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)
            out = self.upsample(features["forward"]) + base
            emit(i, out[..., : 4 * height, : 4 * width])

        self.propagation.stream(padded, emit=reconstruct, store=store, cell_inputs=refill)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return stacked(self.stream, clip)

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, channels={self.channels}, num_blocks={self.num_blocks}, "
            f"keyframe_stride={self.keyframe_stride}, temporal_padding={self.temporal_padding}"
        )


MODEL = IconVSR

PRESETS: dict[str, dict[str, Any]] = {
    # BasicSR's and MMagic's released REDS model: 64 channels, 30 blocks per direction, EDVR-M extractor on 5 frames.
    "paper": {"num_frames": 15, "channels": 64, "num_blocks": 30, "keyframe_stride": 5, "temporal_padding": 2},
    "released-reds": {"num_frames": 15, "channels": 64, "num_blocks": 30, "keyframe_stride": 5, "temporal_padding": 2},
    # ... and Vimeo-90K: the extractor sees 7 frames.
    "released-vimeo": {"num_frames": 7, "channels": 64, "num_blocks": 30, "keyframe_stride": 5, "temporal_padding": 3},
    "tiny": {
        "num_frames": 3,
        "channels": 8,
        "num_blocks": 1,
        "extract_blocks": 1,
        "deform_groups": 2,
        "spynet_channels": (8, 8, 8, 8),
    },
}

_MMAGIC_RENAMES = (
    ("backward_resblocks.", "backward_trunk."),
    ("forward_resblocks.", "forward_trunk."),
    *MMAGIC_TAIL,
)
_OURS = (
    ("backward_fusion.", "propagation.backward_cell.fusion."),
    ("forward_fusion.", "propagation.forward_cell.fusion."),
    ("backward_trunk.", "propagation.backward_cell.trunk."),
    ("forward_trunk.", "propagation.forward_cell.trunk."),
    *tail_renames("upsample."),
)


def _basicsr_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A BasicSR or MMagic IconVSR state_dict in BasicSR's names."""
    renamed = rename_prefixes(state_dict, _MMAGIC_RENAMES)
    if "edvr.pcd_alignment.cas_dcnpack.weight" in renamed:  # MMagic's EDVR extractor
        renamed = {
            ("edvr." + basicsr_from_mmagic(k[5:]) if k.startswith("edvr.") else k): v for k, v in renamed.items()
        }
    return renamed


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BasicSR ``IconVSR`` or MMagic ``IconVSRNet`` state_dict to :class:`IconVSR` keys.

    ``edvr.*`` as :func:`~reference_models.networks.edvr.ours_from_basicsr`, ``backward_fusion`` ->
    ``propagation.backward_cell.fusion``, ``backward_trunk``/``backward_resblocks`` ->
    ``propagation.backward_cell.trunk`` (forward likewise), ``spynet`` -> ``propagation.flow``, the tail ->
    ``upsample.*``; SPyNet's constant ``mean``/``std`` are checked and dropped.

    Raises:
        CheckpointError: SPyNet's ``mean``/``std`` are not ImageNet's.
    """
    renamed = _basicsr_names(state_dict)
    renamed = {("edvr." + ours_from_basicsr(k[5:]) if k.startswith("edvr.") else k): v for k, v in renamed.items()}
    return spynet_weights(rename_prefixes(renamed, _OURS), into="propagation.flow.")


def _edvr_weights(path: str) -> dict[str, torch.Tensor]:
    """``edvr.*`` weights from an EDVR file (``edvr_path``): the extractor's part of a BasicSR or MMagic EDVR-M
    state_dict, or an extractor's own."""
    weights = read_state_dict(path)
    weights = {k.removeprefix("generator.").removeprefix("edvr."): v for k, v in weights.items()}
    if "pcd_alignment.cas_dcnpack.weight" in weights:
        weights = {basicsr_from_mmagic(k): v for k, v in weights.items()}
    extractor_keys = {
        "conv_first",
        "feature_extraction",
        "conv_l2_1",
        "conv_l2_2",
        "conv_l3_1",
        "conv_l3_2",
        "pcd_align",
        "fusion",
    }
    return {f"edvr.{k}": v for k, v in weights.items() if k.split(".")[0] in extractor_keys}


def from_official(
    state_dict: Mapping[str, Any],
    *,
    num_feat: int = 64,
    num_block: int = 15,
    keyframe_stride: int = 5,
    temporal_padding: int = 2,
    spynet_path: str | None = None,
    edvr_path: str | None = None,
) -> IconVSR:
    """Build an :class:`IconVSR` from BasicSR's ``IconVSR`` keyword arguments and a BasicSR or MMagic state_dict
    (bare or under ``params``/``params_ema``); it reproduces BasicSR's outputs. Returned in eval mode.

    ``spynet_path`` (a SPyNet file) and ``edvr_path`` (an EDVR-M file) are read only when the state_dict lacks
    those weights (as BasicSR's constructor loads them before training).

    Raises:
        CheckpointError: (a ValueError) the state_dict does not fit; the message names the keys.
    """
    overrides = {
        "channels": num_feat,
        "num_blocks": num_block,
        "keyframe_stride": keyframe_stride,
        "temporal_padding": temporal_padding,
    }
    model = IconVSR(**{**PRESETS["paper"], **overrides})
    model.model_spec = {"name": "iconvsr", "preset": "paper", "overrides": overrides}
    if edvr_path is not None and not any(k.removeprefix("module.").startswith("edvr.") for k in state_dict):
        state_dict = {**state_dict, **_edvr_weights(edvr_path)}
    _load_official(model, state_dict, convert_official_state_dict, spynet_path, "official IconVSR state_dict")
    return model.eval()


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """BasicSR's ``IconVSR`` keyword arguments read off a BasicSR or MMagic state_dict: ``num_feat``,
    ``num_block`` and ``temporal_padding`` (the EDVR extractor's frames); ``keyframe_stride`` (no weight
    depends on it) takes the released 5.

    Raises:
        ValueError: not an IconVSR state_dict (no EDVR extractor, fusion or trunk weights).
    """
    renamed = _basicsr_names(state_dict)
    for key in (
        "edvr.pcd_align.cas_dcnpack.weight",
        "edvr.fusion.feat_fusion.weight",
        "backward_fusion.weight",
        "forward_trunk.main.0.weight",
    ):
        if key not in renamed:
            raise ValueError(f"not an IconVSR state_dict: no {key!r}")
    channels = int(renamed["backward_fusion.weight"].shape[0])
    frames = int(renamed["edvr.fusion.feat_fusion.weight"].shape[1]) // channels
    config = {
        "num_feat": channels,
        "num_block": count_trunk_blocks(renamed, "backward_trunk"),
        "temporal_padding": (frames - 1) // 2,
        "keyframe_stride": 5,
    }
    return config, ("keyframe_stride",)
