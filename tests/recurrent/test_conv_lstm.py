"""ConvLSTM / ConvLSTMCell: gate equations, causality, state carried across calls, bidirectional dependence on
the future, shapes over odd sizes, shape errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import clip_shapes, seeded_randn, seeds
from vsrblocks.recurrent import ConvLSTM, ConvLSTMCell, ConvLSTMState


def _lstm(in_channels: int, hidden: int = 4, seed: int = 0, **kwargs) -> ConvLSTM:
    torch.manual_seed(seed)
    return ConvLSTM(in_channels, hidden, **kwargs)


def test_cell_equations():
    torch.manual_seed(0)
    cell = ConvLSTMCell(3, 5)
    x, h, c = seeded_randn((2, 3, 6, 7), 0), seeded_randn((2, 5, 6, 7), 1), seeded_randn((2, 5, 6, 7), 2)
    gates = cell.conv(torch.cat((x, h), 1))
    i, f, o, g = gates.split(5, dim=1)
    c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_next = torch.sigmoid(o) * torch.tanh(c_next)
    out = cell(x, (h, c))
    assert isinstance(out, ConvLSTMState)
    torch.testing.assert_close(out.c, c_next)
    torch.testing.assert_close(out.h, h_next)
    zeros = torch.zeros(2, 5, 6, 7)
    for a, b in zip(cell(x), cell(x, (zeros, zeros))):
        torch.testing.assert_close(a, b)
    assert cell.conv.in_channels == 8 and cell.conv.out_channels == 20


@given(shape=clip_shapes(), seed=seeds, bidirectional=st.booleans())
def test_shapes(shape, seed, bidirectional):
    b, t, c, h, w = shape
    lstm = _lstm(c, 6, seed, bidirectional=bidirectional)
    out, (hn, cn) = lstm(seeded_randn(shape, seed))
    assert out.shape == (b, t, 6, h, w)
    assert hn.shape == cn.shape == (b, 6, h, w)
    if not bidirectional:
        torch.testing.assert_close(out[:, -1], hn)


@given(shape=clip_shapes(frames=st.integers(2, 5)), seed=seeds)
def test_causal(shape, seed):
    """Unidirectional: output t depends on frames 0..t only."""
    lstm = _lstm(shape[2], seed=seed)
    clip = seeded_randn(shape, seed)
    out, _ = lstm(clip)
    t = (shape[1] - 1) // 2  # frames after t exist for every T >= 2
    changed = clip.clone()
    changed[:, t + 1 :] = seeded_randn(changed[:, t + 1 :].shape, seed + 1)
    changed_out, _ = lstm(changed)
    torch.testing.assert_close(changed_out[:, : t + 1], out[:, : t + 1], atol=0, rtol=0)
    assert not torch.allclose(changed_out[:, t + 1 :], out[:, t + 1 :])


def test_bidirectional_depends_on_the_future():
    lstm = _lstm(3, bidirectional=True)
    clip = seeded_randn((1, 4, 3, 5, 5), 0)
    out, _ = lstm(clip)
    changed = clip.clone()
    changed[:, -1] += 1
    assert not torch.allclose(lstm(changed)[0][:, 0], out[:, 0])
    # the returned state is the forward direction's final state
    causal = _lstm(3)
    causal.forward_cell.load_state_dict(lstm.forward_cell.state_dict())
    torch.testing.assert_close(lstm(clip)[1].h, causal(clip)[1].h)


@pytest.mark.thread_counts
@given(shape=clip_shapes(frames=st.integers(2, 5)), seed=seeds, split=st.integers(1, 4))
def test_state_carried_across_calls_equals_one_long_call(num_threads, shape, seed, split):
    split = min(split, shape[1] - 1)
    lstm = _lstm(shape[2], seed=seed)
    clip = seeded_randn(shape, seed)
    whole, final = lstm(clip)
    first, state = lstm(clip[:, :split])
    second, final_2 = lstm(clip[:, split:], state)
    torch.testing.assert_close(torch.cat((first, second), 1), whole)
    torch.testing.assert_close(final_2.h, final.h)
    torch.testing.assert_close(final_2.c, final.c)


def test_batch_independence_gradients_compile_half():
    lstm = _lstm(3, 4, bidirectional=True)
    clip = seeded_randn((3, 3, 3, 6, 5), 0)
    assert_batch_independent(lstm, clip)
    lstm(clip)[0].sum().backward()
    for name, p in lstm.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert_compiles(lstm, clip)
    assert_half_precision_finite(lstm, clip)


def test_errors():
    with pytest.raises(ValueError, match="odd"):
        ConvLSTMCell(3, 4, kernel_size=2)
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with C=3"):
        ConvLSTM(3, 4)(torch.randn(1, 2, 4, 5, 5))
    with pytest.raises(ValueError, match=r"clip: expected"):
        ConvLSTM(3, 4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"x: expected \(B, C, H, W\) with C=3"):
        ConvLSTMCell(3, 4)(torch.randn(1, 2, 5, 5))
    state = (torch.zeros(1, 4, 5, 6), torch.zeros(1, 4, 5, 6))
    with pytest.raises(ValueError, match="state.h"):
        ConvLSTMCell(3, 4)(torch.randn(1, 3, 5, 5), state)
    with pytest.raises(ValueError, match="state"):
        ConvLSTM(3, 4)(torch.randn(2, 2, 3, 5, 6), state)
    assert "hidden_channels=4" in repr(ConvLSTM(3, 4))
