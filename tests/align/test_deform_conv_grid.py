"""The pure-PyTorch deformable convolution against torchvision's operator over the kind of grid
torchvision's own ``TestDeformConv`` covers (shapes, convolution and offset groups, mask or none,
stride, padding, dilation, batch sizes including 0, non-contiguous inputs, float32 / float64, gradients
against float64, gradcheck), written small enough for a CPU run of a few seconds; and its edge cases:
infinite, huge and NaN offsets, and float32 sample positions just below an integer."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch.autograd import gradcheck

from tests.strategies import seeded_rand, seeded_randn
from vsrblocks.align import deform_conv2d
from vsrblocks.align.deform_conv import torchvision_available

pytestmark = pytest.mark.skipif(not torchvision_available(), reason="torchvision deform_conv2d not available")

# (C_in, C_out, groups, deform_groups, kernel, stride, padding, dilation, H, W)
GRID = [
    (6, 2, 2, 3, (3, 2), (2, 1), (1, 0), (3, 1), 5, 4),  # torchvision's get_fn_args configuration
    (4, 4, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), 6, 7),
    (4, 6, 2, 2, (3, 3), (2, 2), (0, 1), (1, 2), 7, 9),
    (3, 3, 3, 3, (1, 1), (1, 1), (0, 0), (1, 1), 4, 5),  # depthwise 1x1
    (2, 4, 1, 2, (2, 3), (1, 2), (2, 1), (2, 1), 3, 8),
    (8, 4, 4, 1, (3, 3), (3, 3), (2, 2), (2, 2), 8, 8),  # power-of-two input, no padding added
    (2, 2, 1, 1, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1),
]


def _noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values in a permuted memory layout (torchvision's trick)."""
    return t.permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2) if t.dim() == 4 else t


