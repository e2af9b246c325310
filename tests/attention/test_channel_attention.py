"""ChannelAttention: SE / CBAM / MAFnet variants, spatial permutation equivariance, exact formulas."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import frame_shapes, seeded_randn, seeds
from vsrblocks.attention import ChannelAttention

VARIANTS = [
    dict(pooling="avg"),
    dict(pooling="avg+max"),
    dict(pooling="avg+max", kernel_size=3),
    dict(pooling="avg+max", shared=False, kernel_size=3),
]


def _module(channels: int, seed: int = 0, **kwargs) -> ChannelAttention:
    torch.manual_seed(seed)
    return ChannelAttention(channels, reduction=2, **kwargs)


@pytest.mark.parametrize("variant", VARIANTS)
@given(shape=frame_shapes(channels=st.sampled_from([1, 4, 8])), seed=seeds)
def test_shape_and_spatial_permutation_equivariance(variant, shape, seed):
    """Global pooling is the only spatial operation: flips, transposes and any pixel shuffle commute."""
    ca = _module(shape[1], **variant)
    x = seeded_randn(shape, seed)
    out = ca(x)
    assert out.shape == x.shape
    torch.testing.assert_close(ca(x.flip(-1)), out.flip(-1))
    torch.testing.assert_close(ca(x.flip(-2)), out.flip(-2))
    torch.testing.assert_close(ca(x.transpose(-1, -2)), out.transpose(-1, -2))
    perm = torch.randperm(shape[2] * shape[3], generator=torch.Generator().manual_seed(seed))
    shuffled = x.flatten(2)[..., perm].reshape(shape)
    torch.testing.assert_close(ca(shuffled), out.flatten(2)[..., perm].reshape(shape))


def _mlp(x, fc1, fc2):
    return fc2(torch.relu(fc1(x)))


def test_se_formula():
    ca = _module(8, pooling="avg")
    x = seeded_randn((2, 8, 5, 6), 0)
    expected = x * torch.sigmoid(_mlp(x.mean((2, 3), keepdim=True), ca.fc1, ca.fc2))
    torch.testing.assert_close(ca(x), expected)
    assert ca.hidden_channels == 4


def test_cbam_shared_formula():
    ca = _module(8, pooling="avg+max")
    x = seeded_randn((2, 8, 5, 6), 0)
    logits = _mlp(x.mean((2, 3), keepdim=True), ca.fc1, ca.fc2) + _mlp(x.amax((2, 3), keepdim=True), ca.fc1, ca.fc2)
    torch.testing.assert_close(ca(x), x * torch.sigmoid(logits))
    assert not hasattr(ca, "fc1_max")


def test_mafnet_unshared_k3_is_centre_tap_of_unshared_k1():
    """kernel_size=3 on the 1x1 pooled map uses only the centre tap: copy the centre taps into a k=1
    module and the outputs agree; the off-centre taps get no gradient."""
    k3 = _module(8, pooling="avg+max", shared=False, kernel_size=3)
    k1 = _module(8, seed=1, pooling="avg+max", shared=False, kernel_size=1)
    with torch.no_grad():
        for name in ("fc1", "fc2", "fc1_max", "fc2_max"):
            getattr(k1, name).weight.copy_(getattr(k3, name).weight[:, :, 1:2, 1:2])
            getattr(k1, name).bias.copy_(getattr(k3, name).bias)
    x = seeded_randn((2, 8, 7, 5), 3)
    torch.testing.assert_close(k3(x), k1(x))
    logits = _mlp(x.mean((2, 3), keepdim=True), k1.fc1, k1.fc2) + _mlp(
        x.amax((2, 3), keepdim=True), k1.fc1_max, k1.fc2_max
    )
    torch.testing.assert_close(k3(x), x * torch.sigmoid(logits))
    k3(x).square().sum().backward()
    grad = k3.fc1.weight.grad
    assert grad[:, :, 1, 1].abs().sum() > 0
    centre = torch.zeros_like(grad, dtype=torch.bool)
    centre[:, :, 1, 1] = True
    assert torch.all(grad[~centre] == 0)


def test_parameter_counts():
    c, hidden = 64, 4
    one_mlp_k1 = 2 * c * hidden + hidden + c
    assert sum(p.numel() for p in ChannelAttention(c, 16).parameters()) == one_mlp_k1
    assert sum(p.numel() for p in ChannelAttention(c, 16, "avg+max").parameters()) == one_mlp_k1
    mafnet = ChannelAttention(c, 16, "avg+max", kernel_size=3, shared=False)
    assert sum(p.numel() for p in mafnet.parameters()) == 2 * (9 * 2 * c * hidden + hidden + c)


def test_output_is_a_gated_input():
    """The gate lies in (0, 1): |out| <= |x| elementwise, with the same sign."""
    ca = _module(8, pooling="avg+max", shared=False, kernel_size=3)
    x = seeded_randn((2, 8, 6, 6), 4)
    out = ca(x)
    assert torch.all(out.abs() <= x.abs()) and torch.all(out * x >= 0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_independent_bf16_compile_and_grads(variant):
    ca = _module(8, **variant)
    x = seeded_randn((3, 8, 5, 7), 0)
    assert_batch_independent(ca, x)
    assert_compiles(ca, x)
    x = x.clone().requires_grad_()
    ca(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in ca.parameters())
    assert torch.isfinite(x.grad).all()
    assert_half_precision_finite(ca, x.detach())


def test_errors():
    with pytest.raises(ValueError, match="pooling"):
        ChannelAttention(8, pooling="max")
    with pytest.raises(ValueError, match="kernel_size"):
        ChannelAttention(8, kernel_size=2)
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) with C=8"):
        ChannelAttention(8)(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        ChannelAttention(8)(torch.randn(8, 5, 5))


def test_extra_repr_shows_hyper_parameters():
    text = repr(ChannelAttention(64, reduction=8, pooling="avg+max", kernel_size=3, shared=False, hidden_channels=5))
    for part in (
        "channels=64",
        "reduction=8",
        "pooling='avg+max'",
        "kernel_size=3",
        "shared=False",
        "hidden_channels=5",
    ):
        assert part in text
