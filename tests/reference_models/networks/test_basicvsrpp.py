"""BasicVSR++: parity with BasicSR's recorded run (second-order deformable alignment included, on CPU without a
compiled operator), BasicSR and MMagic checkpoint files recognised from their keys, streaming through a feature
store equals the whole-clip forward, any length and size, errors."""

from __future__ import annotations

import pytest
import torch

import reference_models
from reference_models import create_model
from reference_models.networks.basicvsrpp import official_config_from_state_dict
from tests.basicsr_fixtures import load_basicsr
from tests.reference_models.networks.test_basicvsr import (
    assert_any_length_and_size,
    assert_checkpoint_files_recognised,
    assert_reproduces_fixture,
    assert_stream_equals_forward,
)
from tests.strategies import seeded_rand

MMAGIC = {"upconv1.": "upsample1.upsample_conv.", "upconv2.": "upsample2.upsample_conv."}


def test_reproduces_basicsr():
    model = assert_reproduces_fixture("basicvsrpp", "basicvsrpp_case1.pt")
    assert model.model_spec["overrides"] == {"channels": 16, "num_blocks": 2, "max_residue_magnitude": 10.0}


def test_basicsr_and_mmagic_files_recognised(tmp_path):
    assert_checkpoint_files_recognised(
        tmp_path, "basicvsrpp", "basicvsrpp_case1.pt", MMAGIC, "mid_channels=16, num_blocks=2"
    )


def test_stream_through_a_store_equals_forward():
    torch.manual_seed(0)
    model = create_model("basicvsrpp", "tiny").eval()
    with torch.no_grad():
        for parameter in model.parameters():  # zero-initialised offset convs re-drawn: learned offsets count
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    assert_stream_equals_forward(model, seeded_rand((1, 4, 3, 7, 9), 1))


def test_any_length_and_size():
    assert_any_length_and_size("basicvsrpp")


def test_presets_are_the_released_model():
    model = create_model("basicvsrpp", "paper")
    assert model.channels == 64 and model.propagation.cells["forward_2"].body.num_blocks == 7
    assert model.propagation.align["backward_1"].deform_groups == 16


def test_unsupported_and_foreign_state_dicts():
    sd = load_basicsr("basicvsrpp_case1.pt")["state_dict"]
    same_res = {k.replace("feat_extract.", "feat_extract.4."): v for k, v in sd.items()}
    with pytest.raises(ValueError, match="is_low_res_input=False"):
        official_config_from_state_dict(same_res)
    with pytest.raises(ValueError, match="is_low_res_input=False"):
        reference_models.from_official("basicvsrpp", sd, mid_channels=16, num_blocks=2, is_low_res_input=False)
    with pytest.raises(ValueError, match="not a BasicVSR\\+\\+ state_dict"):
        official_config_from_state_dict(load_basicsr("basicvsr_case1.pt")["state_dict"])
