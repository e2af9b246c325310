from functools import partial

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from tests.checks import (
    assert_batch_independent,
    assert_compiles,
    assert_half_precision_finite,
    fused_kernel_calls,
)
from tests.strategies import batches, seeded_randn, seeds, sizes
from vsrblocks import PixelShuffleUpsampler, fused_conv
from vsrblocks.fused_conv import unfused
from vsrblocks.upsample import icnr_

SCALES = [2, 3, 4, 8]


@given(b=batches, h=sizes, w=sizes, scale=st.sampled_from(SCALES), out=st.sampled_from([1, 3, None]), seed=seeds)
def test_shape_any_size(b, h, w, scale, out, seed):
    torch.manual_seed(seed)
    up = PixelShuffleUpsampler(channels=4, scale=scale, out_channels=out)
    y = up(seeded_randn((b, 4, h, w), seed))
    assert y.shape == (b, out or 4, scale * h, scale * w)


@pytest.mark.parametrize("scale, factors", [(2, [2]), (3, [3]), (4, [2, 2]), (8, [2, 2, 2])])
def test_stage_structure(scale, factors):
    up = PixelShuffleUpsampler(channels=6, scale=scale)
    assert [stage.factor for stage in up.stages] == factors
    for stage in up.stages:
        assert stage.conv.out_channels == 6 * stage.factor**2


@given(scale=st.sampled_from(SCALES), h=sizes, w=sizes, seed=seeds)
def test_icnr_stages_are_nearest_upsampling(scale, h, w, seed):
    """A fresh ICNR stage is nearest-upsampling of the sub-kernel's conv: constant in every r x r block."""
    torch.manual_seed(seed)
    up = PixelShuffleUpsampler(channels=5, scale=scale)
    x = seeded_randn((2, 5, h, w), seed)
    for stage in up.stages:
        r = stage.factor
        y = stage(x)
        sub_weight = stage.conv.weight[:: r * r]
        sub_bias = stage.conv.bias[:: r * r]
        sub_conv = F.conv2d(x, sub_weight, sub_bias, padding=1)
        expected = stage.act(F.interpolate(sub_conv, scale_factor=r, mode="nearest"))
        torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)
        blocks = y.unfold(2, r, r).unfold(3, r, r)  # (B, C, H, W, r, r)
        assert torch.equal(blocks, blocks[..., :1, :1].expand_as(blocks))
        x = y


def test_without_icnr_has_checkerboard():
    """The ICNR test above can fail: PyTorch's default init is not constant within blocks."""
    torch.manual_seed(0)
    up = PixelShuffleUpsampler(channels=4, scale=2, icnr=False)
    y = up.stages[0](torch.randn(1, 4, 6, 6))
    blocks = y.unfold(2, 2, 2).unfold(3, 2, 2)
    assert not torch.allclose(blocks, blocks[..., :1, :1].expand_as(blocks))


@given(scale=st.sampled_from(SCALES), shift=st.sampled_from([-1, 1]), dim=st.sampled_from([2, 3]), seed=seeds)
def test_commutes_with_lr_pixel_shifts(scale, shift, dim, seed):
    """Shifting the input by one LR pixel shifts the output by ``scale`` HR pixels (away from the borders,
    where zero padding and the wrapped-around column differ)."""
    torch.manual_seed(seed)
    up = PixelShuffleUpsampler(channels=4, scale=scale)
    x = seeded_randn((1, 4, 12, 12), seed)
    with torch.no_grad():
        shifted = up(torch.roll(x, shift, dims=dim))
        expected = torch.roll(up(x), shift * scale, dims=dim)
    margin = 3 * scale
    interior = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    torch.testing.assert_close(shifted[interior], expected[interior], atol=1e-5, rtol=1e-5)


def test_icnr_rejects_incompatible_weight():
    with pytest.raises(ValueError, match="multiple of scale"):
        icnr_(torch.empty(6, 3, 3, 3), scale=2)


@pytest.mark.parametrize("scale", [0, 1, 5, 6, 12])
def test_rejects_bad_scale(scale):
    with pytest.raises(ValueError, match="scale must be 3 or a power of 2"):
        PixelShuffleUpsampler(channels=4, scale=scale)


def test_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        PixelShuffleUpsampler(channels=4, scale=2, kernel_size=4)


def test_wrong_channels_message():
    up = PixelShuffleUpsampler(channels=8, scale=2)
    with pytest.raises(ValueError, match=r"input: expected \(B, C, H, W\) with C=8, got \(1, 3, 5, 5\)"):
        up(torch.zeros(1, 3, 5, 5))


def test_activation_and_no_activation():
    up = PixelShuffleUpsampler(channels=4, scale=4, act_layer=None)
    assert all(isinstance(stage.act, nn.Identity) for stage in up.stages)
    up = PixelShuffleUpsampler(channels=4, scale=4)
    assert all(isinstance(stage.act, nn.LeakyReLU) and stage.act.negative_slope == 0.1 for stage in up.stages)


