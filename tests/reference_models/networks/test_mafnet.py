"""MAFnet (spec reconstruction): presets, any size, centre-only output, every parameter in the graph,
the adjacent-frame flow branch, the flags of every assumption, and argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_models import create_model, list_presets
from reference_models.networks.mafnet import PRESETS, FeatureFlowEstimator, MAFnet
from tests.checks import assert_base_path_flip_consistent, assert_batch_independent
from tests.strategies import seeded_rand, seeded_randn


def _tiny(seed: int = 0, **overrides) -> MAFnet:
    torch.manual_seed(seed)
    return MAFnet(**{**PRESETS["tiny"], **overrides})


def _randomise_(module: torch.nn.Module, seed: int, std: float = 0.05) -> None:
    """Every parameter random (the zero-initialised gamma, DCN offset convs and flow heads included), so
    that no gradient is zero by initialisation."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(std * torch.randn(param.shape, generator=generator, dtype=param.dtype))


def test_registry_presets_and_attributes():
    assert {"paper", "tiny"} <= set(list_presets("mafnet"))
    model = create_model("mafnet", "tiny")
    assert model.num_frames == 5 and model.scale == 4 and model.output_mode == "all"
    assert create_model("mafnet", "tiny", center_only=True).output_mode == "center"
    tiny_params = sum(p.numel() for p in model.parameters())
    assert 1_000 <= tiny_params <= 300_000


def test_paper_parameter_count():
    """Spec 2(b): ~2.83 M parameters with C_hr = 16 and 4 groups, ~8.44 M with C_hr = 64 and 8 groups."""
    paper = sum(p.numel() for p in MAFnet(**PRESETS["paper"]).parameters())
    assert abs(paper - 2.83e6) / 2.83e6 < 0.005, paper
    wide = sum(p.numel() for p in MAFnet(**{**PRESETS["paper"], "hr_channels": 64, "dcn_groups": 8}).parameters())
    assert abs(wide - 8.44e6) / 8.44e6 < 0.005, wide


@settings(max_examples=4)
@given(batch=st.integers(1, 2), height=st.integers(1, 9), width=st.integers(1, 9), seed=st.integers(0, 99))
def test_shapes_any_size(batch, height, width, seed):
    model = _tiny().eval()
    with torch.no_grad():
        out = model(seeded_rand((batch, 5, 3, height, width), seed))
    assert out.shape == (batch, 5, 3, 4 * height, 4 * width)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(7, 5), (8, 8)])
def test_center_only_is_the_centre_of_all(size):
    model = _tiny()
    _randomise_(model, 1)
    centre = _tiny(center_only=True)
    centre.load_state_dict(model.state_dict())
    clip = seeded_rand((2, 5, 3, *size), 0)
    with torch.no_grad():
        everything, middle = model.eval()(clip), centre.eval()(clip)
    assert middle.shape == (2, 3, 4 * size[0], 4 * size[1])
    torch.testing.assert_close(middle, everything[:, 2], atol=1e-6, rtol=1e-5)


@settings(max_examples=2)
@given(height=st.integers(3, 7), width=st.integers(3, 7), seed=st.integers(0, 99))
def test_batch_independent(height, width, seed):
    model = _tiny().eval()
    _randomise_(model, seed)
    with torch.no_grad():
        assert_batch_independent(model, seeded_rand((2, 5, 3, height, width), seed))


@settings(max_examples=3)
@given(height=st.integers(2, 8), width=st.integers(2, 8), seed=st.integers(0, 99))
def test_base_path_commutes_with_horizontal_flip(height, width, seed):
    """With the learned head silenced (``conv_last = 0``) every output frame is the bicubic x4 base of its LR
    frame, which commutes with a horizontal flip."""
    assert_base_path_flip_consistent(_tiny(seed).eval(), seeded_rand((1, 5, 3, height, width), seed), "bicubic")


def test_every_parameter_gets_a_finite_gradient():
    """No parameter is left out of the graph: with every parameter randomised, each receives a nonzero
    gradient (the off-centre taps of the k=3 channel-attention convs excepted: they only ever see the
    zero padding of a 1x1 map)."""
    model = _tiny()
    _randomise_(model, 3)
    with torch.no_grad():  # keep the 2-unit channel-attention bottlenecks out of a dead ReLU
        for ca in (model.mab_ca, model.afb_ca):
            ca.fc1.bias.fill_(1.0)
            ca.fc1_max.bias.fill_(1.0)
    clip = seeded_rand((1, 5, 3, 6, 7), 0)
    F.l1_loss(model(clip), seeded_rand((1, 5, 3, 24, 28), 1)).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} is not in the graph"
        assert torch.isfinite(param.grad).all(), name
        grad = param.grad
        if "_ca.fc" in name and name.endswith("weight"):
            grad = grad[..., 1, 1]
        assert grad.abs().sum() > 0, f"{name} has a zero gradient"


