"""IconVSR composed from vsrblocks (bidirectional propagation + the EDVR extractor) against BasicSR's recorded run
(``iconvsr_case1.pt``): BasicSR and MMagic key names, release files recognised from their weights, BasicSR's
temporal padding, any length and size, streaming, torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

import reference_models
from reference_models.checkpoint import model_from_checkpoint
from reference_models.networks.iconvsr import PRESETS, IconVSR, convert_official_state_dict, keyframe_window
from tests.basicsr_fixtures import load_basicsr
from tests.reference_models.networks.test_edvr import to_mmagic
from tests.strategies import seeded_parameters_, seeded_rand
from vsrblocks.recurrent import FeatureStore


@pytest.fixture(scope="module")
def fixture():
    return load_basicsr("iconvsr_case1.pt")


@pytest.fixture(scope="module")
def official(fixture):
    return reference_models.from_official("iconvsr", fixture["state_dict"], **fixture["config"])


def test_reproduces_basicsr(fixture, official):
    with torch.no_grad():
        out = official(fixture["inputs"]["lq"])
    torch.testing.assert_close(out, fixture["outputs"]["out"], atol=1e-5, rtol=0)
    assert (official.num_frames, official.scale, official.output_mode) == (15, 4, "all")


def mmagic_layout(state_dict: dict) -> dict:
    """BasicSR's IconVSR keys in MMagic ``IconVSRNet``'s names (SPyNet: ``basic_module.{2j}`` -> ``.{j}.conv``)."""
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("edvr."):
            key = "edvr." + to_mmagic(key[5:])
        elif key.startswith("spynet.basic_module."):
            parts = key.split(".")  # spynet.basic_module.L.basic_module.2j.weight
            key = f"spynet.basic_module.{parts[2]}.basic_module.{int(parts[4]) // 2}.conv.{parts[5]}"
        else:
            key = key.replace("backward_trunk.", "backward_resblocks.").replace("forward_trunk.", "forward_resblocks.")
            key = key.replace("upconv1.", "upsample1.upsample_conv.").replace("upconv2.", "upsample2.upsample_conv.")
        renamed[key] = value
    return renamed


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"params_ema": sd},
        lambda sd: {"meta": {}, "state_dict": {f"generator.{k}": v for k, v in mmagic_layout(sd).items()}},
    ],
    ids=["basicsr-params_ema", "mmagic"],
)
def test_release_files_recognised_from_their_weights(fixture, official, tmp_path, wrap):
    path = tmp_path / "iconvsr.pth"
    torch.save(wrap(fixture["state_dict"]), path)
    reports = []
    model = model_from_checkpoint(path, report=reports.append)
    assert isinstance(model, IconVSR)
    assert "official iconvsr weights" in reports[0] and "num_feat=32, num_block=2, temporal_padding=2" in reports[0]
    mine, theirs = model.state_dict(), official.state_dict()
    assert mine.keys() == theirs.keys()
    for key in mine:
        torch.testing.assert_close(mine[key], theirs[key], atol=0, rtol=0, msg=key)


def test_edvr_weights_from_their_own_file(fixture, tmp_path):
    """``edvr_path``: the extractor's weights from an EDVR-M file, as BasicSR's constructor loads them."""
    edvr = {k[5:]: v for k, v in fixture["state_dict"].items() if k.startswith("edvr.")}
    edvr["reconstruction.0.conv1.weight"] = torch.zeros(1)  # a whole EDVR file: the extractor part is taken
    torch.save({"params": edvr}, tmp_path / "edvr.pth")
    rest = {k: v for k, v in fixture["state_dict"].items() if not k.startswith("edvr.")}
    model = reference_models.from_official("iconvsr", rest, **fixture["config"], edvr_path=str(tmp_path / "edvr.pth"))
    torch.testing.assert_close(
        model.edvr.fusion.spatial_attn1.weight, fixture["state_dict"]["edvr.fusion.spatial_attn1.weight"]
    )


@pytest.mark.parametrize("padding", [2, 3])
def test_keyframe_windows_are_basicsr_temporal_padding(padding):
    for length in range(2 * padding + 1, 12):
        frames = torch.arange(length).view(1, length)
        head = {2: [4, 3], 3: [6, 5, 4]}[padding]
        tail = {2: [-4, -5], 3: [-5, -6, -7]}[padding]
        extended = torch.cat((frames[:, head], frames, frames[:, tail]), dim=1)[0]
        for i in range(length):
            assert keyframe_window(i, length, padding) == extended[i : i + 2 * padding + 1].tolist()


def test_short_clips_get_valid_windows():
    for length in range(1, 5):
        for i in range(length):
            window = keyframe_window(i, length, 2)
            assert len(window) == 5 and window[2] == i and all(0 <= j < length for j in window)


def tiny() -> IconVSR:
    torch.manual_seed(0)
    return seeded_parameters_(IconVSR(**PRESETS["tiny"]), seed=1, std=0.1).eval()


@pytest.mark.parametrize("shape", [(1, 1, 3, 5, 6), (2, 2, 3, 7, 9), (1, 6, 3, 2, 3)])
def test_any_length_and_size(shape):
    model = tiny()
    with torch.no_grad():
        out = model(seeded_rand(shape, 0))
    b, t, c, h, w = shape
    assert out.shape == (b, t, 3, 4 * h, 4 * w) and torch.isfinite(out).all()


def test_stream_emits_the_forward_frames_and_empties_its_store():
    model = tiny()
    clip = seeded_rand((1, 7, 3, 9, 10), 1)
    store, emitted = FeatureStore(), {}
    with torch.no_grad():
        expected = model(clip)
        model.stream([clip[:, i] for i in range(7)], emit=emitted.__setitem__, store=store)
    assert sorted(emitted) == list(range(7)) and len(store) == 0
    torch.testing.assert_close(torch.stack([emitted[i] for i in range(7)], 1), expected, atol=0, rtol=0)
    assert model.keyframes(7) == [0, 5, 6] and model.keyframes(6) == [0, 5]


def test_converter_names_every_weight(fixture):
    converted = convert_official_state_dict(fixture["state_dict"])
    assert set(converted) == set(IconVSR(**{**PRESETS["paper"], "channels": 32, "num_blocks": 2}).state_dict())


@pytest.mark.slow
def test_compile_matches_eager_without_recompiles():
    torch._dynamo.reset()
    model = tiny()
    clips = [seeded_rand((1, 2, 3, 8, 8), seed) for seed in (0, 1)]
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    with torch.no_grad():
        expected = [model(clip) for clip in clips]
        compiled = torch.compile(model, backend=counter)
        for clip, want in zip(clips, expected):
            # eager runs the upsampling tail channels-last, the traced graph NCHW: float32 rounding of another
            # summation order (a few ulps of outputs near 1, accumulated over the tail's convolutions)
            torch.testing.assert_close(compiled(clip), want, atol=1e-5, rtol=0)
        frames = counter.frame_count
        compiled(clips[0])
    assert counter.frame_count == frames, "new data of the same shape recompiled"
