"""PASSRnet's auxiliary losses: values against a pixel-by-pixel float64 reference in every scope's layout
(sizes down to one-pixel frames), the cases where each loss is 0, the mask, gradients and shape errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.attention.passrnet_reference import reference_attention, reference_losses
from tests.strategies import seeded_rand, seeded_randn, seeds
from vsrblocks.attention import (
    attention_map,
    attention_warp,
    cycle_loss,
    parallax_losses,
    photometric_loss,
    smoothness_loss,
)

SCOPES = ["global", "row", "local"]


def _inputs(batch: int, height: int, width: int, seed: int):
    q, k = (seeded_randn((batch, 4, height, width), seed + i) for i in range(2))
    target, source = (seeded_rand((batch, 3, height, width), seed + 2 + i) for i in range(2))
    mask = (seeded_rand((batch, 1, height, width), seed + 4) > 0.3).float()
    return q, k, target, source, mask


@pytest.mark.parametrize("scope", SCOPES)
@settings(max_examples=6, deadline=None)
@given(batch=st.integers(1, 2), height=st.integers(1, 4), width=st.integers(1, 4), seed=seeds)
def test_losses_match_the_pixel_by_pixel_reference(scope, batch, height, width, seed):
    q, k, target, source, mask = _inputs(batch, height, width, seed)
    forward, reverse = attention_map(q, k, scope, radius=1), attention_map(k, q, scope, radius=1)
    got = parallax_losses(forward, reverse, target, source, mask)
    ref_fwd, ref_rev = reference_attention(q, k, scope, radius=1), reference_attention(k, q, scope, radius=1)
    expected = reference_losses(ref_fwd, ref_rev, target, source, mask, scope)
    assert set(got) == {"photometric", "cycle", "smoothness"}
    for name, value in got.items():
        assert value.ndim == 0 and value >= 0, name
        assert float(value) == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name


def test_soft_mask_weights_each_query_pixel():
    q, k, target, source, _ = _inputs(1, 3, 4, 0)
    mask = seeded_rand((1, 1, 3, 4), 9)
    forward, reverse = attention_map(q, k), attention_map(k, q)
    expected = reference_losses(
        reference_attention(q, k, "global"), reference_attention(k, q, "global"), target, source, mask, "global"
    )
    assert float(photometric_loss(forward, target, source, mask)) == pytest.approx(expected["photometric"], rel=1e-5)
    assert float(cycle_loss(forward, reverse, mask)) == pytest.approx(expected["cycle"], rel=1e-5)
    zero = torch.zeros(1, 1, 3, 4)
    assert photometric_loss(forward, target, source, zero) == 0 and cycle_loss(forward, reverse, zero) == 0


def test_a_consistent_translation_makes_every_loss_zero():
    """The neighbour is the reference rolled one pixel right and the maps follow that motion exactly (one-hot
    rows, ``M_rev = M_fwd^T``, round trip = identity): all three losses vanish, in the 2-D and the row layout."""
    h, w = 3, 5
    frame = seeded_rand((1, 3, h, w), 0)
    source = torch.roll(frame, 1, dims=-1)
    shift = torch.eye(w).roll(1, dims=1)  # query x takes key x + 1 (mod w)
    rows = shift.expand(1, h, w, w)
    planes = torch.einsum("yu,xv->yxuv", torch.eye(h), shift).unsqueeze(0)
    pairs = [(rows, rows.transpose(-1, -2)), (planes, torch.einsum("byxuv->buvyx", planes))]
    for forward, reverse in pairs:
        torch.testing.assert_close(attention_warp(forward, source), frame)
        losses = parallax_losses(forward, reverse, frame, source, torch.ones(1, 1, h, w))
        assert all(float(v) == pytest.approx(0, abs=1e-7) for v in losses.values()), losses


def test_mask_enters_detached_and_gradients_reach_queries_and_keys():
    q, k, target, source, _ = _inputs(1, 3, 3, 1)
    q.requires_grad_(), k.requires_grad_()
    mask = seeded_rand((1, 1, 3, 3), 2).requires_grad_()
    losses = parallax_losses(attention_map(q, k), attention_map(k, q), target, source, mask)
    sum(losses.values()).backward()
    assert mask.grad is None
    for t in (q, k):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_errors():
    maps = torch.rand(1, 3, 4, 3, 4)
    frames, mask = torch.rand(1, 3, 3, 4), torch.ones(1, 1, 3, 4)
    with pytest.raises(ValueError, match=r"attention: expected \(B, H, W, H, W\) or \(B, H, W, W\)"):
        smoothness_loss(torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"attention: expected \(B, H, W, H, W\)"):
        smoothness_loss(torch.rand(1, 3, 4, 4, 3))
    with pytest.raises(ValueError, match=r"attention: expected \(B, H, W, W\)"):
        photometric_loss(torch.rand(1, 3, 4, 5), frames, frames, mask)
    with pytest.raises(ValueError, match=r"source: expected \(B, C, H, W\) with B=1, H=3, W=4"):
        attention_warp(maps, torch.rand(1, 3, 4, 3))
    with pytest.raises(ValueError, match=r"mask: expected \(B, C, H, W\) with C=1"):
        photometric_loss(maps, frames, frames, torch.ones(1, 3, 3, 4))
    with pytest.raises(ValueError, match="reverse: expected the shape of forward"):
        cycle_loss(maps, torch.rand(1, 3, 4, 4), mask)


def test_local_map_with_a_frame_wide_window_is_the_global_map():
    """The DASAA docstring's claim: ``local_radius >= max(H, W) - 1`` gives the global values."""
    q, k = seeded_randn((2, 4, 3, 5), 0), seeded_randn((2, 4, 3, 5), 1)
    torch.testing.assert_close(attention_map(q, k, "local", radius=4), attention_map(q, k, "global"))
    assert not torch.allclose(attention_map(q, k, "local", radius=3), attention_map(q, k, "global"))
