"""flow_warp: identity, integer shifts, mirror symmetry, half precision and shape errors, over random shapes."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_compiles
from tests.strategies import frame_shapes, seeded_rand, seeded_randn, seeds
from vsrblocks.align.flow_warp import FlowWarp, flow_warp

paddings = st.sampled_from(["zeros", "border", "reflection"])


@given(shape=frame_shapes(), seed=seeds, padding=paddings)
def test_zero_flow_is_identity(shape, seed, padding):
    x = seeded_randn(shape, seed)
    flow = torch.zeros(shape[0], 2, *shape[2:])
    torch.testing.assert_close(flow_warp(x, flow, padding_mode=padding), x, atol=1e-5, rtol=0)


@given(shape=frame_shapes(), seed=seeds, dx=st.integers(-3, 3), dy=st.integers(-3, 3))
def test_integer_flow_is_a_shift(shape, seed, dx, dy):
    """out(y, x) = in(y + dy, x + dx) where that lies inside; zeros outside with padding 'zeros'."""
    batch, channels, height, width = shape
    x = seeded_randn(shape, seed)
    flow = torch.empty(batch, 2, height, width)
    flow[:, 0], flow[:, 1] = float(dx), float(dy)
    out = flow_warp(x, flow)
    expected = torch.zeros_like(x)
    ys = slice(max(0, -dy), min(height, height - dy))
    xs = slice(max(0, -dx), min(width, width - dx))
    src_ys = slice(ys.start + dy, ys.stop + dy)
    src_xs = slice(xs.start + dx, xs.stop + dx)
    expected[..., ys, xs] = x[..., src_ys, src_xs]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@given(shape=frame_shapes(), seed=seeds, padding=paddings)
def test_horizontal_flip_commutes(shape, seed, padding):
    """Mirroring the input and the flow (with its x component negated) mirrors the output."""
    x = seeded_randn(shape, seed)
    flow = 2.0 * seeded_randn((shape[0], 2, *shape[2:]), seed + 1)
    flipped_flow = torch.flip(flow, dims=[-1]) * torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(
        flow_warp(torch.flip(x, dims=[-1]), flipped_flow, padding_mode=padding),
        torch.flip(flow_warp(x, flow, padding_mode=padding), dims=[-1]),
        atol=1e-5,
        rtol=0,
    )


@given(shape=frame_shapes(), seed=seeds)
def test_vertical_flip_commutes(shape, seed):
    x = seeded_randn(shape, seed)
    flow = 2.0 * seeded_randn((shape[0], 2, *shape[2:]), seed + 1)
    flipped_flow = torch.flip(flow, dims=[-2]) * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(
        flow_warp(torch.flip(x, dims=[-2]), flipped_flow), torch.flip(flow_warp(x, flow), dims=[-2]), atol=1e-5, rtol=0
    )


def test_fractional_flow_interpolates_linearly():
    x = torch.arange(5.0).view(1, 1, 1, 5)
    flow = torch.zeros(1, 2, 1, 5)
    flow[:, 0] = 0.25
    torch.testing.assert_close(
        flow_warp(x, flow, padding_mode="border")[0, 0, 0], torch.tensor([0.25, 1.25, 2.25, 3.25, 4.0])
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    x = seeded_rand((2, 3, 300, 301), 0)
    flow = 3.0 * seeded_randn((2, 2, 300, 301), 1)
    out = flow_warp(x.to(dtype), flow.to(dtype), padding_mode="border")
    assert out.dtype == dtype
    reference = flow_warp(x.to(dtype).float(), flow.to(dtype).float(), padding_mode="border")
    torch.testing.assert_close(out.float(), reference, atol=1e-2, rtol=0)


def test_shape_errors():
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\)"):
        flow_warp(torch.zeros(3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"flow: expected \(B, two, H, W\) with B=1, two=2, H=8, W=8"):
        flow_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 2, 8, 7))
    with pytest.raises(ValueError, match="flow"):
        flow_warp(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="flow"):
        flow_warp(torch.zeros(2, 3, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(TypeError):
        flow_warp(torch.zeros(1, 3, 8, 8), None)  # type: ignore[arg-type]


def test_module_form_and_compile():
    x, flow = seeded_randn((1, 4, 9, 11), 2), seeded_randn((1, 2, 9, 11), 3)
    module = FlowWarp(padding_mode="border")
    torch.testing.assert_close(module(x, flow), flow_warp(x, flow, padding_mode="border"))
    assert "border" in repr(module)
    assert_compiles(module, x, flow)
