"""count_macs: the thop-style conv-only figure and the FlopCounterMode total, on layers with known counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reference_models.inference.flops import count_macs, count_parameters
from vsrblocks.attention import PositionAttention


def test_conv_linear_and_transposed_conv():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8*6*5 outputs x 3*9
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # 8*6*5 x 2*9
        nn.ConvTranspose2d(8, 4, 2, stride=2),  # 8*6*5 inputs x 4*4
        nn.Flatten(),
        nn.Linear(4 * 12 * 10, 7),  # 7 x 480
    )
    expected = 240 * 27 + 240 * 18 + 240 * 16 + 7 * 480
    assert count_macs(net, torch.rand(1, 3, 6, 5)) == {"conv": expected, "total": expected, "attention": 0}
    assert count_macs(net, torch.rand(2, 3, 6, 5))["conv"] == 2 * expected


def test_attention_products_are_only_in_the_total():
    pam = PositionAttention(16)
    n = 5 * 6
    macs = count_macs(pam, torch.rand(2, 16, 5, 6))
    assert macs["conv"] == 2 * n * (16 * 2 + 16 * 2 + 16 * 16)
    # Q K^T and S V; the fused kernel runs Q K^T at the value width (the 2 query/key channels zero-padded to 16)
    assert macs["attention"] == 2 * (n * n * 16 + n * n * 16)
    assert macs["total"] == macs["conv"] + macs["attention"]


def test_meta_device_and_hooks_removed():
    with torch.device("meta"):
        conv = nn.Conv2d(4, 4, 3, padding=1)
    assert count_macs(conv, torch.empty(1, 4, 8, 8, device="meta"))["conv"] == 64 * 4 * 36
    assert not conv._forward_hooks


def test_deformable_convolution_is_counted_in_both():
    deform = pytest.importorskip("vsrblocks.align").DeformConv2d
    module = deform(8, 8, deform_groups=2)
    macs = count_macs(module, torch.rand(1, 8, 5, 6))
    dcn = 30 * 8 * 8 * 9
    offsets = 30 * 8 * (3 * 2 * 9) * 9
    assert macs["conv"] == dcn + offsets
    assert macs["total"] == macs["conv"]


def test_count_parameters():
    assert count_parameters(nn.Linear(3, 2)) == 8
