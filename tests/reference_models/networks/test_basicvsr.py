"""BasicVSR: parity with BasicSR's recorded run, BasicSR and MMagic checkpoint files recognised from their keys,
streaming through a feature store equals the whole-clip forward, any length and size, compile, errors.

The helpers here serve BasicVSR++'s tests too (test_basicvsrpp.py)."""

from __future__ import annotations

import re

import pytest
import torch

import reference_models
from reference_models import create_model
from reference_models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
)
from reference_models.inference.upscale import upscale_clip
from tests.basicsr_fixtures import load_basicsr
from tests.checks import assert_compiles
from tests.strategies import seeded_rand
from vsrblocks.recurrent import FeatureStore

_SPYNET_BASICSR = re.compile(r"^spynet\.basic_module\.(\d+)\.basic_module\.(\d+)\.(weight|bias)$")


def mmagic_names(state_dict: dict, renames: dict[str, str]) -> dict:
    """BasicSR key names -> MMagic's (``renames`` of prefixes, SPyNet's ``.conv.`` level), as in MMagic's files."""
    out = {}
    for key, value in state_dict.items():
        match = _SPYNET_BASICSR.match(key)
        if match:
            level, index, kind = match.groups()
            key = f"spynet.basic_module.{level}.basic_module.{int(index) // 2}.conv.{kind}"
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old) :]
        out[key] = value
    return out


def mmagic_file(state_dict: dict) -> dict:
    return {"meta": {"mmagic_version": "1.2.0"}, "state_dict": {f"generator.{k}": v for k, v in state_dict.items()}}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def assert_reproduces_fixture(name: str, fixture: str) -> torch.nn.Module:
    data = load_basicsr(fixture)
    model = reference_models.from_official(name, data["state_dict"], **data["config"])
    with torch.no_grad():
        out = model(data["inputs"]["lq"])
    torch.testing.assert_close(out, data["outputs"]["out"], atol=1e-5, rtol=0)
    return model


def assert_checkpoint_files_recognised(
    tmp_path, name: str, fixture: str, renames: dict[str, str], inferred: str
) -> None:
    """A BasicSR release file and an MMagic file (``generator.`` keys, MMagic names) rebuild the model from the file
    alone; an official file also loads into a model built by name."""
    data = load_basicsr(fixture)
    reference = reference_models.from_official(name, data["state_dict"], **data["config"])
    files = {
        "basicsr.pth": {
            "params": {k: torch.zeros_like(v) for k, v in data["state_dict"].items()},
            "params_ema": data["state_dict"],
        },
        "mmagic.pth": mmagic_file(mmagic_names(data["state_dict"], renames)),
    }
    for filename, content in files.items():
        torch.save(content, tmp_path / filename)
        lines: list[str] = []
        model = model_from_checkpoint(tmp_path / filename, report=lines.append)
        assert type(model) is type(reference) and not model.training
        assert_same_weights(model, reference)
        assert len(lines) == 1 and f"official {name} weights; from the weights: {inferred}" in lines[0], lines
        built = create_model(name, "paper", **reference.model_spec["overrides"])
        load_checkpoint(built, tmp_path / filename)
        assert_same_weights(built, reference)


class CountingStore(FeatureStore):
    def __init__(self) -> None:
        super().__init__()
        self.puts = 0

    def put(self, key, index, value):
        self.puts += 1
        super().put(key, index, value)


def assert_stream_equals_forward(model: torch.nn.Module, clip: torch.Tensor) -> None:
    store, emitted = CountingStore(), []
    with torch.no_grad():
        model.stream(clip.unbind(1), emit=lambda i, frame: emitted.append((i, frame)), store=store)
        expected = model(clip)
    assert [i for i, _ in emitted] == list(range(clip.shape[1]))
    assert store.puts > 0 and len(store) == 0
    torch.testing.assert_close(torch.stack([f for _, f in emitted], 1), expected, atol=0, rtol=0)


def assert_any_length_and_size(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    assert (model.num_frames, model.scale, model.output_mode) == (3, 4, "all")
    with torch.no_grad():
        for b, t, h, w in ((2, 1, 5, 7), (1, 2, 9, 6)):
            assert model(seeded_rand((b, t, 3, h, w), t)).shape == (b, t, 3, 4 * h, 4 * w)
        # run's windowed inference over a clip longer than num_frames
        assert upscale_clip(model, seeded_rand((4, 3, 6, 7), 9)).shape == (4, 3, 24, 28)
    with pytest.raises(ValueError, match=r"clip: expected \(B, T, C, H, W\) with C=3, got \(1, 2, 4, 6, 6\)"):
        model(torch.rand(1, 2, 4, 6, 6))
    with pytest.raises(ValueError, match="at least one frame"):
        model.stream([], emit=lambda i, frame: None)


BASICVSR_MMAGIC = {
    "backward_trunk.": "backward_resblocks.",
    "forward_trunk.": "forward_resblocks.",
    "upconv1.": "upsample1.upsample_conv.",
    "upconv2.": "upsample2.upsample_conv.",
}


def test_reproduces_basicsr():
    model = assert_reproduces_fixture("basicvsr", "basicvsr_case1.pt")
    assert model.model_spec == {"name": "basicvsr", "preset": "paper", "overrides": {"channels": 32, "num_blocks": 2}}


def test_basicsr_and_mmagic_files_recognised(tmp_path):
    assert_checkpoint_files_recognised(
        tmp_path, "basicvsr", "basicvsr_case1.pt", BASICVSR_MMAGIC, "num_feat=32, num_block=2"
    )


def test_stream_through_a_store_equals_forward():
    torch.manual_seed(0)
    assert_stream_equals_forward(create_model("basicvsr", "tiny").eval(), seeded_rand((1, 4, 3, 7, 9), 1))


def test_any_length_and_size():
    assert_any_length_and_size("basicvsr")


def test_presets_are_the_released_model():
    assert create_model("basicvsr", "paper").propagation.backward_cell.body.num_blocks == 30
    assert reference_models.list_presets("basicvsr") == ["paper", "released", "tiny"]


def test_compiles():
    """One frame (no flow: SPyNet's six levels per pair make tracing slow; its own tests compile it)."""
    torch.manual_seed(0)
    with torch.no_grad():
        assert_compiles(create_model("basicvsr", "tiny").eval(), seeded_rand((1, 1, 3, 6, 7), 0), atol=1e-5)


def test_iconvsr_and_foreign_state_dicts_are_not_basicvsr(tmp_path):
    from reference_models.networks.basicvsr import official_config_from_state_dict

    sd = load_basicsr("basicvsr_case1.pt")["state_dict"]
    iconvsr_like = {**sd, "forward_trunk.main.0.weight": torch.zeros(32, 67, 3, 3)}
    with pytest.raises(ValueError, match="IconVSR's forward trunk"):
        official_config_from_state_dict(iconvsr_like)
    torch.save({"params": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match=r"nor an official .*basicvsr.* state_dict"):
        model_from_checkpoint(tmp_path / "other.pth")
