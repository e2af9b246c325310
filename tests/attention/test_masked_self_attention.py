"""MaskedSelfAttention (DASAA SAA): steps 1-7 against an explicit-matrix reference, the three scopes, the
three mask modes, synthetic occlusion detection, detached mask, several neighbours at once, and the
materialised maps (attention_map, align(return_attention=True)) against a pixel-by-pixel reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_models.inference.memory_budget import LiveTensorBytes
from tests.attention.passrnet_reference import reference_attention
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import seeded_randn, seeds, sizes
from vsrblocks.attention import (
    MaskedSelfAttention,
    MorphologicalMask,
    attention_map,
    local_attention,
    received_attention,
)

SCOPES = ["global", "row", "local"]
MODES = ["valid_morph", "soft_morph", "none"]


def _saa(seed: int = 0, channels: int = 8, **kwargs) -> MaskedSelfAttention:
    torch.manual_seed(seed)
    return MaskedSelfAttention(channels, **kwargs)


def _window(h: int, w: int, radius: int | None, rows_only: bool) -> torch.Tensor:
    """(N, N) bool: which key j each query i may attend to."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    allowed = torch.ones(h * w, h * w, dtype=torch.bool)
    if rows_only:
        allowed &= ys[:, None] == ys[None, :]
    if radius is not None:
        allowed &= ((ys[:, None] - ys[None, :]).abs() <= radius) & ((xs[:, None] - xs[None, :]).abs() <= radius)
    return allowed


def _reference(saa: MaskedSelfAttention, ref: torch.Tensor, nbr: torch.Tensor):
    """Steps 1-7 with explicit (N x N) attention maps, the window as -inf logits, skimage clean-up."""
    b, c, h, w = ref.shape
    allowed = _window(h, w, saa.local_radius if saa.attn_scope == "local" else None, saa.attn_scope == "row")
    flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    r1, n1 = saa.rb(ref), saa.rb(nbr)

    def attention(q, k):
        logits = flat(q) @ flat(k).transpose(1, 2)
        return torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)

    m_fwd = attention(saa.b1(r1), saa.b2(n1))
    m_rev = attention(saa.b1(n1), saa.b2(r1))
    warped = (m_fwd @ flat(saa.b3(nbr))).transpose(1, 2).reshape(b, c, h, w)
    received = m_rev.sum(dim=1).reshape(b, 1, h, w)
    if saa.mask_mode == "none":
        return saa.fusion(torch.cat((warped, ref), 1)), warped, None
    if saa.mask_mode == "valid_morph":
        mask = MorphologicalMask.passrnet(backend="skimage")((received > saa.threshold).float())
        return saa.fusion(torch.cat((warped, ref, mask), 1)), warped, mask
    mask = MorphologicalMask(3, "close", backend="skimage")(torch.clamp(received / saa.threshold, max=1))
    return saa.fusion(torch.cat((warped * mask, ref, mask), 1)), warped, mask


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=5)
@given(batch=st.integers(1, 2), height=sizes, width=sizes, seed=seeds)
def test_matches_explicit_reference(scope, mode, batch, height, width, seed):
    saa = _saa(seed, mask_mode=mode, attn_scope=scope, local_radius=2)
    ref, nbr = seeded_randn((batch, 8, height, width), seed), seeded_randn((batch, 8, height, width), seed + 1)
    out = saa.align(ref, nbr)
    expected, warped, mask = _reference(saa, ref, nbr)
    torch.testing.assert_close(out.warped, warped, atol=1e-5, rtol=1e-4)
    if mode == "valid_morph":
        assert out.mask.shape == (batch, 1, height, width)
        assert torch.equal(out.mask, mask)
        torch.testing.assert_close(out.output, expected, atol=1e-5, rtol=1e-4)
    elif mode == "soft_morph":
        torch.testing.assert_close(out.mask, mask, atol=1e-5, rtol=1e-4)
        assert (out.mask >= 0).all() and (out.mask <= 1).all()
        torch.testing.assert_close(out.output, expected, atol=1e-5, rtol=1e-4)
    else:
        assert out.mask is None
        torch.testing.assert_close(out.output, expected, atol=1e-5, rtol=1e-4)
    assert saa(ref, nbr).shape == ref.shape


