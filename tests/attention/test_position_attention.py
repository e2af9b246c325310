"""PositionAttention (DANet PAM): the official formula, fused == explicit, identity at init, pixel-permutation
equivariance, batch independence."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference_models.inference.memory_budget import LiveTensorBytes
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import frame_shapes, seeded_randn, seeds
from vsrblocks.attention import PositionAttention, position_attention


def _pam(channels: int, seed: int = 0, gamma: float = 0.7, **kwargs) -> PositionAttention:
    torch.manual_seed(seed)
    pam = PositionAttention(channels, **kwargs)
    with torch.no_grad():
        pam.gamma.fill_(gamma)
    return pam


def _official_pam(pam: PositionAttention, x: torch.Tensor) -> torch.Tensor:
    """DANet ``PAM_Module.forward`` (encoding/nn/da_att.py), transcribed."""
    b, c, h, w = x.shape
    proj_query = pam.query_conv(x).view(b, -1, w * h).permute(0, 2, 1)
    proj_key = pam.key_conv(x).view(b, -1, w * h)
    attention = torch.softmax(torch.bmm(proj_query, proj_key), dim=-1)
    proj_value = pam.value_conv(x).view(b, -1, w * h)
    out = torch.bmm(proj_value, attention.permute(0, 2, 1)).view(b, c, h, w)
    return pam.gamma * out + x


@given(shape=frame_shapes(channels=st.sampled_from([8, 16])), seed=seeds)
def test_matches_official_formula_fused_and_explicit(shape, seed):
    x = seeded_randn(shape, seed)
    for fused in (True, False):
        pam = _pam(shape[1], seed, fused=fused)
        out = pam(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, _official_pam(pam, x), atol=1e-5, rtol=0)


@given(shape=frame_shapes(channels=st.sampled_from([8, 16])), seed=seeds)
def test_identity_at_init(shape, seed):
    torch.manual_seed(seed)
    x = seeded_randn(shape, seed)
    assert torch.equal(PositionAttention(shape[1])(x), x)


@given(shape=frame_shapes(channels=st.just(8)), seed=seeds)
def test_pixel_permutation_equivariance(shape, seed):
    """1x1 convolutions + attention over all positions: any shuffle of the pixels commutes."""
    pam = _pam(8, seed)
    x = seeded_randn(shape, seed)
    out = pam(x)
    torch.testing.assert_close(pam(x.flip(-1)), out.flip(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pam(x.flip(-2)), out.flip(-2), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pam(x.transpose(-1, -2)), out.transpose(-1, -2), atol=1e-5, rtol=1e-5)
    perm = torch.randperm(shape[2] * shape[3], generator=torch.Generator().manual_seed(seed))
    shuffled = x.flatten(2)[..., perm].reshape(shape)
    torch.testing.assert_close(pam(shuffled), out.flatten(2)[..., perm].reshape(shape), atol=1e-5, rtol=1e-5)


def test_no_scaling_and_softmax_over_keys():
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[2.0, 0.0], [0.0, 0.0]]])
    v = torch.tensor([[[1.0], [0.0]]])
    expected = torch.softmax(torch.tensor([2.0, 0.0]), dim=0)[0]  # no 1/sqrt(2)
    torch.testing.assert_close(position_attention(q, k, v)[0, 0, 0], expected)
    torch.testing.assert_close(position_attention(q, k, v, fused=False)[0, 0, 0], expected)


def test_batch_independence_and_gradients():
    pam = _pam(16, 1)
    x = seeded_randn((3, 16, 5, 7), 1).requires_grad_()
    assert_batch_independent(pam, x.detach())
    pam(x).square().sum().backward()
    for name, p in pam.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


def test_parameter_names_and_shapes_match_danet():
    pam = PositionAttention(64)
    shapes = {k: tuple(v.shape) for k, v in pam.state_dict().items()}
    assert shapes == {
        "query_conv.weight": (8, 64, 1, 1),
        "query_conv.bias": (8,),
        "key_conv.weight": (8, 64, 1, 1),
        "key_conv.bias": (8,),
        "value_conv.weight": (64, 64, 1, 1),
        "value_conv.bias": (64,),
        "gamma": (1,),
    }
    assert "reduction=8" in repr(pam)


def test_compile_and_half_precision():
    pam = _pam(16, 2)
    x = seeded_randn((2, 16, 6, 5), 2)
    assert_compiles(pam, x)
    assert_half_precision_finite(pam, x)


def test_errors():
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\) with C=16"):
        PositionAttention(16)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        PositionAttention(16)(torch.randn(16, 4, 4))
    with pytest.raises(ValueError, match="multiple of reduction"):
        PositionAttention(12)
    q, k, v = torch.randn(2, 6, 4), torch.randn(2, 5, 4), torch.randn(2, 5, 3)
    for bad in (
        (q[:1], k, v),  # leading dimensions would broadcast
        (q, k[..., :3], v),  # D differs
        (q, k, v[:, :4]),  # M differs
        (q[0], k, v),  # rank differs
    ):
        with pytest.raises(ValueError, match="position_attention"):
            position_attention(*bad)


@pytest.mark.parametrize(("query_width", "value_width"), [(2, 16), (16, 2), (8, 8)])
@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_fused_equals_explicit_in_float64_values_and_gradients(query_width, value_width, lead):
    """The fused form (zero-padded widths, 4-D, contiguous) against the explicit ``N x M`` map it replaced."""
    gen = torch.Generator().manual_seed(query_width + value_width + len(lead))
    shapes = ((*lead, 7, query_width), (*lead, 5, query_width), (*lead, 5, value_width))
    inputs = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    weight = torch.randn(*lead, 7, value_width, generator=gen, dtype=torch.float64)
    results = []
    for fused in (True, False):
        out = position_attention(*inputs, fused=fused)
        grads = torch.autograd.grad((out * weight).sum(), inputs)
        results.append((out, *grads))
    for fused, explicit in zip(*results):
        torch.testing.assert_close(fused, explicit, atol=1e-12, rtol=0)


def test_fused_form_holds_no_position_by_position_map():
    """PAM at 64x48 (N^2 = 9.4 M values): the largest tensor alive is linear in N, in inference and in the
    backward pass; the explicit form holds the map."""
    pam = _pam(16, 3)
    x = seeded_randn((1, 16, 64, 48), 3)
    n = 64 * 48
    for fused, grad in ((True, False), (True, True), (False, False)):
        pam.fused = fused
        with torch.set_grad_enabled(grad), LiveTensorBytes() as live:
            out = pam(x.requires_grad_(grad))
            if grad:
                out.sum().backward()
        holds_map = live.largest >= n * n * 4
        assert holds_map == (not fused), (fused, grad, live.largest)
