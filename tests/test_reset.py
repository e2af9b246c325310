"""reset_submodules and the blocks whose reset_parameters is built on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vsrblocks.attention import ChannelAttention, DualAttention, MaskedSelfAttention, SpatialAttention, TSAFusion
from vsrblocks.reset import reset_submodules


class _ZeroHead(nn.Module):
    """A container with a custom initialisation of its own layer (as DCN packs zero their offset conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.conv.weight)


def test_inner_layers_are_reset_before_their_container():
    outer = nn.Sequential(_ZeroHead(), nn.Conv2d(2, 2, 1))
    with torch.no_grad():
        for p in outer.parameters():
            p.fill_(5.0)
    reset_submodules(outer)
    assert torch.count_nonzero(outer[0].conv.weight) == 0  # the container's zero init wins over Conv2d's default
    assert (outer[0].conv.bias != 5.0).all() and (outer[1].weight != 5.0).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: ChannelAttention(16, 4, "avg+max", kernel_size=3, shared=False),
        lambda: SpatialAttention(8),
        lambda: TSAFusion(8, num_frames=3),
        lambda: DualAttention(8, inter_channels=8, reduction=2),
        lambda: MaskedSelfAttention(8),
    ],
)
def test_reset_parameters_redraws_every_parameter(make):
    block = make()
    with torch.no_grad():
        for p in block.parameters():
            p.fill_(5.0)
    block.reset_parameters()
    for name, p in block.named_parameters():
        assert not torch.all(p == 5.0), f"{name} was not re-initialised"
