"""ONNX export of tiny BasicVSR and BasicVSR++ (SPyNet flows, flow warping, and BasicVSR++'s second-order
deformable alignment in pure PyTorch: no compiled operator in the graph), checked against eager PyTorch in ONNX
Runtime at two LR sizes other than the export example.

The propagation unrolls over the frames, so the clips are as short as cover every path: two frames for BasicVSR
(both sweeps warp once), three for BasicVSR++ (its second-order alignment starts at a sweep's third frame)."""

import pytest
import torch

from reference_models import create_model
from reference_models.export.onnx import export_onnx
from reference_models.export.onnx_runtime import OnnxRuntimeModel

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

#: (batch, height, width) checked after exporting at the example's (2, 34, 38): batch 1, smaller, odd.
SIZES = [(1, 16, 20), (1, 13, 19)]
FRAMES = {"basicvsr": 2, "basicvsrpp": 3}


@pytest.fixture(scope="module", params=sorted(FRAMES))
def exported(request, tmp_path_factory):
    torch.manual_seed(0)
    model = create_model(request.param, "tiny", num_frames=FRAMES[request.param]).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # zero-initialised offset convolutions re-drawn: learned offsets count
            if not parameter.any():
                parameter.normal_(0.0, 0.1)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    export_onnx(model, path)
    return model, path


@pytest.mark.slow
def test_onnx_runtime_matches_pytorch_at_other_sizes(exported):
    model, path = exported
    runtime = OnnxRuntimeModel(path)
    assert (runtime.num_frames, runtime.scale, runtime.output_mode) == (model.num_frames, 4, "all")
    generator = torch.Generator().manual_seed(1)
    for batch, height, width in SIZES:
        clip = torch.rand(batch, model.num_frames, 3, height, width, generator=generator)
        with torch.no_grad():
            expected = model(clip)
        got = runtime(clip)
        assert got.shape == expected.shape == (batch, model.num_frames, 3, 4 * height, 4 * width)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
