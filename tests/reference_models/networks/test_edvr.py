"""EDVR composed from vsrblocks against BasicSR's recorded run (``edvr_case1.pt``): BasicSR and MMagic key names,
release files recognised from their weights alone, any input size, torch.compile."""

from __future__ import annotations

import re

import pytest
import torch
import torch._dynamo.testing

import reference_models
from reference_models.checkpoint import CheckpointError, model_from_checkpoint
from reference_models.networks.edvr import EDVR, PRESETS, official_config_from_state_dict
from tests.basicsr_fixtures import load_basicsr
from tests.strategies import seeded_rand

ATOL = 1e-5


@pytest.fixture(scope="module")
def fixture():
    return load_basicsr("edvr_case1.pt")


def to_mmagic(key: str) -> str:
    """BasicSR's EDVR key in MMagic ``EDVRNet``'s names (its ``ConvModule`` layers hold a ``.conv``)."""
    renames = {
        "conv_l2_1": "feat_l2_conv1",
        "conv_l2_2": "feat_l2_conv2",
        "conv_l3_1": "feat_l3_conv1",
        "conv_l3_2": "feat_l3_conv2",
        "upconv1": "upsample1.upsample_conv",
        "upconv2": "upsample2.upsample_conv",
    }
    head, _, rest = key.partition(".")
    if head in renames and head.startswith("conv_l"):
        return f"{renames[head]}.conv.{rest}"
    if head in renames:
        return f"{renames[head]}.{rest}"
    key = key.replace("pcd_align.", "pcd_alignment.")
    conv_modules = r"(pcd_alignment\.(offset_conv\d\.l\d|feat_conv\.l\d|cas_offset_conv\d)|fusion\.(feat_fusion|spatial_attn[1-4]|spatial_attn_l\d|spatial_attn_add1))"
    return re.sub(rf"^{conv_modules}\.(weight|bias)$", lambda m: f"{m.group(1)}.conv.{m.group(4)}", key)


def test_reproduces_basicsr(fixture):
    model = reference_models.from_official("edvr", fixture["state_dict"], **fixture["config"])
    aligned = []
    model.pcd_align.register_forward_hook(lambda module, args, out: aligned.append(out))
    with torch.no_grad():
        out = model(fixture["inputs"]["lq"])
    torch.testing.assert_close(out, fixture["outputs"]["out"], atol=ATOL, rtol=0)
    # the T alignments run as one batch (B = 1 here): (T, C, H, W) as BasicSR's list of neighbours
    torch.testing.assert_close(aligned[0], fixture["intermediates"]["pcd_align_out"][:, 0], atol=ATOL, rtol=0)
    assert (model.num_frames, model.scale, model.output_mode) == (5, 4, "center")


