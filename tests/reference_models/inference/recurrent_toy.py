"""Tiny recurrent networks on vsrblocks' propagation blocks, with the ``stream`` contract of BasicVSR and
BasicVSR++, for testing the streaming plumbing whatever networks are registered (registered as
``recurrent_toy`` by the tests that need a name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vsrblocks.align.flow_warp import flow_warp
from vsrblocks.recurrent import BidirectionalPropagation, ConcatCell, FeatureStore, SecondOrderGridPropagation

__all__ = ["RecurrentToy", "MODEL", "PRESETS"]


class _Flow(nn.Module):
    """A small learned flow: enough to make warping (and so every flow the store keeps) matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(6, 2, 3, padding=1)

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        return 2 * torch.tanh(self.conv(torch.cat((ref, supp), dim=1)))


class _WarpAlign(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feat_1, feat_2, current, flow_1, flow_2):
        return self.mix(torch.cat((flow_warp(feat_1, flow_1), flow_warp(feat_2, flow_2)), dim=1))


class RecurrentToy(nn.Module):
    """Bidirectional (``grid=False``) or second-order grid propagation, then a pixel-shuffle tail (x2)."""

    output_mode = "all"

    def __init__(self, num_frames: int = 3, channels: int = 4, grid: bool = False, scale: int = 2) -> None:
        super().__init__()
        self.num_frames, self.scale, self.channels, self.grid = num_frames, scale, channels, grid
        c = channels
        if grid:
            names = ("backward_1", "forward_1", "backward_2", "forward_2")
            self.propagation = SecondOrderGridPropagation(
                c,
                nn.Conv2d(3, c, 3, padding=1),
                {n: _WarpAlign(c) for n in names},
                {n: ConcatCell(nn.Conv2d((k + 2) * c, c, 3, padding=1)) for k, n in enumerate(names)},
                _Flow(),
                branches=names,
            )
            width = 5 * c
        else:
            self.propagation = BidirectionalPropagation(
                c, ConcatCell(nn.Conv2d(3 + c, c, 3, padding=1)), ConcatCell(nn.Conv2d(3 + c, c, 3, padding=1)), _Flow()
            )
            width = 2 * c
        self.tail = nn.Sequential(nn.Conv2d(width, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def stream(self, frames, *, emit: Callable[[int, torch.Tensor], None], store: FeatureStore | None = None) -> None:
        if isinstance(frames, torch.Tensor):
            frames = frames.unbind(1)

        def reconstruct(i: int, features: dict[str, torch.Tensor]) -> None:
            base = F.interpolate(frames[i], scale_factor=self.scale, mode="bilinear", align_corners=False)
            emit(i, self.tail(torch.cat(list(features.values()), dim=1)) + base)

        self.propagation.stream(frames, emit=reconstruct, store=store)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        out: dict[int, torch.Tensor] = {}
        self.stream(clip, emit=out.__setitem__)
        return torch.stack([out[i] for i in range(len(out))], dim=1)


MODEL = RecurrentToy
PRESETS: dict[str, dict[str, Any]] = {"paper": {"grid": True}, "tiny": {"grid": True}, "bidirectional": {}}
