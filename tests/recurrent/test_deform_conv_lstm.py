"""DeformableConvLSTM and EasyPCD: reduction to a plain ConvLSTM, causality, shared bidirectional
weights, odd sizes, streaming, gradients."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.checks import assert_batch_independent, assert_compiles, assert_half_precision_finite
from tests.strategies import seeded_randn, seeds
from vsrblocks.align import EasyPCD, PCDAlignment
from vsrblocks.recurrent import ConvLSTM, DeformableConvLSTM


def _randomise_(module: torch.nn.Module, seed: int, std: float = 0.1) -> None:
    """Give every parameter (zero-initialised offset convs included) a random value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(std * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def _lstm(seed: int = 0, **kwargs) -> DeformableConvLSTM:
    torch.manual_seed(seed)
    kwargs = {"channels": 4, "deform_groups": 2, **kwargs}
    return DeformableConvLSTM(**kwargs)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("pcd_levels", [1, 3])
def test_identity_alignment_is_plain_convlstm(bidirectional, pcd_levels):
    """With identity-initialised EasyPCDs the deformable ConvLSTM *is* a ConvLSTM with the same cell
    (and, bidirectionally, the same cell in both directions and the same 1x1 fusion), exactly."""
    lstm = _lstm(pcd_levels=pcd_levels, bidirectional=bidirectional)
    _randomise_(lstm, seed=1, std=0.3)  # offset convs etc. random: the identity must not depend on them
    lstm.pcd_h.identity_init_()
    lstm.pcd_c.identity_init_()
    plain = ConvLSTM(4, 4, bidirectional=bidirectional)
    with torch.no_grad():
        plain.forward_cell.load_state_dict(lstm.cell.state_dict())
        if bidirectional:
            plain.backward_cell.load_state_dict(lstm.cell.state_dict())
            plain.fusion.load_state_dict(lstm.fusion.state_dict())
    clip = seeded_randn((2, 4, 4, 7, 9), 3, torch.float64)
    lstm, plain = lstm.double(), plain.double()
    out, (h, c) = lstm(clip)
    expected, (h_ref, c_ref) = plain(clip)
    assert torch.equal(out, expected) and torch.equal(h, h_ref) and torch.equal(c, c_ref)
    without = _lstm(pcd_levels=pcd_levels, bidirectional=bidirectional, align=False).double()
    without.load_state_dict({k: v for k, v in lstm.state_dict().items() if not k.startswith("pcd_")})
    assert torch.equal(without(clip)[0], expected)


@pytest.mark.parametrize("num_levels", [1, 2, 3])
@settings(max_examples=5)
@given(height=st.integers(1, 13), width=st.integers(1, 13), seed=seeds)
def test_easy_pcd_identity_and_any_size(num_levels, height, width, seed):
    pcd = EasyPCD(4, deform_groups=2, num_levels=num_levels)
    _randomise_(pcd, seed)
    f1, f2 = seeded_randn((2, 4, height, width), seed), seeded_randn((2, 4, height, width), seed + 1)
    out = pcd(f1, f2)
    assert out.shape == f1.shape and torch.isfinite(out).all()
    assert torch.equal(pcd.identity_init_()(f1, f2), f2)


def test_fresh_easy_pcd_does_not_deform():
    """Zero-initialised offset convs: every DCN samples on the regular grid (mask 0.5)."""
    torch.manual_seed(0)
    pcd = EasyPCD(4, deform_groups=2)
    seen = []
    for module in pcd.modules():
        if hasattr(module, "offset_and_mask"):
            module.register_forward_hook(lambda m, args, out: seen.append(m.offset_and_mask(args[1])))
    pcd(seeded_randn((1, 4, 8, 8), 0), seeded_randn((1, 4, 8, 8), 1))
    assert len(seen) == 6
    assert all(torch.all(offset == 0) and torch.all(mask == 0.5) for offset, mask in seen)


def test_pcd_upsampling_matches_fixed_factor_two_on_divisible_sizes():
    """Interpolating to the stored finer size equals ZSM's ``scale_factor=2`` when sizes divide."""
    import torch.nn.functional as F

    from vsrblocks.align.pcd import _up

    coarse, fine = seeded_randn((1, 3, 4, 6), 0), torch.zeros(1, 3, 8, 12)
    expected = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(_up(coarse, fine), expected)


@pytest.mark.thread_counts
@pytest.mark.parametrize("split", [1, 3])
def test_causal_and_streaming(num_threads, split):
    lstm = _lstm()
    _randomise_(lstm, split)
    clip = seeded_randn((1, 4, 4, 6, 5), split)
    out, final = lstm(clip)
    changed = clip.clone()
    changed[:, split:] += 1.0
    out_changed, _ = lstm(changed)
    torch.testing.assert_close(out_changed[:, :split], out[:, :split], atol=0, rtol=0)
    assert not torch.allclose(out_changed[:, split:], out[:, split:])
    first, state = lstm(clip[:, :split])
    second, final_streamed = lstm(clip[:, split:], state)
    torch.testing.assert_close(torch.cat((first, second), dim=1), out)
    torch.testing.assert_close(final_streamed.h, final.h)


def test_bidirectional_shares_weights_and_reverses_time():
    """The backward direction is the forward module on the reversed clip: fusing with weights
    [0, I] returns the re-reversed forward run of the reversed clip."""
    lstm = _lstm(bidirectional=True)
    _randomise_(lstm, 2)
    names = {name.split(".")[0] for name, _ in lstm.named_parameters()}
    assert names == {"pcd_h", "pcd_c", "cell", "fusion"}
    with torch.no_grad():
        lstm.fusion.weight.zero_()
        lstm.fusion.weight[:, 4:, 0, 0] = torch.eye(4)
        lstm.fusion.bias.zero_()
    clip = seeded_randn((2, 4, 4, 5, 6), 0)
    out, _ = lstm(clip)
    lstm.bidirectional = False
    reversed_run, _ = lstm(clip.flip(1))
    torch.testing.assert_close(out, reversed_run.flip(1))


def test_bidirectional_forward_half_continues_the_given_state():
    """Both directions run as one batch: the forward half must still start from the given state (and
    return the forward final state), the backward half from zeros."""
    lstm = _lstm(bidirectional=True)
    _randomise_(lstm, 3)
    with torch.no_grad():
        lstm.fusion.weight.zero_()
        lstm.fusion.weight[:, :4, 0, 0] = torch.eye(4)  # select the forward direction
        lstm.fusion.bias.zero_()
    clip = seeded_randn((2, 3, 4, 5, 6), 1)
    state = (seeded_randn((2, 4, 5, 6), 2), seeded_randn((2, 4, 5, 6), 3))
    out, final = lstm(clip, state)
    lstm.bidirectional = False
    forward_run, forward_final = lstm(clip, state)
    torch.testing.assert_close(out, forward_run)
    torch.testing.assert_close(final.h, forward_final.h)
    torch.testing.assert_close(final.c, forward_final.c)


@pytest.mark.parametrize("bidirectional", [False, True])
@settings(max_examples=5)
@given(
    batch=st.integers(1, 2),
    frames=st.integers(1, 2),
    height=st.integers(1, 11),
    width=st.integers(1, 11),
    seed=seeds,
)
def test_shapes_any_size(bidirectional, batch, frames, height, width, seed):
    lstm = _lstm(channels=3, hidden_channels=4, bidirectional=bidirectional)
    _randomise_(lstm, seed)
    out, (h, c) = lstm(seeded_randn((batch, frames, 3, height, width), seed))
    assert out.shape == (batch, frames, 4, height, width)
    assert h.shape == c.shape == (batch, 4, height, width)
    assert torch.isfinite(out).all()


def test_external_guide_drives_alignment_only():
    lstm = _lstm()
    _randomise_(lstm, 4, std=0.3)
    clip = seeded_randn((1, 3, 4, 6, 6), 0)
    default, _ = lstm(clip)
    torch.testing.assert_close(lstm(clip, guide=clip)[0], default)
    other = lstm(clip, guide=seeded_randn((1, 3, 4, 6, 6), 1))[0]
    assert not torch.allclose(other, default)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_gradients_reach_every_parameter(bidirectional):
    lstm = _lstm(channels=3, hidden_channels=4, bidirectional=bidirectional)
    _randomise_(lstm, 5)
    clip = seeded_randn((1, 3, 3, 8, 7), 0).requires_grad_()
    out, (h, c) = lstm(clip)
    (out.square().sum() + c.sum()).backward()
    for name, param in lstm.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name
    assert clip.grad.abs().sum() > 0


def test_batch_independent_bf16_and_compile():
    lstm = _lstm(bidirectional=True).eval()
    _randomise_(lstm, 6)
    clip = seeded_randn((2, 2, 4, 6, 5), 0)
    assert_batch_independent(lstm, clip)
    small = _lstm(pcd_levels=2).eval()
    _randomise_(small, 7)
    assert_compiles(small, clip[:1, :1], atol=1e-4)
    reference = lstm(clip)[0]
    out = assert_half_precision_finite(lstm, clip)
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.1)


def test_errors():
    lstm = _lstm()
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with C=4"):
        lstm(torch.randn(1, 2, 3, 5, 5))
    with pytest.raises(ValueError, match="state.h"):
        lstm(torch.randn(1, 2, 4, 5, 5), (torch.zeros(1, 4, 5, 6), torch.zeros(1, 4, 5, 5)))
    with pytest.raises(ValueError, match="guide"):
        lstm(torch.randn(1, 2, 4, 5, 5), guide=torch.randn(1, 3, 4, 5, 5))
    with pytest.raises(ValueError, match="num_levels"):
        EasyPCD(4, deform_groups=2, num_levels=0)
    with pytest.raises(ValueError, match="levels"):
        PCDAlignment(4, deform_groups=2, num_levels=2)([torch.zeros(1, 4, 4, 4)], [torch.zeros(1, 4, 4, 4)])
    with pytest.raises(ValueError, match="f2"):
        EasyPCD(4, deform_groups=2)(torch.zeros(1, 4, 6, 6), torch.zeros(1, 4, 6, 7))