def test_fresh_model_gradients_are_finite():
    model = _tiny()
    out = model(seeded_rand((1, 5, 3, 5, 6), 0))
    out.mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    model = _tiny().eval()
    clip = seeded_rand((1, 5, 3, 6, 7), 0)
    with torch.no_grad():
        reference = model(clip)
        out = model.to(dtype)(clip.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)


def test_global_residual_is_bicubic():
    model = _tiny()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
    clip = seeded_rand((1, 5, 3, 5, 6), 0)
    with torch.no_grad():
        out = model(clip)
    expected = F.interpolate(clip.flatten(0, 1), scale_factor=4, mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, expected.unflatten(0, (1, 5)))
    no_residual = _tiny(global_residual=False)
    no_residual.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.all(no_residual(clip) == 0)


@pytest.mark.parametrize("flow_ref, expected", [("adjacent", [1, 2, 3, 4, 3]), ("center", [2, 2, 2, 2, 2])])
def test_flow_branch_reads_the_documented_neighbour(flow_ref, expected):
    """``f_t`` depends on the features of frames ``t`` and ``n(t)`` only."""
    model = _tiny(flow_ref=flow_ref)
    _randomise_(model, 4)
    assert model.neighbours(5) == expected
    feats = seeded_randn((5, 8, 6, 5), 0)
    clip = seeded_rand((1, 5, 3, 6, 5), 1)
    with torch.no_grad():
        base = model._flow_branch(feats, clip)
        for k in range(5):
            changed = feats.clone()
            changed[k] += 1.0
            moved = (model._flow_branch(changed, clip) - base).flatten(1).abs().amax(1) > 0
            readers = {t for t in range(5) if t == k or expected[t] == k}
            assert moved.tolist() == [t in readers for t in range(5)], (k, moved.tolist())


def test_spatiotemporal_self_attention_attends_over_the_clip():
    model = _tiny(spatiotemporal=True)
    _randomise_(model, 5)
    pam = model.mab_self_attention
    x = seeded_randn((10, 8, 3, 4), 0)  # (B T) C H W with B = 2, T = 5
    out = model._self_attention(x, frames=5)
    q, k, v = pam.query_conv(x), pam.key_conv(x), pam.value_conv(x)
    per_clip = lambda t: t.unflatten(0, (2, 5)).permute(0, 2, 1, 3, 4).flatten(2)  # noqa: E731  (B, C, T H W)
    attn = torch.softmax(per_clip(q).transpose(1, 2) @ per_clip(k), dim=-1)
    o = (per_clip(v) @ attn.transpose(1, 2)).unflatten(2, (5, 3, 4)).permute(0, 2, 1, 3, 4).flatten(0, 1)
    torch.testing.assert_close(out, pam.gamma * o + x, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(shared_mlp=True, ca_kernel_size=1),
        dict(edvr_exact=True),
        dict(flow_ref="center"),
        dict(flow_net="spynet_rgb"),
        dict(upsampler="ps2x2"),
        dict(merge="guide"),
        dict(bidirectional=False, pcd_levels=1),
        dict(spatiotemporal=True),
        dict(dcn_backend="torch"),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_every_assumption_flag_runs(overrides):
    model = _tiny(**overrides).eval()
    with torch.no_grad():
        out = model(seeded_rand((1, 5, 3, 5, 7), 0))
    assert out.shape == (1, 5, 3, 20, 28) and torch.isfinite(out).all()


def test_feature_flow_estimator():
    net = FeatureFlowEstimator(channels=4, hidden_channels=(8, 8))
    ref, supp = seeded_randn((2, 4, 7, 5), 0), seeded_randn((2, 4, 7, 5), 1)
    assert torch.all(net(ref, supp) == 0)  # zero-initialised heads: identity warp at the start
    _randomise_(net, 0, std=0.2)
    flow = net(ref, supp)
    assert flow.shape == (2, 2, 7, 5) and flow.abs().sum() > 0
    # any size = the replicate-padded multiple of 4, cropped
    padded = net(F.pad(ref, (0, 3, 0, 1), mode="replicate"), F.pad(supp, (0, 3, 0, 1), mode="replicate"))
    torch.testing.assert_close(flow, padded[..., :7, :5])
    with pytest.raises(ValueError, match="supp"):
        net(ref, supp[..., :4])


def test_errors():
    model = _tiny()
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with T=5, C=3"):
        model(torch.rand(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\)"):
        model(torch.rand(5, 3, 8, 8))
    for bad in (dict(flow_ref="previous"), dict(flow_net="raft"), dict(upsampler="deconv"), dict(merge="sum")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _tiny(**bad)
    with pytest.raises(ValueError, match="spynet_checkpoint"):
        _tiny(spynet_checkpoint="weights.pth")
    with pytest.raises(ValueError, match="num_frames"):
        _tiny(num_frames=0)
