"""SecondOrderDeformableAlignment: BasicVSR++'s offset formula written out against torchvision's deformable
convolution, a fresh module samples exactly along the flows, both backends agree, any size, shape errors,
half precision."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

from tests.checks import assert_batch_independent, assert_half_precision_finite
from tests.strategies import batches, seeded_randn, seeds, sizes
from vsrblocks.align import SecondOrderDeformableAlignment, flow_warp
from vsrblocks.align.deform_conv import torchvision_available


def randomised(channels: int = 8, groups: int = 4, seed: int = 0) -> SecondOrderDeformableAlignment:
    torch.manual_seed(seed)
    align = SecondOrderDeformableAlignment(channels, deform_groups=groups, max_residue_magnitude=3.0, backend="torch")
    with torch.no_grad():
        align.conv_offset[-1].weight.normal_(0.0, 0.05)  # zero-initialised: learned residues and masks
        align.conv_offset[-1].bias.normal_(0.0, 0.5)
    return align


def inputs(b: int, c: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, ...]:
    feats = [seeded_randn((b, c, h, w), seed + k) for k in range(3)]
    flows = [2.0 * seeded_randn((b, 2, h, w), seed + 3 + k) for k in range(2)]
    return (*feats, *flows)


@pytest.mark.skipif(not torchvision_available(), reason="torchvision's deform_conv2d is the reference")
def test_basicvsrpp_formula_with_torchvision():
    import torchvision

    align = randomised()
    feat_1, feat_2, current, flow_1, flow_2 = inputs(2, 8, 9, 11, 0)
    cond = torch.cat((flow_warp(feat_1, flow_1), current, flow_warp(feat_2, flow_2), flow_1, flow_2), 1)
    o1, o2, m = torch.chunk(align.conv_offset(cond), 3, dim=1)
    offset_1, offset_2 = torch.chunk(3.0 * torch.tanh(torch.cat((o1, o2), 1)), 2, dim=1)
    offset_1 = offset_1 + flow_1.flip(1).repeat(1, offset_1.size(1) // 2, 1, 1)
    offset_2 = offset_2 + flow_2.flip(1).repeat(1, offset_2.size(1) // 2, 1, 1)
    expected = torchvision.ops.deform_conv2d(
        torch.cat((feat_1, feat_2), 1),
        torch.cat((offset_1, offset_2), 1),
        align.weight,
        align.bias,
        padding=1,
        mask=torch.sigmoid(m),
    )
    with torch.no_grad():
        torch.testing.assert_close(align(feat_1, feat_2, current, flow_1, flow_2), expected, atol=1e-5, rtol=0)
        align.backend = "torchvision"
        torch.testing.assert_close(align(feat_1, feat_2, current, flow_1, flow_2), expected, atol=1e-5, rtol=0)


def test_fresh_module_samples_along_the_flows():
    """Zero residue, mask 1/2: with constant integer flows, a half-weighted convolution of the shifted features."""
    torch.manual_seed(0)
    align = SecondOrderDeformableAlignment(4, deform_groups=2)
    b, h, w = 1, 12, 13
    feat_1, feat_2, current, _, _ = inputs(b, 4, h, w, 1)
    flow_1 = torch.tensor([2.0, -1.0]).view(1, 2, 1, 1).expand(b, 2, h, w)  # x = +2, y = -1
    flow_2 = torch.tensor([-3.0, 2.0]).view(1, 2, 1, 1).expand(b, 2, h, w)
    with torch.no_grad():
        out = align(feat_1, feat_2, current, flow_1, flow_2)
        shifted = torch.cat((torch.roll(feat_1, (1, -2), (2, 3)), torch.roll(feat_2, (-2, 3), (2, 3))), 1)
        expected = 0.5 * F.conv2d(shifted, align.weight, padding=1) + align.bias.view(1, -1, 1, 1)
    inner = (slice(None), slice(None), slice(4, h - 4), slice(5, w - 5))  # away from the wrap-around of roll
    torch.testing.assert_close(out[inner], expected[inner], atol=1e-5, rtol=0)


@given(b=batches, h=sizes, w=sizes, seed=seeds)
@settings(max_examples=6)
def test_any_size_and_batch_independent(b, h, w, seed):
    align = randomised(seed=seed % 5)
    args = inputs(b, 8, h, w, seed)
    with torch.no_grad():
        assert align(*args).shape == (b, 8, h, w)
        assert_batch_independent(align, *args, atol=1e-5)


def test_shape_errors():
    align = randomised()
    feat_1, feat_2, current, flow_1, flow_2 = inputs(1, 8, 6, 7, 0)
    with pytest.raises(ValueError, match=r"feat_1: expected \(B, C, H, W\) with C=8"):
        align(feat_1[:, :4], feat_2, current, flow_1, flow_2)
    with pytest.raises(
        ValueError, match=r"current: expected \(B, C, H, W\) with B=1, C=8, H=6, W=7, got \(1, 8, 6, 8\)"
    ):
        align(feat_1, feat_2, F.pad(current, (0, 1)), flow_1, flow_2)
    with pytest.raises(ValueError, match=r"flow_2: expected \(B, C, H, W\) with B=1, C=2"):
        align(feat_1, feat_2, current, flow_1, flow_2[:, :1])
    with pytest.raises(ValueError, match="deform_groups must be even and divide 2 \\* channels = 16"):
        SecondOrderDeformableAlignment(8, deform_groups=3)


def test_runs_in_bfloat16():
    """(Compiled inside the grid propagation: tests/recurrent/test_propagation.py::test_compiles.)"""
    assert_half_precision_finite(randomised(), *inputs(1, 8, 6, 7, 0))