def _args(config, batch, dtype, with_mask, contiguous, seed=0, scale=2.0):
    cin, cout, groups, dgroups, (kh, kw), stride, padding, dilation, h, w = config
    out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    x = seeded_randn((batch, cin, h, w), seed, dtype)
    offset = scale * seeded_randn((batch, 2 * dgroups * kh * kw, out_h, out_w), seed + 1, dtype)
    mask = seeded_rand((batch, dgroups * kh * kw, out_h, out_w), seed + 2, dtype) if with_mask else None
    weight = seeded_randn((cout, cin // groups, kh, kw), seed + 3, dtype)
    bias = seeded_randn((cout,), seed + 4, dtype)
    tensors = [x, offset, weight, bias, mask]
    if not contiguous:
        tensors = [None if t is None else _noncontiguous(t) for t in tensors]
    return tensors, dict(stride=stride, padding=padding, dilation=dilation)


def _run(backend, tensors, kw):
    x, offset, weight, bias, mask = tensors
    return deform_conv2d(x, offset, weight, bias, mask=mask, backend=backend, **kw)


@pytest.mark.parametrize(
    "config, batch, with_mask, contiguous, dtype",
    list(itertools.product(GRID, [0, 1, 3], [True, False], [True, False], [torch.float32, torch.float64])),
)
def test_forward_matches_torchvision(config, batch, with_mask, contiguous, dtype):
    tensors, kw = _args(config, batch, dtype, with_mask, contiguous)
    got = _run("torch", tensors, kw)
    expected = _run("torchvision", tensors, kw)
    assert got.shape == expected.shape and got.dtype == dtype
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


@pytest.mark.parametrize("config, with_mask", list(itertools.product(GRID, [True, False])))
def test_float32_gradients_match_float64_torchvision(config, with_mask):
    """Gradients of every input in float32 against torchvision's in float64 (random offsets never land
    on an integer position, where bilinear interpolation has no derivative)."""
    grads = {}
    for backend, dtype in (("torch", torch.float32), ("torchvision", torch.float64)):
        tensors, kw = _args(config, 2, torch.float64, with_mask, True, seed=7)
        leaves = [None if t is None else t.to(dtype).requires_grad_() for t in tensors]
        out = _run(backend, leaves, kw)
        (out * seeded_randn(out.shape, 99, torch.float64).to(dtype)).sum().backward()
        grads[backend] = [None if t is None else t.grad.double() for t in leaves]
    for name, a, b in zip(("x", "offset", "weight", "bias", "mask"), grads["torch"], grads["torchvision"]):
        if b is not None:
            torch.testing.assert_close(a, b, atol=1e-4 * max(1.0, b.abs().max().item()), rtol=0, msg=name)


@pytest.mark.parametrize("batch, with_mask", [(0, True), (1, True), (1, False), (2, True)])
def test_gradcheck(batch, with_mask):
    config = (4, 2, 2, 2, (2, 2), (1, 2), (1, 0), (2, 1), 4, 5)
    tensors, kw = _args(config, batch, torch.float64, with_mask, False, seed=3, scale=1.5)
    leaves = tuple(None if t is None else t.requires_grad_() for t in tensors)

    def fn(x, offset, weight, bias, mask):
        return deform_conv2d(x, offset, weight, bias, mask=mask, backend="torch", **kw)

    assert gradcheck(fn, leaves, eps=1e-6, atol=1e-5, nondet_tol=1e-10)


# ---- edge cases -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), 1e30, -1e30, 3e9, -4e4])
def test_far_offsets_read_zeros_like_torchvision(value):
    """A tap moved infinitely (or very) far reads zero, with zero gradient, as in torchvision."""
    tensors, kw = _args(GRID[1], 2, torch.float32, True, True, seed=5)
    offset = tensors[1].clone()
    offset[0, 0, 1, 2] = value  # y of tap 0
    offset[1, 5, 3, 3] = value  # x of tap 2
    offset[1, 8, 0, 0] = offset[1, 9, 0, 0] = value  # both coordinates of tap 4
    tensors[1] = offset.requires_grad_()
    got = _run("torch", tensors, kw)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, _run("torchvision", tensors, kw), atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(got.sum(), offset)
    assert torch.isfinite(grad).all()
    assert grad[0, 0, 1, 2] == 0 and grad[1, 5, 3, 3] == 0 and grad[1, 8, 0, 0] == 0


def test_nan_offset_gives_nan_where_its_tap_is_used():
    """Documented behaviour (torchvision's CPU kernel has none: it crashes): NaN propagates to the
    outputs of the pixel whose tap it moves, and nowhere else."""
    tensors, kw = _args(GRID[1], 1, torch.float32, True, True, seed=5)
    tensors[1][0, 6, 2, 3] = float("nan")
    out = _run("torch", tensors, kw)
    nan = torch.isnan(out)
    assert nan[0, :, 2, 3].all() and nan.sum() == out.shape[1]


@pytest.mark.parametrize("size", [37, 64, 130])
def test_float32_positions_just_below_integers_match_torchvision(size):
    """Positions 1-3 float32 steps below an integer keep torchvision's integer part: the offset gradient
    (which jumps there) matches torchvision's, and the value stays within the documented bound."""
    x = seeded_randn((1, 2, size, size), 0)
    weight = seeded_randn((3, 2, 3, 3), 1)
    mask = seeded_rand((1, 9, size, size), 2)
    base = torch.arange(size, dtype=torch.float32)
    whole = torch.randint(-2, 3, (1, 18, size, size), generator=torch.Generator().manual_seed(3)).float()
    ulps = torch.randint(1, 4, whole.shape, generator=torch.Generator().manual_seed(4)).float()
    # offset = target - base with target = (integer position) - ulps * ulp: exact in float32 when
    # computed in float64 from the target, so base + offset (rounded once) lands just below the integer.
    target = (base[None, None, :, None] + whole).double()
    ulp = torch.finfo(torch.float32).eps * torch.exp2(torch.floor(torch.log2(target.abs().clamp(min=1))))
    offset = (target - ulps.double() * ulp - base[None, None, :, None].double()).float()
    offset[:, 1::2] = 0.25  # x taps: an ordinary fraction
    offset.requires_grad_()
    g = seeded_randn((1, 3, size, size), 5)
    outs, grads = {}, {}
    for backend in ("torch", "torchvision"):
        outs[backend] = deform_conv2d(x, offset, weight, mask=mask, padding=1, backend=backend)
        (grads[backend],) = torch.autograd.grad(outs[backend], offset, g)
    # The fraction differs by less than step (the documented bound); the y-gradient does not depend on
    # it, the x-gradient by about step relative. Taking the other integer part would be an O(1) difference.
    step = (1 << (size - 1).bit_length()) * torch.finfo(torch.float32).eps
    scale = grads["torchvision"].abs().max()
    assert (grads["torch"] - grads["torchvision"]).abs().max() <= 4 * step * scale
    bound = step * 2 * x.abs().max() * weight.abs().sum((1, 2, 3)).max()
    assert (outs["torch"] - outs["torchvision"]).abs().max() <= bound + 1e-5


def test_float64_integer_part_is_exact_near_integers():
    """In float64 the same construction gives the gradient of a float64 per-tap reference exactly."""
    x = seeded_randn((1, 1, 5, 6), 0, torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 5, 6, dtype=torch.float64)
    offset[:, 0] = 1.0 - 1e-12  # every row position is just below the next integer
    offset.requires_grad_()
    out = deform_conv2d(x, offset, weight, backend="torch")
    (grad,) = torch.autograd.grad(out.sum(), offset)
    # d/dy of bilinear between rows r and r + 1 at fraction ~1: x[r + 1] - x[r] (zero row below the input).
    below = torch.cat((x[0, 0, 1:], torch.zeros(1, 6, dtype=torch.float64)))
    torch.testing.assert_close(grad[0, 0], below - x[0, 0])
