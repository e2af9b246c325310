"""Fixtures shared by the ``run`` command's tests."""

import pytest
import torch

import reference_models
from reference_models.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A checkpoint (with model_spec) of a seeded tiny MANA."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mana_tiny.pt"
    save_checkpoint(reference_models.create_model("mana", "tiny"), path)
    return path
