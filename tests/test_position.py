"""Position encodings: the VSRT paper formula (any size, bounded, distinct) and the official 4.0.0 quirk (fixture parity)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_compiles
from tests.official import VSRT_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import batches, frames, sizes
from vsrblocks import OfficialPositionEncoding3D, SinCosPositionEncoding3D, sincos_position_encoding_3d


@given(batch=batches, frames_=frames, channels=st.integers(1, 20), height=sizes, width=sizes)
def test_shape_bounded_and_batch_constant(batch, frames_, channels, height, width):
    pe = SinCosPositionEncoding3D(channels)
    out = pe(torch.zeros(batch, frames_, channels, height, width))
    assert out.shape == (batch, frames_, channels, height, width)
    assert out.dtype == torch.float32
    assert out.abs().max() <= 1.0
    torch.testing.assert_close(out[0], out[-1], atol=0, rtol=0)


@given(
    frames_=st.integers(1, 6),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    channels=st.sampled_from([6, 7, 8, 12]),
)
def test_every_position_has_a_distinct_code(frames_, height, width, channels):
    out = SinCosPositionEncoding3D(channels)(torch.zeros(1, frames_, channels, height, width))[0]
    codes = out.permute(0, 2, 3, 1).reshape(-1, channels)
    distances = torch.cdist(codes, codes) + torch.eye(codes.shape[0]) * 10
    assert distances.min() > 1e-3


def test_paper_formula_values():
    """C = 12: four channels per axis, a_k = 1 / 1000 ** (2k / 4) -> a_0 = 1, a_1 = 1000 ** -0.5."""
    t, h, w = 2, 3, 4
    out = SinCosPositionEncoding3D(12)(torch.zeros(1, 3, 12, 5, 6))[0, t, :, h, w]
    a1 = 1000.0**-0.5
    expected = []
    for pos in (t, h, w):
        expected += [math.sin(pos), math.cos(pos), math.sin(pos * a1), math.cos(pos * a1)]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


def test_uneven_channel_split():
    """C = 8 -> groups (3, 3, 2) over (t, h, w); odd groups end with an unpaired sine."""
    base = 10.0
    out = sincos_position_encoding_3d(8, frames=3, height=2, width=4, base=base)
    t, h, w = 2, 1, 3
    expected = [math.sin(t), math.cos(t), math.sin(t * base ** (-2 / 3))]
    expected += [math.sin(h), math.cos(h), math.sin(h * base ** (-2 / 3))]
    expected += [math.sin(w), math.cos(w)]
    torch.testing.assert_close(out[t, :, h, w], torch.tensor(expected), atol=1e-6, rtol=0)
    assert sincos_position_encoding_3d(1, 2, 2, 2).shape == (2, 1, 2, 2)


def test_cache_device_dtype_and_state():
    pe = SinCosPositionEncoding3D(6)
    assert len(pe.state_dict()) == 0 and not list(pe.buffers())
    a = pe(torch.zeros(1, 2, 6, 3, 3))
    assert pe(torch.zeros(2, 2, 6, 3, 3))[1].data_ptr() == a[0].data_ptr()  # cached, broadcast over the batch
    half = pe(torch.zeros(1, 2, 6, 3, 3, dtype=torch.bfloat16))
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), a, atol=1e-2, rtol=0)
    assert pe(torch.zeros(1, 4, 6, 5, 7)).shape == (1, 4, 6, 5, 7)
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with C=6"):
        pe(torch.zeros(1, 2, 5, 3, 3))


def test_cache_built_in_inference_mode_serves_training():
    pe = SinCosPositionEncoding3D(6)
    with torch.inference_mode():
        pe(torch.zeros(1, 2, 6, 3, 3))
    x = torch.rand(1, 2, 6, 3, 3, requires_grad=True)
    out = pe(x)
    assert not out.is_inference()
    ((x + out) * x).sum().backward()
    assert x.grad is not None


def test_compiles():
    pe = SinCosPositionEncoding3D(6)
    assert_compiles(lambda x: x + pe(x), torch.rand(1, 3, 6, 4, 5))
    official = OfficialPositionEncoding3D(5)
    assert_compiles(lambda x: x + official(x), torch.rand(1, 5, 6, 4, 5))


def test_official_fixture_parity():
    official = load_official(FIXTURE)
    features = official["intermediates"]["features"]
    pe = OfficialPositionEncoding3D(official["config"]["num_frame"])
    pe.load_state_dict({"penc.inv_freq": official["state_dict"]["pos_embedding.penc.inv_freq"]})
    torch.testing.assert_close(pe(features), official["intermediates"]["pos_enc"], atol=1e-6, rtol=0)


def test_official_formula_t5_and_t7():
    c = torch.arange(6.0).view(6, 1, 1)
    h = torch.arange(4.0).view(1, 4, 1)
    w = torch.arange(5.0).view(1, 1, 5)
    out5 = OfficialPositionEncoding3D(5)(torch.zeros(2, 5, 6, 4, 5))[1]
    for t, expected in enumerate([c.sin(), c.cos(), h.sin(), h.cos(), w.sin()]):
        torch.testing.assert_close(out5[t], expected.expand(6, 4, 5), atol=1e-6, rtol=0)
    out7 = OfficialPositionEncoding3D(7)(torch.zeros(1, 7, 6, 4, 5))[0]
    for t, expected in enumerate(
        [c.sin(), (c / 100).sin(), c.cos(), (c / 100).cos(), h.sin(), (h / 100).sin(), h.cos()]
    ):
        torch.testing.assert_close(out7[t], expected.expand(6, 4, 5), atol=1e-6, rtol=0)


def test_official_inv_freq_is_checked_not_stored():
    pe = OfficialPositionEncoding3D(7)
    assert len(pe.state_dict()) == 0
    torch.testing.assert_close(pe.inv_freq(), torch.tensor([1.0, 0.01]))
    pe.load_state_dict({"penc.inv_freq": torch.tensor([1.0, 0.01])})
    pe.load_state_dict({"inv_freq": torch.tensor([1.0, 0.01])})
    pe.load_state_dict({})
    with pytest.raises(RuntimeError, match="inv_freq"):
        pe.load_state_dict({"penc.inv_freq": torch.tensor([1.0])})
    with pytest.raises(ValueError, match="num_frames=7 has 12 components"):
        pe(torch.zeros(1, 13, 2, 2, 2))
