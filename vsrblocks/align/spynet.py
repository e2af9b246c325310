"""SPyNet optical flow (Ranjan & Black, "Optical Flow Estimation using a Spatial Pyramid Network", CVPR 2017).

The BasicSR/MMagic variant used by BasicVSR and VSR-Transformer: six pyramid levels built by 2x2
average pooling of ImageNet-normalised RGB, coarse to fine, each level refining the upsampled flow
with a five-layer 7x7 CNN fed ``[ref, warp(supp, flow), flow]``.

Pretrained weights are not downloaded at run time; bring one of these files and pass it to
:meth:`SPyNet.from_checkpoint` (both key layouts load):

- MMagic / MMEditing: ``spynet_20210409-c6c1bd09.pth``
  (https://download.openmmlab.com/mmediting/restorers/basicvsr/spynet_20210409-c6c1bd09.pth),
  keys ``basic_module.{l}.basic_module.{j}.conv.weight``; this is also the layout inside
  VSR-Transformer and BasicVSR checkpoints (``spynet.spynet.`` / ``spynet.`` prefix, found automatically).
- BasicSR: ``spynet_sintel_final-3d2a1287.pth`` (BasicSR GitHub release assets, ``experiments/pretrained_models/flownet/``),
  ``{"params": {"basic_module.{l}.basic_module.{2j}.weight", ...}}``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.checkpoint import CheckpointError, read_state_dict
from vsrblocks.fused_conv import conv2d_activation
from vsrblocks.shapes import check_shape

__all__ = ["SPyNet", "SPyNetBasicModule", "bidirectional_flows"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_BASICSR_KEY = re.compile(r"^basic_module\.(\d+)\.basic_module\.(\d+)\.(weight|bias)$")
_NORM_KEYS = ("mean", "std")
_PREFIX_MARKER = "basic_module.0.basic_module.0."
_WRAPPERS = ("params_ema", "params", "state_dict", "model")
_SPYNET_HIDDEN = (32, 64, 32, 16)  # the published network; pretrained weights need it


class _ConvReLU(nn.Module):
    """7x7 conv (+ ReLU); the attribute name ``conv`` gives MMagic's ``ConvModule`` keys."""

    def __init__(self, in_channels: int, out_channels: int, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=7, padding=3)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d_activation(self.conv, x, "relu") if self.relu else self.conv(x)