@given(height=sizes, width=sizes, seed=seeds, radius=st.integers(0, 3), chunk=st.sampled_from([None, 1, 2]))
def test_local_attention_matches_masked_global(height, width, seed, radius, chunk):
    q, k, v = (seeded_randn((2, 4, height, width), seed + i) for i in range(3))
    out, received = local_attention(q, k, v, radius, chunk_size=chunk)
    flat = lambda t: t.flatten(2).transpose(1, 2)  # noqa: E731
    logits = (flat(q) @ flat(k).transpose(1, 2)).masked_fill(~_window(height, width, radius, False), float("-inf"))
    attn = torch.softmax(logits, dim=-1)
    torch.testing.assert_close(flat(out), attn @ flat(v), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(received.flatten(1), attn.sum(1), atol=1e-5, rtol=1e-4)


def test_local_with_large_radius_equals_global():
    ref, nbr = seeded_randn((2, 8, 5, 7), 0), seeded_randn((2, 8, 5, 7), 1)
    glob = _saa(0, attn_scope="global")
    loc = _saa(0, attn_scope="local", local_radius=6)
    a, b = glob.align(ref, nbr), loc.align(ref, nbr)
    torch.testing.assert_close(a.output, b.output, atol=1e-5, rtol=1e-4)
    assert torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("scope", SCOPES)
@settings(max_examples=6, deadline=None)
@given(height=st.integers(1, 5), width=st.integers(1, 5), radius=st.integers(0, 2), seed=seeds)
def test_attention_map_matches_the_pixel_by_pixel_reference(scope, height, width, radius, seed):
    q, k = seeded_randn((2, 3, height, width), seed), seeded_randn((2, 3, height, width), seed + 1)
    got = attention_map(q, k, scope, radius).double()
    expected = torch.from_numpy(reference_attention(q, k, scope, radius))
    if scope == "row":
        assert got.shape == (2, height, width, width)
        expected = torch.stack(
            [expected[:, y * width : (y + 1) * width, y * width : (y + 1) * width] for y in range(height)], 1
        )
    else:
        assert got.shape == (2, height, width, height, width)
        expected = expected.reshape(got.shape)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", MODES)
def test_return_attention_adds_the_maps_and_changes_nothing_else(scope, mode):
    saa = _saa(5, mask_mode=mode, attn_scope=scope, local_radius=1)
    ref, neighbours = seeded_randn((2, 8, 4, 5), 0), seeded_randn((2, 3, 8, 4, 5), 1)
    plain = saa.align(ref, neighbours)
    full = saa.align(ref, neighbours, return_attention=True)
    assert plain.forward_attention is None and plain.reverse_attention is None
    for a, b in zip(plain[:3], full[:3]):
        assert (a is None and b is None) or torch.equal(a, b)
    map_shape = (2, 3, 4, 5, 5) if scope == "row" else (2, 3, 4, 5, 4, 5)
    assert full.forward_attention.shape == full.reverse_attention.shape == map_shape
    with torch.no_grad():
        r, n = saa.rb(ref), saa.rb(neighbours[:, 1])
        forward = attention_map(saa.b1(r), saa.b2(n), scope, radius=1)
        reverse = attention_map(saa.b1(n), saa.b2(r), scope, radius=1)
    torch.testing.assert_close(full.forward_attention[:, 1], forward)
    torch.testing.assert_close(full.reverse_attention[:, 1], reverse)
    alone = saa.align(ref, return_attention=True)  # self-attention: both maps are the frame over itself
    torch.testing.assert_close(alone.forward_attention, alone.reverse_attention)


def test_local_attention_map_with_large_radius_equals_global():
    q, k = seeded_randn((1, 4, 3, 4), 0), seeded_randn((1, 4, 3, 4), 1)
    torch.testing.assert_close(attention_map(q, k, "local", radius=3), attention_map(q, k, "global"))


@given(seed=seeds, chunk=st.integers(1, 9))
def test_received_attention_chunking(seed, chunk):
    q, k = seeded_randn((3, 11, 4), seed), seeded_randn((3, 6, 4), seed + 1)
    total = received_attention(q, k, chunk_size=chunk)
    torch.testing.assert_close(total, torch.softmax(q @ k.transpose(1, 2), -1).sum(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(total.sum(-1), torch.full((3,), 11.0))


@pytest.mark.parametrize("scope", SCOPES)
def test_chunk_size_does_not_change_results(scope):
    ref, nbr = seeded_randn((1, 8, 6, 9), 0), seeded_randn((1, 8, 6, 9), 1)
    whole = _saa(0, attn_scope=scope, local_radius=2, mask_mode="soft_morph").align(ref, nbr)
    chunked = _saa(0, attn_scope=scope, local_radius=2, mask_mode="soft_morph", chunk_size=2).align(ref, nbr)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def _identity_projections(saa: MaskedSelfAttention) -> None:
    """rb = identity, b1 = b2 = b3 = identity: attention compares raw features."""
    with torch.no_grad():
        for conv in (saa.b1, saa.b2, saa.b3):
            conv.weight.copy_(torch.eye(saa.channels).reshape(saa.channels, saa.channels, 1, 1))
            conv.bias.zero_()
        saa.rb.body[2].weight.zero_()
        saa.rb.body[2].bias.zero_()


@pytest.mark.parametrize("scope", ["global", "local"])
def test_synthetic_occlusion_is_detected(scope):
    """The neighbour is the reference with a 6x6 block covered by copies of another region: those reference
    pixels receive no attention from the neighbour, so the validity mask is 0 exactly there."""
    h = w = 16
    codes = torch.nn.functional.one_hot(torch.arange(h * w), h * w).float().T.reshape(1, h * w, h, w) * 6.0
    nbr = codes.clone()
    nbr[:, :, 6:12, 6:12] = codes[:, :, 0:6, 0:6]  # occluder: a copy of the top-left corner
    saa = MaskedSelfAttention(h * w, attn_scope=scope, local_radius=8)
    _identity_projections(saa)
    out = saa.align(codes, nbr)
    expected = torch.ones(1, 1, h, w)
    expected[..., 6:12, 6:12] = 0
    assert torch.equal(out.mask, expected)
    # unoccluded pixels are warped onto themselves
    torch.testing.assert_close(out.warped[..., 0, 12], codes[..., 0, 12], atol=1e-3, rtol=0)


def test_valid_mask_is_detached_soft_mask_is_not():
    ref = seeded_randn((1, 8, 5, 5), 0).requires_grad_()
    nbr = seeded_randn((1, 8, 5, 5), 1).requires_grad_()
    out = _saa(0).align(ref, nbr)
    assert not out.mask.requires_grad and out.output.requires_grad
    soft = _saa(0, mask_mode="soft_morph").align(ref, nbr)
    assert soft.mask.requires_grad


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_parameter(mode):
    saa = _saa(1, mask_mode=mode)
    ref, nbr = seeded_randn((2, 8, 6, 5), 0), seeded_randn((2, 8, 6, 5), 1)
    saa(ref, nbr).square().mean().backward()
    for name, p in saa.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.thread_counts
def test_self_attention_form_and_several_neighbours(num_threads):
    saa = _saa(2)
    x = seeded_randn((2, 8, 5, 6), 2)
    torch.testing.assert_close(saa(x), saa(x, x))
    neighbours = seeded_randn((2, 3, 8, 5, 6), 3)
    together = saa.align(x, neighbours)
    assert together.output.shape == (2, 3, 8, 5, 6) and together.mask.shape == (2, 3, 1, 5, 6)
    for i in range(3):
        alone = saa.align(x, neighbours[:, i])
        torch.testing.assert_close(together.output[:, i], alone.output, atol=1e-6, rtol=1e-5)
        assert torch.equal(together.mask[:, i], alone.mask)


@pytest.mark.parametrize("scope", SCOPES)
@settings(max_examples=5)
@given(
    batch=st.integers(1, 2),
    neighbours=st.sampled_from([None, 1, 2]),
    channels=st.sampled_from([1, 3, 4]),
    height=sizes,
    width=sizes,
    seed=seeds,
)
def test_shapes_over_channels_neighbours_and_sizes(scope, batch, neighbours, channels, height, width, seed):
    saa = _saa(seed % 5, channels=channels, attn_scope=scope, local_radius=1)
    ref = seeded_randn((batch, channels, height, width), seed)
    nbr_shape = (batch, channels, height, width) if neighbours is None else (batch, neighbours, channels, height, width)
    nbr = seeded_randn(nbr_shape, seed + 1)
    with torch.no_grad():
        out = saa.align(ref, nbr)
    assert out.output.shape == nbr.shape and out.warped.shape == nbr.shape
    assert out.mask.shape == (*nbr.shape[:-3], 1, height, width)
    assert torch.isfinite(out.output).all()


@pytest.mark.parametrize("scope", SCOPES)
def test_batch_independence(scope):
    saa = _saa(3, attn_scope=scope, local_radius=1)
    ref, nbr = seeded_randn((3, 8, 6, 7), 4), seeded_randn((3, 8, 6, 7), 5)
    assert_batch_independent(saa, ref, nbr)


def test_row_scope_rows_are_independent():
    saa = _saa(4, attn_scope="row", mask_mode="none")
    ref, nbr = seeded_randn((1, 8, 6, 6), 0), seeded_randn((1, 8, 6, 6), 1)
    out = saa(ref, nbr)
    changed = nbr.clone()
    changed[..., 5, :] += 1  # reaches rows 3-5 through the two 3x3 convolutions of rb, no further
    torch.testing.assert_close(saa(ref, changed)[..., :3, :], out[..., :3, :])
    assert not torch.allclose(saa(ref, changed)[..., 3:, :], out[..., 3:, :])


def test_compile_and_half_precision():
    ref, nbr = seeded_randn((1, 8, 6, 5), 0), seeded_randn((1, 8, 6, 5), 1)
    assert_compiles(_saa(0, attn_scope="local", local_radius=2, mask_mode="soft_morph"), ref, nbr, atol=1e-4)
    assert_half_precision_finite(_saa(0), ref, nbr)
    assert_half_precision_finite(_saa(0, attn_scope="local", local_radius=2), ref, nbr)


def test_custom_mask_and_repr():
    saa = _saa(0, mask=MorphologicalMask(3, "open", "disk"))
    assert saa.mask.operation == "open"
    assert "attn_scope='global'" in repr(saa)
    assert saa.fusion.in_channels == 17
    assert _saa(0, mask_mode="none").fusion.in_channels == 16


def test_errors():
    with pytest.raises(ValueError, match="mask_mode"):
        MaskedSelfAttention(8, mask_mode="hard")
    with pytest.raises(ValueError, match="attn_scope"):
        MaskedSelfAttention(8, attn_scope="column")
    with pytest.raises(ValueError, match="local_radius"):
        MaskedSelfAttention(8, local_radius=-1)
    with pytest.raises(ValueError, match="mask_mode='none'"):
        MaskedSelfAttention(8, mask=MorphologicalMask(), mask_mode="none")
    with pytest.raises(ValueError, match=r"key: expected \(B, D, H, W\)"):
        local_attention(torch.randn(1, 4, 5, 5), torch.randn(1, 3, 5, 5), None, 1)
    with pytest.raises(ValueError, match="radius"):
        local_attention(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), None, -1)
    with pytest.raises(ValueError, match="received_attention"):  # leading dimensions would broadcast
        received_attention(torch.randn(1, 5, 4), torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="received_attention"):
        received_attention(torch.randn(2, 5, 4), torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"key: expected \(B, D, H, W\) with B=1, D=4, H=5, W=5"):
        attention_map(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 6))
    with pytest.raises(ValueError, match="scope"):
        attention_map(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), "column")
    with pytest.raises(ValueError, match="radius"):
        attention_map(torch.randn(1, 4, 5, 5), torch.randn(1, 4, 5, 5), "local", radius=-1)
    saa = MaskedSelfAttention(8)
    with pytest.raises(ValueError, match=r"query: expected \(B, C, H, W\) with C=8"):
        saa(torch.randn(1, 4, 5, 5))
    with pytest.raises(ValueError, match="key_value"):
        saa(torch.randn(1, 8, 5, 5), torch.randn(1, 8, 5, 6))
    with pytest.raises(ValueError, match="key_value"):
        saa(torch.randn(2, 8, 5, 5), torch.randn(1, 3, 8, 5, 5))


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("mode", ["valid_morph", "soft_morph"])
def test_inference_memory_is_linear_in_pixels(scope, mode):
    """Four times the pixels (36x34 -> 72x68) take at most about four times the largest and the peak tensor
    bytes in inference (a pixel-by-pixel map would take sixteen times)."""
    saa = _saa(0, channels=8, attn_scope=scope, mask_mode=mode, local_radius=2)
    measured = []
    for h, w in ((36, 34), (72, 68)):
        ref, nbr = seeded_randn((1, 8, h, w), 0), seeded_randn((1, 2, 8, h, w), 1)
        with torch.no_grad(), LiveTensorBytes() as live:
            saa.align(ref, nbr)
        measured.append((live.largest, live.peak))
    (largest_small, peak_small), (largest_big, peak_big) = measured
    assert largest_big <= 4.5 * largest_small and peak_big <= 4.5 * peak_small, measured


def test_received_attention_blocks_equal_the_whole_map_in_float64():
    """The default 32-query blocks against the column sums of the whole map it replaced."""
    q, k = seeded_randn((2, 100, 6), 5).double(), seeded_randn((2, 90, 6), 6).double()
    torch.testing.assert_close(
        received_attention(q, k), torch.softmax(q @ k.transpose(1, 2), -1).sum(1), atol=1e-12, rtol=0
    )