def test_gradients_reach_every_parameter():
    up = PixelShuffleUpsampler(channels=4, scale=4)
    up(torch.randn(2, 4, 5, 6)).square().mean().backward()
    for name, p in up.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_batch_independent_compiles_and_half():
    torch.manual_seed(0)
    up = PixelShuffleUpsampler(channels=4, scale=4)
    x = torch.randn(2, 4, 7, 5)
    assert_batch_independent(up, x)
    assert_compiles(up, x)
    assert_half_precision_finite(up, x, dtype=torch.bfloat16)


def test_repr_mentions_hyperparameters():
    assert "scale=4" in repr(PixelShuffleUpsampler(channels=4, scale=4))


def _basicsr_x4_tail(up: PixelShuffleUpsampler, x: torch.Tensor) -> torch.Tensor:
    """BasicSR's tail written out: lrelu(shuffle(upconv1)), lrelu(shuffle(upconv2)), lrelu(conv_hr), conv_last."""
    out = F.leaky_relu(F.pixel_shuffle(up.stages[0].conv(x), 2), 0.1)
    out = F.leaky_relu(F.pixel_shuffle(up.stages[1].conv(out), 2), 0.1)
    out = F.leaky_relu(up.conv_hr(out), 0.1)
    return up.conv_last(out)


@pytest.mark.parametrize("channels", [8, 32, 64])
def test_basicsr_x4_tail_at_any_width(channels):
    torch.manual_seed(0)
    up = PixelShuffleUpsampler(channels, 4, hidden_channels=64, hr_conv=True, icnr=False).double()
    shapes = {name: tuple(p.shape) for name, p in up.named_parameters()}
    assert shapes["stages.0.conv.weight"] == (4 * channels, channels, 3, 3)
    assert shapes["stages.1.conv.weight"] == (4 * 64, channels, 3, 3)
    assert shapes["conv_hr.weight"] == (64, 64, 3, 3)
    assert shapes["conv_last.weight"] == (3, 64, 3, 3)
    x = seeded_randn((1, channels, 5, 7), 3, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(up(x), _basicsr_x4_tail(up, x), atol=1e-12, rtol=0)
    assert "hidden_channels=64, hr_conv=True" in repr(up)


@given(
    b=batches,
    h=sizes,
    w=sizes,
    scale=st.sampled_from(SCALES),
    hidden=st.sampled_from([2, 5]),
    hr=st.booleans(),
    out=st.sampled_from([3, None]),
    seed=seeds,
)
def test_hidden_width_any_size(b, h, w, scale, hidden, hr, out, seed):
    torch.manual_seed(seed)
    up = PixelShuffleUpsampler(channels=4, scale=scale, out_channels=out, hidden_channels=hidden, hr_conv=hr)
    y = up(seeded_randn((b, 4, h, w), seed))
    assert y.shape == (b, out or hidden, scale * h, scale * w)
    # stages before the last keep C; ICNR still holds at the changed width
    assert all(stage.conv.in_channels == 4 for stage in up.stages)
    last = up.stages[-1]
    assert last.conv.out_channels == hidden * last.factor**2
    assert torch.equal(last.conv.weight[0], last.conv.weight[last.factor**2 - 1])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_output_keeps_the_input_memory_format_and_values(memory_format):
    # the stages run channels-last on CPU; callers must get their own layout back and the float64 values
    torch.manual_seed(0)
    up = PixelShuffleUpsampler(8, 4, hidden_channels=6, hr_conv=True)
    x = torch.randn(2, 8, 5, 7)
    out = up(x.contiguous(memory_format=memory_format))
    assert out.is_contiguous(memory_format=memory_format)
    with torch.no_grad():
        exact = up.double()(x.double())
    # float32 rounding of four chained convolutions of at most 9 * 8 = 72 terms each
    torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-5 * exact.abs().max().item())


@pytest.mark.parametrize("act_layer, fused_convs", [(partial(nn.LeakyReLU, 0.1), 3), (nn.ReLU, 3), (nn.GELU, 0)])
def test_activations_inside_the_convolutions_change_nothing(act_layer, fused_convs):
    """In inference the tail's ReLU/LeakyReLU run inside the convolutions (two stages and ``conv_hr``, before the
    pixel shuffle, which they commute with): bit-identical in float32 to the separate operations; other
    activations run as modules."""
    torch.manual_seed(0)
    up = PixelShuffleUpsampler(8, 4, hidden_channels=6, hr_conv=True, act_layer=act_layer).eval()
    x = seeded_randn((2, 8, 7, 9), 1)  # batch 2: PyTorch runs these convolutions with oneDNN
    with torch.no_grad():
        fused: list[torch.Tensor] = []
        calls = fused_kernel_calls(lambda: fused.append(up(x)))
        with unfused():
            separate = up(x)
    if fused_conv._KERNELS:
        assert calls == fused_convs
    torch.testing.assert_close(fused[0], separate, rtol=0, atol=0)


def test_a_hooked_activation_is_still_called_after_the_shuffle():
    up = PixelShuffleUpsampler(4, 2, hr_conv=True).eval()
    seen: list[tuple[int, ...]] = []
    up.act_hr.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    up.stages[0].act.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    with torch.no_grad():
        up(torch.rand(1, 4, 5, 6))
    assert seen == [(1, 4, 10, 12), (1, 4, 10, 12)]
