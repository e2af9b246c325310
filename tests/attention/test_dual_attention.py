"""DualAttention (DASAA DAM): F + P + Q composition, branch switches, flip equivariance, batch independence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_models.inference.memory_budget import LiveTensorBytes
from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import seeded_randn, seeds, sizes
from vsrblocks.attention import ChannelSelfAttention, DualAttention, PositionAttention


def _dam(seed: int = 0, gamma: float = 0.5, **kwargs) -> DualAttention:
    torch.manual_seed(seed)
    dam = DualAttention(16, **kwargs)
    with torch.no_grad():
        for module in dam.modules():
            if isinstance(module, (PositionAttention, ChannelSelfAttention)):
                module.gamma.fill_(gamma)
    return dam


@settings(max_examples=5)
@given(batch=st.integers(1, 2), height=sizes, width=sizes, seed=seeds)
def test_composition(batch, height, width, seed):
    dam = _dam(seed)
    x = seeded_randn((batch, 16, height, width), seed)
    act = lambda t: F.leaky_relu(t, 0.1)  # noqa: E731
    p = act(dam.pam_out(dam.pam(act(dam.pam_in(x)))))
    q = act(dam.cam_out(dam.cam(act(dam.cam_in(x)))))
    torch.testing.assert_close(dam(x), x + p + q)
    only_pam = _dam(seed, use_cam=False)
    torch.testing.assert_close(only_pam(x), x + p)
    assert not hasattr(only_pam, "cam_in")
    only_cam = _dam(seed, use_pam=False)
    assert not hasattr(only_cam, "pam_in")
    assert only_cam(x).shape == x.shape


@settings(max_examples=10)
@given(
    batch=st.integers(1, 2),
    channels=st.sampled_from([1, 3, 8]),
    inter=st.sampled_from([8, 16]),
    height=sizes,
    width=sizes,
    seed=seeds,
)
def test_shapes_over_channels_and_sizes(batch, channels, inter, height, width, seed):
    torch.manual_seed(seed)
    dam = DualAttention(channels, inter_channels=inter)
    x = seeded_randn((batch, channels, height, width), seed)
    with torch.no_grad():
        out = dam(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_no_branch_is_identity_and_no_parameters():
    dam = DualAttention(16, use_pam=False, use_cam=False)
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(dam(x), x)
    assert sum(p.numel() for p in dam.parameters()) == 0


def test_inter_channels_and_parameter_count():
    dam = DualAttention(64)
    assert dam.pam.query_conv.out_channels == 8 and dam.pam.value_conv.out_channels == 64
    # 4 conv3x3 64->64 + PAM (2 x 64->8 + 64->64, 1x1) + 2 gammas
    assert sum(p.numel() for p in dam.parameters()) == 4 * (64 * 64 * 9 + 64) + 2 * (64 * 8 + 8) + 64 * 64 + 64 + 2
    small = DualAttention(32, inter_channels=16)
    assert small(torch.randn(1, 32, 4, 6)).shape == (1, 32, 4, 6)


@settings(max_examples=5)
@given(seed=seeds, height=sizes, width=sizes)
def test_flip_equivariance_with_flipped_kernels(seed, height, width):
    """The attention parts commute with any pixel permutation; the 3x3 convolutions commute with a flip once
    their kernels are flipped too."""
    dam = _dam(seed)
    flipped = _dam(seed)
    with torch.no_grad():
        for name in ("pam_in", "pam_out", "cam_in", "cam_out"):
            getattr(flipped, name).weight.copy_(getattr(dam, name).weight.flip(-1))
    x = seeded_randn((1, 16, height, width), seed)
    torch.testing.assert_close(flipped(x.flip(-1)), dam(x).flip(-1), atol=1e-5, rtol=1e-5)


def test_batch_independence_gradients_compile_half():
    dam = _dam(1)
    x = seeded_randn((3, 16, 6, 7), 1)
    assert_batch_independent(dam, x)
    dam(x).square().mean().backward()
    for name, p in dam.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert_compiles(dam, x)
    assert_half_precision_finite(dam, x)


def test_errors():
    with pytest.raises(ValueError, match=r"with C=16"):
        DualAttention(16)(torch.randn(1, 8, 4, 4))
    with pytest.raises(ValueError):
        DualAttention(12)  # PAM needs a multiple of reduction=8


def test_extra_repr_shows_hyper_parameters():
    text = repr(DualAttention(16, inter_channels=8, use_cam=False))
    assert "channels=16" in text and "inter_channels=8" in text and "use_pam=True" in text and "use_cam=False" in text


def test_reset_parameters_restores_the_identity_gates():
    dam = _dam(0, gamma=0.7)
    before = {name: p.clone() for name, p in dam.named_parameters()}
    dam.reset_parameters()
    assert dam.pam.gamma.item() == 0 and dam.cam.gamma.item() == 0
    for name, p in dam.named_parameters():
        if "gamma" not in name:
            assert not torch.equal(p, before[name]), f"{name} was not re-drawn"


def test_memory_linear_in_pixels_in_inference():
    """Both branches at 64x48 hold nothing near the HW x HW map (9.4 M values) in inference."""
    dam = _dam(1)
    n = 64 * 48
    with torch.no_grad(), LiveTensorBytes() as live:
        dam(seeded_randn((1, 16, 64, 48), 1))
    assert live.largest < n * n * 4 // 8, live.largest
