"""The exported-program (.pt2) and TorchScript formats: written, loaded back, run at a second size."""

import pytest
import torch

from reference_models import create_model
from reference_models.export.exported_program import example_clip, load_program, save_program
from reference_models.export.metadata import model_metadata, parse_metadata
from reference_models.export.torchscript import export_torchscript, load_torchscript


@pytest.fixture(scope="module")
def mana():
    torch.manual_seed(0)
    return create_model("mana", "tiny").eval()


@pytest.mark.slow
def test_exported_program_round_trip_runs_at_another_size(exported_program, tmp_path):
    model, program = exported_program("mana")  # shared with the ONNX checks (conftest)
    path = tmp_path / "mana.pt2"
    save_program(program, path, model_metadata(model))
    loaded, metadata = load_program(path)
    assert parse_metadata(metadata, "mana.pt2") == (7, 4, "center")
    clip = torch.rand(1, 7, 3, 13, 18, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.module()(clip), model(clip), atol=1e-5, rtol=0)


def test_torchscript_round_trip_runs_at_another_batch(mana, tmp_path):
    path = tmp_path / "mana.ts"
    export_torchscript(mana, path, example=example_clip(mana, 12, 16))
    module, metadata = load_torchscript(path)
    assert metadata["input_sizes"] == "B: any, T: 7, C: 3, H: 12, W: 16"
    assert parse_metadata(metadata, "mana.ts") == (7, 4, "center")
    clip = torch.rand(3, 7, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(module(clip), mana(clip), atol=1e-5, rtol=0)


def test_torchscript_traces_the_pure_pytorch_deformable_convolution(tiny_model, tmp_path):
    """MAFnet's deformable ConvLSTM: traced sizes are tensors, so the deformable convolution takes its export path."""
    model = tiny_model("mafnet")  # 2 frames take every path (conftest)
    export_torchscript(model, tmp_path / "mafnet.ts", example=example_clip(model, 16, 20))
    module, _ = load_torchscript(tmp_path / "mafnet.ts")
    clip = torch.rand(2, model.num_frames, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(module(clip), model(clip), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "metadata, message",
    [
        ({"scale": "4", "output_mode": "center"}, "lacks the metadata num_frames"),
        ({"num_frames": "x", "scale": "4", "output_mode": "center"}, "malformed"),
        ({"num_frames": "5", "scale": "4", "output_mode": "middle"}, "malformed"),
    ],
)
def test_metadata_errors_name_the_problem(metadata, message):
    with pytest.raises(ValueError, match=message):
        parse_metadata(metadata, "file")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mafnet", "vsrt"])  # the two whose crops and masks froze
def test_exported_program_runs_at_multiples_of_the_padding_step_and_between(exported_program, name):
    """The 34x38 example needs padding (patches, pyramids); the program must not be frozen to sizes that do."""
    model, program = exported_program(name)  # shared with the ONNX checks (conftest)
    generator = torch.Generator().manual_seed(1)
    for height, width in [(40, 48), (37, 41)]:  # multiples of 8, and of nothing
        clip = torch.rand(1, model.num_frames, 3, height, width, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(program.module()(clip), model(clip), atol=1e-5, rtol=0)
