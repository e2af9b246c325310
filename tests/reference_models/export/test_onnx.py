"""ONNX export of the tiny reference models, checked against eager PyTorch in ONNX Runtime at two LR sizes
other than the export example (random weights, zero-initialised parameters re-drawn so every path counts)."""

import pytest
import torch

from reference_models import create_model
from reference_models.export.exported_program import example_clip
from reference_models.export.onnx import export_onnx
from reference_models.export.onnx_runtime import OnnxRuntimeModel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

#: (batch, height, width) checked after exporting at the example's (2, 34, 38): batch 1, smaller, odd, multiples of 4.
SIZES = [(1, 16, 20), (1, 13, 19)]


@pytest.fixture(scope="module", params=["mana", "vsrt", "dasaa", "mafnet", "edvr"])
def exported(request, tmp_path_factory, exported_program):
    model, program = exported_program(request.param)  # shared with the .pt2 checks (conftest)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    metadata = export_onnx(model, path, program=program)
    return model, path, metadata


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch_at_other_sizes(exported):
    model, path, metadata = exported
    runtime = OnnxRuntimeModel(path)
    assert (runtime.num_frames, runtime.scale, runtime.output_mode) == (model.num_frames, 4, model.output_mode)
    assert metadata["input_sizes"].startswith("B: any")
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in SIZES:
        clip = torch.rand(batch, model.num_frames, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(clip)
        got = runtime(clip)
        assert got.shape == expected.shape
        assert expected.abs().max() > 1e-2  # the output is not trivially zero
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_example_clip_is_not_a_multiple_and_not_batch_one():
    clip = example_clip(create_model("mana", "tiny"))
    assert clip.shape == (2, 7, 3, 34, 38)
