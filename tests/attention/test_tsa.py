"""TSAFusion against EDVR's TSA written out in BasicSR's form (a loop over frames, fixed x2 upsampling) on sizes
divisible by 4, against BasicSR's recorded run (the EDVR fixture's ``pcd_align_out`` -> ``fusion_out``), and its
properties at any size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.basicsr_fixtures import load_basicsr
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import batches, seeded_parameters_, seeded_randn, seeds, sizes
from vsrblocks.attention import TSAFusion


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def _up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def _edvr_tsa(m: TSAFusion, aligned: torch.Tensor) -> torch.Tensor:
    """EDVR's TSA as BasicSR writes it: per-frame correlation loop, x2 upsampling by a fixed factor."""
    b, t, c, h, w = aligned.shape
    ref = m.temporal_attn1(aligned[:, m.center_index])
    emb = m.temporal_attn2(aligned.reshape(-1, c, h, w)).reshape(b, t, c, h, w)
    corr = torch.cat([torch.sum(emb[:, i] * ref, 1, keepdim=True) for i in range(t)], 1)
    prob = torch.sigmoid(corr).unsqueeze(2).expand(b, t, c, h, w).reshape(b, t * c, h, w)
    weighted = aligned.reshape(b, t * c, h, w) * prob
    feat = _lrelu(m.feat_fusion(weighted))
    pool = lambda x: torch.cat((F.max_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1)), 1)  # noqa: E731
    attn = _lrelu(m.spatial_attn2(pool(_lrelu(m.spatial_attn1(weighted)))))
    level = _lrelu(m.spatial_attn_l1(attn))
    level = _lrelu(m.spatial_attn_l3(_lrelu(m.spatial_attn_l2(pool(level)))))
    attn = _lrelu(m.spatial_attn3(attn)) + _up2(level)
    attn = m.spatial_attn5(_up2(_lrelu(m.spatial_attn4(attn))))
    add = m.spatial_attn_add2(_lrelu(m.spatial_attn_add1(attn)))
    return feat * torch.sigmoid(attn) * 2 + add


@pytest.mark.parametrize("frames, center, size", [(5, None, (12, 8)), (3, 0, (8, 16)), (1, None, (4, 4))])
def test_matches_edvr_tsa_on_multiples_of_four(frames, center, size):
    tsa = TSAFusion(channels=4, num_frames=frames, center_index=center).double()
    seeded_parameters_(tsa, frames, std=0.3)
    aligned = seeded_randn((2, frames, 4, *size), 3, torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(tsa(aligned), _edvr_tsa(tsa, aligned), atol=1e-12, rtol=0)


def test_reproduces_basicsr_fusion_of_the_edvr_fixture():
    fixture = load_basicsr("edvr_case1.pt")
    prefix = "fusion."
    weights = {k[len(prefix) :]: v for k, v in fixture["state_dict"].items() if k.startswith(prefix)}
    tsa = TSAFusion(channels=32, num_frames=5)
    tsa.load_state_dict(weights)  # BasicSR's names, as they are
    aligned = fixture["intermediates"]["pcd_align_out"].transpose(0, 1)  # (T, B, ...) -> (B, T, ...)
    with torch.no_grad():
        torch.testing.assert_close(tsa(aligned), fixture["intermediates"]["fusion_out"], atol=1e-5, rtol=0)


@settings(deadline=None, max_examples=15)
@given(b=batches, t=st.sampled_from([1, 2, 3]), h=sizes, w=sizes, seed=seeds)
def test_any_size_and_batch_independent(b, t, h, w, seed):
    torch.manual_seed(seed)
    tsa = TSAFusion(channels=4, num_frames=t)
    aligned = seeded_randn((b, t, 4, h, w), seed)
    with torch.no_grad():
        out = tsa(aligned)
        assert out.shape == (b, 4, h, w) and torch.isfinite(out).all()
        assert_batch_independent(tsa, aligned)


@settings(deadline=None, max_examples=10)
@given(perm=st.permutations([0, 1, 2, 3]), seed=seeds)
def test_neighbour_order_is_only_a_weight_layout(perm, seed):
    """Reordering the input frames (the reference moving with them) and the ``T * C`` input channels of
    ``feat_fusion`` / ``spatial_attn1`` the same way leaves the output unchanged: no frame is special but the
    reference."""
    t, c = 4, 3
    tsa = TSAFusion(channels=c, num_frames=t, center_index=1).double()
    seeded_parameters_(tsa, seed, std=0.3)
    aligned = seeded_randn((1, t, c, 8, 9), seed, torch.float64)
    moved = TSAFusion(channels=c, num_frames=t, center_index=perm.index(1)).double()
    moved.load_state_dict(tsa.state_dict())
    channel_perm = torch.tensor([p * c + k for p in perm for k in range(c)])
    with torch.no_grad():
        for name in ("feat_fusion", "spatial_attn1"):
            getattr(moved, name).weight.copy_(getattr(tsa, name).weight[:, channel_perm])
        torch.testing.assert_close(moved(aligned[:, perm]), tsa(aligned), atol=1e-12, rtol=0)


def test_compiles_and_runs_in_bfloat16():
    torch.manual_seed(0)
    tsa = TSAFusion(channels=4, num_frames=3)
    aligned = torch.randn(2, 3, 4, 7, 9)
    assert_compiles(tsa, aligned)
    assert_half_precision_finite(tsa, aligned)


def test_errors_and_repr():
    tsa = TSAFusion(channels=4, num_frames=3)
    with pytest.raises(ValueError, match=r"aligned: expected \(B, T, C, H, W\) with T=3, C=4, got \(1, 5, 4, 8, 8\)"):
        tsa(torch.zeros(1, 5, 4, 8, 8))
    with pytest.raises(ValueError, match="center_index must be in"):
        TSAFusion(channels=4, num_frames=3, center_index=3)
    with pytest.raises(ValueError, match="num_frames"):
        TSAFusion(channels=4, num_frames=0)
    assert "num_frames=3, center_index=1" in repr(tsa)
    assert {"temporal_attn1.weight", "spatial_attn_add2.bias", "spatial_attn_l3.weight"} <= set(tsa.state_dict())
