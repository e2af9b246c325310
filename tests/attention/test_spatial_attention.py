"""SpatialAttention: any size, EDVR TSA parity, flip symmetry on self-similar pyramids, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import seeded_randn, seeds
from vsrblocks.attention import SpatialAttention


def _module(channels: int = 4, seed: int = 0, **kwargs) -> SpatialAttention:
    torch.manual_seed(seed)
    return SpatialAttention(channels, **kwargs)


@pytest.mark.parametrize("edvr_exact", [False, True])
@given(
    batch=st.integers(1, 2),
    channels=st.sampled_from([1, 3, 4]),
    height=st.integers(1, 13),
    width=st.integers(1, 13),
    seed=seeds,
)
def test_any_size(edvr_exact, batch, channels, height, width, seed):
    sa = _module(channels, edvr_exact=edvr_exact)
    x = seeded_randn((batch, channels, height, width), seed)
    out = sa(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def _edvr_tsa_spatial(sa: SpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """The spatial half of BasicSR's ``TSAFusion.forward`` with the fused feature = ``x``
    (fixed factor-2 upsampling; H, W multiples of 4)."""
    lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
    max_pool, avg_pool = torch.nn.MaxPool2d(3, 2, 1), torch.nn.AvgPool2d(3, 2, 1)
    attn = lrelu(sa.spatial_attn1(x))
    attn = lrelu(sa.spatial_attn2(torch.cat([max_pool(attn), avg_pool(attn)], dim=1)))
    level = lrelu(sa.spatial_attn_l1(attn))
    level = lrelu(sa.spatial_attn_l2(torch.cat([max_pool(level), avg_pool(level)], dim=1)))
    level = up(lrelu(sa.spatial_attn_l3(level)))
    attn = lrelu(sa.spatial_attn3(attn)) + level
    attn = up(lrelu(sa.spatial_attn4(attn)))
    attn = sa.spatial_attn5(attn)
    add = sa.spatial_attn_add2(lrelu(sa.spatial_attn_add1(attn)))
    return x * torch.sigmoid(attn) * 2 + add


def _mafnet_text(sa: SpatialAttention, x: torch.Tensor) -> torch.Tensor:
    """MAFnet's Fig. 2b as written in the spec (sec. 2(b) "Spatial attention module")."""
    lrelu = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
    pool = lambda t: torch.cat([F.max_pool2d(t, 3, 2, 1), F.avg_pool2d(t, 3, 2, 1)], dim=1)  # noqa: E731
    s1 = lrelu(sa.spatial_attn1(x))
    feature1 = lrelu(sa.spatial_attn2(pool(s1)))
    level = lrelu(sa.spatial_attn_l1(feature1))
    level = lrelu(sa.spatial_attn_l3(lrelu(sa.spatial_attn_l2(pool(level)))))
    feature2 = up(level)
    u = up(lrelu(sa.spatial_attn4(feature1 + feature2)))
    z = sa.spatial_attn5(u)
    return x * torch.sigmoid(z) + lrelu(sa.spatial_attn_add1(z))


@pytest.mark.parametrize("size", [(4, 4), (8, 12), (16, 8)])
def test_edvr_exact_matches_edvr_tsa(size):
    sa = _module(8, edvr_exact=True)
    x = seeded_randn((2, 8, *size), 1)
    torch.testing.assert_close(sa(x), _edvr_tsa_spatial(sa, x))


@pytest.mark.parametrize("size", [(4, 4), (8, 12)])
def test_default_matches_mafnet_text(size):
    sa = _module(8)
    x = seeded_randn((2, 8, *size), 2)
    torch.testing.assert_close(sa(x), _mafnet_text(sa, x))
    assert not hasattr(sa, "spatial_attn3") and not hasattr(sa, "spatial_attn_add2")


def _symmetrise_(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                w = conv.weight
                w.copy_((w + w.flip(-1) + w.flip(-2) + w.flip(-1, -2)) / 4)


@pytest.mark.parametrize("edvr_exact", [False, True])
@given(height=st.sampled_from([1, 5, 9, 13]), width=st.sampled_from([1, 5, 9, 13]), seed=seeds)
def test_flip_equivariant_with_symmetric_kernels(edvr_exact, height, width, seed):
    """With sizes 1 mod 4 both pyramid levels sample the centre-symmetric grid 0, 2, 4, ..., and the
    interpolation back to the stored size is symmetric too, so with flip-symmetric kernels the module
    commutes with flips. A fixed x2 upsampling (or a misaligned crop) would break this."""
    sa = _module(4, edvr_exact=edvr_exact)
    _symmetrise_(sa)
    x = seeded_randn((1, 4, height, width), seed)
    out = sa(x)
    torch.testing.assert_close(sa(x.flip(-1)), out.flip(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sa(x.flip(-2)), out.flip(-2), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("edvr_exact", [False, True])
def test_batch_independent_bf16_compile_and_grads(edvr_exact):
    sa = _module(4, edvr_exact=edvr_exact)
    x = seeded_randn((3, 4, 7, 9), 0)
    assert_batch_independent(sa, x)
    assert_compiles(sa, x)
    x = x.clone().requires_grad_()
    sa(x).sum().backward()
    for name, param in sa.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert_half_precision_finite(sa, x.detach())


def test_errors():
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) with C=4"):
        SpatialAttention(4)(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        SpatialAttention(4)(torch.randn(4, 8, 8))


def test_extra_repr_shows_hyper_parameters():
    text = repr(SpatialAttention(6, edvr_exact=True, negative_slope=0.2))
    assert "channels=6" in text and "edvr_exact=True" in text and "negative_slope=0.2" in text
