"""The reference models in timm's registry: every model x preset is a name, ``pretrained=True`` with a local
file loads our safetensors / .pt files and official state_dicts, and ``import reference_models`` stays free of timm."""

import subprocess
import sys

import pytest
import timm
import torch

import reference_models
import reference_models.timm_models  # noqa: F401  (registers the names)
from reference_models.checkpoint import CheckpointError, save_checkpoint
from reference_models.timm_models import timm_name
from tests.official import MANA_FIXTURE, load_official


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_every_model_and_preset_is_registered():
    names = set(timm.list_models())
    for name in reference_models.list_models():
        for preset in reference_models.list_presets(name):
            assert timm_name(name, preset) in names
    assert {"mana_paper", "vsrt_paper_reds", "vsrt_tiny"} <= names


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_create_model_pretrained_file(tmp_path, suffix):
    torch.manual_seed(3)
    model = reference_models.create_model("mana", "tiny")
    path = tmp_path / f"mana{suffix}"
    save_checkpoint(model, path)
    loaded = timm.create_model("mana_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    assert_same_weights(loaded, model)
    assert loaded.model_spec == {"name": "mana", "preset": "tiny", "overrides": {}}
    assert loaded.pretrained_cfg["file"] == str(path)


def test_kwargs_reach_the_constructor_and_weights_must_fit(tmp_path):
    model = timm.create_model("mana_tiny", num_frames=5)
    assert model.num_frames == 5 and model.model_spec["overrides"] == {"num_frames": 5}
    save_checkpoint(reference_models.create_model("mana", "tiny"), tmp_path / "tiny.safetensors")
    with pytest.raises(CheckpointError, match="shape mismatches"):
        timm.create_model(
            "mana_paper", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / "tiny.safetensors")}
        )


def test_official_state_dict_through_timm(tmp_path):
    data = load_official(MANA_FIXTURE)
    torch.save({"params": data["state_dict"]}, tmp_path / "official.pth")
    reference = reference_models.from_official("mana", data["state_dict"], **data["config"])
    loaded = timm.create_model(
        "mana_paper",
        pretrained=True,
        pretrained_cfg_overlay={"file": str(tmp_path / "official.pth")},
        **reference.model_spec["overrides"],
    )
    assert_same_weights(loaded, reference)


def test_importing_reference_models_does_not_import_timm():
    code = "import sys, reference_models; assert 'timm' not in sys.modules, 'timm imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