class SPyNetBasicModule(nn.Module):
    """One pyramid level of SPyNet: five 7x7 convs, 8 -> 32 -> 64 -> 32 -> 16 -> 2, ReLU between them.

    Input channels are ``[ref (3), warped supp (3), upsampled flow (2)]``; the output is the flow residual.

    Args:
        hidden_channels: widths of the four hidden convs; the default is SPyNet's (pretrained weights need it),
            narrower ones make small models for tests and demos.

    Shape:
        - Input: ``(B, 8, H, W)``
        - Output: ``(B, 2, H, W)``

    Examples:
        >>> SPyNetBasicModule()(torch.zeros(1, 8, 4, 6)).shape
        torch.Size([1, 2, 4, 6])
    """

    def __init__(self, hidden_channels: tuple[int, ...] = _SPYNET_HIDDEN) -> None:
        super().__init__()
        self.channels = (8, *hidden_channels, 2)
        pairs = list(zip(self.channels[:-1], self.channels[1:]))
        self.basic_module = nn.Sequential(
            *(_ConvReLU(cin, cout, relu=i < len(pairs) - 1) for i, (cin, cout) in enumerate(pairs))
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # mmcv ConvModule's initialisation, as in MMagic/VSRT.
        for layer in cast(list[_ConvReLU], self.basic_module):
            nn.init.kaiming_normal_(layer.conv.weight, a=0, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(cast(torch.Tensor, layer.conv.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape(x, "B C H W", name="x", C=self.channels[0])
        return cast(torch.Tensor, self.basic_module(x))

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


class SPyNet(nn.Module):
    """SPyNet optical flow, BasicSR/MMagic flavour: ``spynet(ref, supp)`` is the flow from ``ref`` to ``supp``.

    ``ref(p) ≈ supp(p + flow(p))``, so ``flow_warp(supp, spynet(ref, supp), padding_mode="border")``
    aligns ``supp`` to ``ref``. Frames of any size are resized (bilinear, ``align_corners=False``) to the
    next multiple of 32 in each dimension, and the flow is resized back and rescaled to input pixels.
    A frame paired with itself is *not* short-circuited: an untrained or imperfect network gives a
    non-zero self-flow, and VSR-Transformer relies on that value at the clip ends.

    Checkpoints: :meth:`load_state_dict` and :meth:`from_checkpoint` accept the MMagic/VSRT layout
    (``basic_module.{l}.basic_module.{j}.conv.weight``, the canonical layout of this module) and the
    BasicSR layout (``basic_module.{l}.basic_module.{2j}.weight``), with or without ``mean``/``std``
    buffers (ImageNet constants; checked, not stored). This also holds when SPyNet is a submodule of a
    larger model, so a parent's ``load_state_dict`` can pass either layout through.

    Args:
        hidden_channels: hidden widths of every level's basic module; keep the default (32, 64, 32, 16) to load
            pretrained weights.

    Shape:
        - ref, supp: ``(B, 3, H, W)``, RGB in ``[0, 1]``
        - Output: ``(B, 2, H, W)``, channel 0 = x displacement, channel 1 = y, in pixels

    Examples:
        >>> spynet = SPyNet()
        >>> spynet(torch.rand(2, 3, 23, 37), torch.rand(2, 3, 23, 37)).shape
        torch.Size([2, 2, 23, 37])
    """

    mean: torch.Tensor  # buffers (ImageNet normalisation), registered in __init__
    std: torch.Tensor

    num_levels = 6

    def __init__(self, hidden_channels: tuple[int, ...] = _SPYNET_HIDDEN) -> None:
        super().__init__()
        self.hidden_channels = tuple(hidden_channels)
        self.basic_module = nn.ModuleList(SPyNetBasicModule(self.hidden_channels) for _ in range(self.num_levels))
        # Constants, not learned: kept out of the state_dict so MMagic/BasicSR files (without them) load strictly.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def reset_parameters(self) -> None:
        for module in cast(list[SPyNetBasicModule], self.basic_module):
            module.reset_parameters()

    # ------------------------------------------------------------------ forward

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        dims = check_shape(ref, "B C H W", name="ref", C=3)
        check_shape(supp, "B C H W", name="supp", B=dims["B"], C=3, H=dims["H"], W=dims["W"])
        height, width = dims["H"], dims["W"]
        # Ceil by (n + 31) // 32, not -(-n // 32): exported to ONNX, integer division truncates toward zero.
        height_up, width_up = (height + 31) // 32 * 32, (width + 31) // 32 * 32
        # exported graphs resize always (an identity at multiples of 32) rather than branch on the size
        resized = torch.compiler.is_exporting() or (height_up, width_up) != (height, width)
        if resized:
            ref = F.interpolate(ref, size=(height_up, width_up), mode="bilinear", align_corners=False)
            supp = F.interpolate(supp, size=(height_up, width_up), mode="bilinear", align_corners=False)
        flow = self._pyramid_flow(ref, supp)
        if resized:
            flow = F.interpolate(flow, size=(height, width), mode="bilinear", align_corners=False)
            flow = torch.stack((flow[:, 0] * (width / width_up), flow[:, 1] * (height / height_up)), dim=1)
        return flow

    def _pyramid_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Coarse-to-fine flow for sizes that are multiples of 32 (``2 ** (num_levels - 1)``)."""
        # ref and supp share one normalisation and one pooling chain (stacked on the batch axis).
        pyramid = [(torch.cat((ref, supp)) - self.mean) / self.std]
        for _ in range(self.num_levels - 1):
            pyramid.append(F.avg_pool2d(pyramid[-1], kernel_size=2, stride=2, count_include_pad=False))
        refs, supps = zip(*(level.chunk(2) for level in pyramid[::-1]))
        batch, _, height, width = refs[0].shape
        flow = refs[0].new_zeros(batch, 2, height, width)
        for level, module in enumerate(self.basic_module):
            if level > 0:
                # Sizes are exact multiples of 2 here, so BasicSR's replicate padding never applies.
                flow = 2.0 * F.interpolate(flow, size=refs[level].shape[-2:], mode="bilinear", align_corners=True)
            warped = flow_warp(supps[level], flow, padding_mode="border")
            flow = flow + module(torch.cat((refs[level], warped, flow), dim=1))
        return cast(torch.Tensor, flow)

    # ------------------------------------------------------------------ checkpoints

    @staticmethod
    def find_prefix(state_dict: Mapping[str, Any]) -> str:
        """The prefix under which a (possibly larger) state_dict stores SPyNet, e.g. ``"spynet.spynet."``
        in VSR-Transformer checkpoints, ``"spynet."`` in BasicVSR ones, ``""`` for a bare SPyNet file.

        Raises:
            CheckpointError: no SPyNet weights, or several SPyNets, are found.
        """
        marker = _PREFIX_MARKER
        prefixes = sorted({key[: key.index(marker)] for key in state_dict if marker in key})
        if len(prefixes) != 1:
            found = ", ".join(repr(p) for p in prefixes) if prefixes else "none"
            raise CheckpointError(
                f"expected the weights of exactly one SPyNet (keys containing {marker!r}), found prefixes: {found}"
            )
        return prefixes[0]

    @staticmethod
    def convert_state_dict(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
        """Convert a SPyNet state_dict to this module's layout (MMagic/VSRT key names).

        Unwraps ``{"params": ...}`` / ``{"params_ema": ...}`` / ``{"state_dict": ...}`` containers,
        keeps only the keys under ``prefix`` (stripped), renames BasicSR's
        ``basic_module.{l}.basic_module.{2j}.weight`` to ``basic_module.{l}.basic_module.{j}.conv.weight``,
        and keeps optional ``mean``/``std`` entries (validated on load). Other keys are passed through,
        so a strict load still reports them.
        """
        for wrapper in _WRAPPERS:
            if isinstance(state_dict.get(wrapper), Mapping):
                state_dict = state_dict[wrapper]
                break
        converted: dict[str, Any] = {}
        for key, value in state_dict.items():
            if not key.startswith(prefix):
                continue
            key = key[len(prefix) :]
            match = _BASICSR_KEY.match(key)
            if match is not None and int(match.group(2)) % 2 == 0:
                level, index, kind = match.groups()
                key = f"basic_module.{level}.basic_module.{int(index) // 2}.conv.{kind}"
            converted[key] = value
        return converted

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Called for the root module and as a submodule: rename BasicSR keys in place (the children are
        # loaded from this same dict afterwards) and consume the normalisation constants.
        for key in [k for k in state_dict if k.startswith(prefix)]:
            match = _BASICSR_KEY.match(key[len(prefix) :])
            if match is not None and int(match.group(2)) % 2 == 0:
                level, index, kind = match.groups()
                state_dict[f"{prefix}basic_module.{level}.basic_module.{int(index) // 2}.conv.{kind}"] = state_dict.pop(
                    key
                )
        for name in _NORM_KEYS:
            value = state_dict.pop(prefix + name, None)
            if value is None:
                continue
            own = getattr(self, name)
            if tuple(value.shape) != tuple(own.shape) or not torch.allclose(
                value.float().cpu(), own.float().cpu(), atol=1e-3
            ):
                error_msgs.append(
                    f"{prefix}{name}: SPyNet expects the ImageNet {name} {own.flatten().tolist()}, "
                    f"the checkpoint has {value.flatten().tolist()} (shape {tuple(value.shape)})"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load MMagic/VSRT or BasicSR weights (see :meth:`convert_state_dict`).

        Raises:
            CheckpointError: with ``strict=True``, naming the missing keys, unexpected keys and shape mismatches.
        """
        converted = self.convert_state_dict(state_dict)
        if strict:
            _check_keys(self, converted)
        return super().load_state_dict(converted, strict=strict, assign=assign)

    @staticmethod
    def stored_hidden_channels(state_dict: Mapping[str, Any]) -> tuple[int, ...] | None:
        """The hidden widths of the basic modules in a state_dict converted by :meth:`convert_state_dict`
        (output channels of level 0's convolutions but the last), or ``None`` if it holds no such weights."""
        widths: list[int] = []
        while (weight := state_dict.get(f"basic_module.0.basic_module.{len(widths)}.conv.weight")) is not None:
            widths.append(int(weight.shape[0]))
        return tuple(widths[:-1]) if len(widths) > 1 else None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        prefix: str | None = None,
        map_location: str | torch.device = "cpu",
        hidden_channels: tuple[int, ...] | None = None,
    ) -> SPyNet:
        """Build a SPyNet from a checkpoint file (read with ``weights_only=True``).

        Args:
            path: a SPyNet file (MMagic or BasicSR layout) or a larger checkpoint containing one
                (VSR-Transformer, BasicVSR...).
            prefix: key prefix of the SPyNet weights; ``None`` finds it (see :meth:`find_prefix`).
            map_location: device of the returned module.
            hidden_channels: the basic modules' hidden widths to build; ``None`` takes them from the
                checkpoint (so a narrow SPyNet loads as such), falling back to SPyNet's own.

        Raises:
            CheckpointError: unreadable file, or weights that do not fit (the message names the keys).
        """
        state_dict = read_state_dict(path)
        if prefix is None:
            # No SPyNet inside: load at the root so the strict check names what is missing and unexpected.
            has_spynet = any(_PREFIX_MARKER in key for key in state_dict)
            try:
                prefix = cls.find_prefix(state_dict) if has_spynet else ""
            except CheckpointError as exc:
                raise CheckpointError(f"{os.fspath(path)}: {exc}; pass prefix= to choose one") from None
        converted = cls.convert_state_dict(state_dict, prefix=prefix)
        if hidden_channels is None:
            hidden_channels = cls.stored_hidden_channels(converted) or _SPYNET_HIDDEN
        model = cls(hidden_channels)
        try:
            model.load_state_dict(converted)
        except CheckpointError as exc:
            raise CheckpointError(f"{os.fspath(path)}: {exc}") from None
        return model.to(map_location).eval()


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _check_keys(module: SPyNet, state_dict: Mapping[str, Any]) -> None:
    own = module.state_dict()
    given = {k: v for k, v in state_dict.items() if k not in _NORM_KEYS}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    mismatched = sorted(
        f"{k}: {tuple(given[k].shape)} vs expected {tuple(own[k].shape)}"
        for k in set(own) & set(given)
        if tuple(own[k].shape) != tuple(given[k].shape)
    )
    problems = [
        f"{label}: {_summarise(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError("checkpoint does not fit SPyNet: " + "; ".join(problems))


def bidirectional_flows(spynet: nn.Module, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VSR-Transformer's flows between neighbouring frames, in one batched SPyNet call of ``2 * B * T`` pairs.

    ``flows_backward[:, i] = spynet(x_i, x_{i+1})`` (the last frame is paired with itself) and
    ``flows_forward[:, i] = spynet(x_i, x_{i-1})`` (the first frame is paired with itself), exactly as
    the official code, whose sequence padding gives the same numbers.

    Args:
        spynet: a flow network called as ``spynet(ref, supp) -> (N, 2, H, W)``, usually :class:`SPyNet`.
        clip: the LR frames, RGB in ``[0, 1]``.

    Returns:
        ``(flows_forward, flows_backward)``, in the order VSR-Transformer's feed-forward block takes them.

    Shape:
        - clip: ``(B, T, 3, H, W)``
        - Output: two ``(B, T, 2, H, W)`` tensors

    Examples:
        >>> forward, backward = bidirectional_flows(SPyNet(), torch.rand(1, 3, 3, 20, 24))
        >>> forward.shape, backward.shape
        (torch.Size([1, 3, 2, 20, 24]), torch.Size([1, 3, 2, 20, 24]))
    """
    dims = check_shape(clip, "B T C H W", name="clip", C=3)
    frames = dims["T"]
    following = [min(i + 1, frames - 1) for i in range(frames)]
    preceding = [max(i - 1, 0) for i in range(frames)]
    ref = torch.cat((clip, clip), dim=1).flatten(0, 1)
    supp = torch.cat((clip[:, following], clip[:, preceding]), dim=1).flatten(0, 1)
    flows = spynet(ref, supp).unflatten(0, (dims["B"], 2 * frames))
    return flows[:, frames:], flows[:, :frames]
