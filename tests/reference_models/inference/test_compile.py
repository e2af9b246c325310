"""torch.compile of the four reference models (tiny presets): the eager result within 1e-6, no
recompilation for new inputs of the same shape, and one graph (``fullgraph=True``: no graph breaks)
where the model allows it.

Dynamo's ``"eager"`` backend runs the captured graph without Inductor's C++ build, so these tests guard
what makes a real compile slow or wrong (graph breaks, recompiles, Python-level data dependence) at a
cost a 2-core CI runner can afford. Inductor compile times: ``benchmarks/compile.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo.testing

from reference_models import create_model
from tests.strategies import seeded_rand

# DASAA's mask cleaning checks that its mask is binary (a data-dependent branch): one graph break.
FULLGRAPH = {"dasaa": False, "mafnet": True, "mana": True, "vsrt": True}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FULLGRAPH))
def test_tiny_model_compiles_without_recompiles_and_matches_eager(name: str) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = create_model(name, "tiny").eval()
    clips = [seeded_rand((1, model.num_frames, 3, 8, 8), seed) for seed in (0, 1)]
    counter = torch._dynamo.testing.CompileCounterWithBackend("eager")
    with torch.no_grad():
        expected = [model(clip) for clip in clips]  # eager first: einops caches its backend outside the graph
        compiled = torch.compile(model, backend=counter, fullgraph=FULLGRAPH[name])
        # eager runs the upsampling tail channels-last, the traced graph NCHW: float32 rounding of another
        # summation order (a few ulps of outputs near 1, accumulated over the tail's convolutions)
        torch.testing.assert_close(compiled(clips[0]), expected[0], atol=1e-5, rtol=0)
        frames = counter.frame_count
        torch.testing.assert_close(compiled(clips[1]), expected[1], atol=1e-5, rtol=0)
    assert counter.frame_count == frames, "new data of the same shape recompiled"
