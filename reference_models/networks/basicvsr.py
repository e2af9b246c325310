"""BasicVSR (Chan, Wang, Yu, Dong, Loy, "BasicVSR: The Search for Essential Components in Video
Super-Resolution and Beyond", CVPR 2021).

Composed from vsrblocks: :class:`~vsrblocks.recurrent.BidirectionalPropagation` with SPyNet flows
(:class:`~vsrblocks.align.SPyNet`) and one :class:`~vsrblocks.align.ResidualBlocksWithInputConv` trunk per
direction, a 1x1 fusion of both directions and the x4 pixel-shuffle tail. :func:`from_official` takes BasicSR's
``BasicVSR`` state_dicts (and MMagic's ``BasicVSRNet`` names) and reproduces BasicSR's outputs.
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
from vsrblocks.align.boff import ResidualBlocksWithInputConv
from vsrblocks.align.spynet import SPyNet
from vsrblocks.checkpoint import load_state_dict_checked
from vsrblocks.fused_conv import conv2d_activation
from vsrblocks.recurrent import (
    BidirectionalPropagation,
    ConcatCell,
    FeatureStore,
    FrameSource,
)
from vsrblocks.shapes import check_shape
from vsrblocks.upsample import PixelShuffleUpsampler

__all__ = [
    "MODEL",
    "PRESETS",
    "BasicVSR",
    "convert_official_state_dict",
    "from_official",
    "official_config_from_state_dict",
]

_SPYNET_CHANNELS = (32, 64, 32, 16)


def as_frame_source(frames: FrameSource | torch.Tensor) -> FrameSource:
    """A ``(B, T, 3, H, W)`` clip viewed per frame; a frame source as it is. The first frame must be RGB."""
    if isinstance(frames, torch.Tensor):
        check_shape(frames, "B T C H W", name="clip", C=3)
        frames = frames.unbind(1)
    if len(frames) < 1:
        raise ValueError("frames: expected at least one frame, got an empty sequence")
    check_shape(frames[0], "B C H W", name="frames[0]", C=3)
    return frames


def stacked(stream: Callable[..., None], clip: torch.Tensor) -> torch.Tensor:
    """Run a network's ``stream`` over ``clip`` and stack the emitted frames: ``(B, T, 3, sH, sW)``."""
    outputs: dict[int, torch.Tensor] = {}
    stream(as_frame_source(clip), emit=outputs.__setitem__)
    return torch.stack([outputs[i] for i in range(len(outputs))], dim=1)


class BasicVSR(nn.Module):
    """BasicVSR: bidirectional recurrent propagation of flow-aligned features, x4.

    Per frame ``i``: the backward trunk sees ``[x_i, warp(h_{i+1})]`` and the forward trunk ``[x_i, warp(g_{i-1})]``
    (``conv3x3 + LeakyReLU(0.1) + num_blocks`` residual blocks each, SPyNet flows); the output is
    ``tail(lrelu(fusion([h_i, g_i]))) + bilinear(x_i)``, the tail being ``upconv1`` + shuffle, ``upconv2``
    (to 64 channels) + shuffle, ``conv_hr``, ``conv_last`` with LeakyReLU(0.1) between.

    **Any length, bounded memory.** :meth:`stream` reads frames lazily and hands each SR frame to ``emit`` as
    the forward sweep produces it; the backward features wait in a :class:`~vsrblocks.recurrent.FeatureStore`
    (pass one that spills to disk for long videos). :meth:`forward` is :meth:`stream` over a clip, stacked.

    Args:
        num_frames: frames per clip for training and for windowed inference (BasicSR trains on 15);
            :meth:`forward` takes any ``T >= 1``.
        channels: C, feature channels (released: 64).
        num_blocks: residual blocks per direction (released: 30).
        scale: upsampling factor (released: 4; 2, 3 and powers of two build).
        spynet_channels: SPyNet's hidden widths (keep the default to load pretrained weights).

    Shape:
        - Input: ``(B, T, 3, H, W)``, RGB in [0, 1], any ``T >= 1``, ``H``, ``W``
        - Output: ``(B, T, 3, scale * H, scale * W)``

    Examples:
        >>> model = BasicVSR(channels=8, num_blocks=1, spynet_channels=(8, 8, 8, 8))
        >>> model(torch.rand(1, 3, 3, 10, 12)).shape
        torch.Size([1, 3, 3, 40, 48])
    """

    model_spec: dict[str, Any]  # set by create_model / from_official, for checkpoints to rebuild the model

    output_mode = "all"

    def __init__(
        self,
        num_frames: int = 15,
        channels: int = 64,
        num_blocks: int = 30,
        scale: int = 4,
        spynet_channels: tuple[int, ...] = _SPYNET_CHANNELS,
    ) -> None:
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.num_frames = num_frames
        self.channels = channels
        self.num_blocks = num_blocks
        self.scale = scale

        def trunk() -> nn.Module:
            return ConcatCell(ResidualBlocksWithInputConv(channels + 3, channels, num_blocks))

        self.propagation = BidirectionalPropagation(channels, trunk(), trunk(), SPyNet(tuple(spynet_channels)))
        self.fusion = nn.Conv2d(2 * channels, channels, 1)
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
            fused = conv2d_activation(
                self.fusion, torch.cat((features["backward"], features["forward"]), dim=1), "leaky_relu", 0.1
            )
            base = F.interpolate(source[i], scale_factor=self.scale, mode="bilinear", align_corners=False)
            emit(i, self.upsample(fused) + base)

        self.propagation.stream(source, emit=reconstruct, store=store)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return stacked(self.stream, clip)

    def extra_repr(self) -> str:
        return (
            f"num_frames={self.num_frames}, channels={self.channels}, num_blocks={self.num_blocks}, scale={self.scale}"
        )


