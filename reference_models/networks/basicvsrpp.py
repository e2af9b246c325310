"""BasicVSR++ (Chan, Zhou, Xu, Loy, "BasicVSR++: Improving Video Super-Resolution with Enhanced Propagation
and Alignment", CVPR 2022).

Composed from vsrblocks: :class:`~vsrblocks.recurrent.SecondOrderGridPropagation` over four branches
(``backward_1``, ``forward_1``, ``backward_2``, ``forward_2``) with SPyNet flows and
:class:`~vsrblocks.align.SecondOrderDeformableAlignment`, residual-block trunks
(:class:`~vsrblocks.align.ResidualBlocksWithInputConv`) for feature extraction, the branches and the
reconstruction, and the x4 pixel-shuffle tail. The deformable convolution is pure PyTorch off CUDA, so it runs
on CPU and exports to ONNX without mmcv's or BasicSR's compiled operator. :func:`from_official` takes BasicSR's
``BasicVSRPlusPlus`` and MMagic's ``BasicVSRPlusPlusNet`` state_dicts and reproduces their outputs.
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
from vsrblocks.align.boff import ResidualBlocksWithInputConv
from vsrblocks.align.second_order_deformable import SecondOrderDeformableAlignment
from vsrblocks.align.spynet import SPyNet
from vsrblocks.recurrent import (
    ConcatCell,
    FeatureStore,
    FrameSource,
    SecondOrderGridPropagation,
)
from vsrblocks.upsample import PixelShuffleUpsampler

__all__ = [
    "MODEL",
    "PRESETS",
    "BasicVSRPlusPlus",
    "convert_official_state_dict",
    "from_official",
    "official_config_from_state_dict",
]

BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")


class BasicVSRPlusPlus(nn.Module):
    """BasicVSR++: second-order grid propagation with flow-guided deformable alignment, x4.

    Spatial features ``s_i`` (conv3x3 + LeakyReLU(0.1) + ``num_extract_blocks`` residual blocks); four
    propagation branches, each aligning the features of its two previous frames with a
    :class:`~vsrblocks.align.SecondOrderDeformableAlignment` and updating them with a residual trunk that sees
    ``s_i`` and every earlier branch at frame ``i``; the reconstruction trunk on all five, the x4 tail
    (``upconv1`` + shuffle, ``upconv2`` to 64 + shuffle, ``conv_hr``, ``conv_last``, LeakyReLU(0.1) between)
    and the bilinear x4 upsampling of the LR frame.

    **Any length, bounded memory.** :meth:`stream` reads frames lazily and hands each SR frame to ``emit`` as
    the last branch (``forward_2``) produces it; spatial features, earlier branches and flows wait in a
    :class:`~vsrblocks.recurrent.FeatureStore` (pass one that spills to disk for long videos).
    :meth:`forward` is :meth:`stream` over a clip, stacked. Unlike BasicSR, frames smaller than 64x64 run
    (SPyNet resizes to multiples of 32 itself).

    Args:
        num_frames: frames per clip for training and for windowed inference (the paper trains on 30);
            :meth:`forward` takes any ``T >= 1``.
        channels: C, feature channels (released: 64).
        num_blocks: residual blocks per propagation branch (released: 7).
        max_residue_magnitude: bound of the deformable offsets' residue to the flow, in pixels (10).
        deform_groups: deformable groups of the alignment (16; even, dividing 2C).
        num_extract_blocks: residual blocks of the feature extractor (5).
        num_reconstruct_blocks: residual blocks of the reconstruction (5).
        scale: upsampling factor (released: 4).
        spynet_channels: SPyNet's hidden widths (keep the default to load pretrained weights).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], any ``T >= 1``, ``H``, ``W``
        - Output: ``(B, T, 3, scale * H, scale * W)``

    Examples:
        >>> model = BasicVSRPlusPlus(channels=8, num_blocks=1, deform_groups=4, num_extract_blocks=1,
        ...                          num_reconstruct_blocks=1, spynet_channels=(8, 8, 8, 8))
        >>> model(torch.rand(1, 3, 3, 10, 12)).shape
        torch.Size([1, 3, 3, 40, 48])
    """

    model_spec: dict[str, Any]  # set by create_model / from_official, for checkpoints to rebuild the model

    output_mode = "all"

    def __init__(
        self,
        num_frames: int = 30,
        channels: int = 64,
        num_blocks: int = 7,
        max_residue_magnitude: float = 10.0,
        deform_groups: int = 16,
        num_extract_blocks: int = 5,
        num_reconstruct_blocks: int = 5,
        scale: int = 4,
        spynet_channels: tuple[int, ...] = (32, 64, 32, 16),
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.channels = channels
        self.num_blocks = num_blocks
        self.scale = scale
        self.propagation = SecondOrderGridPropagation(
            channels,
            extractor=ResidualBlocksWithInputConv(3, channels, num_extract_blocks),
            align={
                b: SecondOrderDeformableAlignment(
                    channels, deform_groups=deform_groups, max_residue_magnitude=max_residue_magnitude
                )
                for b in BRANCHES
            },
            cells={
                b: ConcatCell(ResidualBlocksWithInputConv((k + 2) * channels, channels, num_blocks))
                for k, b in enumerate(BRANCHES)
            },
            flow=SPyNet(tuple(spynet_channels)),
            branches=BRANCHES,
        )
        self.reconstruction = ResidualBlocksWithInputConv(
            (len(BRANCHES) + 1) * channels, channels, num_reconstruct_blocks
        )
        self.upsample = PixelShuffleUpsampler(channels, scale, hidden_channels=64, hr_conv=True)

    def stream(
        self,
        frames: FrameSource | torch.Tensor,
        *,
        emit: Callable[[int, torch.Tensor], None],
        store: FeatureStore | None = None,
    ) -> None:
        """Super-resolve ``frames`` (a frame source, ``frames[i] -> (B, 3, H, W)``, or a clip), calling
        ``emit(i, sr_frame)`` with each ``(B, 3, scale * H, scale * W)`` frame in order ``i = 0 ... T-1``."""
        source = as_frame_source(frames)

        def reconstruct(i: int, features: dict[str, torch.Tensor]) -> None:
            hidden = self.reconstruction(torch.cat(list(features.values()), dim=1))
            base = F.interpolate(source[i], scale_factor=self.scale, mode="bilinear", align_corners=False)
            emit(i, self.upsample(hidden) + base)

        self.propagation.stream(source, emit=reconstruct, store=store)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return stacked(self.stream, clip)

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, channels={self.channels}, num_blocks={self.num_blocks}, scale={self.scale}"
        )


MODEL = BasicVSRPlusPlus

PRESETS: dict[str, dict[str, Any]] = {
    # BasicSR's and MMagic's released REDS / Vimeo-90K x4 models: 64 channels, 7 blocks per branch.
    "paper": {"num_frames": 30, "channels": 64, "num_blocks": 7},
    "released": {"num_frames": 30, "channels": 64, "num_blocks": 7},
    "tiny": {
        "num_frames": 3,
        "channels": 8,
        "num_blocks": 1,
        "deform_groups": 4,
        "num_extract_blocks": 1,
        "num_reconstruct_blocks": 1,
        "spynet_channels": (8, 8, 8, 8),
    },
}

_RENAMES = MMAGIC_TAIL  # the only names in which MMagic's BasicVSRPlusPlusNet differs from BasicSR
_OURS = (
    ("feat_extract.", "propagation.extractor."),
    ("deform_align.", "propagation.align."),
    *((f"backbone.{b}.", f"propagation.cells.{b}.body.") for b in BRANCHES),
    *tail_renames("upsample."),
)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BasicSR ``BasicVSRPlusPlus`` or MMagic ``BasicVSRPlusPlusNet`` state_dict to
    :class:`BasicVSRPlusPlus` keys.

    ``feat_extract`` -> ``propagation.extractor``, ``deform_align.{branch}`` -> ``propagation.align.{branch}``,
    ``backbone.{branch}`` -> ``propagation.cells.{branch}.body``, ``spynet`` -> ``propagation.flow``, the tail
    (``upconv1``/``upsample1.upsample_conv`` ...) -> ``upsample.*``; ``reconstruction`` keeps its name;
    SPyNet's constant ``mean``/``std`` are checked and dropped.

    Raises:
        CheckpointError: SPyNet's ``mean``/``std`` are not ImageNet's.
    """
    renamed = rename_prefixes(rename_prefixes(state_dict, _RENAMES), _OURS)
    return spynet_weights(renamed, into="propagation.flow.")


