"""VSR-Transformer: parity of ``from_official`` with the official network (whole model and block by block),
tiled inference at other sizes, the presets at any size and frame count, gradients, and argument errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference_models import create_model, list_presets
from reference_models import from_official as registry_from_official
from reference_models.networks.vsrt import PRESETS, VSRT, _tile_spans, convert_official_state_dict, from_official
from tests.checks import assert_base_path_flip_consistent
from tests.official import VSRT_FIXTURE as FIXTURE
from tests.official import load_official
from tests.strategies import seeded_rand
from vsrblocks.align.spynet import SPyNet, bidirectional_flows
from vsrblocks.checkpoint import CheckpointError

#: The recording and this code each differ from the exact (float64) result by float32 rounding of the same
#: computation: the fixture records 2.7e-7 on the output and 2.6e-6 on SPyNet's flows (their 2^k pyramid scaling
#: amplifies it); measured here with AVX-512 and with AVX2 kernels (ATEN_CPU_CAPABILITY/ONEDNN_MAX_CPU_ISA), at 1
#: and 2 threads: at most 2.4e-7 and 2.9e-6 from the recording. 1e-5 covers the sum of both roundings with 2x to spare.
ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture():
    return load_official(FIXTURE)


@pytest.fixture(scope="module")
def official(fixture, num_threads):
    """The official model from the fixture, run once (per thread count) on the fixture input with its first layer
    hooked."""
    model = registry_from_official("vsrt", fixture["state_dict"], **fixture["config"])
    seen: dict[str, torch.Tensor] = {}
    layer = model.layers[0]
    hooks = [
        layer.attn.register_forward_hook(lambda m, i, o: seen.update(stcsa_in=i[0], stcsa_out=o)),
        layer.ff.register_forward_hook(lambda m, i, o: seen.update(boff_in=i[0], boff_out=o)),
    ]
    with torch.no_grad():
        out = model(fixture["inputs"]["x"])
    for hook in hooks:
        hook.remove()
    return model, out, seen


@pytest.mark.thread_counts
def test_official_full_parity(num_threads, fixture, official):
    model, out, _ = official
    assert not model.training
    assert out.shape == (1, 5, 3, 256, 256)
    torch.testing.assert_close(out, fixture["outputs"]["out"], atol=ATOL, rtol=0)


@pytest.mark.thread_counts
@pytest.mark.parametrize("name", ["stcsa_in", "stcsa_out", "boff_in", "boff_out"])
def test_official_block_parity(num_threads, fixture, official, name):
    _, _, seen = official
    torch.testing.assert_close(seen[name], fixture["intermediates"][name], atol=ATOL, rtol=0)


@pytest.mark.thread_counts
def test_official_features_flows_and_position(num_threads, fixture, official):
    model, _, _ = official
    x, ref = fixture["inputs"]["x"], fixture["intermediates"]
    with torch.no_grad():
        features = model.feature_extraction(torch.nn.functional.leaky_relu(model.conv_first(x.flatten(0, 1)), 0.1))
        flows_forward, flows_backward = bidirectional_flows(model.spynet, x)
        pos = model.pos_embedding(ref["features"])
    torch.testing.assert_close(features.unflatten(0, (1, 5)), ref["features"], atol=ATOL, rtol=0)
    torch.testing.assert_close(flows_forward, ref["flows_forward"], atol=ATOL, rtol=0)
    torch.testing.assert_close(flows_backward, ref["flows_backward"], atol=ATOL, rtol=0)
    torch.testing.assert_close(pos, ref["pos_enc"], atol=ATOL, rtol=0)


def test_official_tiled_at_other_size(fixture, official):
    """64x88 runs as two overlapping 64x64 tiles (2-D tilings: the small model below). The input is the
    fixture clip extended by edge replication, so the left tile sees exactly the fixture input: the part
    of the output that tile owns must equal the official output there."""
    model, _, _ = official
    x = fixture["inputs"]["x"]
    wide = torch.nn.functional.pad(x.flatten(0, 1), (0, 24, 0, 0), mode="replicate").unflatten(0, (1, 5))
    with torch.no_grad():
        out = model(wide)
    assert out.shape == (1, 5, 3, 256, 352)
    assert torch.isfinite(out).all()
    (_, (_, own_rows)), (_, (_, own_cols)) = _tile_spans(64, 64, 16)[0], _tile_spans(88, 64, 16)[0]
    region = (..., slice(0, 4 * own_rows), slice(0, 4 * own_cols))
    torch.testing.assert_close(out[region], fixture["outputs"]["out"][region], atol=ATOL, rtol=0)


def test_tile_spans_partition_the_axis():
    for size, tile, overlap in [(64, 64, 16), (72, 64, 16), (200, 64, 16), (113, 64, 0), (65, 64, 63)]:
        spans = _tile_spans(size, tile, overlap)
        owned = [own for _, own in spans]
        assert owned[0][0] == 0 and owned[-1][1] == size
        assert all(a[1] == b[0] for a, b in zip(owned, owned[1:]))
        for start, (lo, hi) in spans:
            assert start <= lo < hi <= start + tile
            # every owned pixel but the frame borders is at least overlap // 2 - 1 px away from a tile edge
            assert lo == 0 or lo - start >= overlap // 2 - 1
            assert hi == size or start + tile - hi >= overlap // 2 - 1


def test_tiling_with_official_norm_small_model():
    """A small model with the size-bound (C, 16, 16) LayerNorm runs larger and smaller frames by tiling;
    a tile-sized input takes the untiled path and equals it exactly."""
    torch.manual_seed(0)
    kwargs = dict(PRESETS["tiny"], norm="official", feat_size=16, pos_encoding="official")
    tiled = VSRT(**kwargs, tile_size=16, tile_overlap=4).eval()
    plain = VSRT(**kwargs).eval()
    plain.load_state_dict(tiled.state_dict())
    x = seeded_rand((1, 3, 3, 16, 16), 1)
    with torch.no_grad():
        torch.testing.assert_close(tiled(x), plain(x), atol=0, rtol=0)
        for height, width in [(20, 18), (9, 12)]:
            clip = seeded_rand((1, 3, 3, height, width), height * width)
            out = tiled(clip)
            assert out.shape == (1, 3, 3, 4 * height, 4 * width)
            assert torch.isfinite(out).all()
            if height >= 16:
                # top-left tile: its owned region equals the untiled run on the top-left crop
                rows = 4 * _tile_spans(height, 16, 4)[0][1][1]
                cols = 4 * _tile_spans(width, 16, 4)[0][1][1]
                crop = plain(clip[..., :16, :16])
                torch.testing.assert_close(out[..., :rows, :cols], crop[..., :rows, :cols], atol=1e-6, rtol=0)
        with pytest.raises(ValueError, match="tile_size=16"):
            plain(seeded_rand((1, 3, 3, 20, 16), 0))


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model("vsrt", "tiny").eval()


@settings(max_examples=4)
@given(
    batch=st.integers(1, 2),
    frames=st.integers(1, 4),
    height=st.integers(3, 24),
    width=st.integers(3, 24),
    seed=st.integers(0, 2**16),
)
def test_tiny_any_size_and_frame_count(tiny, batch, frames, height, width, seed):
    with torch.no_grad():
        out = tiny(seeded_rand((batch, frames, 3, height, width), seed))
    assert out.shape == (batch, frames, 3, 4 * height, 4 * width)
    assert torch.isfinite(out).all()


@settings(max_examples=3)
@given(frames=st.integers(1, 3), height=st.integers(3, 20), width=st.integers(3, 20), seed=st.integers(0, 2**16))
def test_tiny_batch_independent(tiny, frames, height, width, seed):
    x = seeded_rand((2, frames, 3, height, width), seed)
    with torch.no_grad():
        whole = tiny(x)
        for i in range(2):
            torch.testing.assert_close(whole[i : i + 1], tiny(x[i : i + 1]), atol=1e-5, rtol=1e-4)


@settings(max_examples=4)
@given(frames=st.integers(1, 3), height=st.integers(3, 16), width=st.integers(3, 16), seed=st.integers(0, 2**16))
def test_bilinear_base_path_commutes_with_horizontal_flip(frames, height, width, seed):
    """With the learned head silenced (``conv_last = 0``) every output frame is the bilinear x4 base of its LR
    frame, which commutes with a horizontal flip."""
    torch.manual_seed(seed % 100)
    model = create_model("vsrt", "tiny").eval()
    assert_base_path_flip_consistent(model, seeded_rand((1, frames, 3, height, width), seed), "bilinear")


def test_center_output_mode():
    torch.manual_seed(0)
    model = create_model("vsrt", "tiny", output_mode="center").eval()
    x = seeded_rand((1, 5, 3, 10, 12), 0)
    with torch.no_grad():
        centre = model(x)
        model.output_mode = "all"
        torch.testing.assert_close(centre, model(x)[:, 2], atol=0, rtol=0)
    assert centre.shape == (1, 3, 40, 48)


def test_channels_last_features_stay_channels_last_and_change_nothing():
    """On CPU the features run channels-last: every convolution after the first sees a channels-last input
    (SPyNet's, on the raw frames, excepted), and the result equals the contiguous run up to rounding."""
    torch.manual_seed(0)
    model = create_model("vsrt", "tiny").eval()
    x = seeded_rand((1, 3, 3, 12, 14), 3)
    layouts: dict[str, bool] = {}

    def record(name: str, frames: torch.Tensor) -> None:
        layouts[name] = frames.is_contiguous(memory_format=torch.channels_last) and not frames.is_contiguous()

    hooks = [
        conv.register_forward_pre_hook(lambda module, inputs, name=name: record(name, inputs[0]))
        for name, conv in model.named_modules()
        if isinstance(conv, torch.nn.Conv2d) and not name.startswith(("spynet", "conv_first"))
    ]
    with torch.no_grad():
        nhwc = model(x)
        for hook in hooks:
            hook.remove()
        model.channels_last = False
        nchw = model(x)
    assert layouts and all(layouts.values()), [name for name, kept in layouts.items() if not kept]
    assert nhwc.is_contiguous()
    torch.testing.assert_close(nhwc, nchw, atol=1e-5, rtol=0)


def test_tiny_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = create_model("vsrt", "tiny").train()
    x = seeded_rand((1, 2, 3, 10, 12), 5)
    model(x).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{name}: zero gradient"


def test_tiny_bf16_finite(tiny):
    model = create_model("vsrt", "tiny").eval().to(torch.bfloat16)
    with torch.no_grad():
        out = model(seeded_rand((1, 3, 3, 12, 14), 2).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_presets_and_parameter_counts():
    assert {"paper", "paper-reds", "paper-vimeo", "tiny"} <= set(list_presets("vsrt"))
    counts, frames = {}, {}
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        for preset in ("paper", "paper-reds", "paper-vimeo", "tiny"):
            model = create_model("vsrt", preset)
            assert model.scale == 4 and model.output_mode == "all"
            counts[preset] = sum(p.numel() for p in model.parameters())
            frames[preset] = model.num_frames
        # with the official (C, 64, 64) LayerNorm the REDS configuration has the paper's ~32.6 M parameters
        official_norm = sum(p.numel() for p in create_model("vsrt", "paper", norm="official").parameters())
    assert counts["paper"] == counts["paper-reds"] == 27_322_735
    assert counts["paper-vimeo"] == 36_507_375
    assert official_norm == 32_564_335
    assert frames == {"paper": 5, "paper-reds": 5, "paper-vimeo": 7, "tiny": 3}
    assert len(create_model("vsrt", "paper-vimeo", channels=8, num_reconstruct_blocks=0, boff_blocks=0).layers) == 7


def test_invalid_arguments(fixture):
    with pytest.raises(ValueError, match="unknown preset"):
        create_model("vsrt", "huge")
    with pytest.raises(ValueError, match="norm"):
        VSRT(**PRESETS["tiny"], norm="batch")
    with pytest.raises(ValueError, match="pos_encoding"):
        VSRT(**PRESETS["tiny"], pos_encoding="learned")
    with pytest.raises(ValueError, match="output_mode"):
        VSRT(**PRESETS["tiny"], output_mode="middle")
    with pytest.raises(ValueError, match="tile_overlap"):
        VSRT(**PRESETS["tiny"], tile_size=16, tile_overlap=16)
    model = VSRT(**PRESETS["tiny"])
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\) with C=3"):
        model(torch.rand(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match=r"expected \(B, T, C, H, W\)"):
        model(torch.rand(3, 3, 16, 16))
    official_pos = VSRT(**PRESETS["tiny"], pos_encoding="official")
    with pytest.raises(ValueError, match="T=3"):
        official_pos(torch.rand(1, 4, 3, 16, 16))

    state, config = fixture["state_dict"], fixture["config"]
    with pytest.raises(ValueError, match="feat_size"):
        from_official(state, **{**config, "feat_size": 32})
    with pytest.raises(ValueError, match="image_ch"):
        from_official(state, **{**config, "image_ch": 1})
    with pytest.raises(CheckpointError, match="inv_freq"):
        convert_official_state_dict({**state, "pos_embedding.penc.inv_freq": torch.tensor([0.5])}, 5)
    with pytest.raises(CheckpointError, match="mean"):
        convert_official_state_dict({**state, "spynet.spynet.mean": torch.zeros(1, 3, 1, 1)}, 5)
    with pytest.raises(CheckpointError, match="missing keys: conv_last.bias"):
        from_official({k: v for k, v in state.items() if k != "conv_last.bias"}, **config)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        from_official(state, **{**config, "num_feat": 8})
    # T = 7 needs the two-frequency inv_freq buffer
    with pytest.raises(CheckpointError, match="inv_freq"):
        from_official(state, **{**config, "num_frame": 7})


def test_from_official_unwraps_basicsr_checkpoints(fixture, official):
    model, _, _ = official
    wrapped = {"params": {f"module.{k}": v for k, v in fixture["state_dict"].items()}}
    again = from_official(wrapped, **fixture["config"])
    for (name, ours), (_, theirs) in zip(again.state_dict().items(), model.state_dict().items()):
        assert torch.equal(ours, theirs), name


def test_spynet_pretrained_file_is_loaded(tmp_path):
    torch.manual_seed(1)
    source = SPyNet()
    torch.save({"state_dict": source.state_dict()}, tmp_path / "spynet.pth")
    model = create_model("vsrt", "tiny", spynet_pretrained=str(tmp_path / "spynet.pth"))
    for name, value in source.state_dict().items():
        assert torch.equal(model.spynet.state_dict()[name], value), name


def test_narrow_spynet_pretrained_file_keeps_its_widths(tmp_path):
    torch.manual_seed(2)
    source = SPyNet((8, 16, 8, 4))
    torch.save({"params": source.state_dict()}, tmp_path / "narrow.pth")
    model = create_model(
        "vsrt", "tiny", spynet_channels=(32, 64, 32, 16), spynet_pretrained=str(tmp_path / "narrow.pth")
    )
    assert model.spynet.hidden_channels == (8, 16, 8, 4)


def test_channels_last_by_default_only_without_autograd():
    """``channels_last=None`` picks channels-last for CPU inference, contiguous for a training step (where
    channels-last convolutions measured no faster, or slower with AVX2 only)."""
    model = create_model("vsrt", "tiny")
    assert model.channels_last is None
    seen: list[bool] = []
    hook = model.feature_extraction.register_forward_pre_hook(
        lambda module, inputs: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = seeded_rand((1, 3, 3, 8, 8), 4)
    with torch.no_grad():
        model(x)
    model(x)
    hook.remove()
    assert seen == [True, False]