MODEL = BasicVSR

PRESETS: dict[str, dict[str, Any]] = {
    # BasicSR's and MMagic's released REDS / Vimeo-90K models: 64 channels, 30 blocks per direction.
    "paper": {"num_frames": 15, "channels": 64, "num_blocks": 30},
    "released": {"num_frames": 15, "channels": 64, "num_blocks": 30},
    "tiny": {"num_frames": 3, "channels": 8, "num_blocks": 1, "spynet_channels": (8, 8, 8, 8)},
}

_RENAMES = (
    ("backward_resblocks.", "backward_trunk."),  # MMagic -> BasicSR
    ("forward_resblocks.", "forward_trunk."),
    *MMAGIC_TAIL,
)
_OURS = (
    ("backward_trunk.", "propagation.backward_cell.body."),
    ("forward_trunk.", "propagation.forward_cell.body."),
    *tail_renames("upsample."),
)


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a BasicSR ``BasicVSR`` or MMagic ``BasicVSRNet`` state_dict to :class:`BasicVSR` keys.

    ``backward_trunk``/``backward_resblocks`` -> ``propagation.backward_cell.body`` (forward likewise),
    ``spynet`` -> ``propagation.flow``, ``upconv1``/``upsample1.upsample_conv`` -> ``upsample.stages.0.conv``,
    ``upconv2`` -> ``upsample.stages.1.conv``, ``conv_hr``/``conv_last`` -> ``upsample.*``; SPyNet's constant
    ``mean``/``std`` are checked and dropped.

    Raises:
        CheckpointError: SPyNet's ``mean``/``std`` are not ImageNet's.
    """
    renamed = rename_prefixes(rename_prefixes(state_dict, _RENAMES), _OURS)
    return spynet_weights(renamed, into="propagation.flow.")


def _load_official(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    convert: Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]],
    spynet_path: str | None,
    what: str,
) -> None:
    """Unwrap ``params``/``params_ema``/``state_dict`` (and ``module.``), convert, add SPyNet from
    ``spynet_path`` when the weights lack it, load strictly."""
    for wrapper in ("params_ema", "params", "state_dict"):
        if isinstance(state_dict.get(wrapper), Mapping):
            state_dict = state_dict[wrapper]
            break
    converted = convert({k.removeprefix("module."): v for k, v in state_dict.items()})
    if spynet_path is not None and not any(k.startswith("propagation.flow.") for k in converted):
        converted.update(
            {f"propagation.flow.{k}": v for k, v in SPyNet.from_checkpoint(spynet_path).state_dict().items()}
        )
    load_state_dict_checked(model, converted, what=what)


def from_official(
    state_dict: Mapping[str, Any], *, num_feat: int = 64, num_block: int = 15, spynet_path: str | None = None
) -> BasicVSR:
    """Build a :class:`BasicVSR` from BasicSR's ``BasicVSR`` keyword arguments and a BasicSR or MMagic state_dict
    (bare or under ``params``/``params_ema``); it reproduces BasicSR's outputs. Returned in eval mode.

    ``spynet_path`` (a SPyNet file) is read only when the state_dict has no SPyNet weights.

    Raises:
        CheckpointError: (a ValueError) the state_dict does not fit; the message names the keys.
    """
    overrides = {"channels": num_feat, "num_blocks": num_block}
    model = BasicVSR(**{**PRESETS["paper"], **overrides})
    model.model_spec = {"name": "basicvsr", "preset": "paper", "overrides": overrides}
    _load_official(model, state_dict, convert_official_state_dict, spynet_path, "official BasicVSR state_dict")
    return model.eval()


def official_config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """BasicSR's ``BasicVSR`` keyword arguments (``num_feat``, ``num_block``) read off a BasicSR or MMagic
    state_dict; nothing is assumed.

    Raises:
        ValueError: not a BasicVSR state_dict (IconVSR's, with its EDVR and fusion weights, is not one).
    """
    renamed = rename_prefixes(state_dict, _RENAMES)
    trunk = renamed.get("backward_trunk.main.0.weight")
    forward = renamed.get("forward_trunk.main.0.weight")
    if trunk is None or forward is None or not any(k.startswith("spynet.") for k in renamed):
        raise ValueError(
            "not a BasicVSR state_dict: no backward_trunk/backward_resblocks, forward trunk or spynet weights"
        )
    channels = int(trunk.shape[0])
    if tuple(trunk.shape[:2]) != (channels, channels + 3) or tuple(forward.shape[:2]) != (channels, channels + 3):
        raise ValueError(
            "not a BasicVSR state_dict: its trunks do not take C + 3 channels (IconVSR's forward trunk takes 2C + 3)"
        )
    return {"num_feat": channels, "num_block": count_trunk_blocks(renamed, "backward_trunk")}, ()
