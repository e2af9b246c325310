"""Fixtures shared by the reference models' tests."""

import pytest
import torch

import reference_models
from reference_models.checkpoint import save_checkpoint
from reference_models.inference import hardware


@pytest.fixture(autouse=True)
def cpu_without_bfloat16(monkeypatch):
    """Every test sees a CPU without bfloat16 instructions, so ``--precision auto`` runs float32 and outputs compare
    exactly on any machine (issue 18); a test of the bfloat16 choice sets the flags itself with :func:`play_cpu`."""
    play_cpu(monkeypatch, "fpu sse avx2")


def play_cpu(monkeypatch, flags: str) -> None:
    """Make :mod:`reference_models.inference.hardware` read a CPU with these ``/proc/cpuinfo`` flags."""
    text = f"processor : 0\nmodel name : Test CPU\nflags : {flags}\n"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: text)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A checkpoint (with model_spec) of a seeded tiny MANA."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mana_tiny.pt"
    save_checkpoint(reference_models.create_model("mana", "tiny"), path)
    return path
