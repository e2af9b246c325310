"""STCSA: shapes at any size, frame-permutation equivariance, batch independence, heads, masking of the
padding, bf16, torch.compile, and parity with the official ``globalAttention`` block."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.official import VSRT_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import batches, frames, seeded_randn, seeds, sizes
from vsrblocks.attention.stcsa import STCSA


def _block(channels=8, patch_size=4, num_heads=1, seed=0, **kwargs) -> STCSA:
    torch.manual_seed(seed)
    return STCSA(channels, patch_size=patch_size, num_heads=num_heads, **kwargs).eval()


def _reference(block: STCSA, x: torch.Tensor) -> torch.Tensor:
    """Explicit attention matrix with per-pixel-position renormalisation over real key pixels."""
    b, t, c, h, w = x.shape
    p, g = block.patch_size, block.num_heads
    ph, pw = -h % p, -w % p
    flat = x.reshape(b * t, c, h, w)
    q, k, v = (F.pad(conv(flat), (0, pw, 0, ph)) for conv in (block.to_q, block.to_k, block.to_v))
    tok = "(b t) (g c) (nh i) (nw j) -> b g (t nh nw) (c i j)"
    q, k, v = (rearrange(z, tok, t=t, g=g, i=p, j=p) for z in (q, k, v))
    attn = torch.softmax(q @ k.transpose(-1, -2) * block.head_dim**-0.5, dim=-1)
    valid = F.pad(torch.ones(h, w), (0, pw, 0, ph))
    valid = rearrange(valid, "(nh i) (nw j) -> (nh nw) (i j)", i=p, j=p).repeat(t, 1)
    if not block.mask_padding:
        valid = torch.ones_like(valid)
    v = rearrange(v, "b g n (c ij) -> b g n c ij", ij=p * p)
    num = torch.einsum("bgqk,bgkcs,ks->bgqcs", attn, v, valid)
    den = torch.einsum("bgqk,ks->bgqs", attn, valid).clamp_min(1e-30).unsqueeze(-2)
    out = rearrange(num / den, "b g (t nh nw) c (i j) -> (b t) (g c) (nh i) (nw j)", t=t, nh=(h + ph) // p, i=p)
    out = block.conv(out[..., :h, :w]).reshape(b, t, c, h, w)
    return out + x if block.residual else out


@given(
    batch=batches,
    num_frames=frames,
    channels=st.sampled_from([2, 4, 8]),
    heads=st.sampled_from([1, 2]),
    patch=st.sampled_from([1, 3, 4]),
    height=sizes,
    width=sizes,
    seed=seeds,
)
def test_shapes_any_size(batch, num_frames, channels, heads, patch, height, width, seed):
    block = _block(channels=channels, patch_size=patch, num_heads=heads)
    x = seeded_randn((batch, num_frames, channels, height, width), seed)
    with torch.no_grad():
        out = block(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@given(height=sizes, width=sizes, heads=st.sampled_from([1, 2, 4]), mask=st.booleans(), seed=seeds)
def test_matches_explicit_masked_attention(height, width, heads, mask, seed):
    block = _block(channels=8, patch_size=4, num_heads=heads, mask_padding=mask, seed=seed % 7)
    x = seeded_randn((2, 3, 8, height, width), seed)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _reference(block, x), atol=2e-5, rtol=1e-4)


def test_padding_mask_changes_only_partial_patch_positions():
    """At a size that is a multiple of the patch, masking is a no-op; otherwise it differs from zero padding."""
    masked = _block(mask_padding=True)
    plain = _block(mask_padding=False)
    x = torch.randn(1, 3, 8, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(masked(x), plain(x), atol=0, rtol=0)
        y = torch.randn(1, 3, 8, 7, 12)
        assert (masked(y) - plain(y)).abs().max() > 1e-4


@given(seed=seeds, residual=st.booleans())
def test_frame_permutation_equivariance(seed, residual):
    block = _block(residual=residual)
    x = seeded_randn((1, 4, 8, 7, 9), seed)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(block(x[:, perm]), block(x)[:, perm], atol=1e-5, rtol=1e-4)


def test_batch_independence():
    block = _block()
    with torch.no_grad():
        assert_batch_independent(block, torch.randn(3, 2, 8, 9, 6))


@pytest.mark.parametrize("num_heads", [1, 2])
def test_heads_own_contiguous_channels(num_heads):
    """With 2 heads, head 0 (channels 0-3) attends with q/k channels 0-3 only: changing the q/k convs of
    channels 4-7 leaves output channels 0-3 of the attention unchanged. With 1 head it changes them."""
    block = _block(channels=8, num_heads=num_heads, residual=False)
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        block.conv.weight[:, 4:] = 0
        before = block(x)
        block.to_q.weight[4:] *= 3.0
        block.to_k.weight[4:] *= -2.0
        after = block(x)
    if num_heads == 2:
        torch.testing.assert_close(after, before, atol=1e-6, rtol=0)
    else:
        assert (after - before).abs().max() > 1e-4


def test_single_head_vs_heads_differ():
    one, two = _block(num_heads=1), _block(num_heads=2)
    two.load_state_dict(one.state_dict())
    x = torch.randn(1, 2, 8, 8, 8)
    with torch.no_grad():
        assert (one(x) - two(x)).abs().max() > 1e-5


def test_bf16_finite_and_close():
    block = _block()
    x = torch.randn(1, 3, 8, 9, 11)
    with torch.no_grad():
        ref = block(x)
        out = assert_half_precision_finite(block, x, dtype=torch.bfloat16)
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def test_compiles():
    assert_compiles(_block(), torch.randn(1, 2, 8, 9, 10))


def test_gradients_flow_to_every_parameter():
    block = _block()
    x = torch.randn(1, 2, 8, 7, 10, requires_grad=True)
    block(x).square().mean().backward()
    for name, param in block.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


def test_invalid_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_heads"):
        STCSA(channels=6, num_heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        STCSA(channels=6, patch_size=0)
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\) with C=8"):
        _block()(torch.randn(2, 8, 8, 8))
    with pytest.raises(ValueError, match="C=8"):
        _block()(torch.randn(1, 2, 4, 8, 8))


def test_official_parity():
    # at the other thread count too: test_vsrt.py's block parity checks the same recorded stcsa_in -> stcsa_out
    fixture = load_official(FIXTURE)
    prefix = "transformer.layers.0.0.fn.fn."
    state = {k[len(prefix) :]: v for k, v in fixture["state_dict"].items() if k.startswith(prefix)}
    config = fixture["config"]
    block = STCSA(config["num_feat"], patch_size=config["patch_size"], num_heads=config["heads"])
    block.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = block(fixture["intermediates"]["stcsa_in"])
    torch.testing.assert_close(out, fixture["intermediates"]["stcsa_out"], atol=1e-5, rtol=0)


def test_official_parity_with_pre_norm():
    """The VSRT layer's pre-norm quirk: ``STCSA(LN1(features + pos_enc))`` with the official LayerNorm over
    ``(C, 64, 64)`` reproduces the recorded ``stcsa_in`` and ``stcsa_out`` (the block adds the normalised input)."""
    fixture = load_official(FIXTURE)
    sd, inter = fixture["state_dict"], fixture["intermediates"]
    prefix = "transformer.layers.0.0.fn."
    block = STCSA(fixture["config"]["num_feat"], patch_size=fixture["config"]["patch_size"])
    block.load_state_dict({k[len(prefix) + 3 :]: v for k, v in sd.items() if k.startswith(prefix + "fn.")})
    weight, bias = sd[prefix + "norm.weight"], sd[prefix + "norm.bias"]
    with torch.no_grad():
        normed = F.layer_norm(inter["features"] + inter["pos_enc"], tuple(weight.shape), weight, bias, 1e-5)
        torch.testing.assert_close(normed, inter["stcsa_in"], atol=1e-5, rtol=0)
        out = block(normed)
        torch.testing.assert_close(out, inter["stcsa_out"], atol=1e-5, rtol=0)
        # without the internal residual the recorded output is off by exactly the normalised input
        block.residual = False
        torch.testing.assert_close(block(normed) + normed, inter["stcsa_out"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_padding", [True, False])
def test_empty_batch_gives_empty_output(mask_padding):
    block = STCSA(channels=8, patch_size=4, mask_padding=mask_padding)
    clip = torch.randn(0, 3, 8, 6, 9, requires_grad=True)  # 6x9: padded patches too
    out = block(clip)
    assert out.shape == (0, 3, 8, 6, 9)
    out.sum().backward()
    assert clip.grad.shape == clip.shape


@pytest.mark.parametrize("size", [(8, 12), (7, 10)])  # patch multiples and padded
def test_channels_last_frames_stay_channels_last(size):
    block = _block().eval()
    x = seeded_randn((2, 3, 8, *size), 6)
    nhwc = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    with torch.no_grad():
        out = block(nhwc)
        expected = block(x)
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert expected.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