def from_official(
    state_dict: Mapping[str, Any],
    *,
    mid_channels: int = 64,
    num_blocks: int = 7,
    max_residue_magnitude: float = 10,
    is_low_res_input: bool = True,
    spynet_path: str | None = None,
    cpu_cache_length: int = 100,
) -> BasicVSRPlusPlus:
    """Build a :class:`BasicVSRPlusPlus` from BasicSR's ``BasicVSRPlusPlus`` keyword arguments and a BasicSR or
    MMagic state_dict (bare or under ``params``/``params_ema``); it reproduces their outputs. Returned in eval
    mode.

    ``spynet_path`` is read only when the state_dict has no SPyNet weights. ``cpu_cache_length`` is accepted
    and not needed: :meth:`BasicVSRPlusPlus.stream` with a spilling store bounds memory for any length.

    Raises:
        ValueError: ``is_low_res_input=False`` (the same-resolution deblurring/denoising variant) is not built.
        CheckpointError: (a ValueError) the state_dict does not fit; the message names the keys.
    """
    if not is_low_res_input:
        raise ValueError(
            "is_low_res_input=False (BasicVSR++ for same-resolution restoration) is not supported; only the x4 model"
        )
    overrides = {
        "channels": mid_channels,
        "num_blocks": num_blocks,
        "max_residue_magnitude": float(max_residue_magnitude),
    }
    model = BasicVSRPlusPlus(**{**PRESETS["paper"], **overrides})
    model.model_spec = {"name": "basicvsrpp", "preset": "paper", "overrides": overrides}
    _load_official(model, state_dict, convert_official_state_dict, spynet_path, "official BasicVSR++ state_dict")
    return model.eval()


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """BasicSR's ``BasicVSRPlusPlus`` keyword arguments read off a BasicSR or MMagic state_dict: ``mid_channels``
    and ``num_blocks`` from the weights; ``max_residue_magnitude`` (no weight depends on it) takes the
    released 10.

    Raises:
        ValueError: not a BasicVSR++ state_dict, or the same-resolution variant (strided feature extractor).
    """
    backbone = state_dict.get("backbone.backward_1.main.0.weight")
    if backbone is None or "deform_align.backward_1.weight" not in state_dict:
        raise ValueError("not a BasicVSR++ state_dict: no backbone.backward_1 / deform_align.backward_1 weights")
    if "feat_extract.main.0.weight" not in state_dict:
        raise ValueError(
            "a BasicVSR++ state_dict of the same-resolution variant (is_low_res_input=False), which is not supported"
        )
    config = {
        "mid_channels": int(backbone.shape[0]),
        "num_blocks": count_trunk_blocks(state_dict, "backbone.backward_1"),
        "max_residue_magnitude": 10,
    }
    return config, ("max_residue_magnitude",)
