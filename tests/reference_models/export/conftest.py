"""The tiny reference models exported once per test session, shared by the checks of every format.

``torch.export`` of a recurrent tiny model takes tens of seconds on a 2-core runner (MAFnet's deformable ConvLSTM
the most), and the ``.pt2`` checks and the ONNX checks start from the same program, so each model is exported once
(:func:`exported_program`), and built once (:func:`tiny_model`). The tests only read the model and the program:
the model runs in eval mode under ``no_grad``, the program through ``program.module()`` (a fresh module each call)
and :func:`~reference_models.export.onnx.export_onnx`, which leaves the program it is given as it was.
"""

from collections.abc import Callable

import pytest
import torch

from reference_models import create_model
from reference_models.export.exported_program import export_program

#: Models whose graph unrolls over the frames are exported with as few frames as take every path: MAFnet's
#: bidirectional deformable ConvLSTM steps once from its zero state and once from the other frame in each direction,
#: and its flow reads frame ``t + 1`` (frame 0) and ``t - 1`` (the last frame) with 2 frames as with 5. EDVR's PCD
#: alignment and TSA take every frame.
OVERRIDES = {"mafnet": {"num_frames": 2}, "edvr": {"num_frames": 3}}


def randomised(name: str) -> torch.nn.Module:
    """Tiny ``name`` in eval mode with seeded weights; parameters initialised to zero (gates, offset and output
    convolutions) are re-drawn, so that every path counts."""
    torch.manual_seed(0)
    model = create_model(name, "tiny", **OVERRIDES.get(name, {})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="session")
def tiny_model() -> Callable[[str], torch.nn.Module]:
    """``tiny_model(name)``: :func:`randomised` ``name``, built on first use and shared by the rest of the session.
    Run it only (eval mode, ``no_grad``)."""
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            cache[name] = randomised(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def exported_program(tiny_model) -> Callable[[str], tuple[torch.nn.Module, torch.export.ExportedProgram]]:
    """``exported_program(name)``: ``tiny_model(name)`` and its ``torch.export`` program (the default example clip),
    exported on first use and shared by the rest of the session. Read them only."""
    cache: dict[str, torch.export.ExportedProgram] = {}

    def get(name: str) -> tuple[torch.nn.Module, torch.export.ExportedProgram]:
        model = tiny_model(name)
        if name not in cache:
            cache[name] = export_program(model)
        return model, cache[name]

    return get