WRAPPERS = {
    "basicsr-params": lambda sd: {"params": sd},
    "basicsr-params_ema": lambda sd: {"params": {k: torch.zeros_like(v) for k, v in sd.items()}, "params_ema": sd},
    "mmagic": lambda sd: {"meta": {"epoch": 1}, "state_dict": {f"generator.{to_mmagic(k)}": v for k, v in sd.items()}},
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_release_files_recognised_from_their_weights(fixture, tmp_path, wrapper):
    path = tmp_path / "edvr.pth"
    torch.save(WRAPPERS[wrapper](fixture["state_dict"]), path)
    reports = []
    model = model_from_checkpoint(path, report=reports.append)
    assert isinstance(model, EDVR) and not model.training
    assert "official edvr weights" in reports[0] and "num_feat=32, num_frame=5, deformable_groups=8" in reports[0]
    assert "center_frame_idx=2" in reports[0].split("paper values")[1]
    with torch.no_grad():
        torch.testing.assert_close(model(fixture["inputs"]["lq"]), fixture["outputs"]["out"], atol=ATOL, rtol=0)


def test_mmagic_names_through_from_official(fixture):
    mmagic = {to_mmagic(k): v for k, v in fixture["state_dict"].items()}
    assert "fusion.spatial_attn_l2.conv.weight" in mmagic and "feat_l3_conv2.conv.bias" in mmagic
    assert "pcd_alignment.dcn_pack.l1.conv_offset.weight" in mmagic and "upsample2.upsample_conv.weight" in mmagic
    model = reference_models.from_official("edvr", mmagic, **fixture["config"])
    with torch.no_grad():
        torch.testing.assert_close(model(fixture["inputs"]["lq"]), fixture["outputs"]["out"], atol=ATOL, rtol=0)


def test_config_read_off_other_layouts():
    """Without TSA, with the pre-deblur module and HR input, 7 frames, 4 DCN groups: all from the weights."""
    model = EDVR(
        channels=8,
        num_frames=7,
        deform_groups=4,
        extract_blocks=1,
        reconstruct_blocks=3,
        with_tsa=False,
        with_predeblur=True,
        hr_in=True,
    )
    basicsr = {}
    for key, value in model.state_dict().items():
        key = re.sub(
            r"^pcd_align\.levels\.(\d)\.(dcn|\w+)\.",
            lambda m: f"pcd_align.{'dcn_pack' if m.group(2) == 'dcn' else m.group(2)}.l{int(m.group(1)) + 1}.",
            key,
        )
        key = key.replace("upsample.stages.0.conv", "upconv1").replace("upsample.stages.1.conv", "upconv2")
        basicsr[key.replace("upsample.", "")] = value
    config, assumed = official_config_from_state_dict(basicsr)
    assert config == {
        "num_feat": 8,
        "num_frame": 7,
        "deformable_groups": 4,
        "num_extract_block": 1,
        "num_reconstruct_block": 3,
        "with_tsa": False,
        "with_predeblur": True,
        "hr_in": True,
        "center_frame_idx": 3,
    }
    assert assumed == ("center_frame_idx",)
    rebuilt = reference_models.from_official("edvr", basicsr, **config)
    clip = seeded_rand((1, 7, 3, 18, 13), 0)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(clip), model.eval()(clip), atol=0, rtol=0)
        assert rebuilt(clip).shape == (1, 3, 18, 13)  # HR in, HR out, at a size BasicSR refuses


def test_unrecognised_file_says_what_was_looked_for(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"params": {"body.0.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and "edvr" in message and "params/params_ema" in message


@pytest.mark.parametrize("overrides", [{}, {"with_tsa": False}, {"with_predeblur": True}])
def test_any_size(overrides):
    torch.manual_seed(0)
    model = EDVR(**{**PRESETS["tiny"], **overrides}).eval()
    with torch.no_grad():
        for h, w in [(5, 7), (9, 6)]:
            out = model(seeded_rand((2, 5, 3, h, w), h))
            assert out.shape == (2, 3, 4 * h, 4 * w) and torch.isfinite(out).all()


def test_rejects_bad_input_and_settings():
    model = EDVR(**PRESETS["tiny"])
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with T=5, C=3"):
        model(torch.zeros(1, 3, 3, 8, 8))
    with pytest.raises(ValueError, match="hr_in needs with_predeblur"):
        EDVR(**PRESETS["tiny"], hr_in=True)
    with pytest.raises(ValueError, match="RGB"):
        reference_models.from_official("edvr", {}, num_in_ch=1)


def test_presets_build_the_released_widths():
    for name, (channels, blocks, tsa) in {
        "paper": (64, 10, True),
        "edvr-m-wotsa": (64, 10, False),
        "edvr-l": (128, 40, True),
        "edvr-l-wotsa": (128, 40, False),
    }.items():
        preset = PRESETS[name]
        assert (preset["channels"], preset["reconstruct_blocks"], preset["with_tsa"]) == (channels, blocks, tsa)
    assert PRESETS["edvr-l-deblur"]["hr_in"] and PRESETS["edvr-l-deblur"]["with_predeblur"]


@pytest.mark.slow
def test_compile_matches_eager_without_recompiles():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = EDVR(**{**PRESETS["tiny"], "num_frames": 3}).eval()
    clips = [seeded_rand((1, 3, 3, 8, 8), seed) for seed in (0, 1)]
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    with torch.no_grad():
        expected = [model(clip) for clip in clips]
        compiled = torch.compile(model, backend=counter, fullgraph=True)
        for clip, want in zip(clips, expected):
            # eager runs the upsampling tail channels-last, the traced graph NCHW: float32 rounding of another
            # summation order (a few ulps of outputs near 1, accumulated over the tail's convolutions)
            torch.testing.assert_close(compiled(clip), want, atol=1e-5, rtol=0)
    assert counter.frame_count == 1
