"""BOFF: parity with the official VSRT FeedForward, shapes, edge-frame neighbours, half precision, compile."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.official import VSRT_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import batches, frames, seeded_rand, seeded_randn, seeds, sizes
from vsrblocks.align import BOFF
from vsrblocks.align.flow_warp import flow_warp

PREFIX = "transformer.layers.0.1.fn.fn."


def _boff(channels: int = 4, num_blocks: int = 2, seed: int = 0, **kwargs) -> BOFF:
    torch.manual_seed(seed)
    boff = BOFF(channels, num_blocks=num_blocks, **kwargs)
    # Non-zero biases and larger residual weights so every path shows in the output.
    with torch.no_grad():
        for parameter in boff.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return boff.eval()


def _inputs(batch, frames_, channels, height, width, seed, flow_scale=2.0):
    x = seeded_randn((batch, frames_, channels, height, width), seed)
    lrs = seeded_rand((batch, frames_, 3, height, width), seed + 1)
    flows_forward = flow_scale * seeded_randn((batch, frames_, 2, height, width), seed + 2)
    flows_backward = flow_scale * seeded_randn((batch, frames_, 2, height, width), seed + 3)
    return x, lrs, (flows_forward, flows_backward)


def test_fixture_parity():
    # at the other thread count too: test_vsrt.py's block parity checks the same recorded boff_in -> boff_out
    official = load_official(FIXTURE)
    inter = official["intermediates"]
    boff = BOFF(16)
    # The official FeedForward's keys load unchanged once the layer prefix is removed.
    boff.load_state_dict({k[len(PREFIX) :]: v for k, v in official["state_dict"].items() if k.startswith(PREFIX)})
    with torch.no_grad():
        out = boff(inter["boff_in"], official["inputs"]["x"], (inter["flows_forward"], inter["flows_backward"]))
    torch.testing.assert_close(out, inter["boff_out"], atol=1e-5, rtol=0)


@given(batch=batches, frames_=frames, height=sizes, width=sizes, seed=seeds, channels=st.sampled_from([1, 4]))
def test_shapes_any_size(batch, frames_, height, width, seed, channels):
    boff = _boff(channels, num_blocks=1)
    x, lrs, flows = _inputs(batch, frames_, channels, height, width, seed)
    with torch.no_grad():
        assert boff(x, lrs, flows).shape == (batch, frames_, channels, height, width)


def test_matches_per_frame_definition():
    """Frame t: backward branch on warp(x_{min(t+1,T-1)}, flows_backward_t), forward on warp(x_{max(t-1,0)}, flows_forward_t)."""
    boff = _boff(4, num_blocks=2, seed=1)
    x, lrs, (fwd, bwd) = _inputs(2, 4, 4, 9, 11, seed=3)
    with torch.no_grad():
        out = boff(x, lrs, (fwd, bwd))
        for t in range(4):
            nxt, prv = min(t + 1, 3), max(t - 1, 0)
            b = boff.backward_resblocks(torch.cat((lrs[:, t], flow_warp(x[:, nxt], bwd[:, t])), dim=1))
            f = boff.forward_resblocks(torch.cat((lrs[:, t], flow_warp(x[:, prv], fwd[:, t])), dim=1))
            expected = torch.nn.functional.leaky_relu(boff.fusion(torch.cat((b, f), dim=1)), 0.1)
            torch.testing.assert_close(out[:, t], expected, atol=1e-5, rtol=0)


def test_flow_order_matters():
    """Swapping (forward, backward) changes the result: the pair order is part of the contract."""
    boff = _boff(4, seed=2)
    x, lrs, (fwd, bwd) = _inputs(1, 3, 4, 8, 8, seed=4)
    with torch.no_grad():
        assert not torch.allclose(boff(x, lrs, (fwd, bwd)), boff(x, lrs, (bwd, fwd)))


def test_official_key_names():
    keys = set(BOFF(16, num_blocks=30).state_dict())
    assert "backward_resblocks.main.0.weight" in keys
    assert "forward_resblocks.main.2.29.conv2.bias" in keys
    assert "fusion.weight" in keys
    assert len(keys) == 2 * (2 + 30 * 4) + 2
    text = repr(BOFF(16, num_blocks=2))
    assert "channels=16, num_blocks=2" in text and "padding_mode='zeros'" in text
    assert "in_channels=19, out_channels=16, num_blocks=2" in text


def test_shape_errors():
    boff = _boff(4)
    x, lrs, flows = _inputs(1, 3, 4, 8, 8, seed=0)
    with pytest.raises(ValueError, match=r"x: expected \(B, T, C, H, W\) with C=4"):
        boff(x[:, :, :3], lrs, flows)
    with pytest.raises(ValueError, match="lrs"):
        boff(x, lrs[:, :2], flows)
    with pytest.raises(ValueError, match="flows_backward"):
        boff(x, lrs, (flows[0], flows[1][..., :7]))
    with pytest.raises(ValueError, match="pair"):
        boff(x, lrs, flows[0])


class _FlatArgs(torch.nn.Module):
    """BOFF with the flow pair as two positional tensors, for the shared tensor-only checks."""

    def __init__(self, boff: BOFF) -> None:
        super().__init__()
        self.boff = boff

    def forward(self, x, lrs, flows_forward, flows_backward):
        return self.boff(x, lrs, (flows_forward, flows_backward))


def test_batch_independent_gradients_bf16_compile():
    boff = _boff(4, num_blocks=2, seed=5)
    x, lrs, (fwd, bwd) = _inputs(2, 3, 4, 10, 12, seed=6)
    with torch.no_grad():
        assert_batch_independent(_FlatArgs(boff), x, lrs, fwd, bwd)
    x.requires_grad_(True)
    boff(x, lrs, (fwd, bwd)).sum().backward()
    assert torch.isfinite(x.grad).all() and all(p.grad is not None for p in boff.parameters())
    with torch.no_grad():
        assert_compiles(_boff(4, seed=5), x.detach(), lrs, (fwd, bwd))
        half = assert_half_precision_finite(_FlatArgs(_boff(4, seed=5)), x.detach(), lrs, fwd, bwd)
    assert half.shape == x.shape


def test_empty_batch_gives_empty_output():
    boff = BOFF(channels=8, num_blocks=2)
    x = torch.randn(0, 3, 8, 6, 5, requires_grad=True)
    flows = (torch.zeros(0, 3, 2, 6, 5), torch.zeros(0, 3, 2, 6, 5))
    out = boff(x, torch.rand(0, 3, 3, 6, 5), flows)
    assert out.shape == (0, 3, 8, 6, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape


def test_channels_last_features_stay_channels_last():
    boff = _boff(channels=8)
    x, lrs, flows = _inputs(2, 3, 8, 6, 7, seed=4)
    nhwc = x.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, x.shape[:2])
    with torch.no_grad():
        out = boff(nhwc, lrs, flows)
        expected = boff(x, lrs, flows)
    assert out.flatten(0, 1).is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    assert expected.is_contiguous()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
