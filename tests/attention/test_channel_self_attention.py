"""ChannelSelfAttention (DANet CAM): the official "max minus energy" formula == softmax(-E), identity at init,
pixel- and channel-permutation equivariance, batch independence."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import frame_shapes, seeded_randn, seeds
from vsrblocks.attention import ChannelSelfAttention, channel_self_attention


def _cam(channels: int, gamma: float = 0.6) -> ChannelSelfAttention:
    cam = ChannelSelfAttention(channels)
    with torch.no_grad():
        cam.gamma.fill_(gamma)
    return cam


def _official_cam(gamma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """DANet ``CAM_Module.forward`` (encoding/nn/da_att.py), transcribed."""
    b, c, h, w = x.shape
    proj_query = x.view(b, c, -1)
    proj_key = x.view(b, c, -1).permute(0, 2, 1)
    energy = torch.bmm(proj_query, proj_key)
    energy_new = torch.max(energy, -1, keepdim=True)[0].expand_as(energy) - energy
    attention = torch.softmax(energy_new, dim=-1)
    out = torch.bmm(attention, x.view(b, c, -1)).view(b, c, h, w)
    return gamma * out + x


@given(shape=frame_shapes(), seed=seeds)
def test_matches_official_and_softmax_of_minus_energy(shape, seed):
    x = seeded_randn(shape, seed) * 0.5
    cam = _cam(shape[1])
    out = cam(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _official_cam(cam.gamma, x), atol=1e-5, rtol=0)
    flat = x.flatten(2)
    energy = flat @ flat.transpose(1, 2)
    documented = (torch.softmax(-energy, dim=-1) @ flat).view(shape)
    torch.testing.assert_close(channel_self_attention(x), documented, atol=1e-5, rtol=1e-5)


def test_weights_dissimilar_channels_more():
    """softmax(-E): a channel attends mostly to the channel least similar to it."""
    x = torch.zeros(1, 3, 1, 2)
    x[0, 0, 0] = torch.tensor([1.0, 0.0])
    x[0, 1, 0] = torch.tensor([0.9, 0.1])
    x[0, 2, 0] = torch.tensor([-1.0, 0.0])
    flat = x.flatten(2)
    attention = torch.softmax(-(flat @ flat.transpose(1, 2)), dim=-1)
    assert attention[0, 0].argmax() == 2
    torch.testing.assert_close(channel_self_attention(x).flatten(2), attention @ flat)


@given(shape=frame_shapes(), seed=seeds)
def test_identity_at_init(shape, seed):
    x = seeded_randn(shape, seed)
    assert torch.equal(ChannelSelfAttention(shape[1])(x), x)


@given(shape=frame_shapes(channels=st.sampled_from([3, 4, 8])), seed=seeds)
def test_pixel_and_channel_permutation_equivariance(shape, seed):
    cam = _cam(shape[1])
    x = seeded_randn(shape, seed) * 0.5
    out = cam(x)
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(shape[2] * shape[3], generator=generator)
    shuffled = x.flatten(2)[..., perm].reshape(shape)
    torch.testing.assert_close(cam(shuffled), out.flatten(2)[..., perm].reshape(shape), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cam(x.flip(-1)), out.flip(-1), atol=1e-5, rtol=1e-5)
    channel_perm = torch.randperm(shape[1], generator=generator)
    torch.testing.assert_close(cam(x[:, channel_perm]), out[:, channel_perm], atol=1e-5, rtol=1e-5)


def test_batch_independence_gradients_compile_half():
    cam = _cam(8)
    x = seeded_randn((3, 8, 5, 4), 3) * 0.3
    assert_batch_independent(cam, x)
    xg = x.clone().requires_grad_()
    cam(xg).sum().backward()
    assert torch.isfinite(cam.gamma.grad).all() and cam.gamma.grad.abs() > 0
    assert torch.isfinite(xg.grad).all()
    assert_compiles(cam, x)
    assert_half_precision_finite(cam, x)


def test_state_dict_and_errors():
    assert list(ChannelSelfAttention(4).state_dict()) == ["gamma"]
    with pytest.raises(ValueError, match=r"with C=4"):
        ChannelSelfAttention(4)(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError):
        ChannelSelfAttention(0)
    with pytest.raises(ValueError, match=r"expected \(B, C, H, W\)"):
        channel_self_attention(torch.randn(3, 4, 4))


def test_extra_repr_shows_hyper_parameters():
    assert "channels=6" in repr(ChannelSelfAttention(6))
